"""The checked arguments of one :func:`tnlib_torch.compress_` call: what to do, and under which policy.

Checking only: nothing here builds a structure or touches a layer (the structures are
:mod:`tnlib_torch.compression.structures`, the policies :mod:`tnlib_torch.compression.policies`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import nn

from tnlib._validation import check_choice, check_seed
from tnlib_torch._checks import check_bool, check_count
from tnlib_torch.compression.refine import REFITS

#: The compression methods.
METHODS = ("tucker2", "cp", "mps", "svd", "truncate")
#: The size limit of each method, named as its layer names it.
SIZE_KEYWORDS = {"tucker2": "ranks", "cp": "rank", "mps": "max_bond", "svd": "max_rank", "truncate": "max_rank"}
#: What a budget counts.
BUDGET_ON = ("params", "macs")
#: How a calibrated budget weighs each layer's output error (:mod:`tnlib_torch.compression.sensitivity`;
#: ``"auto"``: ``"fisher"`` for a classifier, else ``"none"``).
SENSITIVITIES = ("auto", "fisher", "measured", "none")
#: What ``refine=True`` refits (:data:`tnlib_torch.compression.refine.REFITS`).
REFINE_DEFAULT = "kernel"
#: The methods that take each structure option.
_OPTION_METHODS = {"cutoff": ("tucker2", "mps", "svd", "truncate"), "cut": ("svd", "truncate"), "order": ("mps",)}


@dataclass(frozen=True)
class Calibration:
    """The calibration of one :func:`tnlib_torch.compress_` call: its data and what to do with it.

    ``data`` is the caller's (a tensor of inputs, or an iterable of input batches or
    ``(input, target)`` pairs), read at most ``samples`` samples per pass; ``refine`` names the
    sequential error correction (``refine_``'s ``refit``; ``None``: none), ``sensitivity`` asks for
    the weights of a budget's layers, ``recalibrate`` for the BatchNorm statistics re-estimated at
    the end.
    """

    data: Any
    samples: int | None = None
    refine: str | None = None
    sensitivity: str = "auto"
    recalibrate: bool = True


@dataclass(frozen=True)
class CompressRequest:
    """What to do: the method, its options and the policy that chooses the ranks.

    ``fit`` holds the ``seed`` given to :func:`tnlib_torch.compress_` (or in its ``fit``), if any.
    """

    method: str
    policy: str  # "fixed", "budget" or "accuracy"
    size: Any = None
    rel_error: float | None = None
    cutoff: float | None = None
    cut: Any = "o|ihw"
    order: str = "ihwo"
    fit: dict[str, Any] = field(default_factory=dict)
    linear: bool = False
    budget: float | None = None
    budget_on: str = "params"
    evaluate: Callable[[nn.Module], float] | None = None
    fractions: tuple[float, ...] = ()
    input_size: tuple[int, ...] | None = None
    calibration: Calibration | None = None


def check_request(method: Any, *, rel_error: Any, sizes: dict[str, Any], options: dict[str, Any], fit: Any,
                  seed: Any, linear: Any, budget: Any, budget_on: Any, evaluate: Any, eval_points: Any,
                  input_size: Any, calibration: Mapping[str, Any] | None = None) -> CompressRequest:
    """The arguments of :func:`tnlib_torch.compress_` checked, with messages naming them.

    ``calibration`` holds ``compress_``'s ``calibration``, ``calibration_samples``, ``refine``,
    ``sensitivity`` and ``recalibrate`` under the keys ``data``, ``samples``, ``refine``,
    ``sensitivity`` and ``recalibrate``.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(map(repr, METHODS))}; got {method!r}")
    size = _checked_sizes(method, sizes)
    for name, value in options.items():
        if value is not None and method not in _OPTION_METHODS[name]:
            methods = " or ".join(map(repr, _OPTION_METHODS[name]))
            raise ValueError(f"{name} is only for method {methods}; got method {method!r}")
    fit = _checked_fit(fit, seed)
    check_bool(linear, "linear")
    if linear and method == "truncate":
        raise ValueError("linear=True is not supported by method 'truncate', which truncates conv kernels")
    if budget_on not in BUDGET_ON:
        raise ValueError(f"budget_on must be one of {', '.join(map(repr, BUDGET_ON))}; got {budget_on!r}")
    common = dict(method=method, size=size, rel_error=rel_error, cutoff=options["cutoff"],
                  cut=_checked_cut(method, options["cut"], budget), order=options["order"] or "ihwo", fit=fit,
                  linear=linear,
                  budget_on=budget_on, input_size=None if input_size is None else tuple(input_size),
                  calibration=_checked_calibration(method, calibration or {}))
    criteria = [name for name, value in ((SIZE_KEYWORDS[method], size), ("rel_error", rel_error),
                                         ("cutoff", options["cutoff"])) if value is not None]
    if budget is None:
        _check_fixed(method, criteria, size, rel_error, evaluate)
        return CompressRequest(policy="fixed", **common)
    _check_budget(method, criteria, budget, budget_on, input_size)
    if evaluate is None:
        return CompressRequest(policy="budget", budget=float(budget), **common)
    if not callable(evaluate):
        raise TypeError(f"evaluate must be a callable model -> float, got {evaluate!r}")
    eval_points = check_count(eval_points, "eval_points")
    fractions = np.linspace(0.1, 0.9, eval_points) if eval_points > 1 else np.array([0.5])
    return CompressRequest(policy="accuracy", budget=float(budget), evaluate=evaluate,
                           fractions=tuple(fractions.tolist()), **common)


