"""The one-command compressibility study (Singh, Jahromi & Orus 2024): :func:`run_study`.

A study of a :class:`~tnlib_torch.study.config.StudyConfig` takes a trained CNN and records, in its output
folder (:mod:`tnlib_torch.study.store`), the tasks of these stages, one record per measurement:

1. ``baseline``: the accuracy of the trained model (:func:`~tnlib_torch.study.measure.baseline`);
2. ``spectra``: per selected layer, the singular values and entanglement entropies of its kernel across
   each of ``cuts``, with the rank each of ``levels`` keeps (:func:`~tnlib_torch.study.measure.layer_spectra`);
3. ``sweep``: per layer, one task measuring every cut x level: the accuracy left when that kernel alone is
   truncated across the cut to that relative error, and with calibration data the error of the layer's
   outputs (:func:`~tnlib_torch.study.measure.sweep_layer`, one record per cut and level);
   ``sweep_all``: per cut x level, every selected kernel truncated at once
   (:func:`~tnlib_torch.study.measure.truncate_all`);
4. ``recovery``: per cut, at each of the ``recovery_levels`` largest levels, the accuracy that
   ``retrain_epochs`` of fine-tuning recover after truncating every selected layer
   (:func:`~tnlib_torch.study.measure.recovery`, target ``"all"``); ``recovery_control``: the untruncated
   model fine-tuned alike.  Single-layer recoveries are left out: they would cost layers x cuts fine-tunings;
5. ``decomposition``: each of ``decompositions`` at the parameter budget :data:`DECOMPOSITION_BUDGET`,
   before and after fine-tuning (:func:`~tnlib_torch.study.decomposition.decomposition_at_params`), fitted
   data-free, and calibrated on the calibration data too when ``calibration_samples > 0``.

Recovery, its control and the decompositions fine-tune (at :attr:`~StudyConfig.fine_tune_lr`), so a config
with ``retrain_epochs = 0`` has none of them.  The selected layers are the dense convs (``groups == 1``)
matching ``include`` (all of them when empty).

**Task order** (:func:`plan_tasks`).  The tasks are independent, so their order only decides when the
study ends: on ``N`` workers it ends when the last task does, and a long task started last keeps one
worker busy while the others idle.  So the baseline comes first (one evaluation, the reference of every
other record, there even in a study stopped early), then the longest tasks, the fine-tunings
(decompositions, calibrated first, then recoveries and the control), then the sweeps (one task per layer,
tens of evaluations), the all-layer truncations (one evaluation each) and last the spectra (no
evaluation): longest first, so that the short tasks fill in at the end.

Guarantees
----------
- **resumable**: a task whose records are all in the folder is skipped, so running a study again goes on
  where it stopped; the baseline is trained once (resuming its training checkpoint ``train.ckpt``) and kept
  in ``baseline.pt``, whose sha256 the manifest records;
- **crash-safe**: each record is on disk once appended, and every other file is replaced atomically: a run
  killed at any moment loses at most the tasks in progress;
- **extensible**: the grid (:data:`~tnlib_torch.study.config.GRID`: levels, cuts, recovery levels,
  decompositions) may change between runs in one folder: only the tasks with records missing run, and
  only their missing records are added (a layer's sweep task, widened by a level or a cut, measures the
  layer's whole grid again and adds the new records).  A spectrum record holds the ranks of the levels of
  the run that measured it (its ``levels``; its singular values give the rank of any level).  Records
  outside the current grid stay in ``results.jsonl``; the result, the CSV and the report hold the current
  grid's;
- **the same records serially and on Dask**: a task's records depend on the config, the baseline weights
  and the task alone (see :mod:`tnlib_torch.study.runner`), and carry no timings; the manifest holds the
  seconds per stage (``stages``, summed over runs) and of the last run (``last_run``).

After the tasks the folder gets ``sweep.csv``, and the figures and ``report.md`` of
:func:`tnlib_torch.study.report.write_report`.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from tnlib_torch._checks import check_bool
from tnlib_torch.study.config import StudyConfig
from tnlib_torch.study.decomposition import CALIBRATED, DATA_FREE
from tnlib_torch.study.inputs import StudyInputs, check_checkpoint, check_device, fetch_data
from tnlib_torch.study.measure import ALL
from tnlib_torch.study.report import write_report
from tnlib_torch.study.runner import Task, TaskOutput, cached_inputs, check_placement, open_runner
from tnlib_torch.study.store import MANIFEST, RESULTS, ResultStore, atomic_write_bytes, atomic_write_text
from tnlib_torch.zoo.train import fine_tune
from tnlib_torch.zoo.weights import load_checkpoint

__all__ = ["BASELINE", "DECOMPOSITION_BUDGET", "SWEEP_CSV", "SWEEP_COLUMNS", "TRAINING", "StudyResult",
           "plan_tasks", "run_study"]

#: The fraction of the selected layers' parameters each decomposition keeps.  Fixed, so that the methods
#: are compared at one budget whatever the sweep finds.
DECOMPOSITION_BUDGET = 0.5
#: The trained baseline's state dict, in the output folder.
BASELINE = "baseline.pt"
#: The checkpoint of the baseline's training (:func:`tnlib_torch.fine_tune`), in the output folder.
TRAINING = "train.ckpt"
#: The truncation sweep as a table, in the output folder.
SWEEP_CSV = "sweep.csv"
#: Its columns; the rows of ``sweep_all`` have ``layer = "all"`` and no ``rank``, ``rel_error``, ``norm_loss``.
SWEEP_COLUMNS = ("layer", "cut", "level", "rank", "rel_error", "norm_loss", "params", "factored_params", "top1",
                 "top5", "loss")


@dataclass(frozen=True)
class StudyResult:
    """What :func:`run_study` did.

    Attributes
    ----------
    output : Path
        The output folder.
    tasks_run, tasks_skipped : int
        The tasks run now, and those skipped because their records were there.
    records_written : int
        The records this run added to the folder (a task gives one record or more, and a task run again
        after its grid widened adds only the records missing).
    records : tuple of dict
        The records of the study's tasks (those of its grid), sorted by key, as
        :func:`~tnlib_torch.study.store.read_records` reads them.
    paths : tuple of Path
        The files of the study in the folder.
    seconds : float
        The wall time of this run.
    """

    output: Path
    tasks_run: int
    tasks_skipped: int
    records_written: int
    records: tuple[dict[str, Any], ...]
    paths: tuple[Path, ...]
    seconds: float


def run_study(config: StudyConfig, output: str | Path, *, workers: int | None = None, scheduler: str | None = None,
              force: bool = False, progress: bool = True, download: bool = False) -> StudyResult:
    """Run (or resume) the study of ``config`` in the folder ``output``.

    Parameters
    ----------
    config : StudyConfig
    output : str or Path
        The output folder, created if missing.  A folder holding another config's study is refused.
    workers : int, optional
        Run the tasks on a ``distributed.LocalCluster`` of this many one-thread worker processes.
    scheduler : str, optional
        Run the tasks on the Dask scheduler at this address (its workers import ``tnlib_torch`` and the
        model factory).  Neither: in order, in this process.
    force : bool
        Archive a study of another config found in ``output`` and start afresh
        (:meth:`~tnlib_torch.study.store.ResultStore.open`).
    progress : bool
        Show progress bars: the baseline's training epochs, then the tasks with their ETA.
    download : bool
        Download CIFAR into ``config.data_root`` if it is missing there (:func:`~tnlib_torch.study.inputs.fetch_data`).

    Returns
    -------
    StudyResult

    Raises
    ------
    ValueError, TypeError, ImportError, FileNotFoundError
        A device this machine lacks, Dask missing for ``workers`` or ``scheduler``, a missing or unreadable
        checkpoint or one that does not fit the model, an unusable model or data set
        (:func:`~tnlib_torch.study.inputs.resolve_inputs`), a folder of another study without ``force``, or a
        checkpoint whose contents changed since the study started.
    FolderInUseError
        Another run holds the folder.
    ConnectionError
        No scheduler answers at ``scheduler``, or the download failed.

    Notes
    -----
    Everything is checked before the folder is created or changed, in this order: the arguments, the
    device, that Dask is installed (for ``workers`` or ``scheduler``), the checkpoint file, the data
    (downloaded first with ``download``), the model, the checkpoint's fit to it, the scheduler's answer (or
    the local cluster's start), and last the folder itself (its lock, then its study; a refused folder is
    left as it was).  Then the baseline: the
    checkpoint's weights, or the model trained for ``train_epochs`` (all of torch's threads) and kept in
    ``baseline.pt``.  Every task then runs on one thread, in this process or on a worker, from the config
    and those weights.  ``workers`` spawns its processes, which import the main module again: a script
    that calls ``run_study(..., workers=N)`` must do so under ``if __name__ == "__main__":``.
    """
    started = time.perf_counter()
    if not isinstance(config, StudyConfig):
        raise TypeError(f"config must be a StudyConfig, got {type(config).__name__}")
    check_bool(progress, "progress")
    check_bool(download, "download")
    check_placement(workers, scheduler)
    check_device(config.device)
    if config.checkpoint is not None:
        check_checkpoint(config.checkpoint)
    if download:
        fetch_data(config)
    cached_inputs.cache_clear()  # read the data afresh; the serial tasks then reuse it
    inputs = cached_inputs(config)
    checkpoint = None if config.checkpoint is None else _weights(inputs, config, Path(config.checkpoint).expanduser())
    with open_runner(workers, scheduler) as run, ResultStore.open(output, config, force) as store:
        timings = _Timings(store)
        with timings.stage("training"):
            state = _baseline_state(store, config, inputs, progress, checkpoint)
        tasks = plan_tasks(config, inputs.layers)
        pending = [task for task in tasks if not all(store.done(key) for key in task.keys)]
        bar = tqdm(total=len(tasks), initial=len(tasks) - len(pending), desc="study", unit="task",
                   disable=not progress, dynamic_ncols=True)
        written = 0

        def record(task: Task, outcome: TaskOutput) -> None:
            nonlocal written
            for item in outcome.records:
                if not store.done(item["key"]):
                    store.append(item)
                    written += 1
            timings.add(task.stage, outcome.seconds)
            bar.set_postfix_str(task.stage, refresh=False)
            bar.update()

        try:
            run(pending, config.to_dict(), state, record)
        finally:
            bar.close()
            timings.save()
        with timings.stage("outputs"):
            planned = {key for task in tasks for key in task.keys}
            records = tuple(sorted((item for item in store.records() if item["key"] in planned),
                                   key=lambda item: item["key"]))
            paths = _write_outputs(store.folder, records, config)
        seconds, skipped = time.perf_counter() - started, len(tasks) - len(pending)
        timings.save(last_run={"seconds": seconds, "tasks_run": len(pending), "tasks_skipped": skipped,
                               "records_written": written, "workers": workers, "scheduler": scheduler})
    return StudyResult(store.folder, len(pending), skipped, written, records, paths, seconds)


def plan_tasks(config: StudyConfig, layers: Sequence[str]) -> list[Task]:
    """The tasks of the study of ``config`` on ``layers``: the baseline, then the longest first (see the
    module's notes on the order).

    Every task but the spectra and sweeps gives one record, keyed ``(stage, *args)``: ``("decomposition",
    method, budget, mode)`` for each mode (``"calibrated"`` first, when ``calibration_samples > 0``, then
    ``"data-free"``) and method, ``("recovery", "all", cut, level)``, ``("recovery_control",)``,
    ``("sweep_all", cut, level)``.  The task of a layer's sweep, ``Task("sweep", (layer,), keys)``, gives the
    records ``("sweep", layer, cut, level)`` of every cut and level; that of its spectra, ``("spectrum",
    layer, cut)`` of every cut.
    """
    cuts, levels = config.cuts, config.levels
    tasks = [_single("baseline")]
    if config.retrain_epochs:
        modes = (CALIBRATED, DATA_FREE) if config.calibration_samples else (DATA_FREE,)
        tasks += [_single("decomposition", method, DECOMPOSITION_BUDGET, mode)
                  for mode in modes for method in config.decompositions]
        aggressive = levels[len(levels) - config.recovery_levels:]
        tasks += [_single("recovery", ALL, cut, level) for cut in cuts for level in aggressive]
        tasks.append(_single("recovery_control"))
    tasks += [Task("sweep", (layer,), tuple(("sweep", layer, cut, level) for cut in cuts for level in levels))
              for layer in layers]
    tasks += [_single("sweep_all", cut, level) for cut in cuts for level in levels]
    tasks += [Task("spectra", (layer,), tuple(("spectrum", layer, cut) for cut in cuts)) for layer in layers]
    return tasks


def _single(stage: str, *args: Any) -> Task:
    """The task of one record, keyed ``(stage, *args)``."""
    return Task(stage, args, ((stage, *args),))


# -- the baseline ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Weights:
    """The baseline's weights: their file, the state dict as ``torch.save`` bytes, the file's sha256."""

    path: Path
    state: bytes
    sha256: str


def _weights(inputs: StudyInputs, config: StudyConfig, path: Path) -> _Weights:
    """The weights of the file ``path``, loaded into the model (refused if they do not fit it)."""
    model = inputs.model(config.seed)
    load_checkpoint(model, path)
    return _Weights(path, _state_bytes(model), hashlib.sha256(path.read_bytes()).hexdigest())


def _baseline_state(store: ResultStore, config: StudyConfig, inputs: StudyInputs, progress: bool,
                    checkpoint: _Weights | None) -> bytes:
    """The baseline weights as ``torch.save`` bytes: the ``checkpoint``'s, or trained once and kept in ``baseline.pt``.

    The manifest's ``baseline`` entry records the weights' file and sha256 once they are final; a resumed
    study refuses a file whose contents changed.
    """
    recorded = store.manifest().get("baseline")
    weights = checkpoint
    if weights is None:
        path = store.folder / BASELINE
        if recorded is None:
            model = inputs.model(config.seed)
            _train(store, config, inputs, model, progress)
            atomic_write_bytes(path, _state_bytes(model))
        weights = _weights(inputs, config, path)
    if recorded is not None and recorded["sha256"] != weights.sha256:
        raise ValueError(f"{weights.path} changed since the study in {store.folder} started (sha256 "
                         f"{recorded['sha256']} then, {weights.sha256} now): its records were measured on other "
                         "weights. Restore the file, or run the study in another folder")
    store.write_manifest(baseline={"file": str(weights.path), "sha256": weights.sha256})
    return weights.state


def _train(store: ResultStore, config: StudyConfig, inputs: StudyInputs, model: torch.nn.Module,
           progress: bool) -> None:
    """Train ``model`` for ``train_epochs``, resuming ``train.ckpt`` if this study started it.

    A ``train.ckpt`` this study did not start (left by the study the folder held before ``force``) is
    discarded: it may have trained on other data.
    """
    checkpoint = store.folder / TRAINING
    if not store.manifest().get("training"):
        checkpoint.unlink(missing_ok=True)
        store.write_manifest(training=TRAINING)
    if config.train_epochs:
        train_loader, _ = inputs.loaders(config.batch_size, config.seed)
        fine_tune(model, train_loader, config.train_epochs, lr=config.lr, seed=config.seed, checkpoint=checkpoint,
                  device=config.device, progress=progress)


def _state_bytes(model: torch.nn.Module) -> bytes:
    buffer = io.BytesIO()
    torch.save({name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}, buffer)
    return buffer.getvalue()


# -- timings ---------------------------------------------------------------------------------------------------------

class _Timings:
    """Seconds and task counts per stage, added to the manifest's ``stages`` (summed over runs)."""

    def __init__(self, store: ResultStore) -> None:
        self.store = store
        self.stages: dict[str, dict[str, float]] = {}

    def add(self, stage: str, seconds: float, tasks: int = 1) -> None:
        entry = self.stages.setdefault(stage, {"tasks": 0, "seconds": 0.0})
        entry["tasks"] += tasks
        entry["seconds"] += seconds

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Add the seconds of the ``with`` block to the stage ``name``."""
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - started, tasks=0)

    def save(self, **entries: Any) -> None:
        """Write the stages timed so far into the manifest (then start counting afresh), and ``entries``."""
        stages = self.store.manifest().get("stages", {})
        for name, entry in self.stages.items():
            before = stages.get(name, {})
            stages[name] = {key: before.get(key, 0) + value for key, value in entry.items()}
        self.store.write_manifest(stages=stages, **entries)
        self.stages = {}


# -- outputs ---------------------------------------------------------------------------------------------------------

def _write_outputs(folder: Path, records: Sequence[dict[str, Any]], config: StudyConfig) -> tuple[Path, ...]:
    """Write ``sweep.csv`` and the report; every file of the study in the folder."""
    atomic_write_text(folder / SWEEP_CSV, _sweep_csv(records))
    report = write_report(folder, list(records), config)
    names = (RESULTS, MANIFEST) + ((BASELINE, TRAINING) if config.checkpoint is None else ()) + (SWEEP_CSV,)
    return tuple(folder / name for name in names if (folder / name).exists()) + tuple(report)


def _sweep_csv(records: Sequence[dict[str, Any]]) -> str:
    """The ``sweep`` and ``sweep_all`` records as CSV, one row each, in the order given."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, SWEEP_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for record in records:
        if record["key"][0] == "sweep":
            writer.writerow(record)
        elif record["key"][0] == "sweep_all":
            writer.writerow({**record, "layer": ALL})
    return buffer.getvalue()
