"""Tucker decompositions: HOSVD, sequentially truncated HOSVD and HOOI.

A Tucker decomposition writes a tensor as a small core multiplied along some of
its modes by factor matrices with orthonormal columns,

    T ~= G x_{m_1} U_1 x_{m_2} U_2 ...,    U_m of shape (d_m, r_m),  U_m^H U_m = I,

where ``x_m`` is the mode-``m`` product.  Modes left out stay in the core at
full size: ``modes=(0, 1)`` of a conv kernel ``(out, in, kh, kw)`` is the
Tucker-2 decomposition of Kim et al. (2015), whose core keeps the spatial modes.

With orthonormal factors the core is ``G = T x_m U_m^H`` and the error is
``||T - T~||**2 = ||T||**2 - ||G||**2``.  The methods (a registry,
``TUCKER_METHODS``):

``"hosvd"``
    Each factor from the truncated SVD of the mode unfolding of ``T``.  The
    squared errors of the modes bound the total from above, so giving each
    mode ``rel_error / sqrt(#modes)`` guarantees ``rel_error``.
``"sthosvd"``
    Sequentially truncated HOSVD (Vannieuwenhoven et al. 2012): each mode is
    truncated on the core left by the previous ones, which is cheaper.  The
    errors are orthogonal and add in squares, so the budget is spent mode by
    mode (an equal share of what is left), guaranteeing ``rel_error``.
``"hooi"``
    Higher-order orthogonal iteration from the ST-HOSVD result at its ranks:
    each factor in turn becomes the leading singular subspace of ``T``
    projected on the other factors.  The error never increases; iterations
    stop when it changes by less than ``tol`` (relative) or after ``max_iter``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import Any

import autoray as ar

from tnlib import _backend as B
from tnlib._validation import check_array, check_choice, check_ordered, check_positive_int
from tnlib.cuts import resolve_labels
from tnlib.decompositions.base import ErrorBudget, FactorizedTensor, truncate_keeping_one
from tnlib.metric import Metric, check_single_labels
from tnlib.truncation import TruncationInfo, TruncationSpec

Array = Any


def mode_product(tensor: Array, matrix: Array, mode: int) -> Array:
    """``tensor x_mode matrix``: contract ``matrix[:, j]`` with index ``mode`` of ``tensor``."""
    out = ar.do("tensordot", matrix, tensor, ([1], [mode]))
    perm = list(range(1, out.ndim))
    perm.insert(mode, 0)
    return ar.do("transpose", out, perm)


def unfold(tensor: Array, mode: int) -> Array:
    """The mode-``mode`` unfolding: rows run over that index, columns over the others (row-major)."""
    perm = [mode] + [k for k in range(tensor.ndim) if k != mode]
    return ar.do("reshape", ar.do("transpose", tensor, perm), (tensor.shape[mode], -1))


class TuckerTensor(FactorizedTensor):
    """A core and orthonormal factor matrices on some of its modes.

    Attributes
    ----------
    core
        Array whose size along each mode in ``modes`` is that mode's rank.
    factors
        ``U_m`` of shape ``(d_m, r_m)``, one per entry of ``modes``.
    modes
        The decomposed modes; the others stay at full size in the core.
    info
        :class:`TruncationInfo` (``ranks`` per mode in ``modes``, realized error).
    """

    def __init__(self, core: Array, factors: Sequence[Array], modes: Sequence[int],
                 info: TruncationInfo | None = None) -> None:
        self.core, self.factors, self.modes = core, list(factors), tuple(modes)
        self.info = info

    @property
    def shape(self) -> tuple[int, ...]:
        dims = list(self.core.shape)
        for mode, factor in zip(self.modes, self.factors):
            dims[mode] = factor.shape[0]
        return tuple(dims)

    @property
    def ranks(self) -> tuple[int, ...]:
        return tuple(factor.shape[1] for factor in self.factors)

    @property
    def num_params(self) -> int:
        return math.prod(self.core.shape) + sum(math.prod(f.shape) for f in self.factors)

    def to_dense(self) -> Array:
        """``core x_m U_m`` over the decomposed modes."""
        out = self.core
        for mode, factor in zip(self.modes, self.factors):
            out = mode_product(out, factor, mode)
        return out

    def __repr__(self) -> str:
        return f"TuckerTensor(shape={self.shape}, modes={self.modes}, ranks={self.ranks})"


def _leading_subspace(matrix: Array, spec: TruncationSpec) -> tuple[Array, TruncationInfo]:
    u, _, _, info = truncate_keeping_one(matrix, spec)
    return u, info


def _report(x: Array, result: TuckerTensor, steps: Sequence[TruncationInfo]) -> TruncationInfo:
    """The realized error, measured on the dense result (a subtraction of norms would lose it below 1e-8)."""
    norm = B.frobenius_norm(x)
    if norm == 0:
        return TruncationInfo(result.ranks, 0.0, 0.0, 0.0, steps=tuple(steps))
    kept = min(B.frobenius_norm(result.core) / norm, 1.0)  # orthonormal factors keep the core's norm
    return TruncationInfo(result.ranks, B.frobenius_norm(x - result.to_dense()) / norm, 1.0 - kept, 1.0 - kept**2,
                          steps=tuple(steps))


def _hosvd(x, modes, ranks, spec, max_iter, tol):
    share = None if spec.rel_error is None else spec.rel_error / math.sqrt(len(modes))
    factors, steps = [], []
    for mode, rank in zip(modes, ranks):
        u, info = _leading_subspace(unfold(x, mode), TruncationSpec(rank, share, spec.cutoff))
        factors.append(u)
        steps.append(info)
    core = x
    for mode, u in zip(modes, factors):
        core = mode_product(core, B.conj_transpose(u), mode)
    return core, factors, steps


def _sthosvd(x, modes, ranks, spec, max_iter, tol):
    budget = ErrorBudget(B.frobenius_norm(x), spec.rel_error, len(modes))
    core, factors, steps = x, [], []
    for mode, rank in zip(modes, ranks):
        u, _, _, info = budget.truncate(unfold(core, mode), rank, spec.cutoff, "auto")
        core = mode_product(core, B.conj_transpose(u), mode)
        factors.append(u)
        steps.append(info)
    return core, factors, steps


def _relative_error_sq(core: Array, norm: float) -> float:
    """``||T - T~||**2 / ||T||**2 = 1 - (||G|| / ||T||)**2`` for orthonormal factors (0 for a zero tensor).

    A ratio of norms, so that no scale of ``T`` overflows or underflows it.
    """
    return 1.0 - (B.frobenius_norm(core) / norm) ** 2 if norm > 0 else 0.0


def _hooi(x, modes, ranks, spec, max_iter, tol):
    core, factors, steps = _sthosvd(x, modes, ranks, spec, max_iter, tol)
    ranks = [u.shape[1] for u in factors]
    norm = B.frobenius_norm(x)
    error_sq = _relative_error_sq(core, norm)
    # A mode kept at full rank has a square orthogonal factor: projecting on it changes no
    # other mode's singular subspace, so the sweeps update and project only the truncated modes.
    active = [k for k, mode in enumerate(modes) if ranks[k] < x.shape[mode]]
    for _ in range(max_iter if active else 0):
        for k in active:
            projected = x
            for j in active:
                if j != k:
                    projected = mode_product(projected, B.conj_transpose(factors[j]), modes[j])
            factors[k], _ = _leading_subspace(unfold(projected, modes[k]), TruncationSpec(max_rank=ranks[k]))
        core = x
        for mode, u in zip(modes, factors):
            core = mode_product(core, B.conj_transpose(u), mode)
        new_error_sq = _relative_error_sq(core, norm)
        change = abs(error_sq - new_error_sq)
        error_sq = new_error_sq
        if change <= tol:
            break
    return core, factors, steps


TUCKER_METHODS: dict[str, Callable] = {"hosvd": _hosvd, "sthosvd": _sthosvd, "hooi": _hooi}


def _check_modes(modes: Any, ndim: int) -> tuple[int, ...]:
    if modes is None:
        return tuple(range(ndim))
    if not isinstance(check_ordered(modes, "modes"), Iterable):
        raise TypeError(f"modes must be None or a sequence of distinct integers in [0, {ndim - 1}], got {modes!r}")
    modes = tuple(modes)
    for m in modes:
        if isinstance(m, bool) or not isinstance(m, numbers.Integral) or not 0 <= m < ndim:
            raise ValueError(f"modes must be distinct integers in [0, {ndim - 1}], got {modes}")
    if len(set(modes)) != len(modes) or not modes:
        raise ValueError(f"modes must be distinct integers in [0, {ndim - 1}] (at least one), got {modes}")
    return modes


def _check_ranks(ranks: Any, modes: tuple[int, ...], shape: tuple[int, ...]) -> list[int | None]:
    """One cap per mode in ``modes``; a cap above the mode's size does not bind, so it becomes that size."""
    if ranks is None:
        return [None] * len(modes)
    if isinstance(ranks, numbers.Integral):
        ranks = [ranks] * len(modes)
    elif isinstance(ranks, Sequence) and not isinstance(ranks, str):
        ranks = list(ranks)
    else:
        raise TypeError(f"ranks must be None, a positive int or a sequence of them (one per mode), got {ranks!r:.60}")
    if len(ranks) != len(modes):
        raise ValueError(f"ranks must be an int or one int per mode in modes {modes}, got {len(ranks)} values")
    return [min(check_positive_int(rank, "ranks"), shape[mode]) for mode, rank in zip(modes, ranks)]


