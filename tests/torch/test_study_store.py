"""The study's configuration and output folder: validation, fingerprints, crash-safe results, manifest, lock."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

pytest.importorskip("torch")

from tnlib_torch.study import store as store_module  # noqa: E402
from tnlib_torch.study.config import KERNEL_CUTS, StudyConfig, checked_fields  # noqa: E402
from tnlib_torch.study.store import (  # noqa: E402
    MANIFEST,
    RESULTS,
    FolderInUseError,
    PartialLineWarning,
    ResultStore,
    atomic_write_bytes,
    atomic_write_text,
    read_records,
)


@pytest.fixture
def config() -> StudyConfig:
    return StudyConfig(levels=(0.1, 0.3))


def lines(folder: Path) -> list[bytes]:
    return (folder / RESULTS).read_bytes().splitlines(keepends=True)


def leftovers(folder: Path) -> list[str]:
    """Temporary files left in ``folder``."""
    return [name for name in os.listdir(folder) if name.endswith(".tmp")]


# -- StudyConfig ----------------------------------------------------------------------------------------------------

def test_defaults_are_valid_and_round_trip_through_json():
    config = StudyConfig()
    assert config.cuts == KERNEL_CUTS == ("o|ihw", "i|ohw", "h|oiw", "w|oih", "oi|hw", "oh|iw", "ow|ih")
    assert config.levels == (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
    assert config.include == () and config.checkpoint is None and config.device == "cpu"
    data = json.loads(json.dumps(config.to_dict()))
    assert data["cuts"] == list(KERNEL_CUTS)
    assert StudyConfig.from_dict(data) == config


@pytest.mark.parametrize("field, value, error", [
    ("model", "no_such_model", ValueError),
    ("model", "package.module", ValueError),
    ("model", 3, TypeError),
    ("checkpoint", "", ValueError),
    ("dataset", None, TypeError),
    ("include", "features.*", TypeError),
    ("include", ("features.*", "features.*"), ValueError),
    ("cuts", ("o|ih",), ValueError),
    ("cuts", ("o|ihw", "ihw|o"), ValueError),
    ("cuts", (), ValueError),
    ("levels", (0.0,), ValueError),
    ("levels", (0.5, 1.0), ValueError),
    ("levels", (math.nan,), ValueError),
    ("levels", (True,), TypeError),
    ("train_epochs", -1, ValueError),
    ("retrain_epochs", 1.5, TypeError),
    ("recovery_levels", 7, ValueError),
    ("decompositions", ("svd", "tt"), ValueError),
    ("eval_samples", 0, ValueError),
    ("train_samples", 0, ValueError),
    ("train_samples", 2.5, TypeError),
    ("batch_size", 0, ValueError),
    ("lr", 0.0, ValueError),
    ("lr", math.inf, ValueError),
    ("seed", -1, ValueError),
    ("device", "gpu", ValueError),
])
def test_a_bad_field_is_refused_by_name(field, value, error):
    with pytest.raises(error, match=field):
        StudyConfig(**{field: value})
    with pytest.raises(error, match=field):
        StudyConfig().replace(**{field: value})


def test_checked_fields_name_each_field_by_its_label():
    values = StudyConfig().to_dict()
    label = lambda name: f"--{name.replace('_', '-')}"  # noqa: E731
    with pytest.raises(ValueError, match=r"^--train-epochs must be a non-negative integer \(>= 0\), got -1$"):
        checked_fields({**values, "train_epochs": -1}, label)
    with pytest.raises(ValueError, match=r"^--recovery-levels = 3 exceeds the 2 level\(s\) of --levels$"):
        checked_fields({**values, "recovery_levels": 3, "levels": (0.1, 0.2)}, label)
    assert checked_fields({**values, "levels": [0.5, 0.1]}, label)["levels"] == (0.1, 0.5)


def test_fields_are_normalized():
    config = StudyConfig(model="my_package.nets:build", checkpoint=Path("w.pt"), cuts=["ihw|o", "hw|io", "w|hio"],
                         levels=[0.5, 0.1], eval_samples=100, lr=1)
    assert config.cuts == ("o|ihw", "oi|hw", "w|oih")
    assert config.levels == (0.1, 0.5)
    assert config.checkpoint == "w.pt" and config.lr == 1.0 and isinstance(config.lr, float)


def test_fingerprint_follows_the_results_not_the_device():
    config = StudyConfig()
    fingerprint = config.fingerprint()
    assert len(fingerprint) == 16 and int(fingerprint, 16) >= 0
    assert StudyConfig.from_dict(json.loads(json.dumps(config.to_dict()))).fingerprint() == fingerprint
    assert config.replace(device="cuda:1").fingerprint() == fingerprint
    assert config.replace(data_root="/elsewhere").fingerprint() == fingerprint
    grid = {"levels": (0.1, 0.7), "cuts": ("oh|iw",), "decompositions": ("cp",), "recovery_levels": 2}
    assert config.replace(**grid).fingerprint() == fingerprint
    for field, value in [("seed", 1), ("eval_samples", 100), ("train_samples", 100), ("retrain_epochs", 3),
                         ("include", ("conv1",)), ("lr", 0.1)]:
        assert config.replace(**{field: value}).fingerprint() != fingerprint, field


def test_unknown_keys_are_refused_by_name():
    with pytest.raises(ValueError, match="'epochs'"):
        StudyConfig.from_dict({"epochs": 3})
    with pytest.raises(ValueError, match="'colour'"):
        StudyConfig().replace(colour="red")
    assert StudyConfig.from_dict({"seed": 4}) == StudyConfig(seed=4)


#: A config as 0.1 wrote it in a manifest (``include`` was called ``layers``), and the fingerprint 0.1 gave it.
OLD_CONFIG = {
    "model": "vanilla_cnn", "checkpoint": None, "dataset": "digits", "data_root": None, "layers": ["conv1", "layer2.*"],
    "cuts": list(KERNEL_CUTS), "levels": [0.1, 0.3], "train_epochs": 10, "retrain_epochs": 2, "recovery_levels": 1,
    "decompositions": ["truncate", "cp", "tucker2", "mps"], "eval_samples": None, "train_samples": None,
    "batch_size": 128, "lr": 0.05, "seed": 0, "device": "cpu",
}
OLD_FINGERPRINT = "3a35412fc972a322"


def test_a_config_of_0_1_reads_layers_as_include_and_keeps_its_fingerprint():
    config = StudyConfig.from_dict(OLD_CONFIG)  # the fields added since read as what 0.1 did (ADDED)
    assert config == StudyConfig(include=("conv1", "layer2.*"), levels=(0.1, 0.3), calibration_samples=0,
                                 retrain_lr=0.05)
    assert config.fingerprint() == OLD_FINGERPRINT and StudyConfig().fingerprint() != OLD_FINGERPRINT
    assert "layers" not in config.to_dict() and config.to_dict()["include"] == ["conv1", "layer2.*"]


def test_a_folder_of_0_1_resumes_and_a_changed_include_is_named_by_its_new_name(tmp_path):
    config = StudyConfig.from_dict(OLD_CONFIG)

    def write_old_manifest() -> None:
        manifest = json.loads((tmp_path / MANIFEST).read_text())
        (tmp_path / MANIFEST).write_text(json.dumps({**manifest, "config": OLD_CONFIG, "fingerprint": OLD_FINGERPRINT}))

    with ResultStore.open(tmp_path, config) as store:
        store.append({"key": ["a"]})
    write_old_manifest()
    with ResultStore.open(tmp_path, config) as store:
        assert store.done(["a"]) and store.manifest()["config"] == config.to_dict()
        assert store.manifest()["fingerprint"] == OLD_FINGERPRINT
    write_old_manifest()
    with pytest.raises(ValueError, match=r"\(include = \['conv1', 'layer2\.\*'\] recorded, \[\] now\)"):
        ResultStore.open(tmp_path, config.replace(include=()))


def test_layers_and_include_together_or_layers_in_replace_are_refused_naming_include():
    with pytest.raises(ValueError, match="^'layers' and 'include' are two names of one StudyConfig field"):
        StudyConfig.from_dict({"layers": ["conv1"], "include": ["conv1"]})
    with pytest.raises(ValueError, match=r"unknown StudyConfig field\(s\) 'layers' \('layers' is now 'include'\)"):
        StudyConfig().replace(layers=("conv1",))


# -- records --------------------------------------------------------------------------------------------------------

def test_records_round_trip_exactly(tmp_path, config):
    record = {"key": ["sweep", "features.0", "o|ihw", 0.3], "accuracy": 0.1 + 0.2, "rank": 7, "note": "é",
              "spectrum": [[1.0, 1e-300], [3, "x"]], "flags": {"ok": True, "none": None}}
    with ResultStore.open(tmp_path, config) as store:
        store.append(record)
        store.append({"key": ("spectrum", 2), "values": [2.5]})
    records = read_records(tmp_path)
    assert records[0] == {**record, "key": ("sweep", "features.0", "o|ihw", 0.3)}
    assert records[0]["accuracy"] == 0.30000000000000004
    assert records[1] == {"key": ("spectrum", 2), "values": [2.5]}
    assert all(line.endswith(b"\n") for line in lines(tmp_path))


def test_done_after_reopen_with_float_keys(tmp_path, config):
    with ResultStore.open(tmp_path, config) as store:
        for level in config.levels:
            store.append({"key": ["sweep", "features.0", "o|ihw", level], "accuracy": 0.5})
        store.append({"key": ["sum", 0.1 + 0.2]})
    with ResultStore.open(tmp_path, config) as store:
        assert store.done(("sweep", "features.0", "o|ihw", 0.3))
        assert store.done(["sum", 0.1 + 0.2]) and not store.done(["sum", 0.3])
        assert not store.done(("sweep", "features.0", "o|ihw", 0.2))
        assert store.done_keys() == {("sweep", "features.0", "o|ihw", 0.1), ("sweep", "features.0", "o|ihw", 0.3),
                                     ("sum", 0.30000000000000004)}
        with pytest.raises(ValueError, match="recorded already"):
            store.append({"key": ("sum", 0.1 + 0.2)})
    assert len(read_records(tmp_path)) == 3


@pytest.mark.parametrize("record, error", [
    ({"key": ["a"], "accuracy": math.nan}, ValueError),
    ({"key": ["a"], "values": [1.0, -math.inf]}, ValueError),
    ({"key": ["a", math.inf]}, TypeError),
    ({"key": []}, TypeError),
    ({"key": "a"}, TypeError),
    ({"key": ["a", True]}, TypeError),
    ({"accuracy": 0.5}, TypeError),
    ({"key": ["a"], "model": object()}, TypeError),
])
def test_bad_records_are_refused_and_leave_no_trace(tmp_path, config, record, error):
    with ResultStore.open(tmp_path, config) as store:
        with pytest.raises(error):
            store.append(record)
        assert store.done_keys() == set()
    assert (tmp_path / RESULTS).read_bytes() == b""


def test_partial_last_line_is_ignored_then_cut_off(tmp_path, config):
    with ResultStore.open(tmp_path, config) as store:
        store.append({"key": ["a"], "x": 1})
        store.append({"key": ["b"], "x": 2})
    complete = (tmp_path / RESULTS).read_bytes()
    with open(tmp_path / RESULTS, "ab") as file:
        file.write(b'{"key":["c"],"x":')
    with pytest.warns(PartialLineWarning, match="incomplete record"):
        assert [r["key"] for r in read_records(tmp_path)] == [("a",), ("b",)]
    with pytest.warns(PartialLineWarning, match="cut off"):
        store = ResultStore.open(tmp_path, config)
    assert (tmp_path / RESULTS).read_bytes() == complete
    with store:
        assert not store.done(["c"])
        store.append({"key": ["c"], "x": 3})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [r["x"] for r in read_records(tmp_path)] == [1, 2, 3]


def test_a_corrupt_line_is_named(tmp_path, config):
    with ResultStore.open(tmp_path, config) as store:
        for name in "abc":
            store.append({"key": [name]})
    rows = lines(tmp_path)
    (tmp_path / RESULTS).write_bytes(rows[0] + b'{"key": ["b"], oops}\n' + rows[2])
    with pytest.raises(ValueError, match="line 2"):
        read_records(tmp_path)
    with pytest.raises(ValueError, match="line 2"):
        ResultStore.open(tmp_path, config)
    (tmp_path / RESULTS).write_bytes(rows[0] + rows[1] + rows[0])
    with pytest.raises(ValueError, match="line 3, repeats the key"):
        ResultStore.open(tmp_path, config)


def test_a_line_nested_too_deep_for_json_is_a_corrupt_line_not_a_recursion_error(tmp_path, config):
    with ResultStore.open(tmp_path, config) as store:
        store.append({"key": ["a"]})
    deep = b"[" * 100_000 + b"]" * 100_000 + b"\n"
    with open(tmp_path / RESULTS, "ab") as results:
        results.write(deep)
    with pytest.raises(ValueError, match=r"line 2, is not a valid record \(maximum recursion depth"):
        read_records(tmp_path)
    with pytest.raises(ValueError, match="line 2, is not a valid record"):
        ResultStore.open(tmp_path, config)
    (tmp_path / MANIFEST).write_bytes(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(ValueError, match="manifest.json is not valid JSON"):
        ResultStore.open(tmp_path, config)


def test_a_refused_folder_is_left_as_it_was(tmp_path, config):
    with ResultStore.open(tmp_path, config) as store:
        store.append({"key": ["a"]})
    (tmp_path / ".lock").write_text("12345\n")  # the pid of the last run
    before = {path.name: path.read_bytes() for path in tmp_path.iterdir()}
    with pytest.raises(ValueError, match=r"Use another folder, or --force \(force=True in Python\)"):
        ResultStore.open(tmp_path, config.replace(seed=1))
    assert {path.name: path.read_bytes() for path in tmp_path.iterdir()} == before


# -- configuration check and manifest -------------------------------------------------------------------------------

def test_another_config_is_refused_by_field_or_archived_with_force(tmp_path, config):
    with ResultStore.open(tmp_path, config) as store:
        store.append({"key": ["a"]})
    old = config.fingerprint()
    other = config.replace(levels=(0.1, 0.2), eval_samples=50, seed=3)
    with pytest.raises(ValueError, match=r"another configuration \(eval_samples = None recorded, 50 now; seed = 0 "
                                         r"recorded, 3 now\)"):
        ResultStore.open(tmp_path, other)
    with ResultStore.open(tmp_path, other, force=True) as store:
        assert store.records() == [] and store.manifest()["fingerprint"] == other.fingerprint()
    assert read_records(tmp_path) == []
    assert (tmp_path / f"results.{old}.jsonl").read_text().splitlines() == ['{"key":["a"]}']
    assert json.loads((tmp_path / f"manifest.{old}.json").read_text())["fingerprint"] == old
    with ResultStore.open(tmp_path, config, force=True):  # back again: the first archive is kept
        pass
    assert (tmp_path / f"results.{old}.jsonl").exists() and (tmp_path / f"results.{other.fingerprint()}.jsonl").exists()


def test_another_device_resumes(tmp_path, config):
    with ResultStore.open(tmp_path, config) as store:
        store.append({"key": ["a"]})
    with ResultStore.open(tmp_path, config.replace(device="cuda")) as store:
        assert store.done(["a"]) and store.manifest()["config"]["device"] == "cuda"


def test_another_grid_resumes_and_takes_over_the_manifest(tmp_path, config):
    with ResultStore.open(tmp_path, config) as store:
        store.append({"key": ["a"]})
    wider = config.replace(levels=(0.1, 0.3, 0.9), cuts=("o|ihw", "w|oih"))
    with ResultStore.open(tmp_path, wider) as store:
        assert store.done(["a"]) and store.manifest()["config"] == wider.to_dict()


def test_a_manifest_fingerprinted_by_an_older_rule_resumes(tmp_path, config):
    with ResultStore.open(tmp_path, config) as store:
        store.append({"key": ["a"]})
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    (tmp_path / MANIFEST).write_text(json.dumps({**manifest, "fingerprint": "0123456789abcdef"}))
    with ResultStore.open(tmp_path, config) as store:
        assert store.done(["a"]) and store.manifest()["fingerprint"] == config.fingerprint()


def test_results_without_manifest_are_refused_but_other_files_are_fine(tmp_path, config):
    (tmp_path / "notes.txt").write_text("mine")
    with ResultStore.open(tmp_path, config):
        pass
    (tmp_path / MANIFEST).unlink()
    with pytest.raises(ValueError, match="no manifest.json"):
        ResultStore.open(tmp_path, config)
    with ResultStore.open(tmp_path, config, force=True):
        pass
    assert (tmp_path / "results.unknown.jsonl").exists() and (tmp_path / "notes.txt").read_text() == "mine"


def test_manifest_records_the_run_and_keeps_updates(tmp_path, config):
    with ResultStore.open(tmp_path, config) as store:
        manifest = store.manifest()
        assert manifest["config"] == config.to_dict() and manifest["fingerprint"] == config.fingerprint()
        assert set(manifest["versions"]) == {"tnlib", "torch", "numpy", "python"}
        assert manifest["platform"] and manifest["stages"] == {} and manifest["created"] == manifest["started"]
        store.write_manifest(stages={"spectra": 1.25})
        with pytest.raises(ValueError, match="fingerprint"):
            store.write_manifest(fingerprint="0")
    assert json.loads((tmp_path / MANIFEST).read_text())["stages"] == {"spectra": 1.25}
    with ResultStore.open(tmp_path, config) as store:
        assert store.manifest()["stages"] == {"spectra": 1.25}
        assert store.manifest()["created"] == manifest["created"]


@pytest.mark.parametrize("failing", ["replace", "fsync"])
def test_a_failed_manifest_write_leaves_the_old_one(tmp_path, config, monkeypatch, failing):
    with ResultStore.open(tmp_path, config) as store:
        store.write_manifest(stages={"spectra": 1.0})
        before = (tmp_path / MANIFEST).read_bytes()

        def fail(*args):
            raise OSError("disk on fire")

        monkeypatch.setattr(store_module.os, failing, fail)
        with pytest.raises(OSError, match="disk on fire"):
            store.write_manifest(stages={"spectra": 2.0})
        monkeypatch.undo()
        assert (tmp_path / MANIFEST).read_bytes() == before and leftovers(tmp_path) == []
        assert store.manifest()["stages"] == {"spectra": 1.0}


def test_atomic_writes_replace_or_leave_intact(tmp_path, monkeypatch):
    path = tmp_path / "table.csv"
    atomic_write_text(path, "a,b\n1,2\n")
    atomic_write_bytes(tmp_path / "figure.png", b"\x89PNG")
    assert path.read_text() == "a,b\n1,2\n" and (tmp_path / "figure.png").read_bytes() == b"\x89PNG"
    monkeypatch.setattr(store_module.os, "replace", lambda *args: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(path, "half")
    assert path.read_text() == "a,b\n1,2\n" and leftovers(tmp_path) == []
    with pytest.raises(TypeError, match="text must be a str"):
        atomic_write_text(path, b"bytes")


# -- lock -----------------------------------------------------------------------------------------------------------

def test_a_second_store_is_refused_while_the_first_is_open(tmp_path, config):
    store = ResultStore.open(tmp_path, config)
    with pytest.raises(FolderInUseError, match=f"process {os.getpid()}"):
        ResultStore.open(tmp_path, config)
    store.close()
    with pytest.raises(ValueError, match="closed"):
        store.append({"key": ["a"]})
    with ResultStore.open(tmp_path, config) as again:
        again.append({"key": ["a"]})


def test_a_stale_lock_is_taken_over(tmp_path, config):
    dead = subprocess.Popen([sys.executable, "-c", ""])
    dead.wait()
    (tmp_path / ".lock").write_text(f"{dead.pid}\n")
    with ResultStore.open(tmp_path, config):
        assert (tmp_path / ".lock").read_text() == f"{os.getpid()}\n"


# -- a real crash ---------------------------------------------------------------------------------------------------

def _append_forever(folder: Path, config: StudyConfig) -> None:
    """In a forked child: append large records until killed."""
    try:
        store = ResultStore.open(folder, config)
        for i in range(10**6):
            store.append({"key": ["record", i], "i": i, "payload": "x" * 200_000})
    finally:
        os._exit(1)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_sigkill_mid_run_leaves_complete_records_and_resumes(tmp_path, config):
    with warnings.catch_warnings():  # Python >= 3.12 warns about forking a multi-threaded process
        warnings.simplefilter("ignore", DeprecationWarning)
        pid = os.fork()
    if pid == 0:
        _append_forever(tmp_path, config)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (not (tmp_path / RESULTS).exists()
                                           or (tmp_path / RESULTS).stat().st_size < 2_000_000):
        time.sleep(0.005)
    with pytest.raises(FolderInUseError, match=f"process {pid}"):  # the lock of a live process
        ResultStore.open(tmp_path, config)
    os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert (tmp_path / ".lock").read_text() == f"{pid}\n"  # left by the dead child: taken over below

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PartialLineWarning)
        store = ResultStore.open(tmp_path, config)
    with store:
        count = len(store.done_keys())
        assert count >= 10
        assert [record["i"] for record in store.records()] == list(range(count))
        assert all(json.loads(line)["key"] == ["record", i] for i, line in enumerate(lines(tmp_path)))
        store.append({"key": ["record", count], "i": count})
    assert [record["i"] for record in read_records(tmp_path)] == list(range(count + 1))
