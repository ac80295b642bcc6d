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

from tnlib_torch.study.records import Record, accuracy_curve, count, field, layers_max, number, of_kind, unchanged
from tnlib_torch.study.statistics import accuracy_interval
from tnlib_torch.study.store import atomic_write_bytes

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "FIGURES",
    "accuracy_figure",
    "decomposition_figure",
    "entropy_figure",
    "predictors_figure",
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


def _panels(panels: int, title: str, sharey: bool = False) -> tuple[Figure, list[Axes]]:
    """A figure titled ``title`` with ``panels`` panels, three to a row; ``sharey``: one y-range for all."""
    columns = min(panels, 3)
    rows = math.ceil(panels / columns)
    figure = _figure(4.0 * columns + 1.6, 3.2 * rows + 0.5)
    axes = list(figure.subplots(rows, columns, squeeze=False, sharey=sharey).ravel())
    for unused in axes[panels:]:
        figure.delaxes(unused)
    if sharey:  # the shared axis hides the tick labels of inner panels; the compared values need them everywhere
        for ax in axes[:panels]:
            ax.tick_params(labelleft=True)
    figure.suptitle(title)
    return figure, axes[:panels]


def _legend(figure: Figure, axes: Sequence[Axes], title: str | None = None) -> None:
    """One legend beside the panels, each label once, in as many columns as the figure's height needs."""
    entries: dict[str, Any] = {}
    for ax in axes:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            entries.setdefault(label, handle)
    rows = max(1, int((figure.get_figheight() - LEGEND_MARGIN_INCHES) / LEGEND_ENTRY_INCHES))
    columns = math.ceil(len(entries) / rows)
    figure.set_figwidth(figure.get_figwidth() + (columns - 1) * LEGEND_COLUMN_INCHES)  # the panels keep their width
    figure.legend(list(entries.values()), list(entries), loc="outside right upper", title=title, ncols=columns)


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


#: Markers and line styles cycled together, so that lines of one color scheme stay apart where they overlap.
_MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*", "<", ">")  # all fillable, so hollow means "changed nothing"
_LINE_STYLES = ("-", "--", ":", "-.")


def _style(order: Sequence[Hashable], item: Hashable) -> dict[str, Any]:
    """Color, marker and line style of ``item``: markers cycle every 10 items, styles every 4 (pairs every 20)."""
    index = order.index(item)
    return {"color": _color(order, item), "marker": _MARKERS[index % len(_MARKERS)],
            "linestyle": _LINE_STYLES[index % len(_LINE_STYLES)]}


