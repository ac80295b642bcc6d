"""The output folder of a study: results appended crash-safely, a manifest, a lock.

A study's folder holds

- ``results.jsonl``: one JSON record per line, appended as each measurement completes;
- ``manifest.json``: the :class:`~tnlib_torch.study.config.StudyConfig`, its fingerprint, the
  versions of tnlib, torch, numpy and Python, the platform, when the study was created and when
  this run started, and what the pipeline adds (per-stage timings, ...);
- ``.lock``: held while a :class:`ResultStore` is open, with the pid of the last run that opened the
  folder;
- whatever else the pipeline writes (CSV, report, figures), each with :func:`atomic_write_text`
  or :func:`atomic_write_bytes`.

What survives a crash
---------------------
A run killed at any moment (Ctrl-C, SIGKILL, power loss) leaves valid files:

- a record is recorded once :meth:`ResultStore.append` returns: its line, newline included, is
  written and flushed to disk (``fsync``).  A kill during the write leaves at worst one partial
  last line, without its newline; readers ignore it and :meth:`ResultStore.open` cuts it off, so
  the measurement is simply redone.  A write that fails (full disk, Ctrl-C) is rolled back;
- ``manifest.json`` and the files of :func:`atomic_write_text` are replaced atomically: a reader
  sees the old file or the new one, never a mix, and a failed write leaves the old file and no
  temporary file;
- the lock is an ``flock`` on ``.lock``, which the operating system releases when its process
  ends, however it ends: a lock left by a dead process is taken over, whatever pid the file says.

Run the same study again on the same folder and :meth:`ResultStore.done` says which measurements
to skip.  A config with the same fingerprint resumes the folder even with another grid (levels, cuts,
decompositions; :data:`~tnlib_torch.study.config.GRID`): its measurements are made the same way, so
the records it shares with the folder are reused, and the manifest takes the new config.  A folder
of another fingerprint is refused (or archived, with ``force=True``).

One writer per folder
---------------------
Only one process may write a folder: the pipeline's main process appends the results its workers
send back.  The lock refuses a second :class:`ResultStore` on the folder while one is open, in this
process or another; readers (:func:`read_records`) need no lock.  The lock needs ``fcntl``
(Linux, macOS and other POSIX systems).
"""

from __future__ import annotations

import contextlib
import copy
import fcntl
import json
import numbers
import os
import platform
import threading
import warnings
from collections.abc import Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

import tnlib
from tnlib._files import atomic_write_bytes, atomic_write_text, sync_folder
from tnlib_torch.study.config import NOT_FINGERPRINTED, StudyConfig

__all__ = [
    "FORMAT",
    "LOCK",
    "MANIFEST",
    "RESULTS",
    "FolderInUseError",
    "Key",
    "PartialLineWarning",
    "ResultStore",
    "atomic_write_bytes",
    "atomic_write_text",
    "read_records",
]

RESULTS = "results.jsonl"
MANIFEST = "manifest.json"
LOCK = ".lock"

#: The ``"format"`` entry of every manifest.
FORMAT = "tnlib_torch.study results, version 1"

#: The manifest entries that only :meth:`ResultStore.open` sets.
_RESERVED = frozenset({"format", "config", "fingerprint"})

#: What identifies a measurement, e.g. ``("sweep", "features.0", "o|ihw", 0.3)``.
Key = tuple[str | int | float, ...]


class FolderInUseError(RuntimeError):
    """Another open :class:`ResultStore` holds the folder's lock."""


class PartialLineWarning(UserWarning):
    """``results.jsonl`` ends in an incomplete record, the trace of a write that was cut short."""


# -- records --------------------------------------------------------------------------------------------------------

def _normalized_key(key: Any) -> Key:
    """``key`` as a tuple of str, int and float, which JSON writes and reads back unchanged."""
    if isinstance(key, (str, bytes)) or not isinstance(key, Sequence) or not key:
        raise TypeError(f"a record's key must be a non-empty tuple or list of str, int and float, got {key!r}")
    parts: list[str | int | float] = []
    for part in key:
        if isinstance(part, str):
            parts.append(part)
        elif isinstance(part, numbers.Integral) and not isinstance(part, bool):
            parts.append(int(part))
        elif isinstance(part, numbers.Real) and not isinstance(part, bool) and np.isfinite(part):
            parts.append(float(part))
        else:
            raise TypeError(f"a record's key holds only str, int and finite float, got {part!r} in {key!r}")
    return tuple(parts)


def _plain(value: Any) -> Any:
    """What JSON writes for arrays and array scalars (numpy, torch): their ``tolist()``."""
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"records hold JSON data (dict, list, str, int, float, bool, None) and arrays, "
                    f"got {type(value).__name__}")


