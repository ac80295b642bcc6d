"""The core demo (`python -m tnlib`) on the embedded kernel and on a user's file."""

import json

import numpy as np

import tnlib
from tnlib.demo import example_kernel, main


def test_embedded_kernel_is_the_trained_resnet20_kernel():
    k = example_kernel()
    assert k.shape == (32, 32, 3, 3) and k.dtype == np.float32
    assert np.linalg.norm(k) > 1.0 and np.isfinite(k).all()


def test_demo_prints_every_cut_and_writes_spectra(tmp_path, capsys):
    out = tmp_path / "spectra.json"
    assert main(["--json", str(out)]) == 0
    text = capsys.readouterr().out
    for cut in tnlib.all_cuts("oihw"):
        assert f"\n{cut}" in text
    data = json.loads(out.read_text())
    expected = tnlib.spectra(example_kernel())
    for cut, sp in expected.items():
        assert tnlib.Spectrum.from_dict(data["spectra"][cut]) == sp
        # training leaves structure: a trained kernel has less entropy than noise of the same shape
        assert data["spectra"][cut]["entropy"] < data["random_spectra"][cut]["entropy"]
    assert not list(tmp_path.glob(".tmp-*"))


def test_demo_reads_a_users_npy_file(tmp_path, capsys):
    path = tmp_path / "t.npy"
    np.save(path, np.random.default_rng(0).standard_normal((3, 4, 5)))
    assert main([str(path), "--labels", "abc"]) == 0
    assert "ab|c" not in capsys.readouterr().out  # three labels: cuts a|bc, b|ac, c|ab
