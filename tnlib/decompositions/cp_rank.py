"""The smallest CP rank that reaches an error target, with the error-vs-rank curve.

Ranks are tried in doubling steps ``1, 2, 4, ...`` (capped at ``max_rank``)
until one reaches the target, then by bisection between the last rank that
missed and the first that reached it.  Each fit is warm-started from the
largest fitted model below its rank, padded with components fitted to the
residual (its ``"svd"`` initialization).  Bisection assumes the error falls
with the rank, which holds for best approximations and nearly always for
fitted ones; the returned curve shows every rank tried.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tnlib._validation import check_array, check_fraction, check_seed
from tnlib.decompositions.cp import check_rank, cp
from tnlib.decompositions.cp_ladder import _padded
from tnlib.decompositions.cp_tensor import CPTensor

Array = Any


@dataclass
class CPRankSearch:
    """Result of :func:`tnlib.cp_rank`.

    Attributes
    ----------
    model
        The fit at ``rank`` (the best one tried when the target was not reached).
    rank
        The smallest tried rank whose error is within the target, else the largest tried.
    reached
        Whether ``model`` meets the target.
    curve
        ``{rank: relative error}`` of every fit, in increasing rank, each error
        measured on the dense model.
    """

    model: CPTensor
    rank: int
    reached: bool
    curve: dict[int, float] = field(default_factory=dict)


def cp_rank(
    tensor: Array,
    rel_error: float,
    max_rank: int | None = None,
    method: str = "als",
    max_iter: int = 100,
    tol: float = 1e-8,
    seed: int | np.random.Generator | None = None,
) -> CPRankSearch:
    """The smallest CP rank whose fit has ``||T - T~||_F / ||T||_F <= rel_error``.

    Parameters
    ----------
    tensor
        Real array of order at least 2.
    rel_error
        The target, in [0, 1].
    max_rank
        The largest rank to try; by default ``prod(shape) / max(shape)``, a
        rank at which every tensor has an exact CP decomposition (a larger
        one is refused).
    method, max_iter, tol, seed
        Passed to :func:`tnlib.cp` for every fit.

    Returns
    -------
    CPRankSearch

    Examples
    --------
    >>> import numpy as np, tnlib
    >>> rng = np.random.default_rng(0)
    >>> t = np.einsum("ir,jr,kr->ijk", *(rng.standard_normal((d, 3)) for d in (6, 5, 4)))
    >>> search = tnlib.cp_rank(t, 1e-6, method="lm", seed=0)
    >>> search.rank, search.reached, sorted(search.curve)
    (3, True, [1, 2, 3, 4])
    """
    x = check_array(tensor, "tensor", min_ndim=2)
    rel_error = check_fraction(rel_error, "rel_error")
    bound = math.prod(x.shape) // max(x.shape)
    max_rank = bound if max_rank is None else check_rank(max_rank, x.shape, "max_rank")
    rng = check_seed(seed)
    fits: dict[int, CPTensor] = {}
    curve: dict[int, float] = {}

    def fit(rank: int) -> bool:
        below = [r for r in fits if r < rank]
        init = _padded(x, fits[max(below)], rank, rng) if below else "svd"
        fits[rank] = cp(x, rank, method=method, init=init, max_iter=max_iter, tol=tol, seed=rng)
        curve[rank] = fits[rank].rel_error(x)
        return curve[rank] <= rel_error

    missed, rank = 0, 1
    while not fit(rank):
        if rank == max_rank:
            best = min(curve, key=curve.get)
            return CPRankSearch(fits[best], best, False, dict(sorted(curve.items())))
        missed, rank = rank, min(2 * rank, max_rank)
    reached = rank
    while reached - missed > 1:
        middle = (missed + reached) // 2
        if fit(middle):
            reached = middle
        else:
            missed = middle
    return CPRankSearch(fits[reached], reached, True, dict(sorted(curve.items())))
