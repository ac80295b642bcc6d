"""The adapter's argument checks, built on the core's (:mod:`tnlib._validation`): one wording everywhere.

Every public function of ``tnlib_torch`` checks its arguments here, or in the core's checks, before
doing anything, so a bad argument ends in a ``TypeError`` or ``ValueError`` whose message names it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch import nn

from tnlib._validation import check_int


def check_count(value: Any, name: str, minimum: int = 1, maximum: int | None = None, why: str = "") -> int:
    """An integer in ``[minimum, maximum]`` (bools refused); above ``maximum`` the message says ``why``.

    The type and lower-bound checks are the core's :func:`tnlib._validation.check_int`.
    """
    value = check_int(value, name, minimum)
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} = {value} exceeds {maximum}, the most {why}")
    return value


def check_module(value: Any, name: str = "model") -> nn.Module:
    """``value`` itself, checked to be a ``torch.nn.Module``."""
    if not isinstance(value, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {type(value).__name__}")
    return value


def check_bool(value: Any, name: str) -> bool:
    """``value`` itself, checked to be ``True`` or ``False`` (not merely truthy)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def check_path(value: Any, name: str) -> Path:
    """``value`` (a ``str`` or ``os.PathLike``) as a ``Path``, ``~`` expanded."""
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"{name} must be a path (str or os.PathLike), got {type(value).__name__}")
    return Path(value).expanduser()
