"""All-cut spectra of every conv kernel of a network: ``tnlib.spectra`` against a loop of LAPACK SVDs.

Ours is ``tnlib.spectra(kernel)`` (all 7 cuts of an ``oihw`` kernel at once);
the peer is ``numpy.linalg.svd(tnlib.matricize(kernel, cut), compute_uv=False)``
for each of the 7 cuts (NumPy runs LAPACK in double precision even for
float32 input).  Both are timed per kernel (best of runs) and summed,
which also gives the per-shape breakdown.  Accuracy is the largest absolute
difference between the two sets of Schmidt weights ``s**2 / sum s**2``.

The batched case times ``tnlib.spectra_many(kernels)`` (all kernels of the
network in one call, same-shaped ones stacked) against the whole loop of SVDs
and against ``tnlib.spectra`` called on each kernel, all three as one call over
the network (best of runs), in the same run.

Networks:

* a CIFAR ResNet-50 (torchvision's bottleneck ResNet-50 with a 3x3 stem conv
  and no max-pool: 53 conv kernels, 23.4M weights) with random float32
  kernels drawn with He scaling ``N(0, 2 / fan_in)``, seeded;
* the pretrained CIFAR-10 ResNet-56 of ``../shared/data/pretrained`` (relative
  to the repository root), when the file and torch are available.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

import tnlib
from benchmarks.harness import Check, Row, Section, Timing, measure, standalone

RESNET56 = Path(__file__).resolve().parents[2] / "shared" / "data" / "pretrained" / "resnet56-4bfd9763.th"
CUTS = tnlib.all_cuts("oihw")
#: A quick run: the ResNet-50 widths divided by this, and the first kernels of the pretrained ResNet-56.
QUICK_WIDTH_DIVISOR, QUICK_KERNELS = 16, 4


def cifar_resnet50_shapes(width_divisor: int = 1) -> list[tuple[int, int, int, int]]:
    """``(out, in, kh, kw)`` of every conv kernel of a CIFAR ResNet-50, in network order.

    Stem 3x3 conv with 64 filters, then bottleneck stages of [3, 4, 6, 3] blocks
    with widths 64, 128, 256, 512 and expansion 4; the first block of each
    stage has a 1x1 projection shortcut.  ``width_divisor`` shrinks every width
    (for quick runs).
    """
    stem = 64 // width_divisor
    shapes = [(stem, 3, 3, 3)]
    channels = stem
    for blocks, width in zip((3, 4, 6, 3), (64, 128, 256, 512)):
        width //= width_divisor
        out = 4 * width
        for block in range(blocks):
            shapes += [(width, channels, 1, 1), (width, width, 3, 3), (out, width, 1, 1)]
            if block == 0:
                shapes.append((out, channels, 1, 1))
            channels = out
    return shapes


def random_kernels(shapes: list[tuple[int, ...]], seed: int = 0) -> Iterator[np.ndarray]:
    """He-scaled Gaussian float32 kernels, one per shape, from one seeded generator."""
    rng = np.random.default_rng(seed)
    for shape in shapes:
        fan_in = int(np.prod(shape[1:]))
        yield (rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / fan_in)))


def pretrained_kernels(path: Path) -> list[np.ndarray]:
    """Every 4-index tensor of the checkpoint's ``state_dict``, as float32 numpy arrays."""
    import torch

    checkpoint = torch.load(path, weights_only=True, map_location="cpu")
    state = checkpoint.get("state_dict", checkpoint)
    return [t.detach().float().numpy() for t in state.values() if t.ndim == 4]


def _weights(s: np.ndarray) -> np.ndarray:
    sq = np.asarray(s, dtype=np.float64) ** 2
    return sq / sq.sum() if sq.sum() > 0 else sq


def _max_weight_difference(ours: dict, peer: list[np.ndarray]) -> float:
    """Largest ``|p_ours - p_peer|`` over all cuts (shorter spectra padded with zeros)."""
    worst = 0.0
    for cut, s in zip(CUTS, peer):
        p, q = ours[str(cut)].weights, _weights(s)
        n = max(len(p), len(q))
        worst = max(worst, float(np.max(np.abs(np.pad(p, (0, n - len(p))) - np.pad(q, (0, n - len(q)))))))
    return worst


def _loop_of_svds(kernel: np.ndarray) -> list[np.ndarray]:
    return [np.linalg.svd(tnlib.matricize(kernel, cut), compute_uv=False) for cut in CUTS]


