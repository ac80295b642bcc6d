"""Figures of a compressibility study, drawn from its records.

Each ``*_figure`` function takes the records of a study (as :func:`tnlib_torch.study.store.read_records`
reads them, or as the functions of :mod:`tnlib_torch.study.measure` return them), draws one kind of
measurement and returns a :class:`matplotlib.figure.Figure`, or ``None`` when the records hold no
measurement of that kind: there are no empty figures.  :data:`FIGURES` names them all, and
:func:`save` writes a figure as PNG and SVG, each file atomically.

Figures are made from :class:`~matplotlib.figure.Figure` on its own Agg canvas, never through
:mod:`matplotlib.pyplot`: no global state (current figure, backend, interactive mode) is read or
changed, and a figure is garbage once dropped.  Matplotlib (``pip install 'tnlib[plot]'``) is
imported when the first figure is made; the records are read through :mod:`tnlib_torch.study.records`,
so a malformed record is a ``ValueError`` that names its key.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Callable, Hashable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tnlib_torch.study.records import Record, accuracy_curve, field, layers_max, number, of_kind
from tnlib_torch.study.store import atomic_write_bytes

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "FIGURES",
    "accuracy_figure",
    "decomposition_figure",
    "entropy_figure",
    "recovery_figure",
    "save",
    "spectra_figure",
]

#: What :func:`save` writes, with the keywords of ``Figure.savefig`` for each format.
_FORMATS: dict[str, dict[str, Any]] = {"png": {"dpi": 150}, "svg": {"metadata": {"Date": None}}}


def _unique(values: Iterable[Hashable]) -> list[Any]:
    """``values`` without repeats, in the order they first come."""
    return list(dict.fromkeys(values))


# -- drawing --------------------------------------------------------------------------------------------------------

def _figure(width: float, height: float) -> Figure:
    """A new figure with constrained layout on its own Agg canvas."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as error:
        raise ImportError("the figures of the study need matplotlib: pip install 'tnlib[plot]'") from error
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _panels(count: int, title: str) -> tuple[Figure, list[Axes]]:
    """A figure titled ``title`` with ``count`` panels, three to a row."""
    columns = min(count, 3)
    rows = math.ceil(count / columns)
    figure = _figure(4.0 * columns + 1.6, 3.2 * rows + 0.5)
    axes = list(figure.subplots(rows, columns, squeeze=False).ravel())
    for unused in axes[count:]:
        figure.delaxes(unused)
    figure.suptitle(title)
    return figure, axes[:count]


def _legend(figure: Figure, axes: Sequence[Axes], title: str | None = None) -> None:
    """One legend beside the panels, each label once."""
    entries: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    figure.legend(list(entries.values()), list(entries), loc="outside right upper", title=title)


def _color(order: Sequence[Hashable], item: Hashable) -> Any:
    """The color of ``item``, the same in every panel, and distinct for every item of ``order``.

    The default color cycle for up to 10 items, ``tab20`` for up to 20 (ResNet-20's 19 convs),
    beyond that evenly spaced along ``viridis``.
    """
    from matplotlib import colormaps

    index = order.index(item)
    if len(order) <= 10:
        return f"C{index}"
    if len(order) <= 20:
        return colormaps["tab20"](index)
    return colormaps["viridis"](index / (len(order) - 1))


def _baseline_line(ax: Axes, records: Sequence[Record]) -> None:
    """The baseline's top-1 accuracy as a horizontal line, if the records have a baseline."""
    for baseline in of_kind(records, "baseline"):
        ax.axhline(number(baseline, "top1"), color="gray", linestyle="--", linewidth=1, label="baseline")


def _normalized_spectrum(record: Record) -> np.ndarray:
    """The positive singular values of a ``spectrum`` record over the largest, ``s_k / s_1``."""
    values = np.asarray(field(record, "singular_values"), dtype=float)
    if values.ndim != 1 or not values.size or not np.all(np.isfinite(values) & (values >= 0)):
        raise ValueError(f"the record {list(record['key'])} has no singular values (a list of finite numbers >= 0)")
    values = values[values > 0]
    return values / values[0] if values.size else values


