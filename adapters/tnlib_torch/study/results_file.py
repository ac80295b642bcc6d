"""``results.jsonl``, the append-only results file of a study folder: one JSON record per line.

A record is a mapping with a ``key`` (:data:`Key`), the measurement it holds.  :func:`encode` writes it
as one line of JSON (sorted keys, floats exact, NaN and Inf refused), :func:`append_line` appends that
line with one ``os.write`` and flushes it to disk (a failed write is cut back), and :func:`parse` and
:func:`read_records` read the complete lines back: a last line without its newline is the trace of a
write cut short, ignored with a :class:`PartialLineWarning`.
:class:`~tnlib_torch.study.store.ResultStore` is the one writer; see :mod:`tnlib_torch.study.store`
for what survives a crash.
"""

from __future__ import annotations

import contextlib
import json
import numbers
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["RESULTS", "Key", "PartialLineWarning", "append_line", "encode", "normalized_key", "parse",
           "read_records", "warn_partial"]

RESULTS = "results.jsonl"

#: What identifies a measurement, e.g. ``("sweep", "features.0", "o|ihw", 0.3)``.
Key = tuple[str | int | float, ...]


class PartialLineWarning(UserWarning):
    """``results.jsonl`` ends in an incomplete record, the trace of a write that was cut short."""


def normalized_key(key: Any) -> Key:
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


def encode(record: Any) -> tuple[Key, bytes]:
    """The key of ``record`` and its line: JSON, sorted keys, ending in a newline."""
    if not isinstance(record, Mapping) or "key" not in record:
        raise TypeError(f"a record must be a mapping with a 'key' entry, got {record!r}")
    key = normalized_key(record["key"])
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
        record["key"] = normalized_key(record["key"])
    except (ValueError, TypeError, KeyError, RecursionError) as error:  # RecursionError: nested too deep
        raise ValueError(f"{path}, line {number}, is not a valid record ({error}); the file is corrupt: "
                         "repair or remove that line") from None
    return record


def parse(path: Path) -> tuple[list[dict[str, Any]], int, int]:
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


def warn_partial(path: Path, complete: int, size: int, action: str) -> None:
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
    records, complete, size = parse(path)
    warn_partial(path, complete, size, "it is ignored")
    return records


def append_line(descriptor: int, line: bytes) -> None:
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
