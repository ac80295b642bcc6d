"""Run the benchmarks: ``python -m benchmarks [NAME ...] [--quick] [--json PATH]``.

Every ``bench_NAME.py`` module of this folder is a benchmark called ``NAME``;
with no names given all of them run, in alphabetical order.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from collections.abc import Sequence
from pathlib import Path

from benchmarks.harness import results_payload, run_benchmark, write_json

PREFIX = "bench_"


def discover() -> list[str]:
    """Names of the benchmark modules in this folder (``bench_svd.py`` gives ``"svd"``), sorted."""
    found = pkgutil.iter_modules([str(Path(__file__).parent)])
    return sorted(m.name[len(PREFIX) :] for m in found if m.name.startswith(PREFIX))


def main(argv: Sequence[str] | None = None) -> None:
    """Parse the command line, run the chosen benchmarks and optionally write JSON."""
    available = discover()
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description="Run tnlib's benchmarks.")
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"benchmarks to run (default: all of {available})")
    parser.add_argument("--quick", action="store_true", help="small sizes (a smoke run of a few seconds each)")
    parser.add_argument("--json", metavar="PATH", help="also write all results as JSON to PATH")
    args = parser.parse_args(argv)
    unknown = [n for n in args.names if n not in available]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; available: {', '.join(available)}")

    results = {}
    for name in dict.fromkeys(args.names or available):
        module = importlib.import_module(f"benchmarks.{PREFIX}{name}")
        results[name] = run_benchmark(name, module.run, args.quick)
    if args.json:
        write_json(args.json, results_payload(results, args.quick))
        print(f"\nresults written to {args.json}")


if __name__ == "__main__":
    main()
