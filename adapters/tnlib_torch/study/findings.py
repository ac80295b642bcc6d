"""The findings of a compressibility study: numbers computed from its records, by pure functions.

- :func:`tolerated_norm_loss` (one layer truncated alone) and :func:`tolerated_norm_loss_all`
  (every layer at once): the largest truncation that keeps the accuracy within a tolerance of the
  baseline, and the fraction of the kernel's norm it removes;
- :func:`recovery_gains`: what fine-tuning gives back after a truncation, less what the same
  fine-tuning does to the model left whole (:func:`control_curve`);
- :func:`decompositions`: the decompositions at equal parameter budget, before and after fine-tuning;
- :func:`lowest_entropy`: the cut of least entanglement entropy of each layer's kernel;
- :func:`summarize`: all of them at once, as :class:`Findings`, what :mod:`tnlib_torch.study.report`
  states.

None of them needs matplotlib.

Within tolerance
----------------
A truncation keeps the accuracy when its top-1 accuracy is at most ``tolerance`` below the
baseline's (``0.01``: one point).  Accuracies are ratios of counts, so a drop of exactly
``tolerance`` is within it, whatever the rounding of the floats.  A layer tolerates a cut up to the
largest level such that it and every smaller level tried keep the accuracy: accuracy is noisy, and a
larger level that happens to pass after a smaller one failed is not one the layer tolerates.  The
norm loss ``1 - ||K~|| / ||K||`` and relative error ``||K - K~|| / ||K||`` reported are those
realized at that level.
"""

from __future__ import annotations

import dataclasses
import numbers
from collections.abc import Callable, Sequence

from tnlib_torch.study.records import Record, accuracy_curve, field, layers_max, number, of_kind

__all__ = [
    "Curve",
    "Decomposition",
    "Findings",
    "RecoveryGain",
    "Tolerated",
    "control_curve",
    "decompositions",
    "lowest_entropy",
    "recovery_gains",
    "require_baseline",
    "summarize",
    "tolerated_norm_loss",
    "tolerated_norm_loss_all",
]

#: Absorbs the rounding of accuracies (ratios of counts) in the comparison with the tolerance.
_SLACK = 1e-9


@dataclasses.dataclass(frozen=True)
class Tolerated:
    """The largest truncation that keeps the accuracy (see the module notes), and what it did.

    Attributes
    ----------
    level : float
        The relative error the kernel(s) were truncated to.
    norm_loss, rel_error : float
        Realized at that level; for every layer truncated at once, the largest among the layers.
    top1 : float
        The accuracy left.
    params, factored_params : float
        The parameters of the truncated layer(s) dense, and stored as the two factors across the cut.
    """

    level: float
    norm_loss: float
    rel_error: float
    top1: float
    params: float
    factored_params: float


@dataclasses.dataclass(frozen=True)
class Curve:
    """Top-1 accuracy before fine-tuning and after each epoch (``top1[0]`` is before)."""

    top1: tuple[float, ...]

    @property
    def before(self) -> float:
        return self.top1[0]

    @property
    def after(self) -> float:
        return self.top1[-1]

    @property
    def change(self) -> float:
        """What the fine-tuning changed, ``after - before``."""
        return self.after - self.before


@dataclasses.dataclass(frozen=True)
class RecoveryGain:
    """The fine-tuning of a truncated model (``curve``) beside that of the untruncated one (``control``)."""

    target: str
    cut: str
    level: float
    curve: Curve
    control: Curve | None

    @property
    def gain(self) -> float | None:
        """What fine-tuning repairs of the truncation: the accuracy it recovers less the control's change.

        ``None`` without a control.
        """
        return None if self.control is None else self.curve.change - self.control.change


@dataclasses.dataclass(frozen=True)
class Decomposition:
    """One decomposition at its parameter budget: the parameters of its layers and the top-1 accuracy."""

    method: str
    budget: float
    params_before: float
    params_after: float
    ratio: float
    before: float
    after: float


def require_baseline(records: Sequence[Record]) -> Record:
    """The baseline record of ``records``.

    Raises
    ------
    ValueError
        If there is none: every accuracy of the report is compared with it.
    """
    baselines = of_kind(records, "baseline")
    if not baselines:
        raise ValueError("the records hold no baseline (a record with key ['baseline']); the report compares every "
                         "accuracy with the baseline's, so measure it first (tnlib_torch.study.measure.baseline)")
    return baselines[0]


