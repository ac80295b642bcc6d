"""Running the tasks of a study, in this process or on Dask workers, with the same records either way.

A :class:`Task` is one call of a function of :mod:`tnlib_torch.study.measure` (or of
:mod:`tnlib_torch.study.decomposition`), the :data:`MEASURES` entry of its stage.  :func:`run_task` runs it
from plain data only, the config as a dict and the baseline weights as ``torch.save`` bytes: it rebuilds
the model and the data itself (:func:`~tnlib_torch.study.inputs.resolve_inputs`, kept between the
tasks of a process by :func:`cached_inputs`, so that a process reads and decodes the data once), so a Dask
worker runs it as this process does.  Its records depend on the config, the weights and the task alone:
each task runs on one thread (a different thread count changes the rounding of convolutions), on the
model in the channels-last layout (:func:`~tnlib_torch.study.measure_tools.to_channels_last`), after
``torch.manual_seed(config.seed)``, and its loaders are new, seeded ones: the training and test loaders,
and the calibration batches of ``calibration_samples`` training images
(:meth:`~tnlib_torch.study.inputs.StudyInputs.calibration_loader`; none when it is 0).

:func:`open_runner` gives the function that runs a list of tasks: in order in this process, or submitted
to a ``distributed.LocalCluster`` of ``workers`` processes or to the scheduler at ``scheduler``, whose
results come back as they complete.  Either way each result is handed to a callback in this process, the
one that writes the results (one writer per folder).
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from tnlib_torch._checks import check_count
from tnlib_torch.study import measure
from tnlib_torch.study.config import StudyConfig
from tnlib_torch.study.decomposition import CALIBRATED, decomposition_at_params
from tnlib_torch.study.inputs import resolve_inputs
from tnlib_torch.study.measure_tools import to_channels_last
from tnlib_torch.study.store import Key

__all__ = ["CONNECT_TIMEOUT", "Task", "TaskOutput", "cached_inputs", "check_placement", "local_worker_environ",
           "open_runner", "run_task"]

#: Seconds to wait for the Dask scheduler of ``scheduler=ADDRESS`` to answer.
CONNECT_TIMEOUT = 10.0
#: Dask's config key of the environment its nannies set in the worker processes they spawn.
SPAWN_ENVIRON = "distributed.nanny.pre-spawn-environ"
#: Variables of :data:`SPAWN_ENVIRON` left out in the workers of a local cluster (:func:`local_worker_environ`).
UNSET_IN_WORKERS = frozenset({"MALLOC_TRIM_THRESHOLD_"})

Record = dict[str, Any]

#: :func:`~tnlib_torch.study.inputs.resolve_inputs`, keeping the last config's inputs for the next tasks.
cached_inputs = functools.lru_cache(maxsize=1)(resolve_inputs)


@dataclass(frozen=True)
class Task:
    """One measurement of a study.

    Attributes
    ----------
    stage : str
        What it measures, a key of :data:`MEASURES`; its records are timed under this name.
    args : tuple
        The arguments particular to this task (layer, cut, level, method, budget, ...).
    keys : tuple of tuple
        The keys of the records it gives; it is done when all are recorded.
    """

    stage: str
    args: tuple[Any, ...]
    keys: tuple[Key, ...]


class TaskOutput(NamedTuple):
    """What :func:`run_task` gives back: the records, and the seconds the task took (not recorded in them)."""

    records: list[Record]
    seconds: float


@dataclass(frozen=True)
class _Setting:
    """What every measurement of a study shares: its loaders, its layers and its fine-tuning."""

    train: Any
    test: Any
    calibration: Any
    layers: tuple[str, ...]
    config: StudyConfig

    @property
    def training(self) -> tuple[int, float, int]:
        """``epochs``, ``lr`` and ``seed`` of fine-tuning (its rate :attr:`StudyConfig.fine_tune_lr`)."""
        return self.config.retrain_epochs, self.config.fine_tune_lr, self.config.seed


#: The stages: each calls one measure function with a model, the shared setting and a task's arguments.
MEASURES: dict[str, Callable[..., Record | list[Record]]] = {
    "baseline": lambda model, s: measure.baseline(model, s.test),
    "spectra": lambda model, s, layer: [
        record for record in measure.layer_spectra(model, [layer], levels=s.config.levels)
        if record["cut"] in s.config.cuts
    ],
    "sweep": lambda model, s, layer: measure.sweep_layer(model, layer, s.config.cuts, s.config.levels, s.test,
                                                         calibration=s.calibration),
    "sweep_all": lambda model, s, cut, level: measure.truncate_all(model, cut, level, s.test, include=s.layers),
    "recovery": lambda model, s, target, cut, level: measure.recovery(
        model, target, cut, level, s.train, s.test, *s.training, include=s.layers),
    "recovery_control": lambda model, s: measure.recovery_control(model, s.train, s.test, *s.training),
    "decomposition": lambda model, s, method, budget, mode: decomposition_at_params(
        model, method, budget, s.train, s.test, *s.training, include=s.layers,
        calibration=s.calibration if mode == CALIBRATED else None),
}


def run_task(config: Mapping[str, Any], baseline_state: bytes, task: Task) -> TaskOutput:
    """Run one task from plain data; importable, so that Dask can send it to its workers.

    Parameters
    ----------
    config : mapping
        ``StudyConfig.to_dict()``.
    baseline_state : bytes
        The baseline model's state dict, as ``torch.save`` writes it.
    task : Task

    Returns
    -------
    TaskOutput
        The task's records, with exactly the keys of ``task.keys``, and its seconds.
    """
    started = time.perf_counter()
    study = StudyConfig.from_dict(config)
    inputs = cached_inputs(study)
    with _one_thread():
        model = to_channels_last(inputs.model(study.seed, baseline_state).to(study.device))
        calibration = (inputs.calibration_loader(study.calibration_samples, study.batch_size, study.seed)
                       if study.calibration_samples else None)
        setting = _Setting(*inputs.loaders(study.batch_size, study.seed), calibration, inputs.layers, study)
        torch.manual_seed(study.seed)
        produced = MEASURES[task.stage](model, setting, *task.args)
    records = produced if isinstance(produced, list) else [produced]
    keys = {tuple(record["key"]) for record in records}
    if keys != set(task.keys):
        raise RuntimeError(f"task {task.stage}{task.args} gave the records {sorted(keys)}, expected {list(task.keys)}")
    return TaskOutput(records, time.perf_counter() - started)


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    """torch on one thread inside (the rounding of its kernels depends on the thread count)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


