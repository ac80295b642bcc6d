"""TT-SVD of conv kernels at equal bond dimension: tnlib against tensorly and quimb.

Every method decomposes a float64 ``oihw`` kernel into a matrix product state
(tensor train) in the chain order ``o, i, h, w`` with every bond bounded by
``max_bond = 64``:

* ours: ``tnlib.mps(k, max_bond=64)``;
* ``tensorly.decomposition.tensor_train(k, rank=[1, 64, 64, 64, 1])``;
* ``quimb.tensor.MatrixProductState.from_dense(k, k.shape, max_bond=64, cutoff=0.0)``
  (quimb's default ``cutoff=1e-10`` would also drop values whose squares sum to
  less than ``1e-10`` of the total; ``cutoff=0.0`` makes the bound the only
  truncation, as for the other two).

The error of each is the relative Frobenius error ``||K - K~||_F / ||K||_F``
of the contracted chain, in float64.

Kernels:

* synthetic ``256 x 256 x 3 x 3`` and ``512 x 512 x 3 x 3`` kernels whose
  matricization across ``o|ihw`` is ``U diag(s) V^T`` with Haar-random
  orthonormal ``U`` and ``V`` and ``s_k = 1/k`` (the construction of
  ``bench_svd.decaying_matrix``, seeded).  Only the first bond is truncated
  (the others have rank at most 9 and 3), so the optimal error at bond 64 is
  the Eckart-Young one, ``sqrt(sum_{k>64} s_k**2 / sum_k s_k**2)``;
* every 4-index tensor of the pretrained CIFAR-10 ResNet-56 of
  ``../shared/data/pretrained`` (relative to the repository root), as float64,
  when the file and torch are available.  Its kernels have at most 64
  channels, so bond 64 truncates nothing and every error is round-off.

Our peak memory is measured with :mod:`tracemalloc` in a separate untimed
call, as the peak of newly allocated bytes over the input's bytes (numpy's
arrays are traced; LAPACK's internal workspace is not).
"""

from __future__ import annotations

import importlib.util
import math
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import tnlib
from benchmarks.bench_svd import decaying_matrix
from benchmarks.harness import Check, Row, Section, Timing, measure, standalone

RESNET56 = Path(__file__).resolve().parents[2] / "shared" / "data" / "pretrained" / "resnet56-4bfd9763.th"
MAX_BOND = 64
SHAPES = [(256, 256, 3, 3), (512, 512, 3, 3)]
QUICK_MAX_BOND = 16
QUICK_SHAPES = [(32, 32, 3, 3), (64, 64, 3, 3)]
SPEEDUP_TARGET, MEMORY_TARGET, ERROR_SLACK = 3.0, 3.0, 1e-9


