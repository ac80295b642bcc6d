"""The one-command study: run_study end to end on digits, resumed, refused, on Dask, and its input errors.

The whole studies (each trains its baseline; about a minute in all) are marked ``slow``: ``python -m pytest -m slow``.
The default run studies the session's trained CNN (tests/conftest.py) on a small grid.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import shutil
import time

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

import tnlib_torch as tt  # noqa: E402
from tnlib_torch.study import pipeline, runner  # noqa: E402
from tnlib_torch.study.config import StudyConfig  # noqa: E402
from tnlib_torch.study.decomposition import CALIBRATED, DATA_FREE  # noqa: E402
from tnlib_torch.study.inputs import resolve_inputs  # noqa: E402
from tnlib_torch.study.pipeline import SWEEP_COLUMNS, plan_tasks, run_study  # noqa: E402
from tnlib_torch.study.store import ResultStore, read_records  # noqa: E402

LAYERS = ("conv1", "conv2", "conv3", "conv4")
CONFIG = StudyConfig(
    model="tests.torch.test_study_pipeline:tiny_cnn", dataset="digits", cuts=("o|ihw", "oh|iw"), levels=(0.3, 0.6),
    train_epochs=2, retrain_epochs=1, recovery_levels=1, decompositions=("svd", "tucker2"), calibration_samples=128,
    eval_samples=200, batch_size=64,
)
# baseline, decompositions (2 methods x 2 modes), recovery, control, sweeps (one per layer), sweep_all, spectra
TASKS = 1 + 2 * 2 + 2 * 1 + 1 + 4 + 2 * 2 + 4


def tiny_cnn(num_classes: int = 10, in_channels: int = 1) -> nn.Module:
    """The study's vanilla CNN, narrow enough for a quick test."""
    return tt.vanilla_cnn(num_classes=num_classes, in_channels=in_channels, widths=(8, 8, 16, 16))


def three_channel_cnn() -> nn.Module:
    return tt.vanilla_cnn(in_channels=3, widths=(8, 8, 16, 16))


def not_a_module() -> str:
    return "a string"


