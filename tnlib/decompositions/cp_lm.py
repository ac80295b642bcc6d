"""CP by Levenberg-Marquardt: damped Gauss-Newton on all factors at once.

With the weights absorbed into the factors ``A_n``, LM minimizes
``f = 1/2 ||T - [[A_1, ..., A_N]]||_F^2`` by steps ``delta`` solving

    (J^T J + mu I) delta = J^T r,        r = T - [[A_1, ..., A_N]],

with ``J`` the Jacobian of the model.  Neither ``J`` nor ``J^T J`` is formed:
with ``G_k = A_k^T A_k``, ``Gamma_n = *_{k != n} G_k`` and
``Gamma_nm = *_{k != n, m} G_k`` (``*`` elementwise),

    (J^T r)_n           = M_n - A_n Gamma_n                  (M_n the mode-n MTTKRP),
    (J^T J V)_n         = V_n Gamma_n + A_n sum_{m != n} ((V_m^T A_m) * Gamma_nm),

so one product with ``J^T J`` costs ``O(R^2 (sum d_n + N^2))`` flops, nothing
of the size of ``T``.  The system is solved by conjugate gradients
preconditioned with its block diagonal, ``V_n -> V_n (Gamma_n + mu I)^{-1}``,
to a relative residual that tightens as the gradient shrinks (inexact Newton).

The damping follows Nielsen's trust-region rule: with ``rho`` the ratio of
the actual to the predicted decrease of ``f``, a step with ``rho > 0`` is taken
and ``mu`` is scaled by ``max(1/3, 1 - (2 rho - 1)^3)``; otherwise it is refused
and ``mu`` grows by a factor that doubles with each refusal.  Only decreases are
taken, so the error history never increases.  Lebedev et al. (2015) used
this method for conv kernels because ALS stalls in long swamps.

The actual decrease is measured on the dense residual, ``||T - T~||_F`` with
``T~`` formed explicitly, at every trial point: always, because forming
``T~`` through the two Khatri-Rao products of the dimension tree's root split
costs ``2 R prod(d)`` flops, half of what the trial point's MTTKRPs already
cost, and it is formed ``RESIDUAL_BLOCK`` entries at a time, so it needs no
memory of the size of ``T``.  The estimate without the dense model
(:func:`tnlib.decompositions.cp_fit.rel_error_from`) loses all accuracy once
the error nears ``sqrt(eps)`` (1.5e-8 relative) and cannot resolve the
decrease of a step in a swamp; measured densely, the error is resolved to
about ``eps`` relative to ``||T||``, and LM keeps taking the steps that
decrease it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import autoray as ar

from tnlib import _backend as B
from tnlib.decompositions.cp_fit import balance, gram, hadamard_except, normalize, stalled
from tnlib.decompositions.cp_mttkrp import DimensionTree
from tnlib.decompositions.cp_tensor import khatri_rao

Array = Any

#: Initial damping relative to the largest diagonal entry of J^T J (Nielsen's tau).
TAU = 1e-3
#: Damping growth beyond which no step can change the error at working precision.
MU_GROWTH_LIMIT = 1e12
#: Conjugate-gradient iteration limit and loosest relative residual per LM step.
CG_MAX_ITER, CG_RTOL = 20, 0.25
#: Most entries of the dense model formed at a time when measuring the residual.
RESIDUAL_BLOCK = 2**20


def _dot(a: Array, b: Array) -> float:
    return float(ar.do("sum", a * b))


def _pcg(apply: Callable[[Array], Array], precondition: Callable[[Array], Array], rhs: Array,
         rtol: float) -> tuple[Array, Array]:
    """Preconditioned conjugate gradients from zero; returns the solution and its residual."""
    x, residual = ar.do("zeros_like", rhs), rhs
    z = precondition(residual)
    direction, rz = z, _dot(residual, z)
    target = rtol * math.sqrt(_dot(rhs, rhs))
    for _ in range(CG_MAX_ITER):
        applied = apply(direction)
        curvature = _dot(direction, applied)
        if not curvature > 0:
            break
        alpha = rz / curvature
        x = x + alpha * direction
        residual = residual - alpha * applied
        if math.sqrt(_dot(residual, residual)) <= target:
            break
        z = precondition(residual)
        rz, rz_old = _dot(residual, z), rz
        direction = z + (rz / rz_old) * direction
    return x, residual


def residual_sq(tree: DimensionTree, tensor: Array, factors: Sequence[Array]) -> float:
    """``||T - [[A_1, ..., A_N]]||_F^2`` from the dense model, formed a block of rows at a time.

    With ``k`` the root split of ``tree``, ``T`` is viewed as the
    ``prod(d_1..d_k) x prod(d_k+1..d_N)`` matrix ``T_(k)`` and the model as
    ``L R^T``, ``L`` and ``R`` the Khatri-Rao products of the two groups'
    factors; each block of at most ``RESIDUAL_BLOCK`` entries (at least one
    row) of ``T_(k) - L R^T`` is formed and its squares summed.
    """
    k = tree.splits[(0, len(tree.shape))]
    matrix = ar.do("reshape", tensor, (math.prod(tree.shape[:k]), -1))
    left, right = khatri_rao(factors[:k]), khatri_rao(factors[k:])
    rows = max(1, RESIDUAL_BLOCK // matrix.shape[1])
    total = 0.0
    for i in range(0, matrix.shape[0], rows):
        block = matrix[i : i + rows] - left[i : i + rows] @ right.T
        total += _dot(block, block)
    return total


class _Point:
    """Balanced factors, stacked into one ``(sum d_n, R)`` matrix, with their Grams, MTTKRPs and error."""

    def __init__(self, tree: DimensionTree, tensor: Array, norm_sq: float, stacked: Array) -> None:
        bounds = [0, *itertools.accumulate(tree.shape)]
        self.blocks = [slice(a, b) for a, b in zip(bounds, bounds[1:])]
        self.stacked = stacked
        self.factors = [stacked[block] for block in self.blocks]
        self.grams = [gram(f) for f in self.factors]
        self.mttkrps = tree.all(tensor, self.factors)
        self.residual_sq = residual_sq(tree, tensor, self.factors)
        self.error = math.sqrt(self.residual_sq / norm_sq) if norm_sq > 0 else math.sqrt(self.residual_sq)
        self.gammas = [hadamard_except(self.grams, n) for n in range(len(self.factors))]

    def gradient(self) -> Array:
        """``J^T r``, minus the gradient of ``f``, stacked."""
        return ar.do("concatenate", [m - a @ g for m, a, g in zip(self.mttkrps, self.factors, self.gammas)], axis=0)

    def block_jacobi(self, mu: float) -> Callable[[Array], Array]:
        """``V -> V_n (Gamma_n + mu I)^{-1}``, the inverse of the diagonal blocks of ``J^T J + mu I``."""
        identity = ar.do("diag", ar.do("ones_like", self.stacked[0]))
        inverses = [B.solve_gram(identity, g + mu * identity) for g in self.gammas]
        return lambda v: ar.do("concatenate", [v[b] @ inv for b, inv in zip(self.blocks, inverses)], axis=0)

    def normal_matrix_product(self, mu: float) -> Callable[[Array], Array]:
        """``V -> (J^T J + mu I) V`` at this point."""
        n_modes = len(self.factors)
        pairs = {(n, m): hadamard_except(self.grams, n, m) for n in range(n_modes) for m in range(n + 1, n_modes)}

        def apply(v: Array) -> Array:
            cross = [v[b].T @ a for b, a in zip(self.blocks, self.factors)]
            out = []
            for n, (block, factor, gamma) in enumerate(zip(self.blocks, self.factors, self.gammas)):
                coupling = sum(cross[m] * pairs[min(n, m), max(n, m)] for m in range(n_modes) if m != n)
                out.append(v[block] @ gamma + factor @ coupling)
            return ar.do("concatenate", out, axis=0) + mu * v

        return apply


def lm(
    tensor: Array,
    weights: Array,
    factors: Sequence[Array],
    max_iter: int,
    tol: float,
) -> tuple[Array, list[Array], list[float], bool]:
    """Run LM steps from a CP model; return ``(weights, factors, history, converged)``.

    One iteration tries one step; its error is appended to the history,
    taken or not.  The run stops (``converged``) when

    * the fit is exact (a zero dense residual) or the gradient is exactly zero
      (no step can move the model);
    * ``tol > 0`` and the damping has grown ``MU_GROWTH_LIMIT``-fold without a
      step being taken (no step decreases the error at working precision);
    * ``tol > 0`` and the relative error fell by at most a fraction ``tol``
      over the last ``STOP_WINDOW`` iterations (:func:`stalled`);

    else after ``max_iter`` iterations.  With ``tol = 0`` the damping is held
    at ``MU_GROWTH_LIMIT`` times its floor instead, and every iteration is run.
    """
    tree = DimensionTree(tensor.shape)
    norm_sq = B.frobenius_norm(tensor) ** 2
    ones = ar.do("ones_like", weights)

    def point_at(stacked_factors: list[Array]) -> _Point:
        return _Point(tree, tensor, norm_sq, ar.do("concatenate", balance(ones, stacked_factors), axis=0))

    point = point_at([f * (weights[None, :] if n == 0 else 1.0) for n, f in enumerate(factors)])
    history: list[float] = []
    mu = mu_floor = None
    growth, first_gradient_norm = 2.0, None
    for _ in range(max_iter):
        gradient = point.gradient()
        gradient_norm = math.sqrt(_dot(gradient, gradient))
        if first_gradient_norm is None:
            first_gradient_norm = gradient_norm
            mu = mu_floor = TAU * max(float(ar.do("max", ar.do("diag", g))) for g in point.gammas)
        if point.residual_sq == 0 or gradient_norm == 0:
            return *normalize(point.factors), history, True
        if mu > MU_GROWTH_LIMIT * mu_floor:
            if tol > 0:
                return *normalize(point.factors), history, True
            mu, growth = MU_GROWTH_LIMIT * mu_floor, 2.0
        step, residual = _pcg(point.normal_matrix_product(mu), point.block_jacobi(mu), gradient,
                              min(CG_RTOL, math.sqrt(gradient_norm / first_gradient_norm)))
        predicted = 0.5 * (_dot(gradient, step) + _dot(step, residual) + mu * _dot(step, step))
        moved = point.stacked + step
        trial = point_at([moved[block] for block in point.blocks])
        actual = 0.5 * (point.residual_sq - trial.residual_sq)
        rho = actual / predicted if predicted > 0 else -1.0
        if rho > 0:
            point = trial
            mu *= max(1 / 3, 1 - (2 * rho - 1) ** 3)
            mu_floor, growth = min(mu_floor, mu), 2.0
        else:
            mu *= growth
            growth *= 2
        history.append(point.error)
        if stalled(history, tol):
            return *normalize(point.factors), history, True
    return *normalize(point.factors), history, False
