"""``tnlib study``: a compressibility study from the command line (a command of :mod:`tnlib.cli`).

The command :data:`STUDY` is the entry point ``study`` of the group ``tnlib.commands``, which the core's
``tnlib`` script loads.  It builds a :class:`~tnlib_torch.study.config.StudyConfig` from its options (each
option is a field of the config, with the config's default) and runs
:func:`~tnlib_torch.study.pipeline.run_study` into ``--output``.  With no options it trains the
VanillaCNN on scikit-learn's digits and runs the whole pipeline offline.  The same command again
resumes: measurements already in ``results.jsonl`` are skipped.

Every bad invocation ends with one line, ``tnlib study: error: ...``, and exit status 2, before the output
folder is created or changed: the options are checked first (messages name the option), then
:func:`~tnlib_torch.study.pipeline.run_study` checks the device, Dask, the checkpoint, the data and the model
and connects to the scheduler before it opens the folder; a folder in use or holding another study is
refused as it is.  Ctrl-C ends it with status 130, the results recorded so far kept.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from typing import TYPE_CHECKING

from tnlib.cli import Command
from tnlib_torch._checks import check_count
from tnlib_torch.study.config import RENAMED, StudyConfig, checked_fields
from tnlib_torch.study.inputs import check_device
from tnlib_torch.study.store import FolderInUseError

if TYPE_CHECKING:
    from tnlib_torch.study.pipeline import StudyResult

__all__ = ["STUDY"]

#: One line of help per config field.
FIELD_HELP = {
    "model": "a model name (vanilla_cnn, resnet20, resnet56, ...) or package.module:factory",
    "checkpoint": "weights to load into the model (default: none, the model is trained first for --train-epochs)",
    "dataset": "digits (embedded, no download), cifar10, cifar100, or an image folder with train/ and test/",
    "data_root": "the folder holding cifar-10-batches-py / cifar-100-python, or where --download puts it "
                 "(default: none)",
    "include": "glob patterns of the conv layers to study (default: every conv)",
    "cuts": "the cuts of the kernel (o, i, h, w) to truncate across (default: all 7)",
    "levels": "the truncation levels, relative errors in (0, 1)",
    "train_epochs": "epochs of training when no checkpoint is given",
    "retrain_epochs": "epochs of fine-tuning in the recovery and decomposition stages",
    "recovery_levels": "how many of the largest levels get recovery fine-tuning",
    "decompositions": "the structures compared at equal parameter count (svd: the cut truncation as two factors; "
                      "truncate, its old name, is read as svd)",
    "calibration_samples": "training images the data-aware steps see (the sweep's data error, the calibrated "
                           "decompositions); 0: none",
    "eval_samples": "evaluate on at most this many test samples (default: all)",
    "train_samples": "train and fine-tune on at most this many training samples (default: all)",
    "batch_size": "batch size of every loader",
    "lr": "learning rate of training from scratch",
    "retrain_lr": "learning rate of fine-tuning (recovery, its control, decompositions) (default: --lr / 10, "
                  "since fine-tuning starts from a converged model)",
    "seed": "the seed of everything random",
    "device": "cpu, cuda, cuda:1, ...",
}


class _DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends each option's default to its help, a sequence as its items (``0.1 0.2``), unless the help
    already states it in words."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.help and "(default:" in action.help:
            return action.help
        if isinstance(action.default, tuple):
            items = " ".join(map(str, action.default)).replace("%", "%%")
            return f"{action.help} (default: {items})"
        return super()._get_help_string(action)


def _option_type(name: str) -> tuple[type, bool]:
    """The element type of the config field ``name`` and whether it takes several values."""
    hint = typing.get_type_hints(StudyConfig)[name]
    args = [arg for arg in typing.get_args(hint) if arg is not type(None)]
    if typing.get_origin(hint) is tuple:
        return args[0], True
    if args:  # an optional field, X | None
        return args[0], False
    return hint, False


def _option(name: str) -> str:
    """The command-line option of the config field ``name``."""
    return f"--{name.replace('_', '-')}"


class _RenamedOption(argparse.Action):
    """The old name of an option (:data:`~tnlib_torch.study.config.RENAMED`): stores into the new one's
    field and says on stderr, in one line, that the name is deprecated."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        print(f"tnlib study: warning: {option_string} is deprecated, use {_option(self.dest)} "
              "(the old name goes in the next release)", file=sys.stderr)
        setattr(namespace, self.dest, values)


def _add_field(parser: argparse.ArgumentParser, name: str, option: str, **settings: object) -> None:
    """The option ``option`` of the config field ``name``, typed as the field."""
    kind, several = _option_type(name)
    parser.add_argument(option, dest=name, type=kind, nargs="+" if several else None, **settings)


def _configure(parser: argparse.ArgumentParser) -> None:
    """The options of ``tnlib study``: one per config field, then where and how to run."""
    parser.description = ("Spectra, truncation sweep, recovery and decomposition comparison of a CNN's conv layers; "
                          "results, figures and a report in --output. Run it again to resume.")
    parser.formatter_class = _DefaultsHelpFormatter
    for field in dataclasses.fields(StudyConfig):
        _add_field(parser, field.name, _option(field.name), default=field.default, help=FIELD_HELP[field.name])
    for old, new in RENAMED.items():
        _add_field(parser, new, _option(old), action=_RenamedOption, default=argparse.SUPPRESS, metavar=old.upper(),
                   help=f"deprecated: the old name of {_option(new)}, accepted until the next release")
    parser.add_argument("--download", action="store_true",
                        help="fetch CIFAR into --data-root when it is missing (the official archive, md5-checked)")
    parser.add_argument("--output", default="tnlib-study", help="the output folder (results, figures, report)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, help="run the measurements on a local Dask cluster of N "
                                                    "processes (default: serially, in this process)")
    where.add_argument("--scheduler", help="run them on an existing Dask scheduler, tcp://host:port (default: none)")
    parser.add_argument("--force", action="store_true",
                        help="start over in an output folder holding another study (its results are archived)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _config(args: argparse.Namespace) -> StudyConfig:
    """The config of the options, checked; a bad value's message names its option."""
    values = {field.name: getattr(args, field.name) for field in dataclasses.fields(StudyConfig)}
    values = {name: tuple(value) if isinstance(value, list) else value for name, value in values.items()}
    config = StudyConfig(**checked_fields(values, label=_option))
    check_device(config.device, _option("device"))
    if args.workers is not None:
        check_count(args.workers, "--workers")
    return config


def _run(args: argparse.Namespace) -> int:
    config = _config(args)
    from tnlib_torch.study.pipeline import run_study  # the study's modules, once the options are valid

    result = run_study(config, args.output, workers=args.workers, scheduler=args.scheduler, force=args.force,
                       progress=not args.quiet, download=args.download)
    print(summary(result))
    for path in result.paths:
        if path.name == "report.md":
            print(f"report: {path}")
    return 0


def summary(result: StudyResult) -> str:
    """The line that ends a run: the tasks run and skipped (a task gives one or more records), the records
    of the study's grid in the folder, the time and the folder."""
    return (f"tnlib study: {result.tasks_run} tasks run, {result.tasks_skipped} skipped (recorded before); "
            f"{len(result.records)} records in the study; {result.seconds:.1f} s; results in {result.output}")


#: ``tnlib study``, the entry point ``study`` of the group ``tnlib.commands``.
STUDY = Command(help="run a compressibility study (resumable)", configure=_configure, run=_run,
                errors=(FolderInUseError,), interrupted="interrupted; the same command resumes where it stopped")
