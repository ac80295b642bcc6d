"""The ``tnlib`` console script: ``tnlib COMMAND [OPTIONS]``.

The core has one command, ``tnlib spectra`` (the demo of :mod:`tnlib.demo`, also ``python -m tnlib``).
Other packages add commands through the entry point group :data:`ENTRY_POINTS`: each entry's name is
the command's, its value a :class:`Command`.  ``tnlib_torch`` adds ``tnlib study`` that way, so the
core never imports the adapter, and a command's module is imported only when that command runs (or
for ``tnlib --help``): ``tnlib spectra`` needs neither torch nor the adapter.  A command whose module
cannot be imported ends with a message naming the extra to install (the entry point's ``[extra]``).

Errors
------
A bad invocation ends with exactly one line on stderr, ``tnlib COMMAND: error: MESSAGE``, and exit
status 2: an unknown or misspelled option (options are never abbreviated), a bad value, a missing
extra, or a ``ValueError``, ``TypeError``, ``OSError`` or ``ImportError`` raised by the command (or one
of its :attr:`Command.errors`).  Ctrl-C ends a command with status 130.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from importlib import metadata
from typing import NoReturn

from tnlib import __version__, demo

__all__ = ["ENTRY_POINTS", "SPECTRA", "ArgumentParser", "Command", "command_parser", "main", "run"]

#: The entry point group of the commands other packages add.
ENTRY_POINTS = "tnlib.commands"
#: The distribution a missing extra is installed from, when the entry point does not say.
_DISTRIBUTION = "tnlib"
#: The exit status of a bad invocation (argparse's).
USAGE_ERROR = 2
#: The exit status after Ctrl-C (128 + SIGINT).
INTERRUPTED = 130


@dataclass(frozen=True)
class Command:
    """One command of ``tnlib``.

    Attributes
    ----------
    help : str
        One line, shown by ``tnlib --help``.
    configure : callable
        ``configure(parser)`` adds the command's options to its :class:`ArgumentParser` (and may set
        its ``description`` and ``formatter_class``).
    run : callable
        ``run(args) -> int``: runs the command on the parsed options, returns the exit status.
    errors : tuple of exception types
        Raised by ``run`` for a bad invocation, beyond ``ValueError``, ``TypeError``, ``OSError`` and
        ``ImportError``: reported in one line with status 2.
    interrupted : str
        What to say after Ctrl-C.
    """

    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    errors: tuple[type[BaseException], ...] = ()
    interrupted: str = "interrupted"


class ArgumentParser(argparse.ArgumentParser):
    """argparse's parser, with no abbreviated options and errors in one line: ``PROG: error: MESSAGE``."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.exit(USAGE_ERROR, f"{self.prog}: error: {_one_line(message)} (see {self.prog} --help)\n")


def _one_line(message: object) -> str:
    return " ".join(str(message).split())


SPECTRA = Command(help="spectra of a tensor across every cut, against a random one (as python -m tnlib)",
                  configure=demo.configure, run=demo.run)

#: What a command name stands for: a :class:`Command`, or the entry point that loads one.
_Source = Command | metadata.EntryPoint


def _commands() -> dict[str, _Source]:
    """The core's commands and those of the installed entry points, by name."""
    found: dict[str, _Source] = {entry.name: entry for entry in metadata.entry_points(group=ENTRY_POINTS)}
    return {**found, "spectra": SPECTRA}


class _Unavailable(Exception):
    """A command whose module cannot be imported."""


def _load(source: _Source) -> Command:
    """The command of ``source``; raises :class:`_Unavailable` when its module cannot be imported."""
    if isinstance(source, Command):
        return source
    try:
        command = source.load()
    except ImportError as error:
        if not source.extras:
            raise _Unavailable(f"this command cannot be loaded ({error})") from error
        distribution = source.dist.name if source.dist is not None else _DISTRIBUTION
        extras = ",".join(source.extras)
        raise _Unavailable(f"this command needs the extra [{extras}], which is not installed here ({error}): "
                           f'pip install "{distribution}[{extras}]"') from error
    if not isinstance(command, Command):
        raise _Unavailable(f"the entry point {source.value!r} is a {type(command).__name__}, not a tnlib.cli.Command")
    return command


def command_parser(prog: str, command: Command) -> ArgumentParser:
    """The parser of ``command``, named ``prog`` in its usage and messages."""
    parser = ArgumentParser(prog=prog, description=command.help)
    command.configure(parser)
    return parser


def run(prog: str, command: Command, argv: Sequence[str]) -> int:
    """Parse ``argv`` for ``command`` and run it; the exit status (see the module's notes on errors)."""
    try:
        args = command_parser(prog, command).parse_args(argv)
    except SystemExit as exit_:  # after --help, or a usage error (its line printed)
        return _status(exit_)
    try:
        return command.run(args)
    except (ValueError, TypeError, OSError, ImportError, *command.errors) as error:
        return _fail(prog, error)
    except KeyboardInterrupt:
        print(f"{prog}: {command.interrupted}", file=sys.stderr)
        return INTERRUPTED


def _status(exit_: SystemExit) -> int:
    return exit_.code if isinstance(exit_.code, int) else USAGE_ERROR


def _fail(prog: str, message: object) -> int:
    print(f"{prog}: error: {_one_line(message)}", file=sys.stderr)
    return USAGE_ERROR


class _TopParser(ArgumentParser):
    """``tnlib``'s own parser: a command and its arguments; its help lists every command with its own help.

    The listing loads every command, so it is made only when the help is shown.
    """

    def __init__(self, commands: Mapping[str, _Source]) -> None:
        super().__init__(prog="tnlib", usage="tnlib [-h] [--version] COMMAND [OPTIONS]",
                         description="Tensor networks: spectra, decompositions, compressibility.",
                         formatter_class=argparse.RawDescriptionHelpFormatter)
        self.commands = commands
        self.add_argument("--version", action="version", version=f"tnlib {__version__}")
        self.add_argument("command", nargs="?", choices=sorted(commands), metavar="COMMAND",
                          help="one of the commands below")

    def format_help(self) -> str:
        width = max(map(len, self.commands))
        lines = [f"  {name:<{width}}  {_summary(source)}" for name, source in sorted(self.commands.items())]
        self.epilog = "commands:\n" + "\n".join(lines) + "\n\ntnlib COMMAND --help shows a command's options."
        return super().format_help()


def _summary(source: _Source) -> str:
    """The help of a command, or why it is unavailable."""
    try:
        return _load(source).help
    except _Unavailable as error:
        return f"(unavailable: {error})"


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``tnlib`` on ``argv`` (default: the command line); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    commands = _commands()
    if not argv or argv[0] not in commands:  # the help, the version, or an error: each exits
        parser = _TopParser(commands)
        try:
            parser.parse_args(argv[:1])
            parser.error(f"give a command: {', '.join(sorted(commands))}")
        except SystemExit as exit_:
            return _status(exit_)
    name, rest = argv[0], argv[1:]
    prog = f"tnlib {name}"
    try:
        command = _load(commands[name])
    except _Unavailable as error:
        return _fail(prog, error)
    return run(prog, command, rest)