def compare_network(title: str, kernels: Iterable[np.ndarray], quick: bool) -> Section:
    """Time both routes on every kernel; one row per distinct shape, then the total."""
    repeat = 1 if quick else 3
    groups: dict[tuple[int, ...], list[tuple[Timing, Timing, float]]] = {}
    parameters = 0
    for kernel in kernels:
        ours_time, ours = measure(lambda k=kernel: tnlib.spectra(k), repeat=repeat)
        peer_time, peer = measure(lambda k=kernel: _loop_of_svds(k), repeat=repeat)
        groups.setdefault(kernel.shape, []).append((ours_time, peer_time, _max_weight_difference(ours, peer)))
        parameters += kernel.size

    def row(case: str, results: list[tuple[Timing, Timing, float]]) -> Row:
        ours_time, peer_time, diff = zip(*results)
        extra = {"kernels": len(results), "max |dp|": max(diff)}
        return Row(case, Timing.total(ours_time), "numpy svd loop", Timing.total(peer_time), extra=extra)

    rows = [row("x".join(map(str, shape)), results) for shape, results in groups.items()]
    everything = [r for results in groups.values() for r in results]
    total = row(f"TOTAL ({parameters / 1e6:.2f}M weights)", everything)
    checks = [
        Check(f"{title}: tnlib.spectra >= 5x faster than the SVD loop", total.speedup >= 5, f"{total.speedup:.2f}x"),
        Check(
            f"{title}: Schmidt weights agree within 1e-5",
            total.extra["max |dp|"] <= 1e-5,
            f"max |dp| = {total.extra['max |dp|']:.2e}",
        ),
    ]
    notes = [f"per kernel best of {repeat} run(s) after one warm-up, summed; {len(CUTS)} cuts per kernel"]
    return Section(f"All-cut spectra, {title}", [*rows, total], checks, notes)


def _max_weight_gap(ours: list[dict], reference: list[dict]) -> float:
    """Largest ``|p - q|`` between the Schmidt weights of two lists of ``{cut: Spectrum}``."""
    return max(
        float(np.max(np.abs(got[cut].weights - want.weights))) for got, expected in zip(ours, reference)
        for cut, want in expected.items()
    )


def compare_batched(title: str, kernels: list[np.ndarray], quick: bool) -> Section:
    """``spectra_many`` on the whole network against the SVD loop and ``spectra`` per kernel, same run."""
    repeat = 1 if quick else 3
    ours_time, ours = measure(lambda: tnlib.spectra_many(kernels), repeat=repeat)
    loop_time, loop = measure(lambda: [_loop_of_svds(k) for k in kernels], repeat=repeat)
    each_time, each = measure(lambda: [tnlib.spectra(k) for k in kernels], repeat=repeat)
    to_loop = max(_max_weight_difference(o, p) for o, p in zip(ours, loop))
    case = f"spectra_many, {len(kernels)} kernels, {len({k.shape for k in kernels})} shapes"
    rows = [
        Row(case, ours_time, "numpy svd loop", loop_time, extra={"max |dp|": to_loop}),
        Row(case, ours_time, "tnlib.spectra per kernel", each_time, extra={"max |dp|": _max_weight_gap(ours, each)}),
    ]
    checks = [
        Check(f"{title}: spectra_many >= 4x faster than the SVD loop (issue 16)", rows[0].speedup >= 4,
              f"{rows[0].speedup:.2f}x"),
        Check(f"{title}: spectra_many faster than spectra per kernel", rows[1].speedup > 1, f"{rows[1].speedup:.2f}x"),
        Check(f"{title}: Schmidt weights agree with the SVD loop within 1e-5", to_loop <= 1e-5, f"{to_loop:.2e}"),
    ]
    notes = [f"the whole network per call, best of {repeat} run(s) after one warm-up; {len(CUTS)} cuts per kernel"]
    return Section(f"Batched all-cut spectra, {title}", rows, checks, notes)


def run(quick: bool = False) -> list[Section]:
    """The random CIFAR ResNet-50, then the pretrained ResNet-56 (quick: widths / 16, first 4 kernels)."""
    shapes = cifar_resnet50_shapes(QUICK_WIDTH_DIVISOR if quick else 1)
    title = f"CIFAR ResNet-50{f' / {QUICK_WIDTH_DIVISOR}' if quick else ''} (random float32)"
    sections = [compare_network(title, random_kernels(shapes), quick)]
    sections.append(compare_batched(title, list(random_kernels(shapes)), quick))
    if not RESNET56.is_file() or importlib.util.find_spec("torch") is None:
        missing = "torch is not installed" if RESNET56.is_file() else f"{RESNET56} not found"
        for kind in ("All-cut spectra", "Batched all-cut spectra"):
            sections.append(Section(f"{kind}, pretrained ResNet-56", [], notes=[f"skipped: {missing}"]))
        return sections
    kernels = pretrained_kernels(RESNET56)
    kernels = kernels[:QUICK_KERNELS] if quick else kernels
    sections.append(compare_network("pretrained ResNet-56 (CIFAR-10)", kernels, quick))
    sections.append(compare_batched("pretrained ResNet-56 (CIFAR-10)", kernels, quick))
    return sections


if __name__ == "__main__":
    standalone("spectra", run)
