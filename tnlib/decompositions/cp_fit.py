"""What the CP algorithms share: Gram products, the error without the dense model, normal forms.

With factor Gram matrices ``G_k = A_k^T A_k`` and projections
``b_r = <T, a^(1)_r o ... o a^(N)_r>`` the squared error of a CP model is

    ||T - T~||^2 = ||T||^2 - 2 w^T b + w^T (G_1 * ... * G_N) w       (* elementwise),

which costs no dense reconstruction.  It suffers cancellation once the error
falls to about ``sqrt(eps) ||T||`` (1.5e-8 relative in double precision).  ALS
steers and stops by it; LM measures its trial points on the dense residual
(:mod:`tnlib.decompositions.cp_lm`), and :meth:`CPTensor.rel_error` measures
densely.

Both algorithms stop by the same rule, :func:`stalled`: the relative error
fell by at most a fraction ``tol`` over the last ``STOP_WINDOW`` iterations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import autoray as ar

Array = Any

#: Iterations over which :func:`stalled` measures the decrease of the error.
STOP_WINDOW = 30


def gram(matrix: Array) -> Array:
    return matrix.T @ matrix


def hadamard(matrices: Sequence[Array]) -> Array:
    """Elementwise product of equally shaped matrices."""
    out = matrices[0]
    for matrix in matrices[1:]:
        out = out * matrix
    return out


def hadamard_except(grams: Sequence[Array], *skip: int) -> Array:
    """``*_{k not in skip} G_k`` (all ones when every mode is skipped)."""
    kept = [g for k, g in enumerate(grams) if k not in skip]
    return hadamard(kept) if kept else ar.do("ones_like", grams[0])


def rel_error_from(norm_sq: float, projections: Array, weights: Array, grams: Sequence[Array]) -> float:
    """``||T - T~|| / ||T||`` from ``||T||^2``, the projections ``b`` and the Grams (see module docs)."""
    model_sq = float(ar.do("sum", weights[:, None] * hadamard(grams) * weights[None, :]))
    error_sq = norm_sq - 2 * float(ar.do("sum", weights * projections)) + model_sq
    if norm_sq == 0:
        return 0.0 if model_sq == 0 else math.inf
    return math.sqrt(max(error_sq, 0.0) / norm_sq)


def stalled(history: Sequence[float], tol: float, window: int = STOP_WINDOW) -> bool:
    """The stopping rule of ALS and LM: the error fell by at most a fraction ``tol`` in ``window`` iterations.

    With ``e_k`` the relative error after iteration ``k`` (``history[k - 1]``),
    the run stops after iteration ``k >= window + 1`` when

        tol > 0   and   e_{k - window} - e_k <= tol * e_{k - window}.

    One slow iteration does not stop it: in a swamp the error may not move in
    ten sweeps and then fall by orders of magnitude.  An increase counts as no
    decrease.  ``tol = 0`` never stops, so the run makes all ``max_iter``
    iterations (the algorithms' exact-fit exits aside).
    """
    if tol <= 0 or len(history) <= window:
        return False
    before = history[-1 - window]
    return before - history[-1] <= tol * before


def column_norms(matrix: Array) -> Array:
    return ar.do("sqrt", ar.do("sum", matrix * matrix, axis=0))


def normalize(factors: Sequence[Array]) -> tuple[Array, list[Array]]:
    """Unit-norm columns and the weights (products of the column norms) that keep the model.

    A zero column stays zero and gives weight 0.
    """
    weights, out = None, []
    for factor in factors:
        norms = column_norms(factor)
        out.append(factor / ar.do("where", norms > 0, norms, 1.0)[None, :])
        weights = norms if weights is None else weights * norms
    return weights, out


def balance(weights: Array, factors: Sequence[Array]) -> list[Array]:
    """Factors carrying the weights, ``|w_r|^(1/N)`` in each column (the sign in the first)."""
    weights, factors = normalize([factor * (weights[None, :] if n == 0 else 1.0) for n, factor in enumerate(factors)])
    share = ar.do("abs", weights) ** (1.0 / len(factors))
    return [factor * share[None, :] for factor in factors]


def canonical(weights: Array, factors: Sequence[Array]) -> tuple[Array, list[Array]]:
    """Unit-norm columns, non-negative weights in decreasing order."""
    norms, factors = normalize(factors)
    weights = weights * norms
    signs = 1 - 2 * ar.astype(weights < 0, ar.get_dtype_name(weights))
    factors[0] = factors[0] * signs[None, :]
    weights = weights * signs
    order = ar.do("flip", ar.do("argsort", weights), (0,))
    return weights[order], [factor[:, order] for factor in factors]
