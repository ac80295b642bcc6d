"""Unpickling data files (the CIFAR batches) without running code.

A pickle is a program: loading one imports and calls whatever globals it names. :func:`load`
reads a pickle with an unpickler whose ``find_class`` admits only the globals that a pickle of
plain data needs and refuses every other one before anything is imported or called. Dicts,
lists, tuples, strings, bytes, ints, floats, bools and ``None`` have opcodes of their own and
need no global; numpy arrays name these:

- ``numpy.core.multiarray._reconstruct`` (numpy 1) or ``numpy._core.multiarray._reconstruct``
  (numpy 2), ``numpy.ndarray`` and ``numpy.dtype``: an array pickled with protocols 0 to 4, as
  the official CIFAR files (written by Python 2) are;
- ``numpy.core.numeric._frombuffer`` or ``numpy._core.numeric._frombuffer`` and
  ``numpy.dtype``: an array pickled with protocol 5;
- ``_codecs.encode``, which Python 3 names for each ``bytes`` object in protocols 0 to 2; it is
  admitted for latin-1 only, the one encoding the pickler writes.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["UnsafePickleError", "load"]


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle names a global that a data file never needs; nothing was imported or called."""


def _latin1_bytes(text: object, encoding: object) -> bytes:
    """``_codecs.encode`` as the pickler uses it for ``bytes`` in protocols 0 to 2."""
    if not isinstance(text, str) or encoding != "latin1":
        raise pickle.UnpicklingError(f"_codecs.encode is admitted for (str, 'latin1') only, got encoding {encoding!r}")
    return text.encode("latin1")


def _admitted_globals() -> dict[tuple[str, str], Callable[..., Any]]:
    """The globals of numpy's array pickles, under numpy 1's and numpy 2's module names.

    The reconstructors are taken from numpy's own reductions of an array (protocol 2 names
    ``_reconstruct``, protocol 5 ``_frombuffer``), so no private or deprecated module is imported.
    """
    reconstruct = np.zeros(1).__reduce_ex__(2)[0]
    frombuffer = np.zeros(1).__reduce_ex__(5)[0]
    admitted: dict[tuple[str, str], Callable[..., Any]] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1_bytes,
    }
    for package in ("numpy.core", "numpy._core"):
        admitted[(f"{package}.multiarray", "_reconstruct")] = reconstruct
        admitted[(f"{package}.numeric", "_frombuffer")] = frombuffer
    return admitted


_ADMITTED = _admitted_globals()


class _DataUnpickler(pickle.Unpickler):
    """An unpickler whose ``find_class`` answers from :data:`_ADMITTED` and refuses everything else."""

    def __init__(self, file: Any, name: str, what: str) -> None:
        # Python 2 wrote the official files: its strings (keys, names, array bytes) load as bytes.
        super().__init__(file, encoding="bytes")
        self._name = name
        self._what = what

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ADMITTED[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"refusing to load {self._name!r}: it references {module}.{name}, which {self._what} never does "
                "(only plain containers, strings, numbers and numpy arrays are admitted)"
            ) from None


def load(path: Path, what: str) -> Any:
    """The object pickled in ``path``, read without running code.

    Parameters
    ----------
    path : Path
        The pickle file.
    what : str
        What the file should be, for the error message (``"a CIFAR-10 file"``).

    Returns
    -------
    object
        Plain containers, strings (Python 2 strings as ``bytes``), numbers and numpy arrays.

    Raises
    ------
    UnsafePickleError
        If the pickle names any other global (the message names the file and the global).
    pickle.UnpicklingError
        If the file is not a complete pickle.
    """
    with open(path, "rb") as file:
        try:
            return _DataUnpickler(file, path.name, what).load()
        except UnsafePickleError:
            raise
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
            raise pickle.UnpicklingError(f"cannot read {path.name!r} as {what}: {exc}") from exc
