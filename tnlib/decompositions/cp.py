"""CP (canonical polyadic, CANDECOMP/PARAFAC) decomposition of a real tensor.

``cp`` fits a weighted sum of ``rank`` rank-one tensors,

    min_{w, A_1..A_N}  ||T - sum_r w_r a^(1)_r o ... o a^(N)_r||_F,

a non-convex problem without a closed-form solution: the algorithms (a
registry, ``CP_METHODS``) descend from an initialization and never increase
the error.

``"als"``
    Alternating least squares (:mod:`tnlib.decompositions.cp_als`).
``"lm"``
    Levenberg-Marquardt on all factors at once (:mod:`tnlib.decompositions.cp_lm`).

Initializations (``CP_INITS``): ``"svd"`` takes the leading left singular
vectors of each mode unfolding (at most ``d_n`` of them; the remaining columns
are random), ``"random"`` takes Gaussian factors; either gets the weights that
best fit ``T`` for those factors.  A :class:`CPTensor` of the same shape and
rank starts from that model (a warm start).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any

import autoray as ar
import numpy as np

from tnlib import _backend as B
from tnlib._validation import (
    check_array,
    check_choice,
    check_nonnegative_int,
    check_nonnegative_real,
    check_positive_int,
    check_seed,
)
from tnlib.cuts import resolve_labels
from tnlib.decompositions.cp_als import als
from tnlib.decompositions.cp_fit import canonical, gram, hadamard
from tnlib.decompositions.cp_lm import lm
from tnlib.decompositions.cp_mttkrp import DimensionTree
from tnlib.decompositions.cp_tensor import CPFit, CPTensor
from tnlib.decompositions.tucker import unfold
from tnlib.metric import Metric, check_single_labels
from tnlib.svd import truncated_svd_checked
from tnlib.truncation import TruncationSpec

Array = Any

CP_METHODS: dict[str, Callable] = {"als": als, "lm": lm}
CP_INITS = ("svd", "random")


def check_rank(rank: Any, shape: Sequence[int], name: str = "rank") -> int:
    """A CP rank in ``[1, prod(shape) / max(shape)]``, checked before anything is allocated.

    Every tensor of ``shape`` is the sum of ``prod(shape) / max(shape)``
    rank-one terms, one per fiber along its largest mode (the fiber times unit
    vectors selecting its indices in the other modes), so no larger rank
    lowers the error, while the factors and Grams grow with it (rank 10^5
    would ask for ``R^2`` doubles, 74 GiB).  A larger rank is refused with a
    ``ValueError`` naming ``name``.
    """
    rank = check_positive_int(rank, name)
    bound = math.prod(shape) // max(shape)
    if rank > bound:
        raise ValueError(f"{name} = {rank} exceeds {bound}, the largest useful CP rank of a tensor of shape "
                         f"{tuple(shape)}: every such tensor has an exact CP decomposition of rank "
                         "prod(shape) / max(shape)")
    return rank


def check_real_tensor(tensor: Any, caller: str) -> Array:
    """The tensor of a CP fit: an array of order at least 2 with real entries (``caller`` names the function)."""
    x = check_array(tensor, "tensor", min_ndim=2)
    if B.is_complex(x):
        raise TypeError(f"tensor must be real for {caller} (float32 or float64), got {B.dtype_name(x)}")
    return x


def metric_space(x: Array, labels: Any, metric: Any) -> tuple[Metric | None, str | None]:
    """The checked metric of a CP fit of ``x`` (``None`` without one) and the labels it is keyed by."""
    names = None if labels is None and metric is None else resolve_labels(labels, x.ndim)
    structure = "cp (every mode apart from the others)"
    return Metric.build(metric, names, x, partial(check_single_labels, labels=names, structure=structure)), names


def _random_columns(rng: np.random.Generator, rows: int, cols: int, like: Array) -> Array:
    return B.from_numpy(rng.standard_normal((rows, cols)), like)


def _svd_factor(x: Array, mode: int, rank: int, rng: np.random.Generator) -> Array:
    """Leading left singular vectors of the mode unfolding, random columns beyond ``d_mode``."""
    size = x.shape[mode]
    u, _, _, _ = truncated_svd_checked(unfold(x, mode), TruncationSpec(max_rank=min(rank, size)), "auto", rng)
    if rank <= size:
        return u
    return ar.do("concatenate", (u, _random_columns(rng, size, rank - size, x)), axis=1)


def _fitted_weights(x: Array, factors: list[Array]) -> Array:
    """``w`` minimizing ``||T - [[w; A]]||``: the solution of ``(*_k G_k) w = b``, ``b_r = <T, rank-one r>``."""
    projections = DimensionTree(x.shape).projections(x, factors)
    return B.solve_gram(projections[None, :], hadamard([gram(f) for f in factors]))[0]


def _initial_model(
    x: Array, rank: int, init: Any, rng: np.random.Generator, exponent: int = 0
) -> tuple[Array, list[Array]]:
    """The starting weights and factors of a fit to ``x``, which is the tensor times ``2**-exponent``."""
    if isinstance(init, CPTensor):
        if init.shape != tuple(x.shape) or init.rank != rank:
            raise ValueError(f"init: a CPTensor warm start must have shape {tuple(x.shape)} and rank {rank}, "
                             f"got shape {init.shape} and rank {init.rank}")
        if any(B.backend_of(a) != B.backend_of(x) for a in (init.weights, *init.factors)):
            raise TypeError(f"init: the warm start's arrays must be {B.backend_of(x)} arrays like the tensor")
        weights = B.times_power_of_two(B.astype(init.weights, B.dtype_name(x)), -exponent)
        return weights, [B.astype(f, B.dtype_name(x)) for f in init.factors]
    if not isinstance(init, str):
        raise TypeError(f"init must be one of {CP_INITS} or a CPTensor, got {type(init).__name__}")
    check_choice(init, "init", CP_INITS)
    if init == "svd":
        factors = [_svd_factor(x, mode, rank, rng) for mode in range(x.ndim)]
    else:
        factors = [_random_columns(rng, size, rank, x) for size in x.shape]
    return _fitted_weights(x, factors), factors


def _warm_start_to_metric_space(init: Any, x: Array, space: Metric, labels: str) -> Any:
    """A :class:`CPTensor` warm start for ``x`` mapped to metric space (``A_n' = L_n^T A_n``).

    Anything else (a string, a warm start of the wrong shape or backend) is returned unchanged, for
    :func:`_initial_model` to check.
    """
    if not isinstance(init, CPTensor) or init.shape != tuple(x.shape):
        return init
    if any(B.backend_of(a) != B.backend_of(x) for a in (init.weights, *init.factors)):
        return init
    factors = [space.leg_to_metric_space(c, f) if c in space.groups else f for c, f in zip(labels, init.factors)]
    return CPTensor(init.weights, factors)


def cp(
    tensor: Array,
    rank: int,
    method: str = "als",
    init: str | CPTensor = "svd",
    max_iter: int = 100,
    tol: float = 1e-8,
    seed: int | np.random.Generator | None = None,
    *,
    ridge: float = 0.0,
    line_search: bool = True,
    labels: str | Sequence[str] | None = None,
    metric: Mapping[str, Array] | None = None,
) -> CPTensor:
    """CP decomposition of rank ``rank``: unit-norm factor columns and decreasing weights.

    Parameters
    ----------
    tensor
        Real array of order at least 2, any backend.  Single precision is
        computed in double precision and returned in single precision.
    rank
        Number of rank-one terms ``R``, from 1 to ``prod(shape) / max(shape)``
        (the rank at which every tensor of that shape is exact; it may exceed
        every mode's size).
    method
        ``"als"`` (default) or ``"lm"``; see the module docs.
    init
        ``"svd"`` (default), ``"random"`` or a :class:`CPTensor` of the same
        shape and rank to start from.
    max_iter
        Iteration limit (an ALS sweep or an LM step); 0 returns the
        initialization.
    tol
        Stop (``converged``) when the relative error ``e`` fell by at most a
        fraction ``tol`` over the last ``W = 30`` iterations,
        ``e_{k-W} - e_k <= tol * e_{k-W}`` (a window, so that a swamp, where
        the error can stand still for twenty sweeps before it falls, is not
        taken for convergence).  LM also stops when no step decreases the
        error at working precision.  ``tol=0`` runs all ``max_iter``
        iterations; only an exact fit or an exactly zero gradient (LM) ends
        it sooner.
    seed
        Seed of the random columns of ``"svd"``/``"random"`` initialization;
        the same seed gives the same result.
    ridge
        ALS only: adds ``ridge * ||A_n||_F^2`` to each least-squares update.
        The other factors' columns have unit norm, so ALS then minimizes
        ``||T - T~||_F^2 + ridge * sum_r w_r^2``: a dimensionless weight (the
        same for ``T`` and ``c T``) that keeps the terms from growing large and
        cancelling one another (a degenerate fit, ill-conditioned for later
        gradient steps); the error may then rise.
    line_search
        ALS only: try an extrapolated point after every sweep (default True).
    labels
        One character per index (default ``"oihw"`` for 4-index tensors); they
        name the groups of ``metric``.
    metric
        ``{label: M}`` (:mod:`tnlib.metric`): fit in the norm ``||X||_M``.  CP
        splits every mode from the others, so each group must be a single
        label.  The fit to ``T' = T x L^T`` (a warm start ``init`` is mapped
        there first) is mapped back, ``A_n = L_n^{-T} A_n'``, then normalized
        and sorted as usual; ``info`` and ``history`` are in the metric's norm.

    Returns
    -------
    CPTensor
        With ``info``, a :class:`~tnlib.decompositions.cp_tensor.CPFit`: the
        realized ``rel_error``, ``norm_loss`` and ``discarded_weight``
        measured on the dense model in working precision, ``method``,
        ``iterations``, ``converged`` and ``history`` (relative error after
        each iteration, non-increasing unless ``ridge > 0``), the latter two
        also read as ``history`` and ``converged``.  ALS computes the error
        without the dense model, resolved to about 1e-8 relative (below that
        the window rule sees rounding noise and stops within about ``W``
        sweeps); LM measures it on the dense residual, to about 1e-15.

    Examples
    --------
    >>> import numpy as np, tnlib
    >>> rng = np.random.default_rng(0)
    >>> a, b, c = (rng.standard_normal((d, 3)) for d in (6, 5, 4))
    >>> t = np.einsum("ir,jr,kr->ijk", a, b, c)
    >>> model = tnlib.cp(t, 3, method="lm", seed=0)
    >>> model.converged, model.rel_error(t) < 1e-8
    (True, True)
    """
    x = check_real_tensor(tensor, "cp")
    rank = check_rank(rank, x.shape)
    check_choice(method, "method", CP_METHODS)
    max_iter = check_nonnegative_int(max_iter, "max_iter")
    tol = check_nonnegative_real(tol, "tol")
    rng = check_seed(seed)
    ridge = check_nonnegative_real(ridge, "ridge")
    if not isinstance(line_search, bool):
        raise TypeError(f"line_search must be True or False, got {line_search!r}")
    if method != "als" and ridge:
        raise ValueError(f"ridge applies to method='als' only, got ridge={ridge} with method={method!r}")
    dtype = B.dtype_name(x)
    space, names = metric_space(x, labels, metric)
    if space is not None:
        init = _warm_start_to_metric_space(init, x, space, names)
        x = space.to_metric_space(x)
    # fit the tensor scaled exactly by a power of two when its entries are so large or small that
    # squared norms would overflow or underflow; the weights are scaled back at the end
    work, exponent = B.unit_scaled(B.astype(x, B.WORKING_DTYPES[dtype]))
    weights, factors = _initial_model(work, rank, init, rng, exponent)
    options = {"ridge": ridge, "line_search": line_search} if method == "als" else {}
    weights, factors, history, converged = CP_METHODS[method](work, weights, factors, max_iter, tol, **options)
    info = CPFit.measure(work, weights, factors, method, history, converged)
    if space is not None:
        factors = [space.leg_from_metric_space(c, f) if c in space.groups else f for c, f in zip(names, factors)]
    weights, factors = canonical(B.times_power_of_two(weights, exponent), factors)
    return CPTensor(B.astype(weights, dtype), [B.astype(f, dtype) for f in factors], info)
