"""Loading a checkpoint file into a model: :func:`load_checkpoint`.

Only ``torch.load(..., weights_only=True)`` reads the file, so a checkpoint that would run code
when unpickled is refused.  The state dict is unwrapped (``"state_dict"``, ``"model_state_dict"``,
``"model"``), stripped of ``nn.DataParallel``'s ``module.`` prefix, and checked against the model
before anything is copied: a mismatch lists its missing keys, unexpected keys and shape conflicts
and leaves the model as it was.
"""

from __future__ import annotations

import io
import os
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn.parameter import is_lazy

from tnlib_torch._checks import check_module, check_path

__all__ = ["load_checkpoint"]

#: Keys under which a checkpoint file may wrap its state dict, tried in this order.
_WRAPPER_KEYS = ("state_dict", "model_state_dict", "model")
#: The prefix ``nn.DataParallel`` puts on every key.
_DATA_PARALLEL_PREFIX = "module."
#: How many names of each kind a mismatch error lists.
_SHOWN = 5


def load_weights_only(path: Path) -> Any:
    """What a ``torch.save`` file holds, read by ``torch.load(..., weights_only=True, map_location="cpu")``.

    No code in the file is run.  The bytes are read first, so that an error reading the file is
    an ``OSError`` and anything wrong with its content (empty, truncated, not a torch file, or
    holding Python objects other than containers, numbers, strings and tensors) a ``ValueError``.
    """
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file at '{path}'")
    content = path.read_bytes()
    try:
        return torch.load(io.BytesIO(content), weights_only=True, map_location="cpu")
    except Exception as err:  # torch.load raises UnpicklingError, RuntimeError, EOFError, OSError, ... on a bad file
        raise ValueError(f"'{path}' is not a torch checkpoint that loads with weights_only=True ({type(err).__name__} "
                         f"on a file of {len(content)} bytes; empty or truncated files and checkpoints holding "
                         f"arbitrary Python objects are refused)") from err


def _read_state_dict(path: Path) -> Mapping[str, torch.Tensor]:
    """The state dict a checkpoint file holds, unwrapped, by :func:`load_weights_only`."""
    loaded = load_weights_only(path)
    for key in _WRAPPER_KEYS:
        if isinstance(loaded, Mapping) and isinstance(loaded.get(key), Mapping):
            loaded = loaded[key]
            break
    if not isinstance(loaded, Mapping) or not all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in loaded.items()
    ):
        raise ValueError(f"'{path}' does not hold a state dict (a mapping of names to tensors, bare or under one of "
                         f"the keys {', '.join(map(repr, _WRAPPER_KEYS))})")
    return loaded


def _strip_data_parallel(state: Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    """``state`` without the ``module.`` prefix, when every key has it (its metadata renamed alike)."""
    prefix = _DATA_PARALLEL_PREFIX
    if not state or not all(key.startswith(prefix) for key in state):
        return state
    stripped = OrderedDict((key[len(prefix):], value) for key, value in state.items())
    metadata = getattr(state, "_metadata", None)
    if metadata is not None:  # "module" is the wrapped model's root; "" the DataParallel wrapper's, dropped
        stripped._metadata = OrderedDict(  # type: ignore[attr-defined]
            ("" if key == prefix[:-1] else key[len(prefix):], value)
            for key, value in metadata.items() if key == prefix[:-1] or key.startswith(prefix)
        )
    return stripped


def _filled_in_by_batch_norm(model: nn.Module, state: Mapping[str, torch.Tensor]) -> set[str]:
    """The ``num_batches_tracked`` keys batch norm fills in itself when a checkpoint predates them (PyTorch < 0.4.1).

    As ``_NormBase._load_from_state_dict``: for a module whose metadata version
    is missing or below 2 (the checkpoints of akamaster have no metadata).
    """
    metadata = getattr(state, "_metadata", None) or {}
    return {
        f"{name}.num_batches_tracked" if name else "num_batches_tracked"
        for name, module in model.named_modules(remove_duplicate=False)
        if isinstance(module, nn.modules.batchnorm._NormBase) and module.track_running_stats
        and (metadata.get(name, {}).get("version") or 0) < 2
    }


def _listing(items: Sequence[str], noun: str, where: str) -> str:
    shown = ", ".join(items[:_SHOWN]) + (f", ... and {len(items) - _SHOWN} more" if len(items) > _SHOWN else "")
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'} ({where}): {shown}"


def _check_fits(model: nn.Module, state: Mapping[str, torch.Tensor], strict: bool, path: Path) -> None:
    """Raise a ValueError listing what keeps ``state`` from loading into ``model``, before anything is copied."""
    expected = model.state_dict(keep_vars=True)
    filled_in = _filled_in_by_batch_norm(model, state)
    missing = [key for key in expected if key not in state and key not in filled_in]
    unexpected = [key for key in state if key not in expected]
    conflicts = [
        f"{key} {tuple(state[key].shape)} vs {tuple(value.shape)}"
        for key, value in expected.items()
        if key in state and not is_lazy(value) and state[key].shape != value.shape
    ]
    found = [(missing if strict else [], "missing key", "in the model, not in the checkpoint"),
             (unexpected if strict else [], "unexpected key", "in the checkpoint, not in the model"),
             (conflicts, "shape conflict", "name, checkpoint shape vs model shape")]
    problems = [_listing(items, noun, where) for items, noun, where in found if items]
    if problems:
        raise ValueError(f"checkpoint '{path}' does not fit the {type(model).__name__} (a checkpoint of another "
                         f"architecture?); nothing was loaded: " + "; ".join(problems))


def load_checkpoint(model: nn.Module, path: str | os.PathLike[str], strict: bool = True) -> nn.Module:
    """Load the weights of a checkpoint file into ``model``, in place.

    The file is read by ``torch.load(path, weights_only=True,
    map_location="cpu")`` only, so a file that would run code when unpickled is
    refused.  It may hold a bare state dict or wrap one under ``"state_dict"``,
    ``"model_state_dict"`` or ``"model"`` (the first of these keys whose value is
    a mapping); a ``module.`` prefix on every key (``nn.DataParallel``) is
    stripped.  The state dict is checked against ``model.state_dict()`` first, so
    a mismatch leaves the model unchanged; then ``model.load_state_dict`` copies
    it, to the model's device and dtype.  ``num_batches_tracked`` buffers that a
    checkpoint from before PyTorch 0.4.1 lacks are not missing (batch norm fills
    them in, as ``load_state_dict`` does).

    Parameters
    ----------
    model : nn.Module
        The model to load into.
    path : str or os.PathLike
        The checkpoint file.
    strict : bool
        Refuse missing and unexpected keys (shape conflicts are refused either way).

    Returns
    -------
    nn.Module
        ``model``.

    Raises
    ------
    TypeError
        ``model`` is not an ``nn.Module``, ``path`` not a str or ``os.PathLike``, ``strict`` not a bool.
    FileNotFoundError
        No file at ``path``.
    ValueError
        A file that is not a torch checkpoint of tensors (empty, truncated, or
        holding Python objects that ``weights_only`` refuses), or that holds no state
        dict; a state dict that does not fit the model (the message lists the
        missing keys, the unexpected keys and the shape conflicts, a few of each
        with their counts).
    """
    check_module(model)
    if not isinstance(strict, bool):
        raise TypeError(f"strict must be a bool, got {type(strict).__name__}")
    path = check_path(path, "path")
    state = _strip_data_parallel(_read_state_dict(path))
    _check_fits(model, state, strict, path)
    model.load_state_dict(state, strict=strict)
    return model