def spectra_figure(records: Sequence[Record]) -> Figure | None:
    """The singular values of each layer's kernel across each cut: one panel per layer, one line per cut.

    The values are normalized by the largest, ``s_k / s_1``, on a log scale; zeros are left out.
    ``None`` if the records hold no ``spectrum`` record.
    """
    spectra = of_kind(records, "spectrum")
    if not spectra:
        return None
    layers = _unique(field(record, "layer") for record in spectra)
    cuts = _unique(field(record, "cut") for record in spectra)
    figure, axes = _panels(len(layers), "Singular values of the kernels across each cut")
    for ax, layer in zip(axes, layers):
        for record in spectra:
            if record["layer"] == layer:
                values = _normalized_spectrum(record)
                ax.plot(np.arange(1, values.size + 1), values, marker=".", markersize=3,
                        color=_color(cuts, record["cut"]), label=record["cut"])
        ax.set_yscale("log")
        ax.locator_params(axis="x", integer=True)
        ax.set(title=layer, xlabel="k", ylabel=r"$s_k / s_1$")
        ax.grid(True, which="major", alpha=0.3)
    _legend(figure, axes, "cut")
    return figure


def entropy_figure(records: Sequence[Record]) -> Figure | None:
    """A heatmap of the von Neumann entropy (bits) of each layer (rows) across each cut (columns), annotated.

    ``None`` if the records hold no ``spectrum`` record; a layer and cut not measured is left blank.
    """
    spectra = of_kind(records, "spectrum")
    if not spectra:
        return None
    layers = _unique(field(record, "layer") for record in spectra)
    cuts = _unique(field(record, "cut") for record in spectra)
    grid = np.full((len(layers), len(cuts)), np.nan)
    for record in spectra:
        grid[layers.index(record["layer"]), cuts.index(record["cut"])] = number(record, "entropy")
    figure = _figure(1.0 * len(cuts) + 3.0, 0.45 * len(layers) + 2.0)
    ax = figure.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(cuts)), cuts)
    ax.set_yticks(range(len(layers)), layers)
    ax.set(xlabel="cut", ylabel="layer", title="Entanglement entropy of the kernels across each cut")
    for (row, column), value in np.ndenumerate(grid):
        if np.isfinite(value):
            ax.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=8,
                    color="black" if image.norm(value) > 0.5 else "white")
    figure.colorbar(image, ax=ax, label="von Neumann entropy (bits)")
    return figure


def accuracy_figure(records: Sequence[Record]) -> Figure | None:
    """Top-1 accuracy against the norm loss of the truncation: one panel per cut.

    Points: one layer truncated alone (``sweep``), one color per layer; line: every layer truncated at
    once (``sweep_all``) against the largest norm loss among its layers (:func:`layers_max`);
    dashed: the baseline, if recorded.  ``None`` if the records hold no sweep.
    """
    sweeps, sweeps_all = of_kind(records, "sweep"), of_kind(records, "sweep_all")
    if not sweeps and not sweeps_all:
        return None
    cuts = _unique(field(record, "cut") for record in sweeps + sweeps_all)
    layers = _unique(field(record, "layer") for record in sweeps)
    figure, axes = _panels(len(cuts), "Accuracy left by truncating the kernels across a cut")
    for ax, cut in zip(axes, cuts):
        for layer in layers:
            points = [record for record in sweeps if (record["layer"], record["cut"]) == (layer, cut)]
            if points:
                ax.scatter([number(record, "norm_loss") for record in points],
                           [number(record, "top1") for record in points], s=18, color=_color(layers, layer),
                           label=layer)
        line = sorted((record for record in sweeps_all if record["cut"] == cut), key=lambda r: number(r, "level"))
        if line:
            ax.plot([layers_max(record, "norm_loss") for record in line], [number(record, "top1") for record in line],
                    color="black", marker="o", markersize=3, label="all layers at once")
        _baseline_line(ax, records)
        ax.set(title=f"cut {cut}", xlabel=r"norm loss $1 - \|\tilde K\| / \|K\|$", ylabel="top-1 accuracy")
        ax.grid(True, alpha=0.3)
    _legend(figure, axes)
    return figure


