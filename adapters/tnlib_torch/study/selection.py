"""The layers a study measures: the dense convs of a model (``groups == 1``), chosen by glob patterns.

One selection for the whole study: :mod:`~tnlib_torch.study.inputs` resolves the config's ``include``
with it, and every measurement of :mod:`~tnlib_torch.study.measure` selects with it.  Grouped convs
are skipped (a grouped conv has one spectrum per group, not one).  Names are those of
``model.named_modules()``; patterns are :func:`fnmatch.fnmatchcase` globs (``*`` also matches dots).
"""

from __future__ import annotations

from collections.abc import Sequence
from fnmatch import fnmatchcase

from torch import nn

from tnlib_torch._checks import check_module
from tnlib_torch.compression.surgery import select_convs

__all__ = ["Patterns", "checked_dense_conv", "dense_convs", "select_dense_convs"]

#: Glob pattern(s) selecting layers; ``None`` for all.
Patterns = str | Sequence[str] | None


def dense_convs(model: nn.Module) -> dict[str, nn.Conv2d]:
    """The convs of ``model`` with ``groups == 1``, by name, in model order."""
    check_module(model)
    return {name: conv for name, conv in select_convs(model) if conv.groups == 1}


def select_dense_convs(model: nn.Module, include: Patterns = None) -> list[str]:
    """The names of the dense convs of ``model`` that match any of the glob patterns ``include``, in model order.

    Parameters
    ----------
    model
        Any ``nn.Module``.
    include
        A glob pattern or a non-empty sequence of them; ``None``: every dense conv.

    Raises
    ------
    ValueError
        The model has no dense conv; a pattern matches none (the message lists some that exist).
    TypeError
        ``include`` is neither a pattern nor a non-empty sequence of them.
    """
    names = list(dense_convs(model))
    if not names:
        raise ValueError("the model has no nn.Conv2d with groups == 1 to measure")
    if include is None:
        return names
    patterns = (include,) if isinstance(include, str) else include
    if not isinstance(patterns, Sequence) or not patterns or not all(isinstance(p, str) for p in patterns):
        raise TypeError(f"include must be a glob pattern or a non-empty sequence of them (str), got {include!r}")
    for pattern in patterns:
        if not any(fnmatchcase(name, pattern) for name in names):
            raise ValueError(f"include: pattern {pattern!r} matches no dense conv of the model; {_available(names)}")
    return [name for name in names if any(fnmatchcase(name, p) for p in patterns)]


def checked_dense_conv(model: nn.Module, layer: str) -> str:
    """``layer``, checked to name a dense conv of ``model``."""
    if not isinstance(layer, str):
        raise TypeError(f"layer must be the name of a conv (str), got {type(layer).__name__}")
    names = list(dense_convs(model))
    if layer not in names:
        conv = dict(select_convs(model)).get(layer)
        why = "is not a conv of the model" if conv is None else f"is a grouped conv (groups={conv.groups}), unmeasured"
        raise ValueError(f"layer {layer!r} {why}; {_available(names)}")
    return layer


def _available(names: Sequence[str]) -> str:
    shown = ", ".join(repr(name) for name in names[:5])
    return f"the dense convs are {shown}" + (f", ... ({len(names)} in all)" if len(names) > 5 else "")
