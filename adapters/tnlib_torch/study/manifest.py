"""The manifest and the lock of a study folder: which study the folder holds, and one writer at a time.

``manifest.json`` records the :class:`~tnlib_torch.study.config.StudyConfig` of the folder's results
and its fingerprint (:data:`FORMAT`); :func:`entries_to_keep` decides whether a config resumes the
folder (the same fingerprint, recomputed), or else refuses it or, with ``force``, archives its study.
``.lock`` is an ``flock`` held by the one open :class:`~tnlib_torch.study.store.ResultStore`
(:func:`lock_folder`), holding the pid of the last run that opened the folder (:func:`sign`).
See :mod:`tnlib_torch.study.store` for what survives a crash.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

import tnlib
from tnlib._files import atomic_write_text
from tnlib_torch.study.config import NOT_FINGERPRINTED, StudyConfig, upgraded
from tnlib_torch.study.results_file import RESULTS

__all__ = ["FORMAT", "LOCK", "MANIFEST", "RESERVED", "FolderInUseError", "entries_to_keep", "lock_folder", "sign",
           "timestamp", "versions", "write_json"]

MANIFEST = "manifest.json"
LOCK = ".lock"

#: The ``"format"`` entry of every manifest.
FORMAT = "tnlib_torch.study results, version 1"

#: The manifest entries that only :meth:`~tnlib_torch.study.store.ResultStore.open` sets.
RESERVED = frozenset({"format", "config", "fingerprint"})


class FolderInUseError(RuntimeError):
    """Another open :class:`~tnlib_torch.study.store.ResultStore` holds the folder's lock."""


def lock_folder(folder: Path) -> int:
    """Hold ``folder/.lock`` (an ``flock``); the open descriptor.  :func:`sign` writes the pid in it."""
    path = folder / LOCK
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(descriptor, 32).decode(errors="replace").strip() or "unknown"
        os.close(descriptor)
        raise FolderInUseError(
            f"{folder} is in use by another run of the study (process {holder}, from {path}); one run at a time "
            "may write a folder: wait for it to end, or use another folder"
        ) from None
    except BaseException:
        os.close(descriptor)
        raise
    return descriptor


def sign(descriptor: int) -> None:
    """Write this process's pid in the held lock file (once the folder is accepted: a refused one is left as it was)."""
    os.ftruncate(descriptor, 0)
    os.pwrite(descriptor, f"{os.getpid()}\n".encode(), 0)


def _read_manifest(path: Path) -> dict[str, Any] | None:
    """The manifest at ``path``; ``None`` if there is none."""
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (ValueError, RecursionError) as error:  # RecursionError: nested too deep
        raise ValueError(f"{path} is not valid JSON ({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise ValueError(f"{path} is not the manifest of a study ({FORMAT})")
    fingerprint = manifest.get("fingerprint")
    if not isinstance(fingerprint, str) or not fingerprint.isalnum():
        raise ValueError(f"{path} has no valid fingerprint")
    return manifest


def _differences(recorded: Any, config: StudyConfig) -> str:
    """The fingerprinted fields in which ``config`` differs from the ``recorded`` config dict."""
    now = config.to_dict()
    before = upgraded(recorded) if isinstance(recorded, dict) else {}
    names = sorted((before.keys() | now.keys()) - NOT_FINGERPRINTED)
    phrases = [f"{name} = {before.get(name)!r} recorded, {now.get(name)!r} now"
               for name in names if before.get(name) != now.get(name)]
    return "; ".join(phrases) or "their fingerprints differ"


def _archive(folder: Path, tag: str) -> None:
    """Rename ``results.jsonl`` and ``manifest.json`` to ``results.<tag>.jsonl`` and ``manifest.<tag>.json``.

    ``<tag>`` gets a counter (``<tag>.1``, ...) when those names are taken: nothing is overwritten.
    Results go first, so a crash in between never leaves old results under no manifest.
    """
    suffix, counter = tag, 0
    while (folder / f"results.{suffix}.jsonl").exists() or (folder / f"manifest.{suffix}.json").exists():
        counter += 1
        suffix = f"{tag}.{counter}"
    for name, archived in ((RESULTS, f"results.{suffix}.jsonl"), (MANIFEST, f"manifest.{suffix}.json")):
        if (folder / name).exists():
            os.replace(folder / name, folder / archived)


def _start_over(folder: Path, tag: str, reason: str, force: bool) -> dict[str, Any]:
    """Archive the folder's study (with ``force``) and return no entries to keep, or refuse."""
    if not force:
        raise ValueError(f"{folder} cannot take this study: {reason}. Use another folder, or --force (force=True "
                         f"in Python) to archive its results.jsonl and manifest.json as results.{tag}.jsonl and "
                         f"manifest.{tag}.json and start afresh")
    _archive(folder, tag)
    return {}


def entries_to_keep(folder: Path, config: StudyConfig, force: bool) -> dict[str, Any]:
    """The manifest of the folder's study if ``config`` resumes it, else ``{}`` (after :func:`_start_over`)."""
    path = folder / MANIFEST
    try:
        manifest = _read_manifest(path)
    except ValueError as error:
        return _start_over(folder, "unknown", str(error), force)
    if manifest is None:
        if (folder / RESULTS).exists():
            reason = f"it holds {RESULTS} but no {MANIFEST}, so the configuration of those results is unknown"
            return _start_over(folder, "unknown", reason, force)
        return {}
    if _recorded_fingerprint(manifest) != config.fingerprint():
        reason = f"it holds the results of another configuration ({_differences(manifest.get('config'), config)})"
        return _start_over(folder, manifest["fingerprint"], reason, force)
    return manifest


def _recorded_fingerprint(manifest: dict[str, Any]) -> str | None:
    """The fingerprint of the manifest's config as this version computes it; ``None`` if it is no config.

    Recomputed rather than read, so that a folder stays resumable when the fingerprint leaves out
    more fields than it did when the folder was written.
    """
    try:
        return StudyConfig.from_dict(manifest.get("config")).fingerprint()
    except (TypeError, ValueError):
        return None


def timestamp() -> str:
    """Now, in UTC, to the second (ISO 8601)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n")


def versions() -> dict[str, str]:
    return {"tnlib": tnlib.__version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}
