"""The ``tnlib`` command: ``tnlib study`` runs a compressibility study, ``tnlib spectra`` the core demo.

``tnlib study`` builds a :class:`~tnlib_torch.study.config.StudyConfig` from its options (each
option is a field of the config, with the config's default) and runs
:func:`~tnlib_torch.study.pipeline.run_study` into ``--output``.  With no options it trains the
VanillaCNN on scikit-learn's digits and runs the whole pipeline offline.  The same command again
resumes: measurements already in ``results.jsonl`` are skipped.  Errors in the arguments or the
inputs end the command with a one-line message and exit status 2; Ctrl-C with status 130, the
results recorded so far kept.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
from collections.abc import Sequence
from typing import Any

from tnlib_torch.study.config import StudyConfig

__all__ = ["main"]

#: One line of help per config field.
FIELD_HELP = {
    "model": "a model name (vanilla_cnn, resnet20, resnet56, ...) or package.module:factory",
    "checkpoint": "weights to load into the model (default: none, the model is trained first for --train-epochs)",
    "dataset": "digits (embedded, no download), cifar10, cifar100, or an image folder with train/ and test/",
    "data_root": "the folder holding cifar-10-batches-py / cifar-100-python (default: none)",
    "layers": "glob patterns of the conv layers to study (default: every conv)",
    "cuts": "the cuts of the kernel (o, i, h, w) to truncate across (default: all 7)",
    "levels": "the truncation levels, relative errors in (0, 1)",
    "train_epochs": "epochs of training when no checkpoint is given",
    "retrain_epochs": "epochs of fine-tuning in the recovery and decomposition stages",
    "recovery_levels": "how many of the largest levels get recovery fine-tuning",
    "decompositions": "the structures compared at equal parameter count",
    "eval_samples": "evaluate on at most this many test samples (default: all)",
    "train_samples": "train and fine-tune on at most this many training samples (default: all)",
    "batch_size": "batch size of every loader",
    "lr": "learning rate of (re)training",
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


def _study_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "study", help="run a compressibility study (resumable)",
        description="Spectra, truncation sweep, recovery and decomposition comparison of a CNN's conv layers; "
                    "results, figures and a report in --output. Run it again to resume.",
        formatter_class=_DefaultsHelpFormatter)
    for field in dataclasses.fields(StudyConfig):
        kind, several = _option_type(field.name)
        parser.add_argument(f"--{field.name.replace('_', '-')}", dest=field.name, type=kind,
                            nargs="+" if several else None, default=field.default, help=FIELD_HELP[field.name])
    parser.add_argument("--output", default="tnlib-study", help="the output folder (results, figures, report)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--workers", type=int, help="run the measurements on a local Dask cluster of N processes "
                                                    "(default: serially, in this process)")
    where.add_argument("--scheduler", help="run them on an existing Dask scheduler, tcp://host:port (default: none)")
    parser.add_argument("--force", action="store_true",
                        help="start over in an output folder holding another study (its results are archived)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _run_study(args: argparse.Namespace) -> int:
    fields = {field.name: getattr(args, field.name) for field in dataclasses.fields(StudyConfig)}
    config = StudyConfig(**{name: tuple(value) if isinstance(value, list) else value
                            for name, value in fields.items()})
    from tnlib_torch.study.pipeline import run_study  # torch and the study's modules, once the options are valid

    result = run_study(config, args.output, workers=args.workers, scheduler=args.scheduler, force=args.force,
                       progress=not args.quiet)
    print(f"tnlib study: {result.tasks_run} measurements run, {result.tasks_skipped} already recorded, "
          f"{result.seconds:.1f} s; results in {result.output}")
    for path in result.paths:
        if path.name == "report.md":
            print(f"report: {path}")
    return 0


def _run_spectra(args: argparse.Namespace) -> int:
    from tnlib.demo import main as spectra_main

    return spectra_main(args.arguments)


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``tnlib`` and its subcommands."""
    parser = argparse.ArgumentParser(prog="tnlib", description="Tensor-network compressibility of neural networks.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    _study_parser(subparsers).set_defaults(run=_run_study)
    spectra = subparsers.add_parser("spectra", help="spectra of a tensor across every cut (python -m tnlib)",
                                    add_help=False)
    spectra.add_argument("arguments", nargs=argparse.REMAINDER, help="the arguments of python -m tnlib")
    spectra.set_defaults(run=_run_spectra)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``tnlib`` with ``argv`` (default: the command line); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except (ValueError, TypeError, OSError) as error:
        print(f"tnlib {args.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"tnlib {args.command}: interrupted; the same command resumes where it stopped", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