def tucker(
    tensor: Array,
    ranks: int | Sequence[int] | None = None,
    rel_error: float | None = None,
    cutoff: float | None = None,
    modes: Sequence[int] | None = None,
    method: str = "sthosvd",
    max_iter: int = 50,
    tol: float = 1e-10,
    *,
    labels: str | Sequence[str] | None = None,
    metric: Mapping[str, Array] | None = None,
) -> TuckerTensor:
    """Tucker decomposition with orthonormal factors on ``modes`` (all by default).

    ``ranks``, ``rel_error`` and ``cutoff`` are the truncation vocabulary of
    :mod:`tnlib.truncation` applied per mode: each allows some rank and the
    smallest is kept (the most restrictive wins).

    Parameters
    ----------
    tensor
        Array of any order and backend.
    ranks
        Multilinear ranks, the ``max_rank`` of each mode: an int for every
        decomposed mode or one per mode in ``modes``.  A cap, as ``max_rank``
        everywhere: one above a mode's size (or the rank of its unfolding)
        does not bind.
    rel_error
        Target for ``||T - T~||_F / ||T||_F``; guaranteed by ``"hosvd"`` and
        ``"sthosvd"`` (and by ``"hooi"``, which starts from ST-HOSVD and never
        increases the error) unless ``ranks`` or ``cutoff`` binds first.
        HOSVD gives each mode ``rel_error / sqrt(#modes)``; ST-HOSVD spends the
        budget ``(rel_error ||T||)**2`` mode by mode, an equal share of what is
        left, the error a cutoff or rank cap already spent included.
    cutoff
        Per mode, drop the singular values below ``cutoff * s_max`` of the
        unfolding truncated at that mode: ``T``'s own for ``"hosvd"``, the
        core the previous modes left for ``"sthosvd"`` and for ``"hooi"``
        (whose iterations keep the ranks ST-HOSVD chose).
    modes
        The modes to decompose; ``(0, 1)`` of a conv kernel is Tucker-2.
    method
        ``"sthosvd"`` (default), ``"hosvd"`` or ``"hooi"`` (see module docs).
    max_iter, tol
        HOOI's iteration limit and its stopping rule on the relative change of
        the squared error.
    labels
        One character per index (default ``"oihw"`` for 4-index tensors); they
        name the groups of ``metric``.
    metric
        ``{group: M}`` (:mod:`tnlib.metric`): decompose in the norm
        ``||X||_M``.  The decomposition of ``T' = T x L^T`` is mapped back: a
        decomposed mode's group must be that label alone (its factor becomes
        ``L^{-T} U'``, no longer orthonormal but ``M``-orthonormal, ``U^T M U
        = I``), and a group of modes left in the core (``"hw"`` of Tucker-2)
        is mapped back on the core.  ``rel_error`` and ``info`` are then in the
        metric's norm.  For Tucker-2 of a conv kernel: ``{"i": M_i, "hw":
        M_hw}``, or ``{"i": M_i}``.

    Returns
    -------
    TuckerTensor
        On the tensor's backend; ``info`` reports the ranks and realized error
        (measured on the dense result), and each mode's truncation in ``steps``.

    Examples
    --------
    >>> import numpy as np, tnlib
    >>> k = np.random.default_rng(0).standard_normal((16, 8, 3, 3))
    >>> t = tnlib.tucker(k, ranks=(4, 2), modes=(0, 1))
    >>> t.core.shape, t.ranks, round(t.info.rel_error, 6) == round(t.rel_error(k), 6)
    ((4, 2, 3, 3), (4, 2), True)
    >>> tnlib.tucker(k, ranks=(99, 2), modes=(0, 1)).ranks    # a cap above a mode's size does not bind
    (16, 2)
    """
    x = check_array(tensor, "tensor")
    modes = _check_modes(modes, x.ndim)
    rank_list = _check_ranks(ranks, modes, tuple(x.shape))
    spec = TruncationSpec.from_kwargs(None, rel_error, cutoff)
    check_choice(method, "method", TUCKER_METHODS)
    max_iter = check_positive_int(max_iter, "max_iter")
    if isinstance(tol, bool) or not isinstance(tol, numbers.Real) or not tol >= 0:
        raise ValueError(f"tol must be a real number >= 0, got {tol!r}")
    names = None if labels is None and metric is None else resolve_labels(labels, x.ndim)
    structure = "tucker (each decomposed mode apart from the rest)"
    decomposed = None if names is None else [names[m] for m in modes]
    weights = Metric.build(metric, names, x, partial(check_single_labels, labels=decomposed, structure=structure))
    if weights is not None:
        x = weights.to_metric_space(x)
    core, factors, steps = TUCKER_METHODS[method](x, modes, rank_list, spec, max_iter, float(tol))
    result = TuckerTensor(core, factors, modes)
    result.info = _report(x, result, steps)
    return result if weights is None else _from_metric_space(result, weights, names)


def _from_metric_space(result: TuckerTensor, weights: Metric, labels: str) -> TuckerTensor:
    """The decomposition of ``T' = T x L^T`` mapped back: factors of decomposed modes, the core's other legs."""
    decomposed = {labels[m]: k for k, m in enumerate(result.modes)}
    factors = list(result.factors)
    for group in weights.groups:
        if group in decomposed:
            factors[decomposed[group]] = weights.leg_from_metric_space(group, factors[decomposed[group]])
    core = weights.from_metric_space(result.core, [g for g in weights.groups if g not in decomposed])
    return TuckerTensor(core, [B.astype(f, weights.dtype) for f in factors], result.modes, result.info)