def _checked_cut(method: str, cut: Any, budget: Any) -> Any:
    """The cut: ``"auto"`` (each layer's chosen by the allocation) is a budget's, and its default for ``"svd"``;
    any other call defaults to ``"o|ihw"``."""
    if isinstance(cut, str) and cut == "auto":
        if method != "svd" or budget is None:
            raise ValueError(f"cut='auto' chooses each layer's cut in a budget's allocation (method 'svd' with "
                             f"budget=); give a cut such as 'o|ihw' (method {method!r}, budget={budget!r})")
        return cut
    if cut is None:
        return "auto" if method == "svd" and budget is not None else "o|ihw"
    return cut


def _checked_refine(refine: Any) -> str | None:
    """``refine=`` as the refit it asks for: ``None`` (no refinement), ``"stage"`` or ``"kernel"``; ``True`` is
    :data:`REFINE_DEFAULT`."""
    if isinstance(refine, bool):
        return REFINE_DEFAULT if refine else None
    if isinstance(refine, str) and refine in REFITS:
        return refine
    raise TypeError(f"refine must be True, False or one of {', '.join(map(repr, REFITS))}; got {refine!r}")


def _checked_calibration(method: str, given: Mapping[str, Any]) -> Calibration | None:
    """The calibration asked for, or ``None``; options that need data are refused without it."""
    data, samples = given.get("data"), given.get("samples")
    refine, sensitivity = given.get("refine", False), given.get("sensitivity", "auto")
    recalibrate = given.get("recalibrate", True)
    refine = _checked_refine(refine)
    check_bool(recalibrate, "recalibrate")
    check_choice(sensitivity, "sensitivity", SENSITIVITIES)
    if data is None:
        asked = {"calibration_samples": samples is not None, "refine": refine is not None,
                 "sensitivity": sensitivity not in ("auto", "none"), "recalibrate": not recalibrate}
        needing = [name for name, given in asked.items() if given]
        if needing:
            raise ValueError(f"{', '.join(needing)} need calibration data: give calibration=")
        return None
    if method == "truncate":
        raise ValueError("calibration is for the factorized methods ('tucker2', 'cp', 'mps', 'svd'); method "
                         "'truncate' truncates kernels in place along cuts, in the kernel norm")
    samples = None if samples is None else check_count(samples, "calibration_samples")
    return Calibration(data, samples, refine, sensitivity, recalibrate)


def _checked_sizes(method: str, sizes: dict[str, Any]) -> Any:
    """The method's own size limit, checked; another method's is refused."""
    keyword = SIZE_KEYWORDS[method]
    for name, value in sizes.items():
        if value is not None and name != keyword:
            owners = " and ".join(repr(m) for m, k in SIZE_KEYWORDS.items() if k == name)
            raise ValueError(f"{name} is the size limit of method {owners}; method {method!r} takes {keyword}")
    value = sizes[keyword]
    if value is None:
        return None
    entries = value if isinstance(value, (tuple, list)) else [value]
    if not entries or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in entries):
        raise TypeError(f"{keyword} must be an int or a sequence of ints, got {value!r}")
    if min(entries) < 1:
        raise ValueError(f"{keyword} must be >= 1 (a layer keeps at least one rank), got {value!r}")
    return value


def _checked_fit(fit: Any, seed: Any) -> dict[str, Any]:
    """The keywords of the layers' fits, with ``seed`` among them; a seed given twice is refused."""
    if fit is not None and not isinstance(fit, Mapping):
        raise TypeError(f"fit must be a mapping of keywords for the layers' from_conv, got {fit!r}")
    fit = dict(fit or {})
    if seed is None:
        return fit
    check_seed(seed)
    if "seed" in fit:
        raise ValueError(f"seed is given twice, as seed={seed!r} and in fit={fit!r}; give it once")
    return {**fit, "seed": seed}


def _check_fixed(method: str, criteria: Sequence[str], size: Any, rel_error: Any, evaluate: Any) -> None:
    if evaluate is not None:
        raise ValueError("evaluate needs a budget: the accuracy policy allocates ranks under a budget")
    if not criteria:
        cutoff = ", cutoff" if method in _OPTION_METHODS["cutoff"] else ""
        raise ValueError(f"give method {method!r} a criterion ({SIZE_KEYWORDS[method]}, rel_error{cutoff}) "
                         "or a budget")
    if method == "cp" and size is None and rel_error is None:
        raise ValueError("method 'cp' needs rank or rel_error")


def _check_budget(method: str, criteria: Sequence[str], budget: Any, budget_on: str, input_size: Any) -> None:
    if criteria:
        raise ValueError(f"budget allocates the ranks itself; do not also give {', '.join(criteria)}")
    if method == "truncate":
        raise ValueError("method 'truncate' keeps dense kernels, whose cost a budget cannot lower; "
                         "use method 'svd' for the factored form")
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0 < budget <= 1:
        raise ValueError(f"budget must be a fraction in (0, 1] of the selected layers' {budget_on}, got {budget!r}")
    if budget_on == "macs" and input_size is None:
        raise ValueError("budget_on='macs' needs input_size, the shape of one input sample (e.g. (3, 32, 32))")
