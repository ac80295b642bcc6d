"""Checkpoints of :func:`tnlib_torch.fine_tune`: atomic writes, checked reads, RNG states.

A checkpoint is one ``torch.save`` file of plain containers (dicts, lists, strings, numbers,
``None``) and tensors, so ``torch.load(path, weights_only=True)`` reads it.  It carries a
fingerprint of the run that wrote it; a run resumes only from a checkpoint with its own
fingerprint.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from tnlib._files import atomic_write_bytes
from tnlib_torch.zoo.weights import load_weights_only

__all__ = ["FORMAT", "fingerprint", "resume", "save"]

#: The ``"format"`` entry of every checkpoint.
FORMAT = "tnlib_torch.train.fine_tune checkpoint, version 1"


def fingerprint(model: nn.Module, config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with the names and shapes of the model's parameters, as lists (as a load returns them)."""
    parameters = [[name, list(parameter.shape)] for name, parameter in model.named_parameters()]
    return {"parameters": parameters, **config}


def save(path: Path, fingerprint: dict[str, Any], model: nn.Module, optimizer: Optimizer, scheduler: LRScheduler,
         history: dict[str, Any], loader_generator: torch.Generator | None) -> None:
    """Write the checkpoint of a run after the epochs of ``history`` (``History.to_dict()``) to ``path``.

    It holds ``format``, ``fingerprint``, ``epoch`` (the epochs done), the ``model``,
    ``optimizer`` and ``scheduler`` state dicts, the ``history`` and the ``rng`` states.
    """
    _write_atomically(path, {
        "format": FORMAT, "fingerprint": fingerprint, "epoch": len(history["records"]), "model": model.state_dict(),
        "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), "history": history,
        "rng": _rng_states(loader_generator),
    })


def resume(path: Path, fingerprint: dict[str, Any], model: nn.Module, optimizer: Optimizer, scheduler: LRScheduler,
           loader_generator: torch.Generator | None) -> dict[str, Any]:
    """Load the checkpoint at ``path`` into the run's objects and generators; its history (as saved).

    Raises
    ------
    ValueError
        If the file is not a checkpoint of ``fine_tune`` (empty, truncated, not a torch file,
        holding Python objects that ``weights_only`` refuses, or with entries missing or of the
        wrong kind), or was written by a run with another fingerprint; the message names what
        differs.  The file is read by ``torch.load(..., weights_only=True)``: no code in it runs.
    """
    checkpoint = load_weights_only(path)
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != FORMAT:
        raise ValueError(f"{path} is not a checkpoint written by tnlib_torch.fine_tune")
    _check_entries(checkpoint, path)
    differences = _differences(checkpoint["fingerprint"], fingerprint)
    if differences:
        raise ValueError(
            f"the checkpoint {path} was written by a different run ({'; '.join(differences)}); "
            "pass the arguments of that run to resume it, or another checkpoint path to start afresh"
        )
    try:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        _restore_rng_states(checkpoint["rng"], loader_generator)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise ValueError(f"the checkpoint {path} is damaged: its states do not load ({type(err).__name__}: "
                         f"{err})") from err
    return checkpoint["history"]


#: The entries of a checkpoint and their kinds (besides ``format``).
_ENTRIES = {"fingerprint": dict, "epoch": int, "model": dict, "optimizer": dict, "scheduler": dict, "history": dict,
            "rng": dict}


def _check_entries(checkpoint: dict[str, Any], path: Path) -> None:
    """Every entry of :data:`_ENTRIES` present with its kind, and ``history`` a list of ``epoch`` records."""
    for key, kind in _ENTRIES.items():
        if not isinstance(checkpoint.get(key), kind):
            raise ValueError(f"{path} is not a complete checkpoint of tnlib_torch.fine_tune: its {key!r} entry "
                             f"is {type(checkpoint.get(key)).__name__}, not {kind.__name__}")
    records = checkpoint["history"].get("records")
    if not (isinstance(records, list) and len(records) == checkpoint["epoch"]
            and all(isinstance(record, dict) for record in records)):
        raise ValueError(f"{path} is not a complete checkpoint of tnlib_torch.fine_tune: its history does not "
                         f"hold one record per epoch done ({checkpoint['epoch']})")


def _write_atomically(path: Path, checkpoint: dict[str, Any]) -> None:
    """``torch.save`` of ``checkpoint`` written onto ``path`` atomically (:func:`tnlib._files.atomic_write_bytes`).

    If anything fails before the rename, ``path`` is left as it was and no temporary file stays.
    """
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _differences(saved: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """What differs between two fingerprints, one phrase per entry."""
    phrases = []
    for key in sorted(saved.keys() | expected.keys()):
        before, now = saved.get(key), expected.get(key)
        if before == now:
            continue
        if key == "parameters":
            phrases.append("the model's parameters (names or shapes) differ")
        else:
            phrases.append(f"{key}={before!r} in the checkpoint, {now!r} now")
    return phrases


def _rng_states(loader_generator: torch.Generator | None) -> dict[str, Any]:
    """The states of the generators a run draws from: torch's CPU and CUDA ones, and the loader's own."""
    states: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    if loader_generator is not None:
        states["loader"] = loader_generator.get_state()
    return states


def _restore_rng_states(states: dict[str, Any], loader_generator: torch.Generator | None) -> None:
    """Set the generators to ``states``, as :func:`_rng_states` returned them."""
    torch.set_rng_state(states["torch"])
    if "cuda" in states:
        torch.cuda.set_rng_state_all(states["cuda"])
    if loader_generator is not None:
        loader_generator.set_state(states["loader"])