def _check_tolerance(tolerance: object) -> float:
    """A drop of accuracy in [0, 1)."""
    if isinstance(tolerance, bool) or not isinstance(tolerance, numbers.Real):
        raise TypeError(f"tolerance must be a real number in [0, 1), got {type(tolerance).__name__}")
    if not 0 <= tolerance < 1:
        raise ValueError(f"tolerance must be in [0, 1) (0.01: one point of accuracy), got {tolerance!r}")
    return float(tolerance)


def _tolerated(sweep: list[Record], baseline: float, tolerance: float,
               measure: Callable[[Record, str], float]) -> Tolerated | None:
    """The largest level of ``sweep`` up to which every level keeps the accuracy; ``None`` if the first does not.

    ``measure(record, name)`` reads the record's ``norm_loss`` and ``rel_error``.
    """
    kept = None
    for record in sorted(sweep, key=lambda record: number(record, "level")):
        if baseline - number(record, "top1") > tolerance + _SLACK:
            break
        kept = record
    if kept is None:
        return None
    return Tolerated(level=number(kept, "level"), norm_loss=measure(kept, "norm_loss"),
                     rel_error=measure(kept, "rel_error"), top1=number(kept, "top1"), params=number(kept, "params"),
                     factored_params=number(kept, "factored_params"))


def tolerated_norm_loss(records: Sequence[Record], tolerance: float = 0.01) -> dict[str, dict[str, Tolerated | None]]:
    """The largest truncation of each layer alone, per cut, that keeps the accuracy within ``tolerance``.

    From the ``sweep`` records (see the module notes for the rule).

    Returns
    -------
    dict
        ``{layer: {cut: Tolerated or None}}``, layers and cuts in the order of the records; ``None``
        where even the smallest level loses more than ``tolerance``.

    Raises
    ------
    ValueError
        Without a baseline, or with a malformed record.

    Examples
    --------
    >>> records = [{"key": ["baseline"], "top1": 0.9}] + [
    ...     {"key": ["sweep", "conv1", "o|ihw", level], "layer": "conv1", "cut": "o|ihw", "level": level, "top1": top1,
    ...      "rel_error": level, "norm_loss": level / 10, "params": 100, "factored_params": 60}
    ...     for level, top1 in [(0.1, 0.9), (0.3, 0.89), (0.5, 0.8)]]
    >>> kept = tolerated_norm_loss(records)["conv1"]["o|ihw"]
    >>> kept.level, kept.top1, kept.norm_loss
    (0.3, 0.89, 0.03)
    >>> tolerated_norm_loss(records, tolerance=0.001)["conv1"]["o|ihw"].level
    0.1
    """
    baseline, tolerance = number(require_baseline(records), "top1"), _check_tolerance(tolerance)
    sweeps: dict[str, dict[str, list[Record]]] = {}
    for record in of_kind(records, "sweep"):
        sweeps.setdefault(field(record, "layer"), {}).setdefault(field(record, "cut"), []).append(record)
    return {layer: {cut: _tolerated(sweep, baseline, tolerance, number) for cut, sweep in by_cut.items()}
            for layer, by_cut in sweeps.items()}


def tolerated_norm_loss_all(records: Sequence[Record], tolerance: float = 0.01) -> dict[str, Tolerated | None]:
    """As :func:`tolerated_norm_loss`, for every layer truncated at once (the ``sweep_all`` records).

    The norm loss and relative error are the largest among the layers (:func:`~tnlib_torch.study.records.layers_max`).

    Returns
    -------
    dict
        ``{cut: Tolerated or None}``.
    """
    baseline, tolerance = number(require_baseline(records), "top1"), _check_tolerance(tolerance)
    sweeps: dict[str, list[Record]] = {}
    for record in of_kind(records, "sweep_all"):
        sweeps.setdefault(field(record, "cut"), []).append(record)
    return {cut: _tolerated(sweep, baseline, tolerance, layers_max) for cut, sweep in sweeps.items()}


def _curve(record: Record) -> Curve:
    return Curve(tuple(accuracy_curve(record)[1]))


def _schedule(record: Record) -> dict[str, object]:
    """How a record was fine-tuned."""
    return {name: field(record, name) for name in ("epochs", "lr", "seed")}


