"""CPU inference latency of the torch adapter's factorized 3x3 convs against the dense conv they replace.

Each row times one factorized layer of :mod:`tnlib_torch` ("ours") and the
dense ``nn.Conv2d(C, C, 3, stride=1, padding=1)`` (with bias) it stands for
(the peer) on the same input; the speed-up is dense time / factorized time.
The structures, all built from scratch by their constructors with the same
geometry (3x3, stride 1, padding 1, bias on the last sub-conv):

* **Tucker-2**: ``Tucker2Conv2d(C, C, 3, ranks=(r_o, r_i))`` with the equal
  ratio ``r_o / C_out = r_i / C_in`` (here ``r_o = r_i``, the layers are square):
  1x1 ``C -> r_i``, 3x3 ``r_i -> r_o``, 1x1 ``r_o -> C``;
* **CP**: ``CPConv2d(C, C, 3, rank=R)``: 1x1 ``C -> R``, depthwise 3x1 and
  1x3 on the ``R`` channels, 1x1 ``R -> C``;
* **MPS ihwo**: ``MPSConv2d(C, C, 3, bond_dims, order="ihwo")`` with a uniform
  bound ``b``: ``bond_dims = min(b, the most each bond allows)``, i.e.
  ``(min(b, C), min(b, 3C), min(b, C))``: 1x1, 3x1, 1x3, 1x1;
* **SVD o|ihw**: ``SVDConv2d(C, C, 3, rank=r, cut="o|ihw")``: 3x3 ``C -> r``, 1x1 ``r -> C``;
* **SVD oh|iw**: ``SVDConv2d(C, C, 3, rank=r, cut="oh|iw")``: 1x3 ``C -> r``, 3x1 ``r -> C``.

Ranks.  For ``C`` in 64, 128, 256 and a target MAC reduction ``t`` in 2x, 4x,
8x, each structure gets the one size parameter (Tucker's ``r_i``, CP's ``R``,
the MPS bound ``b``, the SVD rank) whose MACs are closest to
``dense_MACs / t`` (ties to the smaller).  MACs are counted by
``tnlib_torch.count_macs(layer, (C, H, W))`` (one sample at the input size;
biases are not MACs) and the parameter is found by bisection, MACs being
non-decreasing in it.  The table's "MAC red." is the *realized* reduction
``dense_MACs / structure_MACs`` at the chosen ranks, and "realized" is
``speed-up / MAC red.``: the fraction of the MAC reduction that shows up as
speed-up (100%: the factorized layer is exactly as efficient per MAC as the
dense conv).

Timing.  float32 on the CPU, random weights (the factorized constructors'
from-scratch init, PyTorch's default init for the dense conv; the latency does
not depend on the values) and ``torch.randn`` inputs ``(batch, C, H, W)``,
every layer in eval mode and every call under ``torch.inference_mode()``;
torch's threads are pinned to :data:`benchmarks.harness.THREADS` (2) by the
harness for the whole run (the notes record ``torch.get_num_threads()``).
Every layer is timed by :func:`benchmarks.harness.measure`: one untimed
warm-up, a one-call probe, then the best of ``N`` timed calls with ``N`` chosen
so the calls take about 0.3 s (at least 5, at most 200; quick: about 0.005 s,
1 to 5).  The dense conv is timed once per (C, batch, input size) and shared
by its rows.

Sections: one per (batch, input size) -- batch 1 and 32, 16x16 and 32x32 --
each with rows per channel count, target and structure; and the two batch-32
sections again in the channels-last memory format (``torch.channels_last``:
the dense conv, its input and a copy of every factorized layer), where oneDNN's
1x1 and depthwise convs run faster than in the default NCHW layout.  Quick: 64 and 128
channels, batch 1 and 32 at 16x16 (batch 32 in both layouts), the 4x target only.

Targets (reported, never asserted): Tucker-2 and CP realize at least 60% of
their MAC reduction as speed-up at 4x and 8x (each check counts the cases and
names those below); a note lists every row where the structure is slower than
the dense conv.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from math import prod

import torch
from torch import nn

import tnlib_torch as tt
from benchmarks.harness import Check, Row, Section, Timing, measure, standalone

CHANNELS, QUICK_CHANNELS = (64, 128, 256), (64,)
TARGETS, QUICK_TARGETS = (2, 4, 8), (4,)
#: (batch, input side, memory format) of each section.
CASES = ((1, 16, torch.contiguous_format), (1, 32, torch.contiguous_format), (32, 16, torch.contiguous_format),
         (32, 32, torch.contiguous_format), (32, 16, torch.channels_last), (32, 32, torch.channels_last))
QUICK_CASES = ((1, 16, torch.contiguous_format), (32, 16, torch.contiguous_format), (32, 16, torch.channels_last))
#: Seconds of timed calls per layer, and the bounds on their number (full, quick).
BUDGET_S, MIN_REPEAT, MAX_REPEAT = 0.3, 5, 200
QUICK_BUDGET_S, QUICK_MIN_REPEAT, QUICK_MAX_REPEAT = 0.005, 1, 5
#: Fraction of the MAC reduction Tucker-2 and CP should realize as speed-up, and from which target on.
REALIZED_TARGET, CHECKED_FROM = 0.6, 4
CHECKED = ("Tucker-2", "CP")
DENSE = "nn.Conv2d 3x3"
KERNEL = 3


# ---------------------------------------------------------------- structures


def _mps_limits(c_in: int, c_out: int) -> list[int]:
    """The most each bond of the order ``ihwo`` allows for a ``(c_out, c_in, 3, 3)`` kernel."""
    dims = (c_in, KERNEL, KERNEL, c_out)
    return [min(prod(dims[: k + 1]), prod(dims[k + 1 :])) for k in range(3)]


@dataclass(frozen=True)
class Structure:
    """A factorized conv with one size parameter.

    Attributes
    ----------
    name
        Its label in the tables.
    build
        ``build(channels, k) -> layer``: the square ``channels -> channels`` 3x3
        conv (stride 1, padding 1, bias) at size parameter ``k``.
    largest
        ``largest(channels)``: the largest ``k`` the constructor accepts.
    ranks
        ``ranks(layer)``: its ranks as shown in the table.
    """

    name: str
    build: Callable[[int, int], nn.Module]
    largest: Callable[[int], int]
    ranks: Callable[[nn.Module], str]


def _tucker2(c: int, k: int) -> nn.Module:
    c_in = c_out = c
    r_o = min(max(1, round(k * c_out / c_in)), c_out)  # equal ratio r_o / out = r_i / in (square: r_o = r_i)
    return tt.Tucker2Conv2d(c_in, c_out, KERNEL, ranks=(r_o, k), padding=1)


def _mps(c: int, k: int) -> nn.Module:
    return tt.MPSConv2d(c, c, KERNEL, bond_dims=[min(k, lim) for lim in _mps_limits(c, c)], order="ihwo", padding=1)


STRUCTURES = (
    Structure("Tucker-2", _tucker2, lambda c: c, lambda m: "-".join(map(str, m.ranks))),
    Structure("CP", lambda c, k: tt.CPConv2d(c, c, KERNEL, rank=k, padding=1), lambda c: c * KERNEL * KERNEL,
              lambda m: str(m.rank)),
    Structure("MPS ihwo", _mps, lambda c: max(_mps_limits(c, c)), lambda m: "-".join(map(str, m.bond_dims))),
    Structure("SVD o|ihw", lambda c, k: tt.SVDConv2d(c, c, KERNEL, rank=k, cut="o|ihw", padding=1), lambda c: c,
              lambda m: str(m.rank)),
    Structure("SVD oh|iw", lambda c, k: tt.SVDConv2d(c, c, KERNEL, rank=k, cut="oh|iw", padding=1),
              lambda c: KERNEL * c, lambda m: str(m.rank)),
)


def closest_size(macs: Callable[[int], int], goal: float, largest: int) -> int:
    """The ``k`` in ``1..largest`` whose ``macs(k)`` (non-decreasing) is closest to ``goal``, ties to the smaller."""
    lo, hi = 1, largest  # bisect for the largest k with macs(k) <= goal (or 1)
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if macs(mid) <= goal:
            lo = mid
        else:
            hi = mid - 1
    if lo < largest and abs(macs(lo + 1) - goal) < abs(macs(lo) - goal):
        return lo + 1
    return lo


# -------------------------------------------------------------------- timing


def _time(layer: nn.Module, x: torch.Tensor, quick: bool) -> Timing:
    """Best of N calls ``layer(x)`` after a warm-up, N sized to the time budget (see the module docstring)."""
    budget, low, high = (QUICK_BUDGET_S, QUICK_MIN_REPEAT, QUICK_MAX_REPEAT) if quick else (
        BUDGET_S, MIN_REPEAT, MAX_REPEAT)
    layer.eval()
    with torch.inference_mode():
        probe, _ = measure(lambda: layer(x), repeat=1, warmup=1)
        repeat = min(max(round(1e3 * budget / max(probe.best_ms, 1e-3)), low), high)
        timing, _ = measure(lambda: layer(x), repeat=repeat, warmup=0)
    return timing


@dataclass
class _Layer:
    """A structure at its chosen size: the layer and its MACs (one sample)."""

    structure: Structure
    layer: nn.Module
    macs: int

    @classmethod
    def at_target(cls, structure: Structure, channels: int, side: int, dense_macs: int, target: int) -> _Layer:
        size = (channels, side, side)
        cache: dict[int, int] = {}

        def macs(k: int) -> int:
            if k not in cache:
                cache[k] = tt.count_macs(structure.build(channels, k), size)
            return cache[k]

        k = closest_size(macs, dense_macs / target, structure.largest(channels))
        return cls(structure, structure.build(channels, k), macs(k))


# ------------------------------------------------------------------ sections


@dataclass
class _Result:
    """One row with what the checks need: its structure, target and realized MAC reduction."""

    row: Row
    structure: str
    label: str
    target: int
    reduction: float

    @property
    def realized(self) -> float:
        """Speed-up over MAC reduction."""
        return self.row.speedup / self.reduction


def _section(batch: int, side: int, layout: torch.memory_format, channels: Sequence[int], targets: Sequence[int],
             quick: bool, layers: dict[tuple[int, int, int], list[_Layer]]) -> Section:
    results: list[_Result] = []
    for c in channels:
        torch.manual_seed(0)
        dense = nn.Conv2d(c, c, KERNEL, stride=1, padding=1).to(memory_format=layout)
        x = torch.randn(batch, c, side, side).contiguous(memory_format=layout)
        dense_macs = tt.count_macs(dense, (c, side, side))
        dense_time = _time(dense, x, quick)
        for target in targets:
            key = (c, side, target)
            if key not in layers:  # the chosen ranks depend on the input size, not on the batch
                layers[key] = [_Layer.at_target(s, c, side, dense_macs, target) for s in STRUCTURES]
            for chosen in layers[key]:
                timing = _time(copy.deepcopy(chosen.layer).to(memory_format=layout), x, quick)
                reduction = dense_macs / chosen.macs
                speedup = dense_time.best_ms / timing.best_ms
                name, label = chosen.structure.name, f"{c}ch {target}x"
                row = Row(f"{label} {name}", timing, DENSE, dense_time, extra={
                    "ranks": chosen.structure.ranks(chosen.layer),
                    "MAC red.": f"{reduction:.2f}x",
                    "realized": f"{speedup / reduction:.0%}",
                })
                results.append(_Result(row, name, label, target, reduction))
    layout_name = " channels_last" if layout == torch.channels_last else ""
    title = (f"CPU float32 inference, batch {batch}, {side}x{side}{layout_name} inputs: factorized 3x3 convs (ours) "
             f"against the dense {DENSE} they replace")
    return Section(title, [r.row for r in results], _checks(results), _notes(results, quick))


def _checks(results: Sequence[_Result]) -> list[Check]:
    checks = []
    for name in CHECKED:
        cases = [r for r in results if r.structure == name and r.target >= CHECKED_FROM]
        if not cases:
            continue
        below = [r for r in cases if r.realized < REALIZED_TARGET]
        detail = f"{len(cases) - len(below)} of {len(cases)} cases"
        if below:
            detail += "; below: " + ", ".join(f"{r.label} ({r.realized:.0%})" for r in below)
        checks.append(Check(f"{name} realizes >= {REALIZED_TARGET:.0%} of its MAC reduction as speed-up at "
                            f">= {CHECKED_FROM}x", not below, detail))
    return checks


def _notes(results: Sequence[_Result], quick: bool) -> list[str]:
    budget, low, high = (QUICK_BUDGET_S, QUICK_MIN_REPEAT, QUICK_MAX_REPEAT) if quick else (
        BUDGET_S, MIN_REPEAT, MAX_REPEAT)
    rows = [r.row for r in results]
    slower = [f"{r.case} ({r.speedup:.2f}x)" for r in rows if r.speedup < 1]
    runs = [r.ours.runs for r in rows] + [r.peer_time.runs for r in rows]
    return [
        f"ours = the factorized layer, peer = the dense conv; speed-up = dense ms / ours ms (best of runs); "
        f"torch threads: {torch.get_num_threads()}, float32, eval mode, torch.inference_mode()",
        f"each layer: 1 warm-up, a 1-call probe, then best of N calls, N sized to ~{budget:g} s within "
        f"[{low}, {high}] (here {min(runs)}-{max(runs)})",
        "ranks: the size parameter whose count_macs is closest to dense MACs / target (Tucker-2 r_o-r_i with "
        "r_o/out = r_i/in, CP R, MPS ihwo bond dims under a uniform bound, SVD rank); MAC red. is the realized "
        "dense / structure MACs, realized = speed-up / MAC red.",
        ("slower than dense: " + ", ".join(slower)) if slower else "slower than dense: none",
    ]


def run(quick: bool = False) -> list[Section]:
    """One section per (batch, input size, layout) (quick: 64 channels at 16x16, the 4x target only)."""
    channels, targets, cases = (QUICK_CHANNELS, QUICK_TARGETS, QUICK_CASES) if quick else (CHANNELS, TARGETS, CASES)
    layers: dict[tuple[int, int, int], list[_Layer]] = {}
    return [_section(batch, side, layout, channels, targets, quick, layers) for batch, side, layout in cases]


if __name__ == "__main__":
    standalone("layers", run)
