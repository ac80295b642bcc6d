"""The benchmarks run (a quick smoke run; speed is never asserted in a test)."""

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_every_benchmark_runs_quick_and_writes_json(tmp_path):
    pytest.importorskip("sklearn")
    pytest.importorskip("torch")
    out = tmp_path / "bench.json"
    subprocess.run([sys.executable, "-m", "benchmarks", "--quick", "--json", str(out)], cwd=ROOT, check=True,
                   capture_output=True, text=True, timeout=300)
    data = json.loads(out.read_text())
    expected = {"svd", "spectra", "mps", "tucker", "cp", "layers", "eval", "compress"}
    assert data["quick"] is True and expected <= set(data["benchmarks"])
    for sections in data["benchmarks"].values():
        for section in sections:
            if not section["rows"]:  # only a section on data this machine lacks may be empty, and says so
                assert any(note.startswith("skipped:") for note in section["notes"]), section["title"]
            for row in section["rows"]:
                assert row["ours"]["best_ms"] > 0 and row["peer_time"]["best_ms"] > 0
                for error in (row["ours_error"], row["peer_error"]):
                    assert error is None or (math.isfinite(error) and 0 <= error < 1)
    svd = data["benchmarks"]["svd"][0]["rows"]
    optimal = svd[0]["extra"]["optimal error"]
    assert all(row["ours_error"] <= 1.05 * optimal for row in svd)  # ours stays near Eckart-Young
    mps = data["benchmarks"]["mps"][0]["rows"]  # synthetic kernels: one row per shape and installed peer
    peers = [name for name, module in (("tensorly tensor_train", "tensorly"), ("quimb MPS.from_dense", "quimb"))
             if importlib.util.find_spec(module) is not None]
    assert {row["peer"] for row in mps} == set(peers) and len(mps) == 2 * len(peers)
    assert all(row["ours_error"] <= row["extra"]["optimal error"] * (1 + 1e-9) for row in mps)  # TT-SVD is optimal here
    if importlib.util.find_spec("tensorly") is not None:  # ours hosvd and tensorly's n_iter_max=0 are one algorithm
        hosvd = [row for section in data["benchmarks"]["tucker"] for row in section["rows"]
                 if row["case"].endswith(" hosvd")]
        assert hosvd and all(abs(row["ours_error"] - row["peer_error"]) <= 1e-9 * row["peer_error"] for row in hosvd)
