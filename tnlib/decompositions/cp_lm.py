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
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import autoray as ar

from tnlib import _backend as B
from tnlib.decompositions.cp_fit import balance, gram, hadamard_except, normalize, rel_error_from
from tnlib.decompositions.cp_mttkrp import DimensionTree

Array = Any

#: Initial damping relative to the largest diagonal entry of J^T J (Nielsen's tau).
TAU = 1e-3
#: Damping growth beyond which no step can change the error at working precision.
MU_GROWTH_LIMIT = 1e12
#: Conjugate-gradient iteration limit and loosest relative residual per LM step.
CG_MAX_ITER, CG_RTOL = 20, 0.25

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


class _Point:
    """Balanced factors, stacked into one ``(sum d_n, R)`` matrix, with their Grams, MTTKRPs and error."""

    def __init__(self, tree: DimensionTree, tensor: Array, norm_sq: float, stacked: Array) -> None:
        bounds = [0, *itertools.accumulate(tree.shape)]
        self.blocks = [slice(a, b) for a, b in zip(bounds, bounds[1:])]
        self.stacked = stacked
        self.factors = [stacked[block] for block in self.blocks]
        self.grams = [gram(f) for f in self.factors]
        self.mttkrps = tree.all(tensor, self.factors)
        ones = ar.do("ones_like", stacked[0])
        projections = ar.do("sum", self.mttkrps[0] * self.factors[0], axis=0)
        self.error = rel_error_from(norm_sq, projections, ones, self.grams)
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

    Stops when a taken step changes the relative error by at most ``tol``, when
    the damping has grown ``MU_GROWTH_LIMIT``-fold without a step being taken
    (no step changes the error at working precision; ``converged``), or after
    ``max_iter`` iterations (one iteration = one step tried).
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
        if gradient_norm == 0 or mu > MU_GROWTH_LIMIT * mu_floor:
            return *normalize(point.factors), history, True
        step, residual = _pcg(point.normal_matrix_product(mu), point.block_jacobi(mu), gradient,
                              min(CG_RTOL, math.sqrt(gradient_norm / first_gradient_norm)))
        predicted = 0.5 * (_dot(gradient, step) + _dot(step, residual) + mu * _dot(step, step))
        moved = point.stacked + step
        trial = point_at([moved[block] for block in point.blocks])
        actual = 0.5 * norm_sq * (point.error**2 - trial.error**2)
        rho = actual / predicted if predicted > 0 else -1.0
        if rho > 0:
            change = point.error - trial.error
            point = trial
            mu *= max(1 / 3, 1 - (2 * rho - 1) ** 3)
            mu_floor, growth = min(mu_floor, mu), 2.0
            history.append(point.error)
            if change <= tol:
                return *normalize(point.factors), history, True
        else:
            mu *= growth
            growth *= 2
            history.append(point.error)
    return *normalize(point.factors), history, False