def decaying_kernel(shape: tuple[int, int, int, int], seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A float64 ``oihw`` kernel with ``s_k = 1/k`` across ``o|ihw``; returns it and ``s``."""
    matrix, s = decaying_matrix((shape[0], int(np.prod(shape[1:]))), "float64", seed)
    return matrix.reshape(shape), s


def pretrained_kernels(path: Path) -> list[np.ndarray]:
    """Every 4-index tensor of the checkpoint's ``state_dict``, as float64 numpy arrays."""
    import torch

    checkpoint = torch.load(path, weights_only=True, map_location="cpu")
    state = checkpoint.get("state_dict", checkpoint)
    return [t.detach().double().numpy() for t in state.values() if t.ndim == 4]


def _rel_error(k: np.ndarray, approx: Any) -> float:
    approx = np.asarray(approx, dtype=np.float64).reshape(k.shape)
    norm = np.linalg.norm(k)
    return float(np.linalg.norm(k - approx) / norm) if norm > 0 else float(np.linalg.norm(approx))


def _methods(max_bond: int) -> tuple[Callable, dict[str, tuple[Callable, Callable]], list[str]]:
    """Ours, and the available peers as ``name -> (decompose, to_dense)``; plus notes on missing peers."""
    peers: dict[str, tuple[Callable, Callable]] = {}
    missing = []
    if importlib.util.find_spec("tensorly") is not None:
        import tensorly as tl
        from tensorly.decomposition import tensor_train

        peers["tensorly tensor_train"] = (
            lambda k: tensor_train(k, rank=[1] + [max_bond] * (k.ndim - 1) + [1]),
            tl.tt_to_tensor,
        )
    else:
        missing.append("tensorly is not installed")
    if importlib.util.find_spec("quimb") is not None:
        import quimb.tensor as qtn

        peers["quimb MPS.from_dense"] = (
            lambda k: qtn.MatrixProductState.from_dense(k, k.shape, max_bond=max_bond, cutoff=0.0),
            lambda q: q.to_dense(),
        )
    else:
        missing.append("quimb is not installed")

    def ours(k: np.ndarray) -> tnlib.MPS:
        return tnlib.mps(k, max_bond=max_bond)

    return ours, peers, missing


def peak_ratio(fn: Callable[[], Any], nbytes: int) -> float:
    """Peak of the bytes newly allocated by ``fn()`` (tracemalloc) over ``nbytes``."""
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        result = fn()
        peak = tracemalloc.get_traced_memory()[1] - base
        del result
    finally:
        if not tracing:
            tracemalloc.stop()
    return peak / nbytes


class _Case:
    """Timings, errors and our peak memory on one kernel."""

    def __init__(self, k: np.ndarray, max_bond: int, repeat: int) -> None:
        ours, peers, _ = _methods(max_bond)
        self.ours_time, m = measure(lambda: ours(k), repeat=repeat)
        self.ours_error = _rel_error(k, m.to_dense())
        self.bond_dims = m.bond_dims
        self.memory = peak_ratio(lambda: ours(k), k.nbytes)
        self.peers: dict[str, tuple[Timing, float]] = {}
        for name, (decompose, dense) in peers.items():
            timing, out = measure(lambda d=decompose: d(k), repeat=repeat)
            self.peers[name] = (timing, _rel_error(k, dense(out)))


def _rows(case: str, results: list[_Case], extra: dict[str, Any]) -> list[Row]:
    """One row per peer, timings summed over ``results`` and errors their maximum."""
    ours_time = Timing.total(r.ours_time for r in results)
    ours_error = max(r.ours_error for r in results)
    extra = {**extra, "our peak / input": max(r.memory for r in results)}
    rows = []
    for peer in results[0].peers:
        peer_time = Timing.total(r.peers[peer][0] for r in results)
        peer_error = max(r.peers[peer][1] for r in results)
        rows.append(Row(case, ours_time, peer, peer_time, ours_error, peer_error, dict(extra)))
    return rows


def _checks(what: str, rows: list[Row], memory: float | None = None, on: str = "") -> list[Check]:
    """Speed against the faster peer, error against each peer and our memory (reported, never asserted).

    ``memory`` defaults to the rows' peak ratio; ``on`` says which kernel it was measured on.
    """
    if not rows:
        return []
    fastest = min(rows, key=lambda r: r.peer_time.best_ms)
    worst_gap = max(rows, key=lambda r: rows[0].ours_error - r.peer_error)
    gap = worst_gap.ours_error - worst_gap.peer_error
    memory = rows[0].extra["our peak / input"] if memory is None else memory
    return [
        Check(
            f"{what}: >= {SPEEDUP_TARGET:g}x faster than the faster peer ({fastest.peer})",
            fastest.speedup >= SPEEDUP_TARGET,
            f"{fastest.speedup:.2f}x",
        ),
        Check(
            f"{what}: error no worse than every peer's (within {ERROR_SLACK:g})",
            gap <= ERROR_SLACK,
            f"ours {worst_gap.ours_error:.4e} vs {worst_gap.peer} {worst_gap.peer_error:.4e}",
        ),
        Check(f"{what}: our peak memory < {MEMORY_TARGET:g}x the input{on}", memory < MEMORY_TARGET, f"{memory:.2f}x"),
    ]


def bench_synthetic(quick: bool) -> Section:
    """The synthetic decaying kernels, one row per shape and peer."""
    shapes, max_bond = (QUICK_SHAPES, QUICK_MAX_BOND) if quick else (SHAPES, MAX_BOND)
    repeat = 1 if quick else 5
    title = f"TT-SVD at max_bond={max_bond}, float64 kernels with s_k = 1/k across o|ihw"
    _, peers, missing = _methods(max_bond)
    notes = [f"best of {repeat} run(s) after one warm-up; ours is tnlib.mps(k, max_bond={max_bond})"]
    notes += [f"peer left out: {why}" for why in missing]
    if not peers:
        return Section(title, [], notes=[f"skipped: {'; '.join(missing)}"])
    rows, checks = [], []
    for shape in shapes:
        k, s = decaying_kernel(shape)
        optimal = float(np.sqrt(np.sum(s[max_bond:] ** 2) / np.sum(s**2)))
        case = _Case(k, max_bond, repeat)
        name = "x".join(map(str, shape))
        shape_rows = _rows(name, [case], {"optimal error": optimal, "bonds": "-".join(map(str, case.bond_dims))})
        rows += shape_rows
        checks += _checks(name, shape_rows)
    notes.append("rel. error = ||K - K~||_F / ||K||_F; optimal error = Eckart-Young minimum of the o|ihw bond")
    return Section(title, rows, checks, notes)


def bench_resnet56(quick: bool) -> Section:
    """The pretrained ResNet-56 kernels: one row per shape and peer, then the total."""
    max_bond = QUICK_MAX_BOND if quick else MAX_BOND
    title = f"TT-SVD at max_bond={max_bond}, pretrained ResNet-56 (CIFAR-10) kernels in float64"
    if not RESNET56.is_file() or importlib.util.find_spec("torch") is None:
        missing = "torch is not installed" if RESNET56.is_file() else f"{RESNET56} not found"
        return Section(title, [], notes=[f"skipped: {missing}"])
    _, peers, missing = _methods(max_bond)
    if not peers:
        return Section(title, [], notes=[f"skipped: {'; '.join(missing)}"])
    kernels = pretrained_kernels(RESNET56)
    kernels = kernels[:8] if quick else kernels
    repeat = 1 if quick else 3
    groups: dict[tuple[int, ...], list[_Case]] = {}
    for k in kernels:
        groups.setdefault(k.shape, []).append(_Case(k, max_bond, repeat))
    rows = []
    for shape, cases in groups.items():
        rows += _rows("x".join(map(str, shape)), cases, {"kernels": len(cases)})
    weights = sum(k.size for k in kernels)
    everything = [c for cases in groups.values() for c in cases]
    total = _rows(f"TOTAL ({weights / 1e6:.2f}M weights)", everything, {"kernels": len(everything)})
    largest = max(groups, key=math.prod)  # tiny kernels' peaks are dominated by fixed overheads
    memory = max(c.memory for c in groups[largest])
    on = f" (largest kernels, {'x'.join(map(str, largest))})"
    notes = [
        f"per kernel best of {repeat} run(s) after one warm-up, summed; errors and peak memory are the worst kernel's",
        *[f"peer left out: {why}" for why in missing],
    ]
    return Section(title, rows + total, _checks("ResNet-56 total", total, memory, on), notes)


def run(quick: bool = False) -> list[Section]:
    """The synthetic kernels, then the pretrained ResNet-56 (quick: small shapes, bond 16, first 8 kernels)."""
    return [bench_synthetic(quick), bench_resnet56(quick)]


if __name__ == "__main__":
    standalone("mps", run)
