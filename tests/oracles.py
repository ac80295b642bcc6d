"""Oracles with planted structure: matrices of a prescribed spectrum, tensors of a planted rank."""

from __future__ import annotations

import numpy as np


def random_orthonormal(rng: np.random.Generator, n: int, k: int, dtype=np.float64) -> np.ndarray:
    """``n x k`` matrix with orthonormal columns (complex when ``dtype`` is)."""
    a = rng.standard_normal((n, k))
    if np.issubdtype(dtype, np.complexfloating):
        a = a + 1j * rng.standard_normal((n, k))
    q, _ = np.linalg.qr(a)
    return q.astype(dtype)


def planted_matrix(rng: np.random.Generator, m: int, n: int, s, dtype=np.float64) -> np.ndarray:
    """``U diag(s) V^H`` with random orthonormal ``U`` (m x k), ``V`` (n x k) and the given spectrum."""
    s = np.asarray(s, dtype=np.float64)
    k = len(s)
    u, v = random_orthonormal(rng, m, k, dtype), random_orthonormal(rng, n, k, dtype)
    return ((u * s) @ v.conj().T).astype(dtype)


def planted_kernel(rng: np.random.Generator, shape, cut_left: str, rank: int, labels: str = "oihw") -> np.ndarray:
    """A tensor of exact rank ``rank`` across the cut ``cut_left | rest`` (float64)."""
    dims = dict(zip(labels, shape, strict=True))
    right = "".join(c for c in labels if c not in cut_left)
    m = int(np.prod([dims[c] for c in cut_left]))
    n = int(np.prod([dims[c] for c in right]))
    mat = rng.standard_normal((m, rank)) @ rng.standard_normal((rank, n))
    permuted = mat.reshape([dims[c] for c in cut_left + right])
    return np.transpose(permuted, np.argsort([labels.index(c) for c in cut_left + right]))
