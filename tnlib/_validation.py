"""Checks run once at the public entry points, with messages that name the argument.

Every public function validates its inputs here before any computation, so a bad
argument fails fast with a ``ValueError`` or ``TypeError`` that says which
argument was wrong, what it was and what was expected, instead of surfacing later
as a NaN, a LAPACK error or a huge allocation.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable, Mapping, MappingView, Set
from typing import Any

import autoray as ar
import numpy as np

from tnlib._backend import WORKING_DTYPES, backend_of, dtype_name

_ARRAY_BACKENDS = ("numpy", "torch", "cupy")


def describe(value: Any) -> str:
    """``repr(value)``, cut to 60 characters for an error message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_array(x: Any, name: str = "tensor", ndim: int | None = None, min_ndim: int = 1) -> Any:
    """Validate an array argument and return it (array-likes become NumPy arrays).

    Requires a float32/float64/complex64/complex128 dtype, at least ``min_ndim``
    dimensions (exactly ``ndim`` when given), no empty dimension and only finite
    entries.
    """
    if isinstance(x, np.ma.MaskedArray):
        raise TypeError(
            f"{name} must not be a masked array (numpy.ma): its mask would be silently ignored; "
            f"fill or drop the masked entries first (e.g. {name}.filled(0))"
        )
    if backend_of(x) not in _ARRAY_BACKENDS:
        if isinstance(x, (str, bytes, dict, set)) or x is None:
            raise TypeError(f"{name} must be an array (numpy, torch or cupy), got {type(x).__name__}")
        x = np.asarray(x)
    dtype = dtype_name(x)
    if dtype not in WORKING_DTYPES:
        raise TypeError(
            f"{name} must have a floating dtype (float32, float64, complex64 or complex128), got {dtype}"
        )
    shape = tuple(x.shape)
    if ndim is not None and len(shape) != ndim:
        raise ValueError(f"{name} must have {ndim} dimensions, got shape {shape}")
    if len(shape) < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimension(s), got shape {shape}")
    if any(d == 0 for d in shape):
        raise ValueError(f"{name} must not have an empty dimension, got shape {shape}")
    if not bool(ar.do("all", ar.do("isfinite", x))):
        raise ValueError(f"{name} contains NaN or Inf entries; expected finite values")
    return x


def check_int(value: Any, name: str, minimum: int, maximum: int | None = None) -> int:
    """An integer in ``[minimum, maximum]`` (no upper bound when ``maximum`` is None; bools refused)."""
    kind = {0: "a non-negative integer", 1: "a positive integer"}.get(minimum, f"an integer >= {minimum}")
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be {kind}, got {describe(value)}")
    if value < minimum:
        bound = f" (>= {minimum})" if minimum in (0, 1) else ""
        raise ValueError(f"{name} must be {kind}{bound}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be at most {maximum}, got {value}")
    return int(value)


def check_positive_int(value: Any, name: str) -> int:
    """An integer >= 1 (bools refused)."""
    return check_int(value, name, 1)


def check_nonnegative_int(value: Any, name: str, maximum: int | None = None) -> int:
    """An integer in ``[0, maximum]`` (bools refused)."""
    return check_int(value, name, 0, maximum)


def check_fraction(value: Any, name: str) -> float:
    """A real number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number in [0, 1], got {describe(value)}")
    value = float(value)
    if not 0.0 <= value <= 1.0:  # also refuses NaN
        raise ValueError(f"{name} must lie in [0, 1], got {value}")
    return value


def check_nonnegative_real(value: Any, name: str) -> float:
    """A finite real number >= 0 (bools refused)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number >= 0, got {describe(value)}")
    value = float(value)
    if not 0.0 <= value < float("inf"):  # also refuses NaN
        raise ValueError(f"{name} must be a finite real number >= 0, got {value}")
    return value


def check_ordered(value: Any, name: str) -> Any:
    """Refuse an unordered collection (set, frozenset, dict or dict view) where order matters.

    The iteration order of a set of strings changes with ``PYTHONHASHSEED``, so
    a result built from it in turn would change from run to run.
    """
    if isinstance(value, (Set, Mapping, MappingView)):
        raise TypeError(
            f"{name} must be an ordered sequence (a list or tuple), got a {type(value).__name__}, "
            f"whose order changes from run to run"
        )
    return value


def check_choice(value: Any, name: str, choices: Iterable[str]) -> str:
    """One of the strings ``choices`` (anything but a ``str`` is a ``TypeError``)."""
    choices = tuple(choices)
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, one of {', '.join(map(repr, choices))}; got {describe(value)}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}; got {describe(value)}")
    return value


def check_seed(seed: Any, name: str = "seed") -> np.random.Generator:
    """A NumPy ``Generator`` from ``None``, an int or a ``Generator``."""
    if isinstance(seed, np.random.Generator):
        return seed
    if seed is None:
        return np.random.default_rng()
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"{name} must be None, a non-negative int or a numpy Generator, got {describe(seed)}")
    return np.random.default_rng(check_nonnegative_int(seed, name))


def check_same_backend(arrays: Iterable[Any], name: str, reference: Any = None, reference_name: str = "") -> None:
    """All ``arrays`` belong to one array library: that of ``reference`` (default: the first array).

    Mixing numpy and torch arrays fails deep inside a contraction with an
    unrelated message; this check names ``name`` and the libraries instead.
    """
    arrays = list(arrays)
    expected = backend_of(arrays[0] if reference is None else reference)
    found = sorted({backend_of(a) for a in arrays} - {expected})
    if found:
        like = f" like {reference_name}" if reference_name else ""
        raise TypeError(
            f"{name} must be on the same backend: expected {expected} arrays{like}, got {', '.join(found)}; "
            f"convert them first"
        )
