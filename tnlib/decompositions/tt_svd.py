"""TT-SVD: a tensor with labelled indices as a matrix product state with a guaranteed error.

:func:`mps` sweeps left to right (Oseledets 2011), truncating one bond at a time
with the shared error budget (:class:`tnlib.decompositions.base.ErrorBudget`):
the left cores are orthonormal, so the bonds' errors are orthogonal and add in
squares, ``||T - T~||**2 = sum_k e_k**2``, and spending ``(rel_error ||T||)**2``
bond by bond guarantees ``||T - T~|| <= rel_error ||T||``.  An index can first
be split into several sites (the quantized tensor train).  The result is an
:class:`tnlib.MPS` (:mod:`tnlib.decompositions.mps`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any

import autoray as ar
import numpy as np

from tnlib import _backend as B
from tnlib._validation import (
    check_array,
    check_choice,
    check_positive_int,
    check_seed,
)
from tnlib.cuts import resolve_labels
from tnlib.decompositions.base import ErrorBudget
from tnlib.decompositions.mps import MPS, _bond_bounds
from tnlib.metric import Metric, check_single_labels
from tnlib.svd import SVD_METHODS
from tnlib.truncation import TruncationInfo, TruncationSpec

Array = Any
SplitLike = None | str | Mapping[str, Sequence[int]]


def _prime_factors(n: int) -> list[int]:
    factors, p = [], 2
    while p * p <= n:
        while n % p == 0:
            factors.append(p)
            n //= p
        p += 1
    return factors + ([n] if n > 1 else [])


def _split_factors(split: SplitLike, labels: str, shape: Sequence[int]) -> dict[str, tuple[int, ...]]:
    """The site dimensions each label is split into."""
    dims = dict(zip(labels, shape))
    if split is None:
        return {c: (d,) for c, d in dims.items()}
    if isinstance(split, str):
        check_choice(split, "split", ("prime", "binary"))
        out = {}
        for c, d in dims.items():
            primes = _prime_factors(d) or [1]
            if split == "binary":
                twos = [p for p in primes if p == 2]
                rest = math.prod(p for p in primes if p != 2)
                primes = twos + ([rest] if rest > 1 else []) or [1]
            out[c] = tuple(primes)
        return out
    if not isinstance(split, Mapping):
        raise TypeError(f"split must be None, 'prime', 'binary' or a dict label -> factors, got {split!r}")
    out = {c: (d,) for c, d in dims.items()}
    for c, factors in split.items():
        if c not in dims:
            raise ValueError(f"split names label {c!r}, which is not one of the labels {labels!r}")
        factors = tuple(check_positive_int(f, f"split[{c!r}]") for f in factors)
        if math.prod(factors) != dims[c]:
            raise ValueError(f"split[{c!r}] = {factors} must multiply to the dimension {dims[c]} of {c!r}")
        out[c] = factors
    return out


def mps(
    tensor: Array,
    labels: str | Sequence[str] | None = None,
    order: str | Sequence[str] | None = None,
    max_bond: int | Sequence[int] | None = None,
    rel_error: float | None = None,
    cutoff: float | None = None,
    split: SplitLike = None,
    method: str = "auto",
    seed: int | np.random.Generator | None = None,
    *,
    metric: Mapping[str, Array] | None = None,
) -> MPS:
    """Decompose a tensor into a matrix product state by TT-SVD.

    Parameters
    ----------
    tensor
        Array of any order and backend.
    labels
        One character per index (default ``"oihw"`` for 4-index tensors).
    order
        The labels in chain order (default: ``labels``), e.g. ``"iohw"``.
    max_bond
        Bond dimension bound: an int for every bond or one per bond.
    rel_error
        Guaranteed bound on ``||T - T~||_F / ||T||_F`` for the whole tensor.
    cutoff
        Per bond, drop singular values below ``cutoff * s_max``.
    split
        Split indices into several sites before decomposing: a dict such as
        ``{"o": (4, 4, 4)}`` (factors multiply to the dimension, row-major),
        ``"binary"`` (factors of 2, then the rest) or ``"prime"`` (prime
        factorization of every dimension).
    method, seed
        The truncated SVD of each bond (:func:`tnlib.truncated_svd`).
    metric
        ``{label: M}`` (:mod:`tnlib.metric`): decompose in the norm
        ``||X||_M``.  Every bond cuts the chain between sites, so each group
        must be a single label that is not split into several sites.  The
        TT-SVD of ``T' = T x L^T`` is mapped back on each weighted site
        (``G[:, d, :] = sum_k G'[:, k, :] L^{-1}[k, d]``); those cores are no
        longer orthonormal, so the canonical form is kept only left of the
        first weighted site (the centre is the last site only when that is the
        sole weighted one).  ``rel_error`` and ``info`` are in the metric's norm.

    Returns
    -------
    MPS
        Left-canonical (centre on the last site), cores on the tensor's
        backend; ``info`` holds the bond dimensions and the realized error.

    Examples
    --------
    >>> import numpy as np, tnlib
    >>> k = np.einsum("o,i,h,w->oihw", *[np.arange(1.0, d + 1) for d in (4, 3, 2, 2)])
    >>> m = tnlib.mps(k, order="iohw", rel_error=1e-12)
    >>> m.bond_dims, m.rel_error(k) < 1e-12
    ((1, 1, 1), True)
    """
    x = check_array(tensor, "tensor")
    labels = resolve_labels(labels, x.ndim)
    order = labels if order is None else resolve_labels(order, x.ndim, "order")
    if sorted(order) != sorted(labels):
        raise ValueError(f"order must be a permutation of the labels {labels!r}, got {order!r}")
    factors = _split_factors(split, labels, x.shape)
    site_dims = [d for c in order for d in factors[c]]
    bounds = _bond_bounds(max_bond, len(site_dims) - 1)
    spec = TruncationSpec.from_kwargs(None, rel_error, cutoff)
    check_choice(method, "method", ("auto", *SVD_METHODS))
    rng = check_seed(seed)

    weights = Metric.build(metric, labels, x, partial(_check_sites, labels=labels, factors=factors))
    if weights is not None:
        x = weights.to_metric_space(x)
    cores, info = _tt_svd(x, labels, order, site_dims, bounds, spec, method, rng)
    result = MPS(cores, labels, order, x.shape, [factors[c] for c in order], info)
    result._left, result._right = len(cores) - 1, len(cores)
    return result if weights is None else _from_metric_space(result, weights)


def _tt_svd(x, labels, order, site_dims, bounds, spec, method, rng) -> tuple[list[Array], TruncationInfo]:
    """TT-SVD of a validated tensor: the cores in chain order and the report."""
    permuted = ar.do("transpose", x, [labels.index(c) for c in order])
    rest = ar.do("reshape", permuted, (1, -1))
    budget = ErrorBudget(B.frobenius_norm(x), spec.rel_error, len(site_dims) - 1)
    cores, steps = [], []
    for k, dim in enumerate(site_dims[:-1]):
        left = rest.shape[0]
        matrix = ar.do("reshape", rest, (left * dim, -1))
        u, s, vh, info = budget.truncate(matrix, bounds[k], spec.cutoff, method, rng)
        cores.append(ar.do("reshape", u, (left, dim, u.shape[1])))
        rest = s[:, None] * vh
        steps.append(info)
    cores.append(ar.do("reshape", rest, (rest.shape[0], site_dims[-1], 1)))
    return cores, budget.report(steps)


def _check_sites(groups: tuple[str, ...], labels: str, factors: dict[str, tuple[int, ...]]) -> None:
    """Each group of a metric must be one label on one site (``split`` must leave it whole)."""
    check_single_labels(groups, labels, "mps (a bond between every two sites)")
    for label in groups:
        if len(factors[label]) > 1:
            raise ValueError(
                f"metric: split spreads the label {label!r} over {len(factors[label])} sites, which the bonds between "
                f"them split; a metric needs {label!r} on one site (leave it out of split)"
            )


def _from_metric_space(result: MPS, weights: Metric) -> MPS:
    """The MPS of ``T' = T x L^T`` mapped back to ``T`` on each weighted site, in the tensor's dtype."""
    sites = {label: k for k, label in enumerate(result.order)}
    cores = [B.astype(core, weights.dtype) for core in result.cores]
    for label in weights.groups:
        k = sites[label]
        cores[k] = B.astype(weights.leg_from_metric_space(label, result.cores[k], axis=1), weights.dtype)
    out = MPS(cores, result.labels, result.order, result.shape, result.factors, result.info)
    out._left, out._right = min([len(cores) - 1] + [sites[label] for label in weights.groups]), len(cores)
    return out