#: How far apart the points of successive cuts are drawn in :func:`spectra_figure`, in units of the x-axis
#: (the fraction of the full rank).
SPECTRUM_OFFSET = 0.008
#: About how many markers :func:`spectra_figure` draws on a line (a long spectrum gets one every few values).
_MARKERS_PER_LINE = 12
#: The height of one legend entry (a 10-point label and its spacing), what a legend's title and frame take,
#: and the width of a column of labels such as ``layer1.0.conv1``, in inches: a legend gets a new column
#: where the figure's height holds no more entries, and the figure grows by that column.
LEGEND_ENTRY_INCHES, LEGEND_MARGIN_INCHES, LEGEND_COLUMN_INCHES = 0.22, 0.5, 1.9


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

    The values are normalized by the largest, ``s_k / s_1``, on a log scale, against ``k / min(rows,
    columns)``, the fraction of the full rank across the cut, so cuts of 3 and of 384 values compare
    (zeros are left out).  Each cut has its own color, marker and line style (about
    :data:`_MARKERS_PER_LINE` markers a line, on different values for each cut), and its points are
    shifted along the x-axis by a multiple of :data:`SPECTRUM_OFFSET` (at most 0.024 for 7 cuts), so equal
    spectra (``o|ihw`` and ``oi|hw`` of a kernel with one input channel) stay visible.  ``None`` if the
    records hold no ``spectrum`` record.
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
                full = min(number(record, "matrix_shape", 0), number(record, "matrix_shape", 1))
                index = cuts.index(record["cut"])
                step = max(1, values.size // _MARKERS_PER_LINE)  # markers of overlapping lines at other values
                ax.plot(np.arange(1, values.size + 1) / full + SPECTRUM_OFFSET * (index - (len(cuts) - 1) / 2),
                        values, markersize=5, fillstyle="none", markevery=(index * step // len(cuts), step),
                        linewidth=1, label=record["cut"], **_style(cuts, record["cut"]))
        ax.set_yscale("log")
        ax.set(title=layer, xlabel="k / min(rows, columns)", ylabel=r"$s_k / s_1$")
        ax.grid(True, which="major", alpha=0.3)
    _legend(figure, axes, "cut")
    return figure


def _max_entropy(record: Record) -> float:
    """``log2(min(rows, columns))``: the entropy of a flat spectrum of full rank across the record's cut."""
    return math.log2(min(number(record, "matrix_shape", 0), number(record, "matrix_shape", 1)))


def entropy_figure(records: Sequence[Record]) -> Figure | None:
    """A heatmap of each layer's (rows) entropy across each cut (columns), normalized by its maximum.

    The color and the first number of each cell are the von Neumann entropy over its maximum
    ``log2(min(rows, columns))`` (1: a flat spectrum); the second is the entropy in bits.  Raw entropies
    do not compare across cuts (a cut with 3 rows has at most 1.585 bits).  A cut with one row or
    column (no entropy possible) shows its bits only.  ``None`` if the records hold no ``spectrum``
    record; a layer and cut not measured is left blank.
    """
    spectra = of_kind(records, "spectrum")
    if not spectra:
        return None
    layers = _unique(field(record, "layer") for record in spectra)
    cuts = _unique(field(record, "cut") for record in spectra)
    grid, bits = np.full((len(layers), len(cuts)), np.nan), np.full((len(layers), len(cuts)), np.nan)
    for record in spectra:
        where = layers.index(record["layer"]), cuts.index(record["cut"])
        bits[where], most = number(record, "entropy"), _max_entropy(record)
        grid[where] = bits[where] / most if most > 0 else np.nan
    figure = _figure(1.0 * len(cuts) + 3.0, 0.55 * len(layers) + 2.0)
    ax = figure.add_subplot()
    image = ax.imshow(np.ma.masked_invalid(grid), cmap="viridis", aspect="auto", vmin=0, vmax=1)
    ax.set_xticks(range(len(cuts)), cuts)
    ax.set_yticks(range(len(layers)), layers)
    ax.set(xlabel="cut", ylabel="layer", title="Entanglement entropy over its maximum, per kernel and cut")
    for (row, column), value in np.ndenumerate(bits):
        if np.isfinite(value):
            normalized = grid[row, column]
            text = f"{value:.2f} b" if np.isnan(normalized) else f"{normalized:.2f}\n{value:.2f} b"
            ax.text(column, row, text, ha="center", va="center", fontsize=7,
                    color="white" if np.isfinite(normalized) and image.norm(normalized) <= 0.5 else "black")
    figure.colorbar(image, ax=ax, label="entropy / log2(min(rows, columns))")
    return figure


def accuracy_figure(records: Sequence[Record]) -> Figure | None:
    """Top-1 accuracy against the norm loss of the truncation: one panel per cut, one accuracy axis for all.

    Points: one layer truncated alone (``sweep``), one color and marker per layer, hollow where the
    level changed nothing (``noop``); line: every layer truncated at once (``sweep_all``) against the
    largest norm loss among its layers (:func:`layers_max`); dashed: the baseline, if recorded.  The
    panels share their y-range, so the cuts compare at a glance.  ``None`` if the records hold no sweep.
    """
    sweeps, sweeps_all = of_kind(records, "sweep"), of_kind(records, "sweep_all")
    if not sweeps and not sweeps_all:
        return None
    cuts = _unique(field(record, "cut") for record in sweeps + sweeps_all)
    layers = _unique(field(record, "layer") for record in sweeps)
    figure, axes = _panels(len(cuts), "Accuracy left by truncating the kernels across a cut", sharey=True)
    for ax, cut in zip(axes, cuts):
        for layer in layers:
            points = [record for record in sweeps if (record["layer"], record["cut"]) == (layer, cut)]
            style = _style(layers, layer)
            for hollow in (False, True):
                chosen = [record for record in points if unchanged(record) == hollow]
                if chosen:
                    ax.scatter([number(record, "norm_loss") for record in chosen],
                               [number(record, "top1") for record in chosen], s=20, marker=style["marker"],
                               facecolors="none" if hollow else style["color"], edgecolors=style["color"],
                               label="hollow: changed nothing" if hollow else layer)
        line = sorted((record for record in sweeps_all if record["cut"] == cut), key=lambda r: number(r, "level"))
        if line:
            ax.plot([layers_max(record, "norm_loss") for record in line], [number(record, "top1") for record in line],
                    color="black", marker="o", markersize=3, label="all layers at once")
        _baseline_line(ax, records)
        ax.set(title=f"cut {cut}", xlabel=r"norm loss $1 - \|\tilde K\| / \|K\|$", ylabel="top-1 accuracy")
        ax.grid(True, alpha=0.3)
    _legend(figure, axes)
    return figure


def predictors_figure(records: Sequence[Record]) -> Figure | None:
    """The accuracy drop of each one-layer truncation against its norm loss and its data error (two panels).

    The drop is the baseline's top-1 less the truncation's, on one y-axis for both panels; one color and
    marker per layer; levels that changed nothing are left out.  Without data errors (no calibration data,
    older records) the second panel says so.  ``None`` without a baseline or a sweep that changed a kernel.
    """
    baselines = of_kind(records, "baseline")
    sweeps = [record for record in of_kind(records, "sweep") if not unchanged(record)]
    if not baselines or not sweeps:
        return None
    top1 = number(baselines[0], "top1")
    layers = _unique(field(record, "layer") for record in sweeps)
    figure, axes = _panels(2, "What predicts the accuracy drop of a one-layer truncation", sharey=True)
    for ax, name, label in ((axes[0], "norm_loss", r"norm loss $1 - \|\tilde K\| / \|K\|$"),
                            (axes[1], "data_error", "data error (relative output error, calibration data)")):
        for layer in layers:
            points = [record for record in sweeps if record["layer"] == layer and record.get(name) is not None]
            if points:
                style = _style(layers, layer)
                ax.scatter([number(record, name) for record in points],
                           [top1 - number(record, "top1") for record in points], s=18, marker=style["marker"],
                           color=style["color"], label=layer)
        if not ax.collections:
            ax.text(0.5, 0.5, "no data error recorded", ha="center", va="center", transform=ax.transAxes)
        ax.axhline(0, color="gray", linestyle="--", linewidth=1)
        ax.set(xlabel=label, ylabel="accuracy drop (baseline - top-1)")
        ax.grid(True, alpha=0.3)
    _legend(figure, axes, "layer")
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
    curves = [(accuracy_curve(record), {**_style(range(len(runs)), index), "label": _recovery_label(record)})
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

    Each bar has the 95% Wilson interval of its accuracy as an error bar; each group is labelled with its
    method, mode (data-free when not recorded), budget and parameter ratio (``params_after /
    params_before`` of the layers).  ``None`` if the records hold no ``decomposition`` record.
    """
    rows = of_kind(records, "decomposition")
    if not rows:
        return None
    figure = _figure(1.6 * len(rows) + 3.0, 4.4)
    ax = figure.add_subplot()
    positions, width = np.arange(len(rows)), 0.38
    for offset, phase in ((-width / 2, "before"), (width / 2, "after")):
        top1 = np.array([number(record, phase, "top1") for record in rows])
        intervals = np.array([accuracy_interval(round(value * count(record, phase)), count(record, phase))
                              for value, record in zip(top1, rows)])
        errors = np.clip(np.stack([top1 - intervals[:, 0], intervals[:, 1] - top1]), 0, None)
        bars = ax.bar(positions + offset, top1, width, yerr=errors, capsize=3, label=f"{phase} fine-tuning")
        ax.bar_label(bars, fmt="%.3f", fontsize=7, padding=2)
    ax.set_xticks(positions, [f"{field(record, 'method')}\n{record.get('mode') or 'data-free'}\n"
                              f"budget {number(record, 'budget'):g}\nratio {number(record, 'ratio'):.3f}"
                              for record in rows])
    _baseline_line(ax, records)
    ax.set(ylabel="top-1 accuracy (95% Wilson intervals)", title="Decompositions at equal parameter budget")
    _legend(figure, [ax])
    return figure


#: The figures of a study by file stem, each a function of the records (``None`` without data).
FIGURES: dict[str, Callable[[Sequence[Record]], Figure | None]] = {
    "spectra": spectra_figure,
    "entropy": entropy_figure,
    "accuracy": accuracy_figure,
    "predictors": predictors_figure,
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
