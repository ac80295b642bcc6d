"""The one-command study: run_study end to end on digits, resumed, refused, on Dask, and its input errors.

The whole studies (each trains its baseline; about a minute in all) are marked ``slow``: ``python -m pytest -m slow``.
The default run studies the session's trained CNN (tests/conftest.py) on a small grid.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import shutil
import time

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

import tnlib_torch as tt  # noqa: E402
from tnlib_torch.study import pipeline, runner  # noqa: E402
from tnlib_torch.study.config import StudyConfig  # noqa: E402
from tnlib_torch.study.inputs import resolve_inputs  # noqa: E402
from tnlib_torch.study.pipeline import SWEEP_COLUMNS, plan_tasks, run_study  # noqa: E402
from tnlib_torch.study.store import ResultStore, read_records  # noqa: E402

LAYERS = ("conv1", "conv2", "conv3", "conv4")
CONFIG = StudyConfig(
    model="tests.torch.test_study_pipeline:tiny_cnn", dataset="digits", cuts=("o|ihw", "oh|iw"), levels=(0.3, 0.6),
    train_epochs=2, retrain_epochs=1, recovery_levels=1, decompositions=("truncate", "tucker2"), eval_samples=200,
    batch_size=64,
)
# baseline, spectra, sweep, sweep_all, recovery, control, decompositions ("truncate" is measured as "svd")
TASKS = 1 + 4 + 4 * 2 * 2 + 2 * 2 + 2 * 1 + 1 + 2


def tiny_cnn(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """The study's vanilla CNN, narrow enough for a quick test."""
    return tt.vanilla_cnn(num_classes=num_classes, in_channels=in_channels, widths=(8, 8, 16, 16))


def three_channel_cnn() -> nn.Module:
    return tt.vanilla_cnn(in_channels=3, widths=(8, 8, 16, 16))


def not_a_module() -> str:
    return "a string"


def expected_keys(config: StudyConfig) -> set[tuple]:
    cuts, levels = config.cuts, config.levels
    return {
        ("baseline",), ("recovery_control",),
        *(("spectrum", layer, cut) for layer in LAYERS for cut in cuts),
        *(("sweep", layer, cut, level) for layer in LAYERS for cut in cuts for level in levels),
        *(("sweep_all", cut, level) for cut in cuts for level in levels),
        *(("recovery", "all", cut, levels[-1]) for cut in cuts),
        ("decomposition", "svd", 0.5), ("decomposition", "tucker2", 0.5),
    }


@pytest.fixture(scope="module")
def serial(tmp_path_factory) -> pipeline.StudyResult:
    return run_study(CONFIG, tmp_path_factory.mktemp("serial"), progress=False)


@pytest.fixture
def no_report(monkeypatch) -> None:
    """Leave out the figures and report (seconds per run) where a test does not look at them."""
    monkeypatch.setattr(pipeline, "write_report", lambda *args: [])


# -- a whole study ---------------------------------------------------------------------------------------------------


def test_a_small_study_of_a_checkpoint_records_its_grid_and_a_rerun_skips_it(digits_cnn_checkpoint, tmp_path,
                                                                            no_report):
    small = CONFIG.replace(checkpoint=str(digits_cnn_checkpoint), cuts=("o|ihw",), levels=(0.6,), retrain_epochs=0,
                           include=("conv3", "conv4"))
    result = run_study(small, tmp_path, progress=False)
    assert (result.tasks_run, result.tasks_skipped) == (6, 0)  # baseline, 2 spectra, 2 sweeps, 1 sweep_all
    assert [record["key"] for record in result.records] == [
        ("baseline",), ("spectrum", "conv3", "o|ihw"), ("spectrum", "conv4", "o|ihw"), ("sweep", "conv3", "o|ihw", 0.6),
        ("sweep", "conv4", "o|ihw", 0.6), ("sweep_all", "o|ihw", 0.6),
    ]
    assert result.records[0]["count"] == 200 and result.records[0]["top1"] > 0.9  # the trained weights, not retrained
    assert not (tmp_path / "baseline.pt").exists() and (tmp_path / "sweep.csv").is_file()
    again = run_study(small, tmp_path, progress=False)
    assert (again.tasks_run, again.tasks_skipped) == (0, 6) and again.records == result.records



