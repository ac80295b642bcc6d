"""The core demo (`python -m tnlib`, `tnlib spectra`) on the embedded kernel and on a user's file; the `tnlib`
console script of the core, which runs without torch; errors in one line with status 2."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import tnlib
from tnlib.cli import SPECTRA, Command, run
from tnlib.demo import example_kernel

SCRIPT = Path(sys.executable).with_name("tnlib")
needs_script = pytest.mark.skipif(not SCRIPT.is_file(), reason="the tnlib console script is not installed")


def main(argv):
    return run("python -m tnlib", SPECTRA, argv)


def command(*args, cwd, without_torch=False):
    """Run ``args`` in ``cwd``; ``without_torch``: importing torch fails there (a sitecustomize shim)."""
    env = dict(os.environ)
    if without_torch:
        (cwd / "sitecustomize.py").write_text("import sys\nsys.modules['torch'] = None\n")
        env["PYTHONPATH"] = str(cwd)
    return subprocess.run(list(args), cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def assert_one_line_error(result, prefix, *phrases):
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith(f"{prefix}: error: ") and result.stderr.count("\n") == 1, result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr


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


@pytest.mark.parametrize(("argv", "phrase"), [
    (["missing.npy"], "kernel 'missing.npy': no such file"),
    (["notes.txt"], "kernel 'notes.txt' is not a .npy file"),
    (["empty.npy"], "kernel 'empty.npy' is not a .npy file"),
    (["--labels", "ab"], "labels must give one label per index: the tensor has 4, 'ab' has 2"),
    (["--seed", "x"], "argument --seed: invalid int value: 'x'"),
    (["--lab", "oihw"], "unrecognized arguments: --lab "),  # never abbreviated
])
def test_python_m_tnlib_reports_a_bad_invocation_in_one_line(argv, phrase, tmp_path):
    (tmp_path / "notes.txt").write_text("not an array")
    (tmp_path / "empty.npy").write_bytes(b"")
    result = command(sys.executable, "-m", "tnlib", *argv, cwd=tmp_path)
    assert_one_line_error(result, "python -m tnlib", phrase)


@needs_script
def test_the_script_runs_spectra_and_its_help_without_torch(tmp_path):
    result = command(str(SCRIPT), "spectra", "--labels", "oihw", cwd=tmp_path, without_torch=True)
    assert result.returncode == 0 and "\no|ihw" in result.stdout, result.stderr
    result = command(str(SCRIPT), "spectra", "--help", cwd=tmp_path, without_torch=True)
    assert result.returncode == 0 and result.stdout.startswith("usage: tnlib spectra ")


@needs_script
def test_the_script_says_which_extra_a_command_needs(tmp_path):
    result = command(str(SCRIPT), "study", "--levels", "0.1", cwd=tmp_path, without_torch=True)
    assert_one_line_error(result, "tnlib study", 'pip install "tnlib[torch]"')
    result = command(str(SCRIPT), "--help", cwd=tmp_path, without_torch=True)
    assert result.returncode == 0 and 'study    (unavailable: ' in result.stdout, result.stdout


@needs_script
@pytest.mark.parametrize(("argv", "phrase"), [
    ([], "give a command: spectra, study"),
    (["stduy"], "invalid choice: 'stduy' (choose from 'spectra', 'study')"),
    (["--colour", "spectra"], "unrecognized arguments: --colour"),
])
def test_the_script_without_a_known_command_says_so_in_one_line(argv, phrase, tmp_path):
    result = command(str(SCRIPT), *argv, cwd=tmp_path, without_torch=True)
    assert_one_line_error(result, "tnlib", phrase)


def test_a_command_ends_in_one_line_with_status_2_or_130(capsys):
    def failing(args):
        raise ValueError("two\nlines")

    def interrupted(args):
        raise KeyboardInterrupt

    assert run("tnlib x", Command(help="x", configure=lambda parser: None, run=failing), []) == 2
    assert capsys.readouterr().err == "tnlib x: error: two lines\n"
    assert run("tnlib x", Command(help="x", configure=lambda parser: None, run=interrupted), []) == 130
    assert capsys.readouterr().err == "tnlib x: interrupted\n"
    assert run("tnlib x", Command(help="x", configure=lambda parser: None, run=failing), ["--help"]) == 0
    assert capsys.readouterr().out.startswith("usage: tnlib x [-h]")