def _encode(record: Any) -> tuple[Key, bytes]:
    """The key of ``record`` and its line: JSON, sorted keys, ending in a newline."""
    if not isinstance(record, Mapping) or "key" not in record:
        raise TypeError(f"a record must be a mapping with a 'key' entry, got {record!r}")
    key = _normalized_key(record["key"])
    try:
        text = json.dumps({**record, "key": list(key)}, sort_keys=True, separators=(",", ":"), allow_nan=False,
                          default=_plain)
    except ValueError as error:
        raise ValueError(f"the record {key} cannot be written as JSON ({error}); NaN and Inf are refused, "
                         "write them as None or a string") from None
    return key, (text + "\n").encode()


def _decode(line: bytes, number: int, path: Path) -> dict[str, Any]:
    """The record of line ``number`` of ``path``, its key a tuple."""
    try:
        record = json.loads(line)
        record["key"] = _normalized_key(record["key"])
    except (ValueError, TypeError, KeyError, RecursionError) as error:  # RecursionError: nested too deep
        raise ValueError(f"{path}, line {number}, is not a valid record ({error}); the file is corrupt: "
                         "repair or remove that line") from None
    return record


def _parse(path: Path) -> tuple[list[dict[str, Any]], int, int]:
    """The records of the complete lines of ``path``, their length in bytes, and the file's length.

    A line is complete when its newline is written; only the last one may not be.
    """
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return [], 0, 0
    complete = data.rfind(b"\n") + 1
    records, lines = [], {}
    for number, line in enumerate(data[:complete].split(b"\n")[:-1], start=1):
        record = _decode(line, number, path)
        if record["key"] in lines:
            raise ValueError(f"{path}, line {number}, repeats the key {record['key']} of line "
                             f"{lines[record['key']]}; the file is corrupt: remove one of them")
        lines[record["key"]] = number
        records.append(record)
    return records, complete, len(data)


def _warn_partial(path: Path, complete: int, size: int, action: str) -> None:
    if size > complete:
        warnings.warn(f"{path} ends in an incomplete record ({size - complete} bytes), the trace of an "
                      f"interrupted write; {action}", PartialLineWarning, stacklevel=3)


