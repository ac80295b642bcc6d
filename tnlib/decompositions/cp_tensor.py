"""The CP (canonical polyadic) format: a weighted sum of rank-one tensors.

    T~ = sum_r w_r  a^(1)_r o a^(2)_r o ... o a^(N)_r,

with factor matrices ``A_n = [a^(n)_1 ... a^(n)_R]`` of shape ``(d_n, R)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import autoray as ar

from tnlib._validation import check_array
from tnlib.decompositions.base import FactorizedTensor

Array = Any


def khatri_rao(matrices: Sequence[Array]) -> Array:
    """Column-wise Kronecker product of ``(d_k, R)`` matrices, shape ``(prod d_k, R)``.

    Row ``(i_1, ..., i_K)`` (row-major, the last index fastest) of column ``r``
    is ``prod_k A_k[i_k, r]``, so that ``unfold``-style reshapes of a tensor
    line up with it.
    """
    out = matrices[0]
    for matrix in matrices[1:]:
        out = ar.do("reshape", out[:, None, :] * matrix[None, :, :], (-1, out.shape[1]))
    return out


def balanced_split(dims: Sequence[int]) -> int:
    """The ``k`` in ``1..len(dims)-1`` minimizing ``prod(dims[:k]) + prod(dims[k:])``.

    Splitting the modes there keeps both Khatri-Rao products (and the partial
    contractions built from them) as small as a contiguous split allows.
    """
    return min(range(1, len(dims)), key=lambda k: math.prod(dims[:k]) + math.prod(dims[k:]))


class CPTensor(FactorizedTensor):
    """A weighted sum of ``rank`` rank-one tensors.

    The weights (shape ``(R,)``) and factors (shapes ``(d_n, R)``) must be
    floating arrays of finite values; anything else is refused with a
    ``ValueError`` or ``TypeError`` naming the argument (``weights`` or
    ``factors[n]``).

    Attributes
    ----------
    weights
        ``w``, shape ``(R,)``.
    factors
        ``A_n`` of shape ``(d_n, R)``, one per mode.  :func:`tnlib.cp` returns
        them with unit-norm columns and non-negative weights sorted in
        decreasing order; a hand-built ``CPTensor`` may hold any values.
    history
        The relative error ``||T - T~||_F / ||T||_F`` after each iteration of
        the algorithm that computed it (empty for a hand-built tensor).
    converged
        Whether that algorithm met its stopping rule before ``max_iter``.
    """

    def __init__(self, weights: Array, factors: Sequence[Array], history: Sequence[float] = (),
                 converged: bool = False) -> None:
        weights = check_array(weights, "weights", ndim=1)
        factors = [check_array(factor, f"factors[{n}]", ndim=2) for n, factor in enumerate(factors)]
        if not factors:
            raise ValueError("factors must hold at least one (d_n, R) matrix")
        rank = weights.shape[0]
        for n, factor in enumerate(factors):
            if factor.shape[1] != rank:
                raise ValueError(f"factors[{n}] must have shape (d_{n}, {rank}), got {tuple(factor.shape)}")
        self.weights, self.factors = weights, factors
        self.history, self.converged = list(history), bool(converged)

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(int(factor.shape[0]) for factor in self.factors)

    @property
    def rank(self) -> int:
        return int(self.weights.shape[0])

    @property
    def num_params(self) -> int:
        """Stored numbers: ``R * (1 + sum_n d_n)`` (the weights included)."""
        return self.rank * (1 + sum(self.shape))

    def to_dense(self) -> Array:
        """``sum_r w_r a^(1)_r o ... o a^(N)_r``, through two Khatri-Rao products of a balanced split."""
        if len(self.factors) == 1:
            return ar.do("reshape", self.factors[0] @ self.weights[:, None], (-1,))
        k = balanced_split(self.shape)
        left = khatri_rao(self.factors[:k]) * self.weights[None, :]
        dense = left @ khatri_rao(self.factors[k:]).T
        return ar.do("reshape", dense, self.shape)

    def __repr__(self) -> str:
        return f"CPTensor(shape={self.shape}, rank={self.rank})"
