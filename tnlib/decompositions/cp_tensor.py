"""The CP (canonical polyadic) format: a weighted sum of rank-one tensors.

    T~ = sum_r w_r  a^(1)_r o a^(2)_r o ... o a^(N)_r,

with factor matrices ``A_n = [a^(n)_1 ... a^(n)_R]`` of shape ``(d_n, R)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import autoray as ar

from tnlib import _backend as B
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


def cp_dense(weights: Array, factors: Sequence[Array]) -> Array:
    """``sum_r w_r a^(1)_r o ... o a^(N)_r``, through two Khatri-Rao products of a balanced split of the modes."""
    shape = tuple(int(factor.shape[0]) for factor in factors)
    if len(factors) == 1:
        return ar.do("reshape", factors[0] @ weights[:, None], (-1,))
    k = balanced_split(shape)
    left = khatri_rao(factors[:k]) * weights[None, :]
    return ar.do("reshape", left @ khatri_rao(factors[k:]).T, shape)


@dataclass(frozen=True)
class CPFit:
    """What a CP fit did: the measures of :class:`~tnlib.TruncationInfo` plus the iteration's record.

    CP is a fit, not an orthogonal truncation, so the three measures of what
    was lost need not be tied as they are for an SVD.

    Attributes
    ----------
    ranks
        ``(R,)``, as the one-step ``TruncationInfo.ranks``; ``rank`` reads it.
    rel_error
        ``||T - T~||_F / ||T||_F``, measured on the dense model in working
        precision (float64), so below the ALS history's 1e-8 resolution too.
    norm_loss
        ``1 - ||T~||_F / ||T||_F``.  Negative when the model has more norm
        than ``T`` (a fit, unlike a projection, may overshoot).
    discarded_weight
        ``1 - ||T~||**2 / ||T||**2``.  When the residual is orthogonal to the
        model (a least-squares update ends the fit) it equals
        ``rel_error**2``; otherwise (a kept extrapolation, ``ridge``, an
        unconverged LM step, a warm start returned at ``max_iter=0``) it may
        differ from it, and be negative.
    method
        The algorithm, a key of ``CP_METHODS``.
    iterations
        Iterations run, ``len(history)``.
    converged
        Whether the stopping rule was met before ``max_iter``.
    history
        The relative error after each iteration (ALS: computed without the
        dense model, resolved to about 1e-8; LM: dense).
    """

    ranks: tuple[int, ...]
    rel_error: float
    norm_loss: float
    discarded_weight: float
    method: str
    iterations: int
    converged: bool
    history: tuple[float, ...]

    @property
    def rank(self) -> int:
        """``R``."""
        return self.ranks[0]

    @classmethod
    def measure(cls, tensor: Array, weights: Array, factors: Sequence[Array], method: str,
                history: Sequence[float], converged: bool) -> CPFit:
        """The report of the model ``(weights, factors)`` fitted to ``tensor``.

        Relative measures, so ``tensor`` and ``weights`` may share any exact
        scaling.  A zero tensor gives 0 for all three with a zero model (as in
        ``TruncationInfo``), else an infinite error and loss.
        """
        norm = B.frobenius_norm(tensor)
        dense = cp_dense(weights, factors)
        error, model = B.frobenius_norm(tensor - dense), B.frobenius_norm(dense)
        if norm == 0:
            rel, kept = (0.0, 1.0) if model == 0 else (math.inf, math.inf)
        else:
            rel, kept = error / norm, model / norm
        return cls((int(weights.shape[0]),), float(rel), float(1.0 - kept), float(1.0 - kept**2), method,
                   len(history), bool(converged), tuple(float(e) for e in history))

    def to_dict(self) -> dict[str, Any]:
        """A plain, JSON-serializable dict."""
        out = asdict(self)
        out["ranks"], out["history"] = list(self.ranks), list(self.history)
        return out


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
    info
        :class:`CPFit`, the report of the fit that computed it (``None`` for a
        hand-built tensor).
    history
        ``list(info.history)``: the relative error ``||T - T~||_F / ||T||_F``
        after each iteration (empty without ``info``).
    converged
        ``info.converged``: whether the stopping rule was met before
        ``max_iter`` (False without ``info``).
    """

    def __init__(self, weights: Array, factors: Sequence[Array], info: CPFit | None = None) -> None:
        weights = check_array(weights, "weights", ndim=1)
        factors = [check_array(factor, f"factors[{n}]", ndim=2) for n, factor in enumerate(factors)]
        if not factors:
            raise ValueError("factors must hold at least one (d_n, R) matrix")
        rank = weights.shape[0]
        for n, factor in enumerate(factors):
            if factor.shape[1] != rank:
                raise ValueError(f"factors[{n}] must have shape (d_{n}, {rank}), got {tuple(factor.shape)}")
        if info is not None and not isinstance(info, CPFit):
            raise TypeError(f"info must be None or a CPFit, got {type(info).__name__}")
        if info is not None and info.ranks != (rank,):
            raise ValueError(f"info must report the rank {rank} of the weights, got ranks {info.ranks}")
        self.weights, self.factors, self.info = weights, factors, info

    @property
    def history(self) -> list[float]:
        return [] if self.info is None else list(self.info.history)

    @property
    def converged(self) -> bool:
        return False if self.info is None else self.info.converged

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
        return cp_dense(self.weights, self.factors)

    def __repr__(self) -> str:
        return f"CPTensor(shape={self.shape}, rank={self.rank})"
