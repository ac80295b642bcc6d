"""``tnlib study``: options map onto StudyConfig fields; every bad invocation ends with one line, status 2, and
leaves the output folder as it was (absent, for a new one).

Most cases run the command in this process as the console script runs it (``tnlib.cli.main``, from the folder the
script would run in), on the digits defaults, and fail before any training; the console script itself runs in a
subprocess where a fresh interpreter is the point (a module that fails to import).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import io
import os
import pickle
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")

from tnlib.cli import command_parser, main  # noqa: E402
from tnlib_torch.study.cli import STUDY  # noqa: E402
from tnlib_torch.study.config import StudyConfig  # noqa: E402
from tnlib_torch.study.store import ResultStore  # noqa: E402
from tnlib_torch.zoo import cifar  # noqa: E402
from tnlib_torch.zoo.models import VanillaCNN  # noqa: E402

SCRIPT = Path(sys.executable).with_name("tnlib")
needs_script = pytest.mark.skipif(not SCRIPT.is_file(), reason="the tnlib console script is not installed")


def parse(argv: list[str]):
    return command_parser("tnlib study", STUDY).parse_args(argv)


def tnlib(*args: str, cwd: Path, blocked: tuple[str, ...] = ()) -> subprocess.CompletedProcess[str]:
    """Run the ``tnlib`` script in ``cwd``; the modules ``blocked`` fail to import (a sitecustomize shim)."""
    env = dict(os.environ)
    if blocked:
        shim = cwd / "shim"
        shim.mkdir(exist_ok=True)
        (shim / "sitecustomize.py").write_text(f"import sys\nsys.modules.update(dict.fromkeys({blocked!r}))\n")
        env["PYTHONPATH"] = str(shim)
    return subprocess.run([str(SCRIPT), *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def study(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """``tnlib study ARGS`` run in this process from ``cwd`` (``tnlib.cli.main``, as the script runs it)."""
    out, err = io.StringIO(), io.StringIO()
    previous = os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(["study", *args])
    finally:
        os.chdir(previous)
    return subprocess.CompletedProcess(["tnlib", "study", *args], status, out.getvalue(), err.getvalue())


def snapshot(folder: Path) -> dict[str, bytes] | None:
    """The files of ``folder`` and their bytes; None if it does not exist."""
    if not folder.exists():
        return None
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def assert_usage_error(result: subprocess.CompletedProcess[str], *phrases: str) -> str:
    """Status 2 and stderr one line, ``tnlib study: error: ...``, holding each phrase; that line."""
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("tnlib study: error: ") and result.stderr.count("\n") == 1, result.stderr
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr
    return result.stderr


# -- the parser -----------------------------------------------------------------------------------------------------

def test_every_config_field_is_an_option_with_the_config_default():
    args = parse([])
    for field in dataclasses.fields(StudyConfig):
        assert getattr(args, field.name) == field.default, field.name
    assert (args.download, args.force, args.workers, args.scheduler) == (False, False, None, None)


def test_several_values_parse_to_the_field_type():
    args = parse(["--levels", "0.2", "0.4", "--cuts", "ihw|o", "oh|iw", "--eval-samples", "50", "--train-samples",
                  "500", "--train-epochs", "3", "--workers", "2", "--download"])
    assert args.levels == [0.2, 0.4] and args.cuts == ["ihw|o", "oh|iw"]
    assert (args.eval_samples, args.train_samples, args.train_epochs, args.workers) == (50, 500, 3, 2)
    assert args.download is True


def test_help_states_each_default_once_in_words():
    text = " ".join(command_parser("tnlib study", STUDY).format_help().split())
    assert "(default: every conv)" in text and "(default: 0.1 0.2 0.3 0.4 0.5 0.6)" in text
    assert "(default: svd cp tucker2 mps)" in text and "(default: 10)" in text and "(default: 512)" in text
    assert "(default: ())" not in text and "(default: None)" not in text and "('" not in text


def test_calibration_and_the_fine_tuning_rate_are_options_whose_help_states_the_rule():
    args = parse(["--calibration-samples", "0", "--retrain-lr", "0.01", "--decompositions", "truncate", "cp"])
    assert (args.calibration_samples, args.retrain_lr, args.decompositions) == (0, 0.01, ["truncate", "cp"])
    assert (parse([]).calibration_samples, parse([]).retrain_lr) == (512, None)
    text = " ".join(command_parser("tnlib study", STUDY).format_help().split())
    assert "--retrain-lr RETRAIN_LR learning rate of fine-tuning" in text
    assert "(default: --lr / 10, since fine-tuning starts from a converged model)" in text
    assert "--lr LR learning rate of training from scratch (default: 0.05)" in text


def test_the_last_line_counts_tasks_and_records_apart():
    from tnlib_torch.study.cli import summary

    result = SimpleNamespace(output=Path("out"), tasks_run=227, tasks_skipped=3, records=({"key": ["a"]},) * 251,
                             paths=(), seconds=12.345)  # the fields of a StudyResult that the line reads
    assert summary(result) == ("tnlib study: 227 tasks run, 3 skipped (recorded before); 251 records in the study; "
                               "12.3 s; results in out")


def test_layers_is_a_deprecated_name_of_include_that_warns_in_one_line(capsys):
    assert parse(["--include", "conv1", "layer2.*"]).include == ["conv1", "layer2.*"]
    assert capsys.readouterr().err == ""
    args = parse(["--layers", "conv1"])
    assert args.include == ["conv1"] and not hasattr(args, "layers")
    assert capsys.readouterr().err == ("tnlib study: warning: --layers is deprecated, use --include "
                                       "(the old name goes in the next release)\n")
    text = " ".join(command_parser("tnlib study", STUDY).format_help().split())
    assert "--layers LAYERS [LAYERS ...] deprecated: the old name of --include, accepted until the next release" in text


@pytest.mark.parametrize(("argv", "message"), [
    (["--workers", "2", "--scheduler", "tcp://127.0.0.1:8786"], "argument --scheduler: not allowed with argument "
                                                                 "--workers"),
    (["--levls", "0.1"], "unrecognized arguments: --levls 0.1"),
    (["--lev", "0.1"], "unrecognized arguments: --lev 0.1"),  # never abbreviated
    (["--train-epochs", "x"], "argument --train-epochs: invalid int value: 'x'"),
    (["--levels", "1.5"], "--levels[0] must lie strictly between 0 and 1, got 1.5"),
    (["--cuts", "x|oih"], "--cuts[0]"),
    (["--model", "no_such_model"], "--model must be one of"),
    (["--train-epochs", "-1"], "--train-epochs must be a non-negative integer (>= 0), got -1"),
    (["--levels", "0.1", "--recovery-levels", "2"], "--recovery-levels = 2 exceeds the 1 level(s) of --levels"),
    (["--workers", "0"], "--workers must be a positive integer (>= 1), got 0"),
    (["--device", "gpu"], "--device must name a torch device"),
    (["--retrain-lr", "0"], "--retrain-lr must be a finite number > 0, got 0.0"),
    (["--retrain-lr", "nan"], "--retrain-lr must be a finite number > 0, got nan"),
    (["--calibration-samples", "-1"], "--calibration-samples must be a non-negative integer (>= 0), got -1"),
    (["--decompositions", "svd", "truncate"], "--decompositions repeats svd"),
])
def test_bad_options_end_with_one_line_naming_the_option(argv, message, capsys, tmp_path):
    assert main(["study", *argv, "--output", str(tmp_path / "out"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tnlib study: error: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_download_reaches_the_checked_cifar_download(tmp_path, monkeypatch, capsys):
    calls = []

    def offline(source, root):
        calls.append((source.name, Path(root)))
        raise ConnectionError(f"could not download {source.name} (offline)")

    monkeypatch.setattr(cifar, "_fetch_cifar", offline)
    argv = ["study", "--dataset", "cifar10", "--data-root", str(tmp_path / "data"), "--output", str(tmp_path / "out")]
    assert main([*argv, "--download"]) == 2
    assert calls == [("CIFAR-10", tmp_path / "data")]
    assert capsys.readouterr().err == "tnlib study: error: could not download CIFAR-10 (offline)\n"
    assert not (tmp_path / "out").exists()
    assert main(argv) == 2 and len(calls) == 1  # without --download, no download
    assert "--download" in capsys.readouterr().err


# -- the command: refused before the output folder is created -------------------------------------------------------

def _poisoned(path: Path, marker: Path) -> None:
    """A pickle that would create ``marker`` when unpickled."""

    class Payload:
        def __reduce__(self):
            return open, (str(marker), "w")

    path.write_bytes(pickle.dumps(Payload()))


@pytest.mark.parametrize("kind", ["missing", "empty", "other architecture", "poisoned"])
def test_a_bad_checkpoint_is_refused_before_the_folder_is_made(kind, tmp_path):
    checkpoint, marker = tmp_path / "weights.pt", tmp_path / "ran"
    if kind == "empty":
        checkpoint.write_bytes(b"")
    elif kind == "other architecture":
        torch.save(VanillaCNN(num_classes=10, in_channels=3).state_dict(), checkpoint)
    elif kind == "poisoned":
        _poisoned(checkpoint, marker)
    result = study("--checkpoint", str(checkpoint), "--output", "out", "--quiet", cwd=tmp_path)
    assert_usage_error(result, "weights.pt")
    assert not (tmp_path / "out").exists() and not marker.exists()
    if kind == "other architecture":
        assert "does not fit the VanillaCNN" in result.stderr


def test_an_unreachable_scheduler_is_refused_before_the_folder_is_made(tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    from tnlib_torch.study import runner

    monkeypatch.setattr(runner, "CONNECT_TIMEOUT", 1.0)  # the default waits 10 s
    result = study("--scheduler", "tcp://127.0.0.1:1", "--output", "out", "--quiet", "--train-samples", "20",
                   cwd=tmp_path)
    assert_usage_error(result, "no Dask scheduler answers at 'tcp://127.0.0.1:1'")
    assert not (tmp_path / "out").exists()


@needs_script
def test_workers_without_dask_say_which_extra(tmp_path):
    result = tnlib("study", "--workers", "2", "--output", "out", cwd=tmp_path, blocked=("distributed",))
    assert_usage_error(result, '--workers', 'pip install "tnlib[dask]"')
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_refused(tmp_path):
    result = study("--device", "cuda", "--output", "out", cwd=tmp_path)
    assert_usage_error(result, "--device 'cuda' is not available on this machine")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("data_root", [None, "data"])
def test_missing_cifar_offers_download_and_data_root(data_root, tmp_path):
    (tmp_path / "data").mkdir()
    root = ["--data-root", data_root] if data_root else []
    result = study("--dataset", "cifar10", *root, "--output", "out", cwd=tmp_path)
    assert_usage_error(result, "--download", "--data-root")
    assert not (tmp_path / "out").exists()


# -- the command: a folder that exists is left as it was ------------------------------------------------------------

def test_a_locked_folder_is_refused_and_left_as_it_was(tmp_path):
    out = tmp_path / "out"
    with ResultStore.open(out, StudyConfig(train_samples=20)):  # this process holds the lock
        before = snapshot(out)
        result = study("--train-samples", "20", "--output", "out", "--quiet", cwd=tmp_path)
        assert_usage_error(result, "is in use by another run of the study", f"process {os.getpid()}")
        assert snapshot(out) == before


def test_a_folder_of_another_study_names_force_and_is_left_as_it_was(tmp_path):
    out = tmp_path / "out"
    with ResultStore.open(out, StudyConfig(seed=1)) as store:
        store.append({"key": ["baseline"], "top1": 0.5})
    (out / ".lock").write_text("12345\n")
    before = snapshot(out)
    result = study("--train-samples", "20", "--output", "out", "--quiet", cwd=tmp_path)
    assert_usage_error(result, "another configuration", "--force")
    assert "force=True to" not in result.stderr and snapshot(out) == before
    with open(out / ".lock") as lock:  # nobody holds it
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
