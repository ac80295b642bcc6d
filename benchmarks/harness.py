"""The shared benchmark harness: timing, result rows, tables, checks and JSON.

A benchmark module exposes ``run(quick: bool) -> list[Section]``.  A
:class:`Section` is one printed table: rows (:class:`Row`) comparing tnlib
("ours") with one peer each, the targets it is judged by (:class:`Check`), and
notes.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tnlib._files import atomic_write_text

#: Threads given to BLAS, OpenMP and torch during every benchmark.
THREADS = 2


@dataclass(frozen=True)
class Timing:
    """Wall-clock times of one measured call, in milliseconds.

    Attributes
    ----------
    best_ms
        Fastest of the timed runs (what the tables show).
    median_ms
        Median of the timed runs.
    runs
        Number of timed runs (warm-up calls excluded).
    """

    best_ms: float
    median_ms: float
    runs: int

    @staticmethod
    def total(timings: Iterable[Timing]) -> Timing:
        """Sum of several timings (bests and medians summed separately)."""
        timings = list(timings)
        return Timing(
            sum(t.best_ms for t in timings),
            sum(t.median_ms for t in timings),
            min((t.runs for t in timings), default=0),
        )


def measure(fn: Callable[[], Any], repeat: int = 5, warmup: int = 1) -> tuple[Timing, Any]:
    """Time ``fn()`` with :func:`time.perf_counter`.

    Parameters
    ----------
    fn
        The call to time, without arguments.
    repeat
        Number of timed calls (at least 1).
    warmup
        Untimed calls made first (caches, lazy imports, thread pools).

    Returns
    -------
    timing : Timing
        Best and median of the ``repeat`` timed calls.
    result
        What the last call returned (to check its accuracy).
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(repeat, 1)):
        start = time.perf_counter()
        result = fn()
        times.append(1e3 * (time.perf_counter() - start))
    return Timing(min(times), statistics.median(times), len(times)), result


@dataclass
class Row:
    """One comparison: tnlib against one peer on one case.

    Attributes
    ----------
    case
        What is computed (and by which tnlib method, where it matters).
    ours, peer_time
        Timings of tnlib and of the peer.
    peer
        Name of the peer.
    ours_error, peer_error
        Relative error of each (``None``: not measured).
    extra
        Further columns, by name.
    """

    case: str
    ours: Timing
    peer: str
    peer_time: Timing
    ours_error: float | None = None
    peer_error: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def speedup(self) -> float:
        """Peer time over our time (best of runs): above 1 when tnlib is faster."""
        return self.peer_time.best_ms / self.ours.best_ms if self.ours.best_ms > 0 else float("inf")


@dataclass(frozen=True)
class Check:
    """A performance or accuracy target and whether it was met (reported, not asserted)."""

    target: str
    passed: bool
    detail: str = ""


@dataclass
class Section:
    """One table of results with its targets and notes."""

    title: str
    rows: list[Row]
    checks: list[Check] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serializable dict (rows carry their speed-up)."""
        out = dataclasses.asdict(self)
        for row, data in zip(self.rows, out["rows"]):
            data["speedup"] = row.speedup
        return out


# ------------------------------------------------------------------ printing


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, (float, np.floating)):
        return f"{value:.4e}"
    return str(value)


def _ms(value: float) -> str:
    return f"{value:.1f}" if value >= 10 else f"{value:.3f}"


def format_table(rows: Sequence[Row]) -> str:
    """The rows as an aligned text table.

    Columns: case, ours (ms), peer, peer (ms), speed-up (peer / ours), our and
    the peer's relative error (left out when no row has one), then every
    ``extra`` key in order of appearance.
    """
    extras = list(dict.fromkeys(key for row in rows for key in row.extra))
    errors = any(r.ours_error is not None or r.peer_error is not None for r in rows)
    header = ["case", "ours (ms)", "peer", "peer (ms)", "speed-up"]
    header += ["our rel. error", "peer rel. error"] if errors else []
    lines = [header + extras]
    for r in rows:
        cells = [r.case, _ms(r.ours.best_ms), r.peer, _ms(r.peer_time.best_ms), f"{r.speedup:.2f}x"]
        cells += [_cell(r.ours_error), _cell(r.peer_error)] if errors else []
        lines.append(cells + [_cell(r.extra.get(key)) for key in extras])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) + len(extras))]
    text = [
        "  ".join(cell.ljust(w) if i in (0, 2) else cell.rjust(w) for i, (cell, w) in enumerate(zip(line, widths)))
        for line in lines
    ]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(text)


def print_section(section: Section) -> None:
    """Print a section: title, table, notes, then PASS/FAIL per target."""
    print(f"\n{section.title}\n{'=' * len(section.title)}")
    if section.rows:
        print(format_table(section.rows))
    for note in section.notes:
        print(f"note: {note}")
    for check in section.checks:
        print(f"{'PASS' if check.passed else 'FAIL'}: {check.target}" + (f" ({check.detail})" if check.detail else ""))
    sys.stdout.flush()


# ------------------------------------------------------------- environment


@contextlib.contextmanager
def pinned_threads(threads: int = THREADS) -> Iterator[None]:
    """Limit BLAS/OpenMP (threadpoolctl) and torch to ``threads`` threads, restoring them after."""
    from threadpoolctl import threadpool_limits

    try:
        import torch
    except ImportError:
        torch = None
    before = torch.get_num_threads() if torch is not None else None
    with threadpool_limits(limits=threads):
        if torch is not None:
            torch.set_num_threads(threads)
        try:
            yield
        finally:
            if torch is not None:
                torch.set_num_threads(before)


def environment() -> dict[str, Any]:
    """Versions and machine facts recorded with the results."""
    import scipy

    info = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "threads": THREADS,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
    }
    for name in ("torch", "sklearn"):
        with contextlib.suppress(ImportError):
            info[name] = __import__(name).__version__
    return info


def write_json(path: str | os.PathLike, payload: Any) -> None:
    """Write ``payload`` as JSON atomically (:func:`tnlib._files.atomic_write_text`), creating its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(payload, indent=2) + "\n")


# ------------------------------------------------------------------ running


def run_benchmark(name: str, run: Callable[[bool], list[Section]], quick: bool) -> list[Section]:
    """Run one benchmark with pinned threads, printing each of its sections."""
    print(f"\n### benchmark {name}" + (" (quick: a smoke run; the targets refer to the full sizes)" if quick else ""))
    with pinned_threads():
        sections = run(quick)
    for section in sections:
        print_section(section)
    return sections


def results_payload(results: dict[str, list[Section]], quick: bool) -> dict[str, Any]:
    """The JSON document of a set of benchmark results."""
    return {
        "quick": quick,
        "environment": environment(),
        "benchmarks": {name: [s.to_dict() for s in sections] for name, sections in results.items()},
    }


def standalone(name: str, run: Callable[[bool], list[Section]], argv: Sequence[str] | None = None) -> None:
    """Command line of a single benchmark module (``python -m benchmarks.bench_NAME``)."""
    parser = argparse.ArgumentParser(
        prog=f"python -m benchmarks.bench_{name}", description=f"Run the {name} benchmark."
    )
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run of a few seconds)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH")
    args = parser.parse_args(argv)
    sections = run_benchmark(name, run, args.quick)
    if args.json:
        write_json(args.json, results_payload({name: sections}, args.quick))
