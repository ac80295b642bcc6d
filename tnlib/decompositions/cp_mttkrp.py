"""MTTKRP (matricized tensor times Khatri-Rao product) over a dimension tree.

For a tensor ``T`` of order ``N`` and factors ``A_k`` of shape ``(d_k, R)`` the
mode-``n`` MTTKRP is

    M_n[i, r] = sum_{i_k, k != n} T[i_1, ..., i, ..., i_N]  prod_{k != n} A_k[i_k, r],

the product of the mode-``n`` unfolding with the Khatri-Rao product of the other
factors.  Formed naively, each mode costs ``2 R prod(d)`` flops and a
Khatri-Rao product of ``R prod(d) / d_n`` entries, which for a mode of size 3
of a ``512x512x3x3`` kernel at rank 64 is a 50 MB matrix.

A dimension tree (Phan, Tichavsky & Cichocki 2013) splits the modes into two
contiguous groups, contracts ``T`` with the Khatri-Rao product of one group's
factors and recurses into the other group on the (smaller) partial result,
which keeps a rank index ``r``.  Only the root touches all of ``T``: one ALS
sweep costs two contractions with ``T`` (``4 R prod(d)`` flops) instead of
``N``, and the largest Khatri-Rao product is that of the larger group of a
balanced split (``2304 x 64`` for ``512x512x3x3`` split as ``(512 | 512, 3, 3)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import autoray as ar

from tnlib.decompositions.cp_tensor import balanced_split, khatri_rao

Array = Any


class DimensionTree:
    """The binary split of the modes of ``shape`` that MTTKRPs are computed over."""

    def __init__(self, shape: Sequence[int]) -> None:
        self.shape = tuple(shape)
        self.splits: dict[tuple[int, int], int] = {}
        self._build(0, len(self.shape))

    def _build(self, lo: int, hi: int) -> None:
        if hi - lo > 1:
            k = lo + balanced_split(self.shape[lo:hi])
            self.splits[(lo, hi)] = k
            self._build(lo, k)
            self._build(k, hi)

    def sweep(self, tensor: Array, factors: list[Array], update: Callable[[int, Array], None]) -> None:
        """Call ``update(n, M_n)`` for ``n = 0 .. N-1`` in order, as ALS needs.

        ``update`` may replace ``factors[n]``; every later MTTKRP uses the
        factors as they are when it is computed.
        """
        self._visit(tensor, 0, len(self.shape), False, factors, update)

    def all(self, tensor: Array, factors: list[Array]) -> list[Array]:
        """All ``N`` MTTKRPs at the same ``factors``."""
        out: list[Array] = [None] * len(self.shape)

        def record(n: int, m: Array) -> None:
            out[n] = m

        self.sweep(tensor, factors, record)
        return out

    def projections(self, tensor: Array, factors: Sequence[Array]) -> Array:
        """``b_r = <T, A_1[:, r] o ... o A_N[:, r]>`` for every ``r``: one contraction with ``T``."""
        k = self.splits[(0, len(self.shape))]
        matrix = ar.do("reshape", tensor, (math.prod(self.shape[:k]), -1))
        return ar.do("sum", (matrix @ khatri_rao(factors[k:])) * khatri_rao(factors[:k]), axis=0)

    def _visit(self, partial: Array, lo: int, hi: int, batched: bool, factors: list[Array],
               update: Callable[[int, Array], None]) -> None:
        if hi - lo == 1:
            update(lo, partial)
            return
        k = self.splits[(lo, hi)]
        rows, cols = math.prod(self.shape[lo:k]), math.prod(self.shape[k:hi])
        if batched:  # partial[a, b, r]: the rank index is kept, not summed
            matrix = ar.do("reshape", partial, (rows, cols, -1))
            self._visit(ar.do("einsum", "abr,br->ar", matrix, khatri_rao(factors[k:hi])), lo, k, True, factors, update)
            self._visit(ar.do("einsum", "abr,ar->br", matrix, khatri_rao(factors[lo:k])), k, hi, True, factors, update)
        else:
            matrix = ar.do("reshape", partial, (rows, cols))
            self._visit(matrix @ khatri_rao(factors[k:hi]), lo, k, True, factors, update)
            self._visit(matrix.T @ khatri_rao(factors[lo:k]), k, hi, True, factors, update)