# -- runners ---------------------------------------------------------------------------------------------------------

OnResult = Callable[[Task, TaskOutput], None]
Runner = Callable[[Sequence[Task], Mapping[str, Any], bytes, OnResult], None]


def check_placement(workers: object, scheduler: object) -> None:
    """Refuse ``workers`` and ``scheduler`` both given, ``workers`` not an int >= 1, ``scheduler`` not an address,
    or either without Dask's ``distributed`` installed.

    Raises
    ------
    ValueError, TypeError
    ImportError
        Either given, and ``distributed`` cannot be imported.
    """
    if workers is not None and scheduler is not None:
        raise ValueError(f"give workers or scheduler, not both (got workers={workers!r}, scheduler={scheduler!r})")
    if workers is not None:
        check_count(workers, "workers")
    if scheduler is not None and (not isinstance(scheduler, str) or not scheduler.strip()):
        raise TypeError(f"scheduler must be the address of a Dask scheduler (str), got {scheduler!r}")
    if workers is not None or scheduler is not None:
        _distributed()


def _distributed() -> Any:
    """Dask's ``distributed`` module (which also loads its part of Dask's config)."""
    try:
        import distributed
    except ImportError as error:
        raise ImportError(f"workers and scheduler (tnlib study --workers, --scheduler) run the study on Dask, and "
                          f"it is not installed here ({error}): pip install \"tnlib[dask]\"") from error
    return distributed


