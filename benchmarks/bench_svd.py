"""Rank-64 truncated SVD of a 512 x 4608 matrix: tnlib against scikit-learn, torch and LAPACK.

The matrix has the shape of a 512-channel 3x3 conv kernel matricized across
``o|ihw`` and is built as ``A = U diag(s) V^T`` with Haar-random orthonormal
``U`` (512 x 512) and ``V`` (4608 x 512) and the power-law spectrum
``s_k = 1/k``: a slow, heavy-tailed decay like that of trained layer weights,
so that the leading 64 values leave a relative error of 9.08% and a sloppy
sketch shows up in the error.  The error of each method is the relative
Frobenius error ``||A - U_r S_r Vh_r||_F / ||A||_F`` (in float64); the
Eckart-Young optimum is ``sqrt(sum_{k>64} s_k**2 / sum_k s_k**2)``.

Peers: ``sklearn.utils.extmath.randomized_svd(a, 64, random_state=0)``,
``torch.svd_lowrank(t, q=64)`` (``niter=2``) and the exact
``numpy.linalg.svd(a, full_matrices=False)`` truncated to 64 (NumPy runs
LAPACK in double precision even for float32 input).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

import tnlib
from benchmarks.harness import Check, Row, Section, Timing, measure, standalone

SHAPE, RANK = (512, 4608), 64
QUICK_SHAPE, QUICK_RANK = (64, 576), 8


def decaying_matrix(shape: tuple[int, int], dtype: str, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``U diag(s) V^T`` with random orthonormal factors and ``s_k = 1/k``; returns the matrix and ``s``."""
    rng = np.random.default_rng(seed)
    m, n = shape
    k = min(m, n)
    u, _ = np.linalg.qr(rng.standard_normal((m, k)))
    v, _ = np.linalg.qr(rng.standard_normal((n, k)))
    s = 1.0 / np.arange(1, k + 1)
    return ((u * s) @ v.T).astype(dtype), s


def rel_error(a: np.ndarray, u, s, vh) -> float:
    """``||A - U diag(S) Vh||_F / ||A||_F`` in float64."""
    a64 = a.astype(np.float64)
    approx = (np.asarray(u, dtype=np.float64) * np.asarray(s, dtype=np.float64)) @ np.asarray(vh, dtype=np.float64)
    return float(np.linalg.norm(a64 - approx) / np.linalg.norm(a64))


def _solvers(a: np.ndarray, rank: int) -> tuple[dict[str, Callable], dict[str, Callable]]:
    """Ours and the peers, each a call returning numpy ``(U, S, Vh)`` truncated to ``rank``."""
    import torch
    from sklearn.utils.extmath import randomized_svd

    t = torch.from_numpy(a)

    def lowrank():
        u, s, v = torch.svd_lowrank(t, q=rank)
        return u.numpy(), s.numpy(), v.numpy().T

    def exact():
        u, s, vh = np.linalg.svd(a, full_matrices=False)
        return u[:, :rank], s[:rank], vh[:rank]

    ours = {
        "randomized": lambda: tnlib.truncated_svd(a, max_rank=rank, method="randomized", seed=0)[:3],
        "default": lambda: tnlib.truncated_svd(a, max_rank=rank, seed=0)[:3],
    }
    peers = {
        "sklearn randomized_svd": lambda: randomized_svd(a, rank, random_state=0),
        "torch.svd_lowrank": lowrank,
        "numpy.linalg.svd (exact)": exact,
    }
    return ours, peers


def _checks(dtype: str, rows: dict[tuple[str, str], Row]) -> list[Check]:
    rand_sk = rows["randomized", "sklearn randomized_svd"]
    auto_sk = rows["default", "sklearn randomized_svd"]
    auto_torch = rows["default", "torch.svd_lowrank"]
    return [
        Check(f"{dtype}: randomized >= 2x faster than scikit-learn", rand_sk.speedup >= 2, f"{rand_sk.speedup:.2f}x"),
        Check(
            f"{dtype}: randomized error within 5% of scikit-learn's",
            rand_sk.ours_error <= 1.05 * rand_sk.peer_error,
            f"ratio {rand_sk.ours_error / rand_sk.peer_error:.4f}",
        ),
        Check(
            f"{dtype}: default at least as fast as torch.svd_lowrank",
            auto_torch.ours.best_ms <= auto_torch.peer_time.best_ms,
            f"{auto_torch.speedup:.2f}x",
        ),
        Check(
            f"{dtype}: default error no worse than scikit-learn's (to 1e-6 relative)",
            auto_sk.ours_error <= auto_sk.peer_error * (1 + 1e-6),
            f"ratio {auto_sk.ours_error / auto_sk.peer_error:.4f}",
        ),
    ]


def bench_dtype(dtype: str, quick: bool) -> Section:
    """All comparisons on one dtype."""
    import torch

    shape, rank = (QUICK_SHAPE, QUICK_RANK) if quick else (SHAPE, RANK)
    repeat = 1 if quick else 7
    a, s = decaying_matrix(shape, dtype)
    optimal = float(np.sqrt(np.sum(s[rank:] ** 2) / np.sum(s**2)))
    ours, peers = _solvers(a, rank)

    def timed(fn: Callable) -> tuple[Timing, float]:
        timing, out = measure(fn, repeat=repeat)
        return timing, rel_error(a, *out)

    torch.manual_seed(0)  # torch.svd_lowrank draws its sketch from torch's global generator
    ours_results = {name: timed(fn) for name, fn in ours.items()}
    peer_results = {name: timed(fn) for name, fn in peers.items()}
    pairs = [("randomized", p) for p in peers] + [("default", p) for p in list(peers)[:2]]
    rows = {
        (o, p): Row(
            f"{dtype} {o}",
            ours_results[o][0],
            p,
            peer_results[p][0],
            ours_results[o][1],
            peer_results[p][1],
            {"optimal error": optimal},
        )
        for o, p in pairs
    }
    title = f"Rank-{rank} truncated SVD of a {shape[0]} x {shape[1]} {dtype} matrix, s_k = 1/k"
    notes = [
        f"best of {repeat} runs after one warm-up; 'default' is tnlib.truncated_svd(a, max_rank={rank}, seed=0)",
        "rel. error = ||A - U S Vh||_F / ||A||_F; optimal error = Eckart-Young minimum",
    ]
    return Section(title, list(rows.values()), _checks(dtype, rows), notes)


def run(quick: bool = False) -> list[Section]:
    """The float32 case (the main one), then float64."""
    return [bench_dtype("float32", quick), bench_dtype("float64", quick)]


if __name__ == "__main__":
    standalone("svd", run)