def read_records(folder: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The records of the study in ``folder``, in the order they were recorded.

    Each record is a dict as it was appended, read back from JSON: its ``key`` a tuple, other
    tuples lists.  An incomplete last line (a write cut short, or one in progress) is ignored
    with a :class:`PartialLineWarning`.  Needs no lock: it can read a folder a run is writing.

    Raises
    ------
    ValueError
        If a complete line is not a record, or repeats a key; the message names the line.
    """
    path = Path(folder) / RESULTS
    records, complete, size = _parse(path)
    _warn_partial(path, complete, size, "it is ignored")
    return records


def _append_line(descriptor: int, line: bytes) -> None:
    """Append ``line`` with one write (more only if the disk cuts it short) and flush it to disk.

    If anything fails, the file is cut back to its length before, so it stays line-aligned.
    """
    start = os.fstat(descriptor).st_size
    try:
        written = os.write(descriptor, line)
        while written < len(line):
            written += os.write(descriptor, line[written:])
        os.fsync(descriptor)
    except BaseException:
        with contextlib.suppress(OSError):
            os.ftruncate(descriptor, start)
        raise


# -- the folder's lock and manifest ---------------------------------------------------------------------------------

def _lock(folder: Path) -> int:
    """Hold ``folder/.lock`` (an ``flock``); the open descriptor.  :func:`_sign` writes the pid in it."""
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


def _sign(descriptor: int) -> None:
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
    before = recorded if isinstance(recorded, dict) else {}
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


def _entries_to_keep(folder: Path, config: StudyConfig, force: bool) -> dict[str, Any]:
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


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n")


# -- the store ------------------------------------------------------------------------------------------------------

class ResultStore:
    """The results of one study in its output folder; made by :meth:`open`, a context manager.

    Appending is thread-safe.  Keep one store per folder: the folder's lock refuses a second one
    while this one is open (see the module's notes on crashes and writers).

    Attributes
    ----------
    folder : Path
    config : StudyConfig
    """

    def __init__(self, folder: Path, config: StudyConfig, manifest: dict[str, Any], keys: set[Key],
                 results: int, lock: int) -> None:
        self.folder = folder
        self.config = config
        self._manifest = manifest
        self._keys = keys
        self._results: int | None = results
        self._lock = lock
        self._mutex = threading.Lock()

    @classmethod
    def open(cls, folder: str | os.PathLike[str], config: StudyConfig, force: bool = False) -> ResultStore:
        """Open the study of ``config`` in ``folder``: a new one, or the one to resume.

        The folder is created if missing; other files in it are left alone.  If its manifest's
        config has ``config``'s fingerprint (recomputed; the grid may differ), the study resumes:
        its records are read (an incomplete last line is cut off, with a :class:`PartialLineWarning`)
        and the manifest keeps its entries.
        Otherwise the folder is refused, unless ``force`` archives its ``results.jsonl`` and
        ``manifest.json`` as ``results.<old fingerprint>.jsonl`` and ``manifest.<old
        fingerprint>.json`` (``unknown`` for a folder with results but no valid manifest) and the
        study starts afresh; nothing is deleted (``force`` changes nothing for a folder that
        ``config`` resumes).  The manifest is then written with ``config``,
        its fingerprint, the versions, the platform and this run's start.

        Raises
        ------
        FolderInUseError
            If another open store holds the folder.
        ValueError
            If the folder holds a study of another configuration (the message names the fields
            that differ), or results without a valid manifest, and ``force`` is false; or if
            ``results.jsonl`` has a corrupt line (the message names it; a line nested too deep
            for JSON is one).

        A refused folder keeps its files and their contents (the pid is written into ``.lock``
        once the folder is accepted; a folder without ``.lock`` gets an empty one).
        """
        if not isinstance(config, StudyConfig):
            raise TypeError(f"config must be a StudyConfig, got {type(config).__name__}")
        if not isinstance(force, bool):
            raise TypeError(f"force must be True or False, got {force!r}")
        folder = Path(folder).expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        lock = _lock(folder)
        try:
            manifest = _entries_to_keep(folder, config, force)
            path = folder / RESULTS
            records, complete, size = _parse(path)
            _sign(lock)
            _warn_partial(path, complete, size, "it is cut off and that measurement will be redone")
            if size > complete:
                os.truncate(path, complete)
            now = _now()
            manifest.update(format=FORMAT, config=config.to_dict(), fingerprint=config.fingerprint(),
                            created=manifest.get("created", now), started=now, versions=_versions(),
                            platform=platform.platform(), stages=manifest.get("stages", {}))
            _write_json(folder / MANIFEST, manifest)
            results = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            sync_folder(folder)
        except BaseException:
            os.close(lock)
            raise
        return cls(folder, config, manifest, {record["key"] for record in records}, results, lock)

    # -- records

    def append(self, record: Mapping[str, Any]) -> None:
        """Record one measurement: ``record`` as one JSON line, on disk when this returns.

        ``record["key"]`` (a non-empty tuple or list of str, int and float) identifies the
        measurement; the other entries are JSON data (dicts with str keys, lists, str, int, float,
        bool, None) or arrays (numpy, torch; written as lists).  Floats are written exactly
        (shortest round-trip form).  The line is written with one ``os.write`` on the file opened
        with ``O_APPEND`` and flushed with ``fsync``: a kill leaves at worst one partial last line,
        and a failed write is rolled back.

        Raises
        ------
        ValueError
            If the key is recorded already, or the record holds NaN or Inf.
        TypeError
            If the record or its key is not as above.
        """
        key, line = _encode(record)
        with self._mutex:
            descriptor = self._open_results()
            if key in self._keys:
                raise ValueError(f"the measurement {key} is recorded already in {self.folder / RESULTS}")
            _append_line(descriptor, line)
            self._keys.add(key)

    def records(self) -> list[dict[str, Any]]:
        """The records, in the order they were recorded, as :func:`read_records` reads them."""
        with self._mutex:
            return read_records(self.folder)

    def done(self, key: Sequence[str | int | float]) -> bool:
        """Whether the measurement ``key`` is recorded (``0.3`` matches a recorded ``0.3``; ints match equal floats)."""
        return _normalized_key(key) in self._keys

    def done_keys(self) -> set[Key]:
        """The keys recorded, as tuples."""
        with self._mutex:
            return set(self._keys)

    # -- manifest

    def manifest(self) -> dict[str, Any]:
        """A copy of the manifest."""
        return copy.deepcopy(self._manifest)

    def write_manifest(self, **updates: Any) -> None:
        """Set top-level entries of the manifest (e.g. ``stages={"spectra": 12.5}``) and rewrite it atomically.

        The values must be JSON data.  ``format``, ``config`` and ``fingerprint`` are set by
        :meth:`open` only.  If the write fails, the manifest (on disk and here) is left as it was.
        """
        reserved = sorted(_RESERVED & updates.keys())
        if reserved:
            raise ValueError(f"the manifest entries {', '.join(reserved)} are set by ResultStore.open only")
        with self._mutex:
            self._open_results()
            manifest = {**self._manifest, **copy.deepcopy(updates)}
            _write_json(self.folder / MANIFEST, manifest)
            self._manifest = manifest

    # -- life

    def close(self) -> None:
        """Close the results file and release the folder's lock; closing again does nothing."""
        with self._mutex:
            if self._results is not None:
                os.close(self._results)
                os.close(self._lock)
                self._results = None

    def __enter__(self) -> ResultStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "closed" if self._results is None else f"{len(self._keys)} records"
        return f"ResultStore({str(self.folder)!r}, fingerprint={self.config.fingerprint()!r}, {state})"

    def _open_results(self) -> int:
        """The descriptor of ``results.jsonl``; refuse a closed store."""
        if self._results is None:
            raise ValueError(f"the ResultStore of {self.folder} is closed")
        return self._results


def _versions() -> dict[str, str]:
    return {"tnlib": tnlib.__version__, "torch": torch.__version__, "numpy": np.__version__,
            "python": platform.python_version()}
