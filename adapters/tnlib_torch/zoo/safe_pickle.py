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

The array globals are admitted only as numpy's pickles use them, so that no array is larger than
the bytes the file holds for it: ``numpy.ndarray`` is a token passed to ``_reconstruct``, never
called; ``_reconstruct`` builds only the empty array that ``ndarray.__setstate__`` then fills
(numpy checks that the state's bytes match its shape and dtype); ``_frombuffer`` is run only on a
buffer of exactly ``prod(shape) * itemsize`` bytes, and never for an object dtype.
"""

from __future__ import annotations

import math
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


class _ArrayType:
    """What the pickle gets for ``numpy.ndarray``: the type token ``_reconstruct`` takes, never an array.

    numpy's pickles only pass ``numpy.ndarray`` to ``_reconstruct``; called directly (``ndarray(shape,
    dtype, buffer, offset, strides)``) it would build an uninitialized array of any shape, or a view of
    a short buffer with zero strides, so a call is refused.
    """

    def __call__(self, *args: object) -> None:
        raise pickle.UnpicklingError("numpy.ndarray is admitted only as the type of numpy's _reconstruct, "
                                     "not called (a data file never builds an array that way)")


_ARRAY_TYPE = _ArrayType()


def _checked_dtype(dtype: object) -> np.dtype:
    if not isinstance(dtype, (np.dtype, str, bytes)):
        raise pickle.UnpicklingError(f"an array's dtype must be a numpy dtype, got {type(dtype).__name__}")
    dtype = np.dtype(dtype.decode("latin1") if isinstance(dtype, bytes) else dtype)
    if dtype.hasobject:
        raise pickle.UnpicklingError(f"an array of dtype {dtype} holds Python objects, which a data file never does")
    return dtype


def _checked_shape(shape: object) -> tuple[int, ...]:
    if not (isinstance(shape, tuple) and all(type(d) is int and d >= 0 for d in shape)):
        raise pickle.UnpicklingError(f"an array's shape must be a tuple of ints >= 0, got {shape!r}")
    return shape


def _empty_array(reconstruct: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """numpy's ``_reconstruct``, admitted for what numpy pickles: an empty ``ndarray`` to fill from its state.

    numpy pickles an array (protocols 0 to 4) as ``_reconstruct(ndarray, (0,), typecode)`` and the
    state ``(version, shape, dtype, is_fortran, bytes)``, which ``ndarray.__setstate__`` accepts only
    when the bytes are exactly ``prod(shape) * itemsize`` long: the array never holds more than the
    file.  Any other type or a non-empty shape (an uninitialized array of any size) is refused.
    """

    def empty(subtype: object, shape: object, typecode: object) -> np.ndarray:
        if subtype is not _ARRAY_TYPE or shape != (0,):
            raise pickle.UnpicklingError(f"_reconstruct is admitted for (numpy.ndarray, (0,), typecode) only, "
                                         f"got shape {shape!r}; the array's content comes from its state")
        return reconstruct(np.ndarray, (0,), typecode)

    return empty


def _sized_frombuffer(frombuffer: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """numpy's ``_frombuffer`` (protocol 5), admitted when the buffer holds exactly ``prod(shape) * itemsize`` bytes."""

    def checked(buffer: object, dtype: object, shape: object, order: object, *rest: object) -> np.ndarray:
        dtype, shape = _checked_dtype(dtype), _checked_shape(shape)
        try:
            size = memoryview(buffer).nbytes
        except TypeError:
            raise pickle.UnpicklingError(f"an array's buffer must be bytes-like, got {type(buffer).__name__}") from None
        expected = math.prod(shape) * dtype.itemsize
        if size != expected:
            raise pickle.UnpicklingError(f"an array of shape {shape} and dtype {dtype} needs {expected} bytes, "
                                         f"its buffer holds {size}")
        return frombuffer(buffer, dtype, shape, order, *rest)

    return checked


def _admitted_globals() -> dict[tuple[str, str], Callable[..., Any]]:
    """The globals of numpy's array pickles, under numpy 1's and numpy 2's module names.

    The reconstructors are taken from numpy's own reductions of an array (protocol 2 names
    ``_reconstruct``, protocol 5 ``_frombuffer``), so no private or deprecated module is imported,
    and admitted only as numpy uses them (:func:`_empty_array`, :func:`_sized_frombuffer`): no
    array is built larger than the bytes the file holds for it.
    """
    reconstruct = _empty_array(np.zeros(1).__reduce_ex__(2)[0])
    frombuffer = _sized_frombuffer(np.zeros(1).__reduce_ex__(5)[0])
    admitted: dict[tuple[str, str], Callable[..., Any]] = {
        ("numpy", "ndarray"): _ARRAY_TYPE,
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
