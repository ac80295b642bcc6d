"""Reading the records of a compressibility study, checking them as they are read.

A record is a JSON-ready mapping whose ``key`` is a list that starts with its kind (``"baseline"``,
``"spectrum"``, ``"sweep"``, ``"sweep_all"``, ``"recovery"``, ``"recovery_control"``,
``"decomposition"``), as :mod:`tnlib_torch.study.measure` makes them and
:func:`tnlib_torch.study.store.read_records` reads them back.  The figures and the findings read
records only through these helpers, so a malformed record is a ``ValueError`` that names its key and
the entry missing, never a ``KeyError`` deep in a plot.  Nothing here needs matplotlib.

Records come in the order they were measured, which on Dask, or after a resumed run, is not the
model's.  :func:`of_kind` gives them in the study's order instead: layers as the model orders them
(the baseline record's ``layers``), cuts as :func:`tnlib.all_cuts` orders the kernel's (``o|ihw``
first), whatever order they were recorded in.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

import tnlib
from tnlib_torch.study.hits import unpack_hits

__all__ = ["Record", "accuracy_curve", "count", "field", "hits", "layers_max", "number", "of_kind", "saves",
           "sorted_cuts", "unchanged"]

#: One measurement: a mapping with a ``key`` list that starts with its kind.
Record = Mapping[str, Any]

#: The cuts of a conv kernel ``(o, i, h, w)`` in the order the records are given.
_CUT_ORDER = {str(cut): rank for rank, cut in enumerate(tnlib.all_cuts(tnlib.KERNEL_LABELS))}


def _kind(record: Any, index: int) -> str:
    """The kind of ``record`` (the first item of its key), checking that it is a record."""
    if not isinstance(record, Mapping):
        raise TypeError(f"records[{index}] must be a record (a mapping with a 'key'), got {type(record).__name__}")
    key = record.get("key")
    if isinstance(key, (str, bytes)) or not isinstance(key, Sequence) or not key or not isinstance(key[0], str):
        raise ValueError(f"records[{index}] has no valid key (a list that starts with its kind, such as "
                         f"['sweep', layer, cut, level]), got {key!r}")
    return key[0]


def of_kind(records: Sequence[Record], kind: str) -> list[Record]:
    """The records of ``kind`` (the first item of their key), in the study's order.

    That is by layer (a recovery's ``target``), in the order of the baseline's ``layers`` (the
    model's), then by cut, in the order of :func:`tnlib.all_cuts` on ``(o, i, h, w)``; records with
    neither, or with a layer or cut not in those lists (after those that are), keep the order they
    come in.

    Raises
    ------
    TypeError
        If ``records`` is not a list or tuple of mappings.
    ValueError
        If a record has no valid key.

    Examples
    --------
    >>> of_kind([{"key": ["baseline"], "top1": 0.9}, {"key": ("sweep", "conv1", "o|ihw", 0.1)}], "baseline")
    [{'key': ['baseline'], 'top1': 0.9}]
    >>> records = [{"key": ["baseline"], "layers": ["conv1", "conv2"]}] + [
    ...     {"key": ["spectrum", layer, cut], "layer": layer, "cut": cut}
    ...     for layer, cut in [("conv2", "oh|iw"), ("conv1", "i|ohw"), ("conv2", "o|ihw")]]
    >>> [record["key"][1:] for record in of_kind(records, "spectrum")]
    [['conv1', 'i|ohw'], ['conv2', 'o|ihw'], ['conv2', 'oh|iw']]
    """
    if isinstance(records, (str, bytes)) or not isinstance(records, Sequence):
        raise TypeError(f"records must be a list of records, got {type(records).__name__}")
    kinds = [_kind(record, index) for index, record in enumerate(records)]
    baselines = [record for record, found in zip(records, kinds) if found == "baseline"]
    layers = baselines[0].get("layers") if baselines else None
    layer_order = {name: rank for rank, name in enumerate(layers)} if isinstance(layers, list) else {}

    def rank(record: Record) -> tuple[int, int]:
        layer, cut = record.get("layer", record.get("target")), record.get("cut")
        return (layer_order.get(layer, len(layer_order)) if isinstance(layer, str) else len(layer_order),
                _CUT_ORDER.get(cut, len(_CUT_ORDER)) if isinstance(cut, str) else len(_CUT_ORDER))

    return sorted((record for record, found in zip(records, kinds) if found == kind), key=rank)


def sorted_cuts(cuts: Iterable[str]) -> list[str]:
    """``cuts`` without repeats in the study's order (:func:`tnlib.all_cuts` on ``(o, i, h, w)``), others after.

    >>> sorted_cuts(["oi|hw", "o|ihw", "oi|hw"])
    ['o|ihw', 'oi|hw']
    """
    unique = list(dict.fromkeys(cuts))
    return sorted(unique, key=lambda cut: _CUT_ORDER.get(cut, len(_CUT_ORDER)))


def field(record: Record, *path: str | int) -> Any:
    """``record[path[0]][path[1]]...``, e.g. ``field(record, "history", 0, "top1")``.

    Raises
    ------
    ValueError
        If the record has no such entry; the message names the record's key.
    """
    value: Any = record
    for step in path:
        try:
            value = value[step]
        except (KeyError, IndexError, TypeError):
            where = "".join(f"[{step!r}]" for step in path)
            raise ValueError(f"the record {list(record['key'])} has no entry {where}; records are made by "
                             "tnlib_torch.study.measure") from None
    return value


def number(record: Record, *path: str | int) -> float:
    """:func:`field` checked to be a finite real number, as a float.

    Raises
    ------
    ValueError
        If the entry is missing, or is not a finite number (``None`` included).
    """
    value = field(record, *path)
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        where = "".join(f"[{step!r}]" for step in path)
        raise ValueError(f"the record {list(record['key'])} has {where} = {value!r}, not a finite number")
    return float(value)


def _entries(record: Record, name: str) -> int:
    """The length of the non-empty list ``record[name]``."""
    entries = field(record, name)
    if isinstance(entries, (str, bytes)) or not isinstance(entries, Sequence) or not entries:
        raise ValueError(f"the record {list(record['key'])} has no {name} (a non-empty list)")
    return len(entries)


def accuracy_curve(record: Record) -> tuple[list[int], list[float]]:
    """The epochs and top-1 accuracies of a fine-tuned record; epoch 0 is the accuracy before fine-tuning.

    ``record`` is a ``recovery``, ``recovery_control`` or ``decomposition`` record.
    """
    epochs = range(_entries(record, "history"))
    return ([0, *(int(number(record, "history", i, "epoch")) for i in epochs)],
            [number(record, "before", "top1"), *(number(record, "history", i, "top1") for i in epochs)])


def layers_max(record: Record, name: str) -> float:
    """The largest ``name`` (``"norm_loss"``, ``"rel_error"``, ...) among the layers of a record.

    A ``sweep_all`` record truncates each layer to the same relative error; the layers lose different
    fractions of their norms, and the largest is what every layer stays within.
    """
    return max(number(record, "layers", i, name) for i in range(_entries(record, "layers")))


def count(record: Record, *path: str | int) -> int:
    """The number of test samples an evaluation (``record[path...]``) counted, an int >= 1."""
    value = number(record, *path, "count")
    if value < 1 or value != int(value):
        raise ValueError(f"the record {list(record['key'])} counts {value!r} test samples, not a positive integer")
    return int(value)


def hits(record: Record, *path: str | int) -> np.ndarray | None:
    """The per-sample top-1 hits of an evaluation (``record[path...]``, e.g. ``"after"``), or ``None``.

    ``None`` when the evaluation holds no ``hits`` (records made before they were recorded).

    Raises
    ------
    ValueError
        If ``hits`` is not the packed text of ``count`` samples (:func:`tnlib_torch.study.hits.unpack_hits`).
    """
    holder = field(record, *path) if path else record
    text = holder.get("hits") if isinstance(holder, Mapping) else None
    if text is None:
        return None
    try:
        return unpack_hits(text, count(record, *path))
    except (TypeError, ValueError) as error:
        raise ValueError(f"the record {list(record['key'])} has unreadable hits: {error}") from None


def _flag(record: Record, name: str) -> bool | None:
    """``record[name]`` if it is a bool, ``None`` if missing (older records); anything else is an error."""
    value = record.get(name)
    if value is None or isinstance(value, bool):
        return value
    raise ValueError(f"the record {list(record['key'])} has {name} = {value!r}, not True or False")


def unchanged(record: Record) -> bool:
    """Whether a truncation (``sweep`` or ``sweep_all``) changed no kernel: its ``noop``.

    Records without ``noop`` (older ones) are unchanged when every relative error is 0: nothing was cut.
    """
    flag = _flag(record, "noop")
    if flag is not None:
        return flag
    if "layers" in record:
        return layers_max(record, "rel_error") == 0
    return number(record, "rel_error") == 0


def saves(record: Record) -> bool:
    """Whether a truncation stored as two factors per layer has fewer parameters than dense: its ``saves``.

    Records without ``saves`` (older ones): ``factored_params < params``.
    """
    flag = _flag(record, "saves")
    return flag if flag is not None else number(record, "factored_params") < number(record, "params")