def _recovery_label(record: Record) -> str:
    return f"{field(record, 'target')}, cut {field(record, 'cut')}, level {number(record, 'level'):g}"


def recovery_figure(records: Sequence[Record]) -> Figure | None:
    """Top-1 accuracy per epoch of fine-tuning, epoch 0 before it: each recovery, and the control dotted.

    ``None`` if the records hold no ``recovery`` nor ``recovery_control`` record.
    """
    runs, controls = of_kind(records, "recovery"), of_kind(records, "recovery_control")
    if not runs and not controls:
        return None
    curves = [(accuracy_curve(record), {"marker": "o", "color": _color(range(len(runs)), index),
                                        "label": _recovery_label(record)})
              for index, record in enumerate(runs)]
    curves += [(accuracy_curve(record), {"marker": "s", "color": "black", "linestyle": ":",
                                         "label": "control (not truncated)"}) for record in controls]
    figure = _figure(8.0, 4.2)
    ax = figure.add_subplot()
    for (epochs, top1), style in curves:
        ax.plot(epochs, top1, **style)
    _baseline_line(ax, records)
    ax.set_xticks(range(max(epochs[-1] for (epochs, _), _ in curves) + 1))
    ax.set(xlabel="epochs of fine-tuning", ylabel="top-1 accuracy", title="Recovery of truncated models by fine-tuning")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return figure


def decomposition_figure(records: Sequence[Record]) -> Figure | None:
    """Top-1 accuracy before and after fine-tuning of each decomposition at its parameter budget (bars).

    Each group is labelled with its method, budget and parameter ratio (``params_after /
    params_before`` of the layers).  ``None`` if the records hold no ``decomposition`` record.
    """
    rows = of_kind(records, "decomposition")
    if not rows:
        return None
    figure = _figure(1.5 * len(rows) + 3.0, 4.2)
    ax = figure.add_subplot()
    positions, width = np.arange(len(rows)), 0.38
    for offset, phase in ((-width / 2, "before"), (width / 2, "after")):
        bars = ax.bar(positions + offset, [number(record, phase, "top1") for record in rows], width,
                      label=f"{phase} fine-tuning")
        ax.bar_label(bars, fmt="%.3f", fontsize=7)
    ax.set_xticks(positions, [f"{field(record, 'method')}\nbudget {number(record, 'budget'):g}\n"
                              f"ratio {number(record, 'ratio'):.3f}" for record in rows])
    _baseline_line(ax, records)
    ax.set(ylabel="top-1 accuracy", title="Decompositions at equal parameter budget")
    _legend(figure, [ax])
    return figure


#: The figures of a study by file stem, each a function of the records (``None`` without data).
FIGURES: dict[str, Callable[[Sequence[Record]], Figure | None]] = {
    "spectra": spectra_figure,
    "entropy": entropy_figure,
    "accuracy": accuracy_figure,
    "recovery": recovery_figure,
    "decompositions": decomposition_figure,
}


def save(figure: Figure, folder: str | os.PathLike[str], stem: str) -> list[Path]:
    """Write ``figure`` as ``folder/stem.png`` and ``folder/stem.svg``; their paths.

    Each file is rendered in memory and written with
    :func:`~tnlib_torch.study.store.atomic_write_bytes`: a reader sees the old file or the new one,
    and no temporary file is left behind.  ``folder`` is created if missing.

    Raises
    ------
    ValueError
        If ``stem`` is not a plain file name (empty, hidden, or with a folder in it).
    """
    if not hasattr(figure, "savefig"):
        raise TypeError(f"figure must be a matplotlib Figure, got {type(figure).__name__}")
    if not isinstance(stem, str) or not stem or stem.startswith(".") or Path(stem).name != stem:
        raise ValueError(f"stem must be a plain file name without extension, got {stem!r}")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for extension, options in _FORMATS.items():
        buffer = io.BytesIO()
        figure.savefig(buffer, format=extension, **options)
        path = folder / f"{stem}.{extension}"
        atomic_write_bytes(path, buffer.getvalue())
        paths.append(path)
    return paths
