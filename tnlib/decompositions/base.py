"""The small protocol every factorized tensor shares."""

from __future__ import annotations

import math
from typing import Any

from tnlib import _backend as B
from tnlib._validation import check_array

Array = Any


class FactorizedTensor:
    """Base of :class:`~tnlib.MPS` and :class:`~tnlib.TuckerTensor` (and CP to come).

    Subclasses provide ``shape``, ``to_dense()`` and ``num_params``; the factors
    stay in the backend they were computed in.
    """

    shape: tuple[int, ...]

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
