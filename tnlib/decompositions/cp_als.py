"""CP by alternating least squares (ALS), with line-search extrapolation.

Each sweep solves, for ``n = 1 .. N`` in turn with the other factors fixed,

    min_{A_n}  ||T_(n) - A_n (A_N o ... o A_1)^T||_F^2 + ridge ||A_n||_F^2
      =>  A_n = M_n (*_{k != n} G_k + ridge I)^{-1},

where ``M_n`` is the mode-``n`` MTTKRP (computed over a dimension tree, see
:mod:`tnlib.decompositions.cp_mttkrp`) and ``G_k = A_k^T A_k``.  The columns of
``A_n`` are then normalized into the weights.  Without ridge and line search
every update is an exact minimization, so the error never increases.

Line search (Bro 1998): after a sweep that moved the factors from ``S`` to
``Y``, the extrapolated point ``Y + eta (Y - S)`` (factors carrying the
weights, balanced across modes) replaces ``Y`` when its error is lower.
``eta`` doubles after a success and halves after a failure.  Accepting only
improvements keeps the error history non-increasing; each attempt costs one
extra contraction with ``T``, about half a sweep.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import autoray as ar

from tnlib import _backend as B
from tnlib.decompositions.cp_fit import balance, gram, hadamard_except, normalize, rel_error_from, stalled
from tnlib.decompositions.cp_mttkrp import DimensionTree

Array = Any

#: The first extrapolation step of the line search, and its bounds.
ETA_START, ETA_MIN, ETA_MAX = 1.0, 0.25, 16.0


def als(
    tensor: Array,
    weights: Array,
    factors: Sequence[Array],
    max_iter: int,
    tol: float,
    ridge: float = 0.0,
    line_search: bool = True,
) -> tuple[Array, list[Array], list[float], bool]:
    """Run ALS sweeps from a CP model; return ``(weights, factors, history, converged)``.

    Stops (``converged``) when the relative error fell by at most a fraction
    ``tol`` over the last ``STOP_WINDOW`` sweeps (:func:`stalled`), else after
    ``max_iter`` sweeps; ``tol = 0`` always runs ``max_iter`` sweeps (the error
    is estimated without the dense model, so ALS cannot tell an exact fit).
    """
    tree = DimensionTree(tensor.shape)
    norm_sq = B.frobenius_norm(tensor) ** 2
    weights, factors = normalize(balance(weights, factors))
    grams = [gram(f) for f in factors]
    history: list[float] = []
    eta = ETA_START
    ridge_matrix = ar.do("diag", ar.do("ones_like", weights)) * ridge if ridge else 0.0
    last: dict[str, Array] = {}

    def update(n: int, mttkrp: Array) -> None:
        nonlocal weights
        solved = B.solve_gram(mttkrp, hadamard_except(grams, n) + ridge_matrix)
        weights, (factors[n],) = normalize([solved])
        grams[n] = gram(factors[n])
        last["mttkrp"] = mttkrp

    for _ in range(max_iter):
        start = balance(weights, factors) if line_search else None
        tree.sweep(tensor, factors, update)
        # <T, T~> from the last mode's MTTKRP, which used the final factors of the other modes
        projections = ar.do("sum", last["mttkrp"] * factors[-1], axis=0)
        error = rel_error_from(norm_sq, projections, weights, grams)
        if line_search:
            swept = balance(weights, factors)
            trial_weights, trial = normalize([y + eta * (y - s) for y, s in zip(swept, start)])
            trial_grams = [gram(f) for f in trial]
            trial_error = rel_error_from(norm_sq, tree.projections(tensor, trial), trial_weights, trial_grams)
            if trial_error < error:
                weights, factors[:], grams[:], error = trial_weights, trial, trial_grams, trial_error
                eta = min(2 * eta, ETA_MAX)
            else:
                eta = max(eta / 2, ETA_MIN)
        history.append(error)
        if stalled(history, tol):
            return weights, factors, history, True
    return weights, factors, history, False