@contextlib.contextmanager
def open_runner(workers: int | None = None, scheduler: str | None = None) -> Iterator[Runner]:
    """The function running tasks: here in order (neither argument), or on Dask (one of them).

    ``runner(tasks, config, baseline_state, on_result)`` calls ``on_result(task, output)`` in this process
    for each task as it completes, and raises the first error of a task (pending tasks are cancelled).
    The Dask cluster (``workers``) or connection (``scheduler``) is made on entry and closed on exit.

    Raises
    ------
    ValueError, TypeError
        Both arguments given, or ``workers`` not an int >= 1, or ``scheduler`` not a non-empty string.
    ConnectionError
        No Dask scheduler answers at ``scheduler`` within :data:`CONNECT_TIMEOUT` seconds.
    ImportError
        Dask's ``distributed`` is not installed.
    """
    check_placement(workers, scheduler)
    if workers is None and scheduler is None:
        yield _run_here
        return
    with _dask_client(workers, scheduler) as client:
        yield lambda tasks, config, state, on_result: _run_on_dask(client, tasks, config, state, on_result)


def _run_here(tasks: Sequence[Task], config: Mapping[str, Any], state: bytes, on_result: OnResult) -> None:
    for task in tasks:
        on_result(task, run_task(config, state, task))


def _run_on_dask(client: Any, tasks: Sequence[Task], config: Mapping[str, Any], state: bytes,
                 on_result: OnResult) -> None:
    """Submit every task (the weights sent once to each worker), hand on the results as they complete.

    The tasks start in the order given (each has a higher priority than the next): the plan's order, which
    decides when the study ends (:func:`~tnlib_torch.study.pipeline.plan_tasks`).
    """
    from distributed import as_completed

    shared = client.scatter(state, broadcast=True)
    futures = {client.submit(run_task, dict(config), shared, task, pure=False, priority=-position): task
               for position, task in enumerate(tasks)}
    try:
        for future in as_completed(futures):
            on_result(futures[future], future.result())
    finally:
        client.cancel(list(futures))


@contextlib.contextmanager
def _dask_client(workers: int | None, scheduler: str | None) -> Iterator[Any]:
    """A client of a new local cluster of ``workers`` processes, or of the scheduler at ``scheduler``."""
    distributed = _distributed()
    if scheduler is not None:
        try:
            client = distributed.Client(scheduler, timeout=CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as error:
            raise ConnectionError(f"no Dask scheduler answers at {scheduler!r} within {CONNECT_TIMEOUT:g} s ({error});"
                                  " start one (dask scheduler, dask worker ADDRESS), or run with workers=N "
                                  "(--workers N) or serially") from error
        with client:
            yield client
        return
    # no dashboard, and the scheduler's HTTP endpoints on a free port rather than 8787, which another
    # study (or any Dask cluster) may hold
    import dask.config

    with dask.config.set({SPAWN_ENVIRON: local_worker_environ()}):
        cluster = distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                           dashboard_address=None, scheduler_kwargs={"dashboard_address": ":0"})
    with cluster, distributed.Client(cluster) as client:
        yield client


def local_worker_environ() -> dict[str, Any]:
    """The environment Dask's nannies give the processes of a local cluster, less :data:`UNSET_IN_WORKERS`.

    Dask sets ``MALLOC_TRIM_THRESHOLD_=65536`` in its workers so that they hand freed memory back to the
    system at once.  torch frees and allocates the same activation buffers at every step, so each step then
    faults its memory in anew: in the ResNet-20 study the kernel's time was 40% of the CPU time (1,736 s of
    4,282 s), and one training step of ResNet-20 spent 2.0 s of system time per 8 steps against 0.3 s.  The
    workers keep glibc's own adaptive threshold, as the serial runner and any other Python process do.
    """
    _distributed()
    import dask.config

    environ = dask.config.get(SPAWN_ENVIRON, {})
    return {name: value for name, value in environ.items() if name not in UNSET_IN_WORKERS}
