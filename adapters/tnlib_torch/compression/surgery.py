"""Truncation of the dense kernels of a model's conv layers, in place.

The kernel ``K`` of an ``nn.Conv2d`` (layout ``(out, in/groups, kh, kw)``,
labels ``"oihw"``) is replaced by :func:`tnlib.truncate` of it across one cut or
several cuts in turn; the layer keeps its shape, its ``Parameter`` object, dtype,
device and ``requires_grad``.

A grouped conv (``groups = G > 1``, depthwise included) is truncated group by
group: the ``out/G`` kernel rows of group ``g`` form one tensor
``K_g`` of shape ``(out/G, in/G, kh, kw)``, truncated on its own with the same
arguments.  The groups are disjoint blocks of ``K``, orthogonal in the Frobenius
inner product, so ``||K - K~||^2 = sum_g ||K_g - K~_g||^2`` and the whole-kernel
report follows exactly from the per-group ones; a ``rel_error`` target met by
every group is met by the whole kernel.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from fnmatch import fnmatchcase
from typing import Any

import numpy as np
import torch
from torch import nn

import tnlib
from tnlib import KERNEL_LABELS, Cut, TruncationInfo
from tnlib.cuts import cut_matrix_shape
from tnlib_torch._checks import check_module
from tnlib_torch.compression.accounting import count_params
from tnlib_torch.compression.report import LayerCompression, LayerReport
from tnlib_torch.layers.reports import as_stored, truncation_report

__all__ = ["SUPPORTED_MODULES", "LayerReport", "select_convs", "truncate_conv_", "truncate_model_"]

CutArg = str | Cut | Sequence[str | Cut]
Seed = int | np.random.Generator | None

#: The module types whose kernels can be truncated.
SUPPORTED_MODULES: tuple[type[nn.Module], ...] = (nn.Conv2d,)

#: Dtypes the core does not compute in; their kernels are truncated in float32 and cast back.
_HALF_DTYPES = (torch.float16, torch.bfloat16)


def _checked_weight(conv: object, name: str) -> torch.Tensor:
    """The kernel of a supported conv, checked; errors name ``name`` (the argument)."""
    if not isinstance(conv, SUPPORTED_MODULES):
        supported = ", ".join(f"torch.nn.{kind.__name__}" for kind in SUPPORTED_MODULES)
        raise TypeError(f"{name} must be a {supported} (the supported module type), got {type(conv).__name__}")
    weight = conv.weight
    if weight.ndim != 4:
        shape = tuple(weight.shape)
        raise ValueError(f"{name}.weight must have 4 dimensions (out, in/groups, kh, kw), got shape {shape}")
    if not (weight.is_floating_point() or weight.is_complex()):
        raise TypeError(f"{name}.weight must have a floating dtype, got {weight.dtype}")
    if not bool(torch.isfinite(weight).all()):
        raise ValueError(f"{name}.weight contains NaN or Inf entries; expected finite values")
    return weight


def truncated_kernel(conv: nn.Conv2d, name: str, cut: CutArg, **kwargs: Any) -> tuple[torch.Tensor, TruncationInfo]:
    """``conv``'s kernel truncated group by group (not yet written back, in its dtype), and its report.

    A float16/bfloat16 kernel is truncated in float32 and rounded back to its
    dtype; the report then gives the errors of the rounded kernel, the one
    written back, against the original (:func:`as_stored`).
    """
    weight = _checked_weight(conv, name).detach()
    if weight.dtype not in _HALF_DTYPES:
        return _truncated_groups(weight, conv.groups, cut, **kwargs)
    truncated, info = _truncated_groups(weight.float(), conv.groups, cut, **kwargs)
    stored = truncated.to(weight.dtype)
    return stored, as_stored(info, weight, stored)


def _truncated_groups(weight: torch.Tensor, groups: int, cut: CutArg, **kwargs: Any) -> tuple[torch.Tensor,
                                                                                                TruncationInfo]:
    """:func:`tnlib.truncate` of each group's block of ``weight``, and the whole kernel's report."""
    with torch.no_grad():
        if groups == 1:
            return tnlib.truncate(weight, cut, KERNEL_LABELS, **kwargs)
        results = [tnlib.truncate(block, cut, KERNEL_LABELS, **kwargs)
                   for block in weight.split(weight.shape[0] // groups)]
        truncated, infos = torch.cat([kernel for kernel, _ in results]), [info for _, info in results]
        ranks = tuple(rank for info in infos for rank in info.ranks)  # group after group
        return truncated, truncation_report(infos, ranks, weight, infos[0].cut)


def truncate_conv_(
    conv: nn.Conv2d,
    cut: CutArg,
    max_rank: int | Sequence[int] | None = None,
    rel_error: float | None = None,
    cutoff: float | None = None,
    method: str = "auto",
    seed: Seed = None,
) -> TruncationInfo:
    """Replace the kernel of ``conv`` by its truncation across ``cut``, in place.

    Parameters
    ----------
    conv
        An ``nn.Conv2d`` (any stride, padding, dilation, groups, bias).
    cut
        ``"o|ihw"``, a :class:`tnlib.Cut`, or a sequence of cuts applied in turn,
        as :func:`tnlib.truncate` takes them; labels ``"oihw"``.
    max_rank, rel_error, cutoff, method, seed
        As in :func:`tnlib.truncate`, applied to each group's kernel ``K_g``:
        ``max_rank`` caps the rank kept across each cut of each group (a cap
        above what the cut allows does not bind), ``rel_error`` is the target
        ``||K_g - K~_g|| <= rel_error ||K_g||`` of each group and so also of the
        whole kernel.  An int ``seed`` seeds each group alike.

    Returns
    -------
    TruncationInfo
        With ``groups == 1``: :func:`tnlib.truncate`'s report.  With ``G > 1``
        groups: ``steps`` holds each group's report in group order; ``ranks``
        their ranks concatenated, group-major (``ranks[g * n_cuts + j]`` is
        group ``g``'s rank across cut ``j``; one rank per group for one cut);
        ``cut`` the cut for a single cut; ``rel_error``, ``norm_loss`` and
        ``discarded_weight`` of the whole kernel, exact from the groups'.
        A float16/bfloat16 kernel is truncated in float32 and rounded back:
        ``rel_error`` and ``norm_loss`` are then measured on the rounded kernel
        written back, against the original.

    Raises
    ------
    TypeError
        ``conv`` is not an ``nn.Conv2d``, or its weight is not floating.
    ValueError
        A weight that is not 4-D or not finite; and :func:`tnlib.truncate`'s
        errors, which name the argument: a cut with a label other than
        ``o, i, h, w`` (``cut``), ``max_rank=0`` (``max_rank``), ...

    Examples
    --------
    >>> import torch
    >>> conv = torch.nn.Conv2d(16, 32, 3)
    >>> weight = conv.weight
    >>> info = truncate_conv_(conv, "o|ihw", max_rank=4)
    >>> info.rank, conv.weight is weight, torch.linalg.matrix_rank(weight.detach().reshape(32, -1)).item()
    (4, True, 4)
    """
    kernel, info = truncated_kernel(
        conv, "conv", cut, max_rank=max_rank, rel_error=rel_error, cutoff=cutoff, method=method, seed=seed
    )
    with torch.no_grad():
        conv.weight.copy_(kernel)
    return info


def factored_params(conv: nn.Conv2d, info: TruncationInfo) -> int | None:
    """For a truncation across one cut: ``sum_g r_g (rows_g + columns_g)`` plus the bias; else ``None``."""
    if info.cut is None:
        return None
    out, *rest = conv.weight.shape
    rows, columns = cut_matrix_shape((out // conv.groups, *rest), Cut(info.cut), KERNEL_LABELS)
    bias = 0 if conv.bias is None else conv.bias.numel()
    return sum(info.ranks) * (rows + columns) + bias


def truncated_layer(name: str, conv: nn.Conv2d, info: TruncationInfo) -> LayerCompression:
    """The record of ``conv``, whose kernel was truncated in place as ``info`` reports."""
    params = count_params(conv)
    return LayerCompression(
        name=name, kind=type(conv).__name__, structure="truncated", ranks=info.ranks, params_before=params,
        params_after=params, rel_error=info.rel_error, norm_loss=info.norm_loss, shape=tuple(conv.weight.shape),
        groups=conv.groups, factored_params=factored_params(conv, info), info=info,
    )


def _patterns(value: str | Sequence[str] | None, name: str) -> tuple[str, ...] | None:
    if value is None:
        return None
    patterns = (value,) if isinstance(value, str) else tuple(value) if isinstance(value, Sequence) else None
    if patterns is None or not all(isinstance(p, str) for p in patterns):
        raise TypeError(f"{name} must be a glob pattern or a sequence of them (str), got {value!r}")
    return patterns


def _indices(layers: int | Sequence[int] | slice | None, count: int, kinds: str) -> set[int] | None:
    if layers is None:
        return None
    if isinstance(layers, slice):
        return set(range(count)[layers])
    items = [layers] if isinstance(layers, int) else layers
    if not isinstance(items, Sequence) or not all(isinstance(i, int) and not isinstance(i, bool) for i in items):
        raise TypeError(f"layers must be an int, a sequence of ints or a slice, got {layers!r}")
    bad = [i for i in items if not -count <= i < count]
    if bad:
        raise ValueError(f"layers: index {bad[0]} is out of range for a model with {count} {kinds} layers")
    return {i % count for i in items}


def select_convs(
    model: nn.Module,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    layers: int | Sequence[int] | slice | None = None,
    where: Callable[[str, nn.Conv2d], bool] | None = None,
) -> list[tuple[str, nn.Conv2d]]:
    """The ``(name, conv)`` pairs of ``model``'s ``nn.Conv2d`` layers that pass every given filter.

    Parameters
    ----------
    model
        Any ``nn.Module``; its convs are taken in ``named_modules()`` order.
    include
        Glob pattern(s) (:func:`fnmatch.fnmatchcase`, case-sensitive; ``*``
        also matches dots) on the qualified name: keep the convs matching any.
        A pattern that matches no conv raises ``ValueError`` (a typo).
    exclude
        Glob pattern(s): drop the convs matching any.
    layers
        Indices into the list of all the model's convs (0 is the first conv,
        negative counts from the end) or a slice, e.g. ``slice(1, None)`` to
        skip the first conv.
    where
        A predicate ``where(name, conv)``, e.g. ``lambda n, c: c.groups == 1``.

    Returns
    -------
    list of (str, nn.Conv2d)
        In model order; possibly empty.
    """
    return select_modules(model, SUPPORTED_MODULES, include, exclude, layers, where)


def select_modules(
    model: nn.Module,
    types: tuple[type[nn.Module], ...],
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    layers: int | Sequence[int] | slice | None = None,
    where: Callable[[str, nn.Module], bool] | None = None,
) -> list[tuple[str, nn.Module]]:
    """:func:`select_convs` for the layers of the given ``types``; ``layers`` indexes the list of those."""
    check_module(model)
    candidates = [(name, module) for name, module in model.named_modules() if isinstance(module, types)]
    kinds = " or ".join(f"nn.{kind.__name__}" for kind in types)
    include, exclude = _patterns(include, "include"), _patterns(exclude, "exclude") or ()
    indices = _indices(layers, len(candidates), kinds)
    if where is not None and not callable(where):
        raise TypeError(f"where must be a callable (name, layer) -> bool, got {where!r}")
    for pattern in include or ():
        if not any(fnmatchcase(name, pattern) for name, _ in candidates):
            raise ValueError(f"include pattern {pattern!r} matches no {kinds} of the model")
    return [
        (name, module)
        for i, (name, module) in enumerate(candidates)
        if (indices is None or i in indices)
        and (include is None or any(fnmatchcase(name, p) for p in include))
        and not any(fnmatchcase(name, p) for p in exclude)
        and (where is None or where(name, module))
    ]


def truncate_model_(
    model: nn.Module,
    cut: CutArg,
    max_rank: int | Sequence[int] | None = None,
    rel_error: float | None = None,
    cutoff: float | None = None,
    method: str = "auto",
    seed: Seed = None,
    *,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    layers: int | Sequence[int] | slice | None = None,
    where: Callable[[str, nn.Conv2d], bool] | None = None,
) -> dict[str, LayerReport]:
    """Truncate the kernels of the selected conv layers of ``model`` in place.

    Every conv chosen by :func:`select_convs` (``include``, ``exclude``,
    ``layers``, ``where``; all of them by default) is truncated by
    :func:`truncate_conv_` with the same ``cut`` and truncation keywords, so a
    ``rel_error`` target holds for each layer's kernel.  All kernels are
    computed before any is written, so an error leaves the model unchanged.

    Returns
    -------
    dict[str, LayerReport]
        One :class:`LayerReport` (the class :class:`LayerCompression`: ``structure="truncated"``,
        ``shape``, ``groups``, ``ranks``, ``rel_error``, ``norm_loss``, ``params``, ``factored_params``,
        ``info``) per truncated layer, keyed by name, in model order.
    """
    kwargs = dict(max_rank=max_rank, rel_error=rel_error, cutoff=cutoff, method=method, seed=seed)
    selected = select_convs(model, include=include, exclude=exclude, layers=layers, where=where)
    results = [
        (name, conv, *truncated_kernel(conv, f"model.{name}".rstrip("."), cut, **kwargs)) for name, conv in selected
    ]
    for _, conv, kernel, _ in results:
        with torch.no_grad():
            conv.weight.copy_(kernel)
    return {name: truncated_layer(name, conv, info) for name, conv, _, info in results}
