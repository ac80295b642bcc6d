"""CP fits at a ladder of increasing ranks, each warm-started from the one below.

``cp_ladder(T, [R_1 < R_2 < ... < R_K])`` fits ``R_1`` from the ``"svd"``
initialization, then each ``R_{k+1}`` from the fit at ``R_k`` *padded*: its
``R_k`` components plus ``R_{k+1} - R_k`` new ones initialized on its residual
``T - T~_k`` (the ``"svd"`` initialization of the residual, whose weights
minimize ``||(T - T~_k) - new||_F``), with at most ``sweeps`` iterations per
rung.  The work is bounded, ``sweeps * sum_k (cost of one iteration at R_k)``,
and far below independent fits, which each descend from scratch.

Guarantee.  The new weights are the least-squares fit of the residual, and
zero weights are a candidate, so the padded model is at least as good as the
rung below: ``||T - padded|| <= ||T - T~_k||``.  ALS (every update an exact
least-squares solve, an extrapolation kept only when it lowers the error) and
LM (a step taken only when it lowers the dense error) never raise the error
from their start, so

    rel_error(R_{k+1}) <= rel_error(R_k)

along the whole ladder, up to round-off.  LM measures the error densely, to
about ``eps`` relative to ``||T||``.  ALS decides an extrapolation by an
estimate of the error resolved to about ``eps / rel_error`` relative to
``||T||``, so a rung may exceed the one below by that much: nothing for an
approximation, up to about 1e-8 for a fit that is exact (``rel_error`` near
``sqrt(eps)``).  With ``ridge > 0`` ALS minimizes the penalized objective
``||T - T~||^2 + ridge * sum_r w_r^2`` instead, so the errors may rise along
the ladder (by about what the penalty saves).

Metric.  With ``metric`` (:mod:`tnlib.metric`) the whole ladder runs in the
metric space: ``T' = T x L^T`` is formed once, the ladder (padding included)
runs on ``T'`` in the Frobenius norm, and each rung is mapped back
(``A_n = L_n^{-T} A_n'``).  Since ``||X||_M = ||X'||_F``, the residual the
padding fits, the errors reported and the guarantee are all in the metric's
norm, exactly as a ``cp(..., metric=metric)`` call would compute them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import autoray as ar
import numpy as np

from tnlib import _backend as B
from tnlib._validation import (
    check_choice,
    check_nonnegative_real,
    check_positive_int,
    check_seed,
    describe,
)
from tnlib.decompositions.cp import CP_METHODS, _initial_model, check_rank, check_real_tensor, cp, metric_space
from tnlib.decompositions.cp_fit import canonical
from tnlib.decompositions.cp_tensor import CPTensor
from tnlib.metric import Metric

Array = Any


def _padded(x: Array, model: CPTensor, rank: int, rng: np.random.Generator) -> CPTensor:
    """``model`` plus ``rank - model.rank`` components initialized on its residual ``x - model``.

    The new components are the ``"svd"`` initialization of the residual (their
    weights the least-squares fit of it), so the padded model's error is at
    most ``model``'s.
    """
    weights, factors = _initial_model(x - model.to_dense(), rank - model.rank, "svd", rng)
    return CPTensor(ar.do("concatenate", (model.weights, weights)),
                    [ar.do("concatenate", (a, b), axis=1) for a, b in zip(model.factors, factors)])


def _check_ranks(ranks: Any, shape: Sequence[int]) -> list[int]:
    """The distinct ranks in increasing order, each checked by :func:`check_rank`."""
    if isinstance(ranks, (str, bytes, Mapping)) or not isinstance(ranks, Iterable):
        raise TypeError(f"ranks must be a sequence of positive integers, got {describe(ranks)}")
    ranks = list(ranks)
    if not ranks:
        raise ValueError("ranks must hold at least one rank, got an empty sequence")
    return sorted({check_rank(rank, shape, f"ranks[{n}]") for n, rank in enumerate(ranks)})


def _to_tensor_space(model: CPTensor, space: Metric | None, labels: str | None, dtype: str) -> CPTensor:
    """A rung fitted in working precision (and metric space) as :func:`tnlib.cp` returns it: in ``dtype``."""
    weights, factors = model.weights, model.factors
    if space is not None:
        factors = [space.leg_from_metric_space(c, f) if c in space.groups else f for c, f in zip(labels, factors)]
        weights, factors = canonical(weights, factors)
    return CPTensor(B.astype(weights, dtype), [B.astype(f, dtype) for f in factors], model.info)


def cp_ladder(
    tensor: Array,
    ranks: Sequence[int],
    *,
    method: str = "als",
    sweeps: int = 25,
    tol: float = 1e-6,
    seed: int | np.random.Generator | None = None,
    ridge: float = 0.0,
    labels: str | Sequence[str] | None = None,
    metric: Mapping[str, Array] | None = None,
) -> list[CPTensor]:
    """CP fits at increasing ranks, each warm-started from the fit below padded on its residual.

    Parameters
    ----------
    tensor
        Real array of order at least 2, any backend; fitted in working
        precision (float64), returned in its dtype.
    ranks
        The ranks to fit, each from 1 to ``prod(shape) / max(shape)`` (as
        :func:`tnlib.cp`); they are fitted, and returned, in increasing order,
        repeats once.
    method
        ``"als"`` (default) or ``"lm"``, as in :func:`tnlib.cp`.
    sweeps
        The most iterations (ALS sweeps, LM steps) per rung, at least 1.
    tol
        The stopping rule of :func:`tnlib.cp` within each rung.
    seed
        Seed of the random columns of the ``"svd"`` initializations (used only
        where a rung adds more components than a mode's size); the same seed
        gives the same ladder.
    ridge
        ALS only, as in :func:`tnlib.cp` (checked there): every rung's fit
        adds ``ridge * sum_r w_r^2`` to its squared error, which keeps the
        terms from growing large and cancelling (a degenerate fit); the
        errors then need not fall along the ladder.
    labels, metric
        As in :func:`tnlib.cp`: fit, pad and report in the norm ``||X||_M``;
        the whole ladder runs in the metric space (see the module docs).

    Returns
    -------
    list of CPTensor
        One fit per distinct rank, in increasing rank; each ``info`` (a
        :class:`~tnlib.decompositions.cp_tensor.CPFit`) reports its
        ``rel_error`` measured on the dense model (in the metric's norm with
        ``metric``).  The errors never increase along the list, up to
        round-off (see the module docs).

    Examples
    --------
    >>> import numpy as np, tnlib
    >>> rng = np.random.default_rng(0)
    >>> t = np.einsum("ir,jr,kr->ijk", *(rng.standard_normal((d, 3)) for d in (6, 5, 4)))
    >>> ladder = tnlib.cp_ladder(t, [1, 2, 3], sweeps=200, seed=0)
    >>> [m.rank for m in ladder], ladder[-1].info.rel_error < 1e-8
    ([1, 2, 3], True)
    """
    x = check_real_tensor(tensor, "cp_ladder")
    ranks = _check_ranks(ranks, x.shape)
    check_choice(method, "method", CP_METHODS)
    sweeps = check_positive_int(sweeps, "sweeps")
    tol = check_nonnegative_real(tol, "tol")
    rng = check_seed(seed)
    dtype = B.dtype_name(x)
    space, names = metric_space(x, labels, metric)
    work = B.astype(x, B.WORKING_DTYPES[dtype]) if space is None else space.to_metric_space(x)
    fits: list[CPTensor] = []
    for rank in ranks:
        init = _padded(work, fits[-1], rank, rng) if fits else "svd"
        fits.append(cp(work, rank, method=method, init=init, max_iter=sweeps, tol=tol, seed=rng, ridge=ridge))
    return [_to_tensor_space(fit, space, names, dtype) for fit in fits]