def expected_keys(config: StudyConfig) -> set[tuple]:
    cuts, levels = config.cuts, config.levels
    modes = (DATA_FREE, CALIBRATED) if config.calibration_samples else (DATA_FREE,)
    return {
        ("baseline",), ("recovery_control",),
        *(("spectrum", layer, cut) for layer in LAYERS for cut in cuts),
        *(("sweep", layer, cut, level) for layer in LAYERS for cut in cuts for level in levels),
        *(("sweep_all", cut, level) for cut in cuts for level in levels),
        *(("recovery", "all", cut, levels[-1]) for cut in cuts),
        *(("decomposition", method, 0.5, mode) for method in config.decompositions for mode in modes),
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
    assert (result.tasks_run, result.tasks_skipped, result.records_written) == (6, 0, 6)  # baseline, 2 spectra,
    # 2 sweeps, 1 sweep_all
    assert [record["key"] for record in result.records] == [
        ("baseline",), ("spectrum", "conv3", "o|ihw"), ("spectrum", "conv4", "o|ihw"), ("sweep", "conv3", "o|ihw", 0.6),
        ("sweep", "conv4", "o|ihw", 0.6), ("sweep_all", "o|ihw", 0.6),
    ]
    assert result.records[0]["count"] == 200 and result.records[0]["top1"] > 0.9  # the trained weights, not retrained
    assert not (tmp_path / "baseline.pt").exists() and (tmp_path / "sweep.csv").is_file()
    again = run_study(small, tmp_path, progress=False)
    assert (again.tasks_run, again.tasks_skipped, again.records_written) == (0, 6, 0)
    assert again.records == result.records



@pytest.mark.slow
def test_serial_run_records_every_measurement(serial):
    assert (serial.tasks_run, serial.tasks_skipped) == (TASKS, 0)
    keys = [record["key"] for record in serial.records]
    assert keys == sorted(keys)
    assert set(keys) == expected_keys(CONFIG) and len(keys) == len(set(keys)) == serial.records_written
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
    assert manifest["last_run"]["records_written"] == len(expected_keys(CONFIG))
    stages = manifest["stages"]
    assert {name: stages[name]["tasks"] for name in plan_stages()} == {
        "baseline": 1, "spectra": 4, "sweep": 4, "sweep_all": 4, "recovery": 2, "recovery_control": 1,
        "decomposition": 4,
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


# -- the plan --------------------------------------------------------------------------------------------------------

def test_the_plan_puts_the_baseline_first_then_the_longest_tasks():
    tasks = plan_tasks(CONFIG, LAYERS)
    assert [task.stage for task in tasks] == ["baseline"] + ["decomposition"] * 4 + ["recovery"] * 2 + [
        "recovery_control"] + ["sweep"] * 4 + ["sweep_all"] * 4 + ["spectra"] * 4
    assert [task.args for task in tasks if task.stage == "decomposition"] == [
        ("svd", 0.5, CALIBRATED), ("tucker2", 0.5, CALIBRATED), ("svd", 0.5, DATA_FREE), ("tucker2", 0.5, DATA_FREE)]
    sweep = next(task for task in tasks if task.stage == "sweep")
    assert sweep.args == ("conv1",) and sweep.keys == (
        ("sweep", "conv1", "o|ihw", 0.3), ("sweep", "conv1", "o|ihw", 0.6), ("sweep", "conv1", "oh|iw", 0.3),
        ("sweep", "conv1", "oh|iw", 0.6))
    keys = [key for task in tasks for key in task.keys]
    assert len(keys) == len(set(keys)) and set(keys) == expected_keys(CONFIG)
    assert all(task.keys == ((task.stage, *task.args),) for task in tasks if task.stage not in ("sweep", "spectra"))


def test_the_plan_without_calibration_or_fine_tuning():
    uncalibrated = CONFIG.replace(calibration_samples=0)
    assert [task.args[-1] for task in plan_tasks(uncalibrated, LAYERS) if task.stage == "decomposition"] == [
        DATA_FREE, DATA_FREE]
    assert {key for task in plan_tasks(uncalibrated, LAYERS) for key in task.keys} == expected_keys(uncalibrated)
    stages = {task.stage for task in plan_tasks(CONFIG.replace(retrain_epochs=0), LAYERS)}
    assert stages == {"baseline", "sweep", "sweep_all", "spectra"}


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
    assert len(read_records(tmp_path)) == 1 + 4 + 2  # baseline, 4 decompositions, 2 recoveries
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
    # new: 4 spectra tasks (w|oih), 4 sweep tasks, each of 2 old cuts x 0.8 + w|oih x 3 levels, sweep_all 2 + 3,
    # and the recovery at the new largest level for each of the 3 cuts
    assert extended.tasks_run == 4 + 4 + (2 + 3) + 3
    assert extended.records_written == 4 + 4 * (2 + 3) + (2 + 3) + 3
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
    fresh = run_study(wider, tmp_path / "fresh", progress=False)
    assert [r for r in extended.records if r["key"][0] != "spectrum"] == [
        r for r in fresh.records if r["key"][0] != "spectrum"]
    # a spectrum holds the ranks at the levels of the run that measured it: the spectra of the cut measured
    # first keep the first run's levels (0.6 only), the rest is the same
    spectra = [(old, new) for old, new in zip(extended.records, fresh.records) if old["key"][0] == "spectrum"]
    assert len(spectra) == 4 and all(without_levels(old) == without_levels(new) for old, new in spectra)
    assert {(tuple(old["levels"]), old["cut"]) for old, _ in spectra} == {((0.6,), "o|ihw"), ((0.3, 0.6), "i|ohw")}
    assert {tuple(new["levels"]) for _, new in spectra} == {(0.3, 0.6)}


def without_levels(record: dict) -> dict:
    return {name: value for name, value in record.items() if name not in ("levels", "ranks_for_levels")}


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


def test_dask_starts_the_tasks_in_the_order_of_the_plan(tmp_path, monkeypatch):
    distributed = pytest.importorskip("distributed")
    started = tmp_path / "started"

    def noted(config, state, task):  # pickled by value: it notes the order in a file, not in this process's memory
        with open(started, "a") as file:
            file.write(f"{task.args[0]} ")
        return runner.TaskOutput([], 0.0)

    monkeypatch.setattr(runner, "run_task", noted)
    tasks = [runner.Task("stage", (position,), (("stage", position),)) for position in range(30)]
    with distributed.Client(processes=False, n_workers=1, threads_per_worker=1, dashboard_address=None) as client:
        runner._run_on_dask(client, tasks, {}, b"", lambda task, output: None)
    assert started.read_text().split() == [str(position) for position in range(30)]


def test_local_workers_keep_glibc_trimming_and_one_thread_each():
    pytest.importorskip("distributed")

    def environ(names=("MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS")):
        return {name: os.environ.get(name) for name in names}

    with runner._dask_client(workers=1, scheduler=None) as client:
        (seen,) = client.run(environ).values()
    assert seen == {"MALLOC_TRIM_THRESHOLD_": None, "OMP_NUM_THREADS": "1"}


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
    image_folders(tmp_path, images=2)
    inputs = resolve_inputs(CONFIG.replace(dataset=str(tmp_path)))
    assert inputs.classes == ("cat", "dog") and inputs.in_channels == 3
    assert inputs.train_set.augment and inputs.train_set.normalize == tt.NORMALIZATIONS["cifar10"]
    assert inputs.model(0).conv1.in_channels == 3 and inputs.model(0).linear.out_features == 2
    shutil.rmtree(tmp_path / "test")
    with pytest.raises(ValueError, match="no test/"):
        resolve_inputs(CONFIG.replace(dataset=str(tmp_path)))


def image_folders(root, images: int = 3) -> None:
    """``root/train`` and ``root/test``, each with classes cat and dog of ``images`` 8x8 images, all different."""
    image = pytest.importorskip("PIL.Image")
    for split in ("train", "test"):
        for label, blue in (("cat", 0), ("dog", 200)):
            (root / split / label).mkdir(parents=True)
            for i in range(images):
                image.new("RGB", (8, 8), (40 * i, 100, blue)).save(root / split / label / f"{i}.png")


def items(dataset) -> list:
    return [(image.tolist(), label) for image, label in (dataset[i] for i in range(len(dataset)))]


def test_an_image_folder_study_decodes_only_the_images_it_uses(tmp_path):
    image_folders(tmp_path)
    config = CONFIG.replace(dataset=str(tmp_path), eval_samples=2, train_samples=3)
    kept = sorted(torch.randperm(6, generator=torch.Generator().manual_seed(0))[:3].tolist())
    unused = next(i for i in range(6) if i not in kept)
    corrupt = tt.image_folder(tmp_path / "train").samples[unused][0]
    corrupt.write_bytes(b"not an image")      # never decoded: the study does not use it
    inputs = resolve_inputs(config)
    whole = tt.image_folder(tmp_path / "test", normalize="cifar10", preload=True)
    tested = sorted(torch.randperm(6, generator=torch.Generator().manual_seed(0))[:2].tolist())
    assert items(inputs.test_set) == items(torch.utils.data.Subset(whole, tested))
    assert inputs.train_set.augment and len(inputs.train_set) == 3
    assert [path.name for path, _ in inputs.train_set.samples] == [
        path.name for i, (path, _) in enumerate(tt.image_folder(tmp_path / "train").samples) if i in kept]


def test_the_calibration_batches_are_a_seeded_unaugmented_subset_of_the_training_images(tmp_path):
    image_folders(tmp_path, images=5)
    inputs = resolve_inputs(CONFIG.replace(dataset=str(tmp_path), train_samples=8))
    plain = tt.image_folder(tmp_path / "train", normalize="cifar10")
    first = list(inputs.calibration_loader(6, 4, 0))
    assert [len(targets) for _, targets in first] == [4, 2]
    chosen = [inputs.train_set.samples[i] for i in sorted(
        torch.randperm(8, generator=torch.Generator().manual_seed(0))[:6].tolist())]
    expected = [plain[plain.samples.index(sample)] for sample in chosen]   # not augmented, in data set order
    assert [(image.tolist(), label) for inputs_, targets in first for image, label in zip(inputs_, targets.tolist())
            ] == [(image.tolist(), label) for image, label in expected]
    again = list(inputs.calibration_loader(6, 4, 0))
    assert all(torch.equal(a, b) for one, two in zip(first, again) for a, b in zip(one, two))
    assert inputs.train_set.augment                                     # the training set itself stays augmented
    assert sum(len(targets) for _, targets in inputs.calibration_loader(100, 4, 1)) == 8  # all there are
    with pytest.raises(ValueError, match="samples"):
        inputs.calibration_loader(0, 4, 0)
    with pytest.raises(TypeError, match="batch_size"):
        inputs.calibration_loader(6, 4.0, 0)


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
