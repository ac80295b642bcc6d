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

:class:`ResultStore` is the one writer of a folder.  The file formats live beside it:
:mod:`~tnlib_torch.study.results_file` (the records' lines) and :mod:`~tnlib_torch.study.manifest`
(the manifest, the lock, resuming, refusing or archiving a folder); this module re-exports their
public names.

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

import copy
import os
import platform
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tnlib._files import atomic_write_bytes, atomic_write_text, sync_folder
from tnlib_torch._checks import check_bool
from tnlib_torch.study.config import StudyConfig
from tnlib_torch.study.manifest import (
    FORMAT,
    LOCK,
    MANIFEST,
    RESERVED,
    FolderInUseError,
    entries_to_keep,
    lock_folder,
    sign,
    timestamp,
    versions,
    write_json,
)
from tnlib_torch.study.results_file import (
    RESULTS,
    Key,
    PartialLineWarning,
    append_line,
    encode,
    normalized_key,
    parse,
    read_records,
    warn_partial,
)

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
        check_bool(force, "force")
        folder = Path(folder).expanduser()
        folder.mkdir(parents=True, exist_ok=True)
        lock = lock_folder(folder)
        try:
            manifest = entries_to_keep(folder, config, force)
            path = folder / RESULTS
            records, complete, size = parse(path)
            sign(lock)
            warn_partial(path, complete, size, "it is cut off and that measurement will be redone")
            if size > complete:
                os.truncate(path, complete)
            now = timestamp()
            manifest.update(format=FORMAT, config=config.to_dict(), fingerprint=config.fingerprint(),
                            created=manifest.get("created", now), started=now, versions=versions(),
                            platform=platform.platform(), stages=manifest.get("stages", {}))
            write_json(folder / MANIFEST, manifest)
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
        key, line = encode(record)
        with self._mutex:
            descriptor = self._open_results()
            if key in self._keys:
                raise ValueError(f"the measurement {key} is recorded already in {self.folder / RESULTS}")
            append_line(descriptor, line)
            self._keys.add(key)

    def records(self) -> list[dict[str, Any]]:
        """The records, in the order they were recorded, as :func:`read_records` reads them."""
        with self._mutex:
            return read_records(self.folder)

    def done(self, key: Sequence[str | int | float]) -> bool:
        """Whether the measurement ``key`` is recorded (``0.3`` matches a recorded ``0.3``; ints match equal floats)."""
        return normalized_key(key) in self._keys

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
        reserved = sorted(RESERVED & updates.keys())
        if reserved:
            raise ValueError(f"the manifest entries {', '.join(reserved)} are set by ResultStore.open only")
        with self._mutex:
            self._open_results()
            manifest = {**self._manifest, **copy.deepcopy(updates)}
            write_json(self.folder / MANIFEST, manifest)
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