def control_curve(records: Sequence[Record]) -> Curve | None:
    """The accuracy of the untruncated model fine-tuned like the recoveries (``recovery_control``).

    ``None`` if it was not measured.
    """
    controls = of_kind(records, "recovery_control")
    return _curve(controls[0]) if controls else None


def recovery_gains(records: Sequence[Record]) -> list[RecoveryGain]:
    """Each ``recovery`` record beside the control, in the order of the records.

    Raises
    ------
    ValueError
        If a recovery was fine-tuned with another ``epochs``, ``lr`` or ``seed`` than the control: the
        two would not compare.
    """
    controls, control = of_kind(records, "recovery_control"), control_curve(records)
    gains = []
    for record in of_kind(records, "recovery"):
        for other in controls:
            if _schedule(record) != _schedule(other):
                raise ValueError(f"the record {list(record['key'])} was fine-tuned with {_schedule(record)}, the "
                                 f"control with {_schedule(other)}: they do not compare")
        gains.append(RecoveryGain(target=field(record, "target"), cut=field(record, "cut"),
                                  level=number(record, "level"), curve=_curve(record),
                                  control=control))
    return gains


def decompositions(records: Sequence[Record]) -> list[Decomposition]:
    """The ``decomposition`` records, in their order, as :class:`Decomposition`."""
    return [Decomposition(method=field(record, "method"), budget=number(record, "budget"),
                          params_before=number(record, "params_before"), params_after=number(record, "params_after"),
                          ratio=number(record, "ratio"), before=number(record, "before", "top1"),
                          after=number(record, "after", "top1"))
            for record in of_kind(records, "decomposition")]


def lowest_entropy(records: Sequence[Record]) -> dict[str, tuple[str, float]]:
    """The cut of least von Neumann entropy (bits) of each layer's kernel: ``{layer: (cut, entropy)}``.

    From the ``spectrum`` records; the first cut in their order wins a tie.
    """
    lowest: dict[str, tuple[str, float]] = {}
    for record in of_kind(records, "spectrum"):
        layer, entropy = field(record, "layer"), number(record, "entropy")
        if layer not in lowest or entropy < lowest[layer][1]:
            lowest[layer] = (field(record, "cut"), entropy)
    return lowest


@dataclasses.dataclass(frozen=True)
class Findings:
    """Everything a study's report states, computed once from its records (:func:`summarize`).

    Attributes
    ----------
    baseline : Record
        The ``baseline`` record; ``top1`` is its accuracy.
    tolerance : float
        The drop of top-1 accuracy a truncation may cause and still keep the accuracy.
    one_layer : dict
        :func:`tolerated_norm_loss`, ``{layer: {cut: Tolerated or None}}``.
    all_layers : dict
        :func:`tolerated_norm_loss_all`, ``{cut: Tolerated or None}``.
    gains : list of RecoveryGain
        :func:`recovery_gains`.
    control : Curve or None
        :func:`control_curve`.
    decompositions : list of Decomposition
        :func:`decompositions`.
    lowest_entropy : dict
        :func:`lowest_entropy`, ``{layer: (cut, entropy)}``.
    """

    baseline: Record
    tolerance: float
    one_layer: dict[str, dict[str, Tolerated | None]]
    all_layers: dict[str, Tolerated | None]
    gains: list[RecoveryGain]
    control: Curve | None
    decompositions: list[Decomposition]
    lowest_entropy: dict[str, tuple[str, float]]

    @property
    def top1(self) -> float:
        """The baseline's top-1 accuracy."""
        return number(self.baseline, "top1")


def summarize(records: Sequence[Record], tolerance: float = 0.01) -> Findings:
    """All the findings of ``records`` at ``tolerance`` (0.01: one point of accuracy).

    Raises
    ------
    ValueError
        Without a baseline, with a malformed record, or a tolerance outside [0, 1).
    """
    baseline, tolerance = require_baseline(records), _check_tolerance(tolerance)
    return Findings(baseline=baseline, tolerance=tolerance, one_layer=tolerated_norm_loss(records, tolerance),
                    all_layers=tolerated_norm_loss_all(records, tolerance), gains=recovery_gains(records),
                    control=control_curve(records), decompositions=decompositions(records),
                    lowest_entropy=lowest_entropy(records))
