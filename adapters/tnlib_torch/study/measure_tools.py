"""What the measurements of :mod:`tnlib_torch.study.measure` share: records, argument checks, truncation and
fine-tuning of a copy.

A record is plain JSON-ready Python (``str``, ``int``, ``float``, ``bool``, ``None``, lists and dicts): a
number that is not finite is recorded as ``None``.  A layer is recorded as its
:class:`~tnlib_torch.LayerCompression` (:func:`layer_entry`).  An evaluation is recorded with its hits
(:func:`metrics`), which sample by sample comparisons of two records need.

**Layout.**  The study computes in the channels-last layout (:func:`to_channels_last`): the same values,
faster convolutions on a CPU, and records as deterministic as in the default layout.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

import tnlib
from tnlib import KERNEL_LABELS, Cut
from tnlib_torch._checks import check_count
from tnlib_torch.compression.report import LayerCompression
from tnlib_torch.compression.surgery import truncate_model_
from tnlib_torch.study.hits import pack_hits
from tnlib_torch.zoo.train import TrainingDiverged, evaluate, fine_tune

__all__ = ["METRICS", "Loader", "Record", "canonical_cut", "check_fraction", "check_training", "evaluation_fields",
           "fine_tuned", "layer_entry", "metrics", "record", "to_channels_last", "truncated_copy"]

Loader = Iterable[tuple[Tensor, Tensor]]
Record = dict[str, Any]

#: The test metrics of :func:`tnlib_torch.evaluate` that every record holds.
METRICS = ("top1", "top5", "loss", "count")


# -- records ----------------------------------------------------------------------------------------


def plain(value: Any) -> Any:
    """``value`` as JSON-ready Python: tuples as lists, NumPy scalars as Python's, non-finite floats as None."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    raise TypeError(f"cannot record a {type(value).__name__}")


def record(kind: str, /, *key: str | float, **fields: Any) -> Record:
    """The record ``{"key": [kind, *key], **fields}``, JSON-ready."""
    return plain({"key": [kind, *key], **fields})


def metrics(model: nn.Module, loader: Loader) -> dict[str, Any]:
    """``top1``, ``top5``, ``loss`` and ``count`` of :func:`tnlib_torch.evaluate`, and ``hits``: whether each
    sample, in loader order, is a top-1 hit, packed as text (:func:`~tnlib_torch.study.hits.pack_hits`; its
    mean is ``top1``)."""
    return evaluation_fields(evaluate(model, loader, hits=True))


def evaluation_fields(result: dict[str, Any]) -> dict[str, Any]:
    """The record fields of a :func:`tnlib_torch.evaluate` result with ``hits=True``: the metrics, hits packed."""
    return {**{name: result[name] for name in METRICS}, "hits": pack_hits(result["hits"])}


def layer_entry(layer: LayerCompression) -> Record:
    """One layer in a record: ``layer.to_dict()`` with the name under ``layer`` and without ``info``.

    ``info`` repeats the entry's own numbers.  A kernel truncated in place also
    carries ``rank`` (its one rank across the cut) and ``params``, as the
    sweeps' records always have.  :meth:`LayerCompression.from_dict` reads it back.
    """
    entry = {"layer": layer.name, **{k: v for k, v in layer.to_dict().items() if k not in ("name", "info")}}
    if layer.structure == "truncated":
        entry.update(rank=layer.rank, params=layer.params)
    return entry


# -- arguments ---------------------------------------------------------------------------------------


def check_fraction(value: object, name: str, *, one: bool = False) -> float:
    """``value`` as a float in (0, 1), or (0, 1] with ``one``."""
    interval = "(0, 1]" if one else "(0, 1)"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number in {interval}, got {type(value).__name__}")
    if not (0 < value < 1 or (one and value == 1)):
        raise ValueError(f"{name} must be in {interval}, got {value!r}")
    return float(value)



def check_training(epochs: object, lr: object, seed: object) -> None:
    """Refuse bad fine-tuning arguments before any costly work."""
    check_count(epochs, "epochs", 1)
    check_count(seed, "seed", 0)
    if isinstance(lr, bool) or not isinstance(lr, numbers.Real):
        raise TypeError(f"lr must be a real number > 0, got {type(lr).__name__}")
    if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")


def canonical_cut(cut: str | Cut) -> str:
    """``cut`` (one cut of ``"oihw"``) as :func:`tnlib.all_cuts` writes it."""
    parsed = Cut(cut).check(KERNEL_LABELS)
    return next(str(c) for c in tnlib.all_cuts(KERNEL_LABELS) if c == parsed)


# -- truncation and fine-tuning --------------------------------------------------------------------------


def truncated_copy(model: nn.Module, names: Sequence[str], cut: str, level: float) -> tuple[nn.Module, list[Record]]:
    """A deep copy of ``model`` with the kernels of ``names`` truncated across ``cut`` at ``rel_error=level``."""
    chosen = set(names)
    truncated = copy.deepcopy(model)
    reports = truncate_model_(truncated, cut, rel_error=level, where=lambda name, _: name in chosen)
    return truncated, [layer_entry(report) for report in reports.values()]


def to_channels_last(model: nn.Module) -> nn.Module:
    """``model``, its 4-d parameters and buffers moved in place to the channels-last layout (``(N, C, H, W)``
    tensors stored as ``(N, H, W, C)``); the values are unchanged.

    Convolutions then run in that layout (their outputs follow their weights'), faster on a CPU: the study's
    ResNet-20 tasks on one thread took 0.94 (an evaluation), 0.86 (a truncation fine-tuned) and 0.70 (a CP
    factorization fine-tuned) of their time in the default layout, with the same records on every repeat.
    A layer added later (a factorization) is in the default layout until this is called again.
    """
    return model.to(memory_format=torch.channels_last)


def fine_tuned(model: nn.Module, train_loader: Loader, test_loader: Loader, epochs: int, lr: float,
               seed: int) -> Record:
    """Test metrics of ``model`` before fine-tuning it in place, after each epoch, and at the end.

    The model is put in the channels-last layout first (:func:`to_channels_last`).  ``before`` and ``after``
    are :func:`metrics` (with the hits); the entries of ``history`` have the metrics without the hits.
    ``after`` is the model as it ended: that of the last epoch (its metrics are the last entry's), or, if
    the run diverged, of the step that diverged (then also added to ``history``, without training metrics).
    """
    to_channels_last(model)
    before = metrics(model, test_loader)
    generator = getattr(train_loader, "generator", None)
    if isinstance(generator, torch.Generator):
        generator.manual_seed(seed)
    try:
        history = fine_tune(model, train_loader, epochs, lr=lr, seed=seed, progress=False, val_loader=test_loader)
        diverged = None
    except TrainingDiverged as error:  # a finding of the run (lr too high for the model), not a failure
        history, diverged = error.history, error
    after = metrics(model, test_loader)
    per_epoch = [
        {"epoch": r.epoch, "lr": r.lr, "train_loss": r.train_loss, "train_top1": r.train_top1,
         **{name: r.val[name] for name in METRICS}}
        for r in history.records
    ]
    if diverged is not None:  # the model as it ended, in the epoch that diverged
        per_epoch.append({"epoch": diverged.epoch, "lr": lr, "train_loss": None, "train_top1": None,
                          **{name: after[name] for name in METRICS}})
    outcome = {} if diverged is None else {"diverged": str(diverged)}
    return {"epochs": epochs, "lr": lr, "seed": seed, "before": before, "history": per_epoch, "after": after,
            **outcome}