@pytest.mark.slow
def test_serial_run_records_every_measurement(serial):
    assert (serial.tasks_run, serial.tasks_skipped) == (TASKS, 0)
    keys = [record["key"] for record in serial.records]
    assert keys == sorted(keys)
    assert set(keys) == expected_keys(CONFIG) and len(keys) == len(set(keys)) == TASKS + 4 * (2 - 1)
    assert serial.records == tuple(sorted(read_records(serial.output), key=lambda r: r["key"]))
    assert all("seconds" not in record for record in serial.records)
    baseline = serial.records[0]
    assert baseline["key"] == ("baseline",) and baseline["count"] == 200 and baseline["top1"] > 0.5


@pytest.mark.slow
def test_serial_run_writes_manifest_csv_and_report(serial):
    names = {path.name for path in serial.paths}
    assert {"results.jsonl", "manifest.json", "baseline.pt", "train.ckpt", "sweep.csv"} <= names
    assert all(path.is_file() for path in serial.paths)
    if importlib.util.find_spec("tnlib_torch.study.report") is not None:
        assert "report.md" in names
    manifest = json.loads((serial.output / "manifest.json").read_text())
    assert manifest["fingerprint"] == CONFIG.fingerprint()
    assert manifest["last_run"]["tasks_run"] == TASKS
    stages = manifest["stages"]
    assert {name: stages[name]["tasks"] for name in plan_stages()} == {
        "baseline": 1, "spectra": 4, "sweep": 16, "sweep_all": 4, "recovery": 2, "recovery_control": 1,
        "decomposition": 2,
    }
    assert stages["training"]["seconds"] > 0
    with open(serial.output / "sweep.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert tuple(rows[0]) == SWEEP_COLUMNS and len(rows) == 16 + 4
    sweep = {(r["key"][1], r["key"][2], r["key"][3]): r for r in serial.records if r["key"][0] == "sweep"}
    row = rows[0]
    record = sweep[row["layer"], row["cut"], float(row["level"])]
    assert int(row["rank"]) == record["rank"] and float(row["top1"]) == record["top1"]
    assert [r["layer"] for r in rows[16:]] == ["all"] * 4 and rows[-1]["rank"] == ""


def plan_stages() -> list[str]:
    return list(dict.fromkeys(task.stage for task in plan_tasks(CONFIG, LAYERS)))


@pytest.mark.slow
def test_rerun_skips_everything(serial, no_report):
    again = run_study(CONFIG, serial.output, progress=False)
    assert (again.tasks_run, again.tasks_skipped) == (0, TASKS)
    assert again.records == serial.records


@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_records(serial, tmp_path, monkeypatch, no_report):
    calls = []

    def interrupted(*args):
        if len(calls) == 7:
            raise KeyboardInterrupt
        calls.append(args)
        return run_task(*args)

    run_task = runner.run_task
    monkeypatch.setattr(runner, "run_task", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_study(CONFIG, tmp_path, progress=False)
    assert len(read_records(tmp_path)) == 1 + 4 * 2 + 2  # baseline, 4 spectra, 2 sweeps
    monkeypatch.setattr(runner, "run_task", run_task)
    resumed = run_study(CONFIG, tmp_path, progress=False)
    assert (resumed.tasks_run, resumed.tasks_skipped) == (TASKS - 7, 7)
    assert resumed.records == serial.records


@pytest.mark.slow
def test_another_config_is_refused_unless_forced(serial, tmp_path, no_report):
    shutil.copytree(serial.output, tmp_path, dirs_exist_ok=True)
    other = CONFIG.replace(cuts=("o|ihw",), levels=(0.6,), retrain_epochs=0, include=("conv4",))
    with pytest.raises(ValueError, match="another configuration"):
        run_study(other, tmp_path, progress=False)
    result = run_study(other, tmp_path, force=True, progress=False)
    assert {record["key"] for record in result.records} == {
        ("baseline",), ("spectrum", "conv4", "o|ihw"), ("sweep", "conv4", "o|ihw", 0.6), ("sweep_all", "o|ihw", 0.6),
    }
    assert (tmp_path / f"results.{CONFIG.fingerprint()}.jsonl").is_file()
    # the same training: the baseline is retrained, not taken from the archived study, and comes out the same
    assert result.records[0] == serial.records[0]


@pytest.mark.slow
def test_a_wider_grid_measures_only_what_is_new(serial, tmp_path, no_report):
    shutil.copytree(serial.output, tmp_path, dirs_exist_ok=True)
    wider = CONFIG.replace(levels=(0.3, 0.6, 0.8), cuts=("o|ihw", "oh|iw", "w|oih"))
    extended = run_study(wider, tmp_path, progress=False)
    # new: 4 spectra tasks (w|oih), sweeps 4 layers x (2 old cuts x 0.8 + w|oih x 3 levels), sweep_all 2 + 3,
    # and the recovery at the new largest level for each of the 3 cuts
    assert extended.tasks_run == 4 + 4 * (2 + 3) + (2 + 3) + 3
    assert {record["key"] for record in extended.records} == expected_keys(wider)
    shared = expected_keys(wider) & expected_keys(CONFIG)
    assert [r for r in extended.records if r["key"] in shared] == [r for r in serial.records if r["key"] in shared]
    assert len(read_records(tmp_path)) == len(expected_keys(wider) | expected_keys(CONFIG))
    assert json.loads((tmp_path / "manifest.json").read_text())["config"] == wider.to_dict()
    narrower = run_study(CONFIG.replace(cuts=("oh|iw",), levels=(0.6,)), tmp_path, progress=False)
    assert narrower.tasks_run == 0
    assert {record["key"] for record in narrower.records} == expected_keys(CONFIG.replace(cuts=("oh|iw",),
                                                                                          levels=(0.6,)))


@pytest.mark.slow
def test_a_wider_grid_gives_the_records_of_a_fresh_run(tmp_path, no_report):
    small = CONFIG.replace(cuts=("o|ihw",), levels=(0.6,), retrain_epochs=0, include=("conv3", "conv4"))
    wider = small.replace(cuts=("o|ihw", "i|ohw"), levels=(0.3, 0.6))
    run_study(small, tmp_path / "extended", progress=False)
    extended = run_study(wider, tmp_path / "extended", progress=False)
    assert extended.records == run_study(wider, tmp_path / "fresh", progress=False).records


@pytest.mark.slow
def test_a_checkpoint_is_studied_and_must_not_change(serial, tmp_path, no_report):
    checkpoint = tmp_path / "weights.pt"
    shutil.copy(serial.output / "baseline.pt", checkpoint)
    small = CONFIG.replace(checkpoint=str(checkpoint), cuts=("o|ihw",), levels=(0.6,), retrain_epochs=0)
    result = run_study(small, tmp_path / "study", progress=False)
    assert result.records[0] == serial.records[0]
    assert not (tmp_path / "study" / "baseline.pt").exists()
    torch.save(tiny_cnn().state_dict(), checkpoint)
    with pytest.raises(ValueError, match="changed since the study"):
        run_study(small, tmp_path / "study", progress=False)


@pytest.mark.slow
def test_dask_workers_give_the_serial_records(serial, tmp_path, no_report):
    pytest.importorskip("distributed")
    result = run_study(CONFIG, tmp_path, workers=2, progress=False)
    assert (result.tasks_run, result.tasks_skipped) == (TASKS, 0)
    assert result.records == serial.records


@pytest.mark.slow
def test_an_interrupted_dask_run_resumes_to_the_serial_records(serial, tmp_path, monkeypatch, no_report):
    pytest.importorskip("distributed")
    append = ResultStore.append

    def interrupted(store, record):
        if len(store.done_keys()) == 12:
            raise KeyboardInterrupt  # Ctrl-C while the workers still hold tasks
        append(store, record)

    monkeypatch.setattr(ResultStore, "append", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_study(CONFIG, tmp_path, workers=2, progress=False)
    assert len(read_records(tmp_path)) == 12
    monkeypatch.setattr(ResultStore, "append", append)
    resumed = run_study(CONFIG, tmp_path, workers=2, progress=False)
    assert resumed.tasks_run < TASKS and resumed.records == serial.records


@pytest.mark.slow
def test_unreachable_scheduler_fails_fast_and_loses_nothing(serial, tmp_path, monkeypatch):
    pytest.importorskip("distributed")
    monkeypatch.setattr(runner, "CONNECT_TIMEOUT", 2)
    shutil.copytree(serial.output, tmp_path, dirs_exist_ok=True)
    started = time.perf_counter()
    with pytest.raises(ConnectionError, match="tcp://127.0.0.1:1"):
        run_study(CONFIG, tmp_path, scheduler="tcp://127.0.0.1:1", progress=False)
    assert time.perf_counter() - started < 10
    assert sorted(read_records(tmp_path), key=lambda r: r["key"]) == list(serial.records)


@pytest.mark.parametrize(("where", "error", "message"), [
    ({"workers": 2, "scheduler": "tcp://127.0.0.1:1"}, ValueError, "not both"),
    ({"workers": 0}, ValueError, "workers must be a positive integer \\(>= 1\\)"),
    ({"workers": True}, TypeError, "workers must be a positive integer"),
    ({"scheduler": 8786}, TypeError, "scheduler must be the address"),
])
def test_bad_placement_is_refused_before_anything_is_written(tmp_path, where, error, message):
    with pytest.raises(error, match=message):
        run_study(CONFIG, tmp_path / "study", progress=False, **where)
    assert not (tmp_path / "study").exists()


# -- inputs ----------------------------------------------------------------------------------------------------------


def test_eval_samples_caps_the_test_set_deterministically():
    first, second = resolve_inputs(CONFIG).test_set, resolve_inputs(CONFIG).test_set
    assert len(first) == 200 and first.indices == second.indices
    assert len(resolve_inputs(CONFIG.replace(eval_samples=None)).test_set) == 450


def test_train_samples_caps_the_training_set_deterministically():
    capped = CONFIG.replace(train_samples=300)
    first, second = resolve_inputs(capped).train_set, resolve_inputs(capped).train_set
    full = resolve_inputs(CONFIG).train_set
    assert len(first) == 300 and first.indices == second.indices and len(full) > 300
    assert len(set(first.indices)) == 300 and max(first.indices) < len(full)
    assert len(resolve_inputs(CONFIG.replace(train_samples=10**6)).train_set) == len(full)


def test_image_folder_inputs(tmp_path):
    image = pytest.importorskip("PIL.Image")
    for split in ("train", "test"):
        for label in ("cat", "dog"):
            (tmp_path / split / label).mkdir(parents=True)
            for i in range(2):
                image.new("RGB", (8, 8), (40 * i, 100, 200)).save(tmp_path / split / label / f"{i}.png")
    inputs = resolve_inputs(CONFIG.replace(dataset=str(tmp_path)))
    assert inputs.classes == ("cat", "dog") and inputs.in_channels == 3
    assert inputs.train_set.augment and inputs.train_set.normalize == tt.NORMALIZATIONS["cifar10"]
    assert inputs.model(0).conv1.in_channels == 3 and inputs.model(0).linear.out_features == 2
    shutil.rmtree(tmp_path / "test")
    with pytest.raises(ValueError, match="no test/"):
        resolve_inputs(CONFIG.replace(dataset=str(tmp_path)))


@pytest.mark.parametrize(("changes", "error", "match"), [
    ({"model": "tests.torch.test_study_pipeline:not_a_module"}, TypeError, "not_a_module.*returned a str"),
    ({"model": "tests.torch.test_study_pipeline:missing"}, ImportError, "cannot import 'missing'"),
    ({"model": "tests.torch.test_study_pipeline:LAYERS"}, TypeError, "not a factory"),
    ({"model": "tests.torch.test_study_pipeline:three_channel_cnn"}, ValueError, "does not take the images"),
    ({"dataset": "cifar10"}, ValueError, "needs data_root"),
    ({"dataset": "no/such/folder"}, FileNotFoundError, "not one of digits"),
    ({"include": ("fc*",)}, ValueError, "fc"),
    ({"checkpoint": "no/such/weights.pt"}, FileNotFoundError, "no checkpoint file at 'no/such/weights.pt'"),
    ({"checkpoint": __file__}, ValueError, "is not a torch checkpoint that loads with weights_only=True"),
    ({"device": "cuda:99"}, ValueError, "device 'cuda:99' is not available on this machine"),
])
def test_unusable_inputs_are_refused_before_the_folder_is_made(tmp_path, changes, error, match):
    with pytest.raises(error, match=match):
        run_study(CONFIG.replace(**changes), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_a_checkpoint_of_another_model_is_refused_before_the_folder_is_made(tmp_path):
    checkpoint = tmp_path / "weights.pt"
    torch.save({"fc.weight": torch.zeros(2, 2)}, checkpoint)
    with pytest.raises(ValueError, match="does not fit"):
        run_study(CONFIG.replace(checkpoint=str(checkpoint)), tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_unknown_model_name_is_refused():
    with pytest.raises(ValueError, match="vanilla_cnn"):
        StudyConfig(model="no_such_model")
