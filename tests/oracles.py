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


def planted_tucker(rng: np.random.Generator, shape, ranks, noise: float = 0.0) -> np.ndarray:
    """A Tucker tensor of multilinear ranks ``ranks`` (orthonormal factors) plus ``noise`` times a unit-norm tensor."""
    t = rng.standard_normal(tuple(ranks))
    for mode, (dim, rank) in enumerate(zip(shape, ranks, strict=True)):
        t = np.moveaxis(np.tensordot(random_orthonormal(rng, dim, rank), t, axes=([1], [mode])), 0, mode)
    t /= np.linalg.norm(t)
    e = rng.standard_normal(tuple(shape))
    return t + noise * e / np.linalg.norm(e)


def safe_rel_error(reference, approx) -> float:
    """``||reference - approx||_F / ||reference||_F`` of real arrays at any finite scale.

    Both are first multiplied by the power of two that brings ``max|reference|``
    near 1 (exact), so no square overflows or underflows.
    """
    reference, approx = np.asarray(reference), np.asarray(approx)
    exponent = -np.frexp(np.abs(reference).max())[1]
    reference, approx = np.ldexp(reference, exponent), np.ldexp(approx, exponent)
    return float(np.linalg.norm(reference - approx) / np.linalg.norm(reference))


def second_moment(rng: np.random.Generator, n: int, samples: int | None = None, scales=None) -> np.ndarray:
    """``E[x x^T]`` estimated from ``samples`` Gaussian inputs of dimension ``n`` whose coordinate ``j`` has
    standard deviation ``scales[j]`` (default 1); fewer samples than ``n`` give a rank-deficient moment."""
    samples = 4 * n if samples is None else samples
    scales = np.ones(n) if scales is None else np.asarray(scales, dtype=np.float64)
    x = rng.standard_normal((n, samples)) * scales[:, None]
    return x @ x.T / samples


def psd_sqrt(m: np.ndarray, ridge: float = 0.0) -> np.ndarray:
    """The symmetric square root of a symmetric PSD matrix, its eigenvalues clipped at ``ridge * max``."""
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.maximum(w, ridge * w[-1]))) @ v.T


def apply_metric(x: np.ndarray, roots: dict, labels: str) -> np.ndarray:
    """``x`` with each group's combined index (row-major in the group's order) multiplied by its matrix:
    ``out[..., k, ...] = sum_j x[..., j, ...] roots[group][j, k]``."""
    for group, root in roots.items():
        axes = [labels.index(c) for c in group]
        rest = [a for a in range(x.ndim) if a not in axes]
        moved = np.transpose(x, rest + axes)
        flat = moved.reshape(-1, root.shape[0]) @ root
        x = np.transpose(flat.reshape(moved.shape), np.argsort(rest + axes))
    return x


def metric_rel_error(reference, approx, metric: dict, labels: str, ridge: float = 0.0) -> float:
    """``||reference - approx||_M / ||reference||_M`` with ``||X||_M = ||X x_G sqrt(M_G)||_F`` (brute force)."""
    roots = {group: psd_sqrt(np.asarray(m, dtype=np.float64), ridge) for group, m in metric.items()}
    reference = np.asarray(reference, dtype=np.float64)
    diff = apply_metric(reference - np.asarray(approx, dtype=np.float64), roots, labels)
    return float(np.linalg.norm(diff) / np.linalg.norm(apply_metric(reference, roots, labels)))
