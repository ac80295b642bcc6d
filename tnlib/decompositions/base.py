"""What the factorized tensors share: their protocol and the error budget of orthogonal truncations."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tnlib import _backend as B
from tnlib._validation import check_array
from tnlib.svd import truncated_svd_checked
from tnlib.truncation import TruncationInfo, TruncationSpec

Array = Any


class FactorizedTensor:
    """Base of :class:`~tnlib.MPS`, :class:`~tnlib.TuckerTensor` and :class:`~tnlib.CPTensor`.

    Subclasses provide ``shape``, ``to_dense()`` and ``num_params``; the factors
    stay in the backend they were computed in.  Each carries ``info``, the
    report of the decomposition that computed it (``None`` when built by
    hand): a :class:`~tnlib.TruncationInfo` for MPS and Tucker, a
    :class:`~tnlib.decompositions.cp_tensor.CPFit` for CP.
    """

    shape: tuple[int, ...]
    info: Any

    def to_dense(self) -> Array:  # pragma: no cover - every subclass defines it
        raise NotImplementedError

    def rel_error(self, reference: Array) -> float:
        """``||reference - self.to_dense()||_F / ||reference||_F`` (0 when both are zero)."""
        reference = check_array(reference, "reference")
        if tuple(reference.shape) != self.shape:
            raise ValueError(f"reference must have shape {self.shape}, got {tuple(reference.shape)}")
        norm, error = B.frobenius_norm(reference), B.frobenius_norm(reference - self.to_dense())
        if norm == 0:
            return 0.0 if error == 0 else math.inf
        return error / norm


def truncate_keeping_one(
    matrix: Array, spec: TruncationSpec, method: str = "auto", rng: np.random.Generator | None = None
) -> tuple[Array, Array, Array, TruncationInfo]:
    """:func:`truncated_svd_checked` that keeps at least one triplet.

    A bond or mode of a factorized tensor never vanishes: where the
    criteria allow rank 0 (a zero matrix, ``rel_error=1``), one value is kept.
    """
    u, s, vh, info = truncated_svd_checked(matrix, spec, method, rng)
    if info.rank == 0:
        u, s, vh, info = truncated_svd_checked(matrix, TruncationSpec(max_rank=1), "full")
    return u, s, vh, info


class ErrorBudget:
    """Spends ``(rel_error * norm)**2`` over ``steps`` orthogonal truncations, one at a time.

    When each truncation's error is orthogonal to the others' (TT-SVD, MPS
    rounding, ST-HOSVD), the squared errors add up exactly.  Each step may use
    an equal share of what is left, so the total never exceeds the budget.
    Squared norms are kept as fractions of ``norm**2``, so that no scale of the
    tensor overflows or underflows them.
    """

    def __init__(self, norm: float, rel_error: float | None, steps: int) -> None:
        self.norm, self.rel_error, self.steps = norm, rel_error, steps
        # spent: squared error so far; current: squared norm of what is left; both over norm**2
        self.spent, self.done, self.current = 0.0, 0, 1.0 if norm > 0 else 0.0

    def next_step(self) -> float | None:
        """The relative error allowed to the next truncation (of a matrix of the current norm)."""
        if self.rel_error is None:
            return None
        left = max(self.rel_error**2 - self.spent, 0.0) / (self.steps - self.done)
        return min(math.sqrt(left / self.current), 1.0) if self.current > 0 else 0.0

    def truncate(
        self,
        matrix: Array,
        max_rank: int | None,
        cutoff: float | None,
        method: str,
        rng: np.random.Generator | None = None,
    ) -> tuple[Array, Array, Array, TruncationInfo]:
        """:func:`truncate_keeping_one` of the next step's matrix within the budget, and account for it."""
        u, s, vh, info = truncate_keeping_one(matrix, TruncationSpec(max_rank, self.next_step(), cutoff), method, rng)
        lost = info.discarded_weight * self.current
        self.spent += lost
        self.current -= lost
        self.done += 1
        return u, s, vh, info

    def report(self, steps: list[TruncationInfo]) -> TruncationInfo:
        """The whole result's report: ranks per step and the error spent."""
        ranks = tuple(step.rank for step in steps)
        if self.norm == 0:
            return TruncationInfo(ranks, 0.0, 0.0, 0.0, steps=tuple(steps))
        discarded = min(self.spent, 1.0)
        return TruncationInfo(ranks, math.sqrt(discarded), 1 - math.sqrt(1 - discarded), discarded, steps=tuple(steps))
