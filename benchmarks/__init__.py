"""Benchmarks of tnlib against its peers (scikit-learn, torch, plain NumPy/LAPACK).

Each ``bench_*.py`` module in this folder exposes ``run(quick: bool) ->
list[Section]`` (see :mod:`benchmarks.harness`) and runs alone with
``python -m benchmarks.bench_NAME``; ``python -m benchmarks`` runs them all.
"""
