"""The report of a compressibility study: its figures and ``report.md``, from its records.

:func:`write_report` draws the figures of :mod:`tnlib_torch.study.figures` into ``output/figures/``
and writes ``output/report.md``: the configuration, the baseline, and the findings as numbers
computed from the records, every file written atomically.  The numbers come from pure functions of
the records, which need no matplotlib:

- :func:`tolerated_norm_loss` (one layer truncated alone) and :func:`tolerated_norm_loss_all`
  (every layer at once): the largest truncation that keeps the accuracy within a tolerance of the
  baseline, and the fraction of the kernel's norm it removes;
- :func:`recovery_gains`: what fine-tuning gives back after a truncation, less what the same
  fine-tuning does to the model left whole (:func:`control_curve`);
- :func:`decompositions`: the decompositions at equal parameter budget, before and after fine-tuning;
- :func:`lowest_entropy`: the cut of least entanglement entropy of each layer's kernel.

:func:`report_text` formats them as Markdown.

Within tolerance
----------------
A truncation keeps the accuracy when its top-1 accuracy is at most ``tolerance`` below the
baseline's (``0.01``: one point).  Accuracies are ratios of counts, so a drop of exactly
``tolerance`` is within it, whatever the rounding of the floats.  A layer tolerates a cut up to the
largest level such that it and every smaller level tried keep the accuracy: accuracy is noisy, and a
larger level that happens to pass after a smaller one failed is not one the layer tolerates.  The
norm loss ``1 - ||K~|| / ||K||`` and relative error ``||K - K~|| / ||K||`` reported are those
realized at that level.
"""

from __future__ import annotations

import dataclasses
import numbers
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path

from tnlib_torch.study.config import StudyConfig
from tnlib_torch.study.figures import FIGURES, Record, accuracy_curve, field, layers_max, number, of_kind, save
from tnlib_torch.study.measure import ALL
from tnlib_torch.study.store import atomic_write_text

__all__ = [
    "FIGURE_FOLDER",
    "REPORT",
    "Curve",
    "Decomposition",
    "RecoveryGain",
    "Tolerated",
    "control_curve",
    "decompositions",
    "lowest_entropy",
    "recovery_gains",
    "report_text",
    "require_baseline",
    "tolerated_norm_loss",
    "tolerated_norm_loss_all",
    "write_report",
]

#: The report's file name, in the output folder.
REPORT = "report.md"
#: The folder of the figures, in the output folder.
FIGURE_FOLDER = "figures"

#: Absorbs the rounding of accuracies (ratios of counts) in the comparison with the tolerance.
_SLACK = 1e-9

#: The caption of each figure of :data:`~tnlib_torch.study.figures.FIGURES`.
_CAPTIONS = {
    "spectra": "Singular values of each kernel across each cut, normalized by the largest",
    "entropy": "Von Neumann entropy (bits) of each kernel across each cut",
    "accuracy": "Top-1 accuracy against the norm lost to the truncation, per cut",
    "recovery": "Top-1 accuracy per epoch of fine-tuning (epoch 0: before)",
    "decompositions": "Decompositions at equal parameter budget, before and after fine-tuning",
}

# -- summaries ------------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Tolerated:
    """The largest truncation that keeps the accuracy (see the module notes), and what it did.

    Attributes
    ----------
    level : float
        The relative error the kernel(s) were truncated to.
    norm_loss, rel_error : float
        Realized at that level; for every layer truncated at once, the largest among the layers.
    top1 : float
        The accuracy left.
    params, factored_params : float
        The parameters of the truncated layer(s) dense, and stored as the two factors across the cut.
    """

    level: float
    norm_loss: float
    rel_error: float
    top1: float
    params: float
    factored_params: float


@dataclasses.dataclass(frozen=True)
class Curve:
    """Top-1 accuracy before fine-tuning and after each epoch (``top1[0]`` is before)."""

    top1: tuple[float, ...]

    @property
    def before(self) -> float:
        return self.top1[0]

    @property
    def after(self) -> float:
        return self.top1[-1]

    @property
    def change(self) -> float:
        """What the fine-tuning changed, ``after - before``."""
        return self.after - self.before


@dataclasses.dataclass(frozen=True)
class RecoveryGain:
    """The fine-tuning of a truncated model (``curve``) beside that of the untruncated one (``control``)."""

    target: str
    cut: str
    level: float
    curve: Curve
    control: Curve | None

    @property
    def gain(self) -> float | None:
        """What fine-tuning repairs of the truncation: the accuracy it recovers less the control's change.

        ``None`` without a control.
        """
        return None if self.control is None else self.curve.change - self.control.change


@dataclasses.dataclass(frozen=True)
class Decomposition:
    """One decomposition at its parameter budget: the parameters of its layers and the top-1 accuracy."""

    method: str
    budget: float
    params_before: float
    params_after: float
    ratio: float
    before: float
    after: float


def require_baseline(records: Sequence[Record]) -> Record:
    """The baseline record of ``records``.

    Raises
    ------
    ValueError
        If there is none: every accuracy of the report is compared with it.
    """
    baselines = of_kind(records, "baseline")
    if not baselines:
        raise ValueError("the records hold no baseline (a record with key ['baseline']); the report compares every "
                         "accuracy with the baseline's, so measure it first (tnlib_torch.study.measure.baseline)")
    return baselines[0]


def _check_tolerance(tolerance: object) -> float:
    """A drop of accuracy in [0, 1)."""
    if isinstance(tolerance, bool) or not isinstance(tolerance, numbers.Real):
        raise TypeError(f"tolerance must be a real number in [0, 1), got {type(tolerance).__name__}")
    if not 0 <= tolerance < 1:
        raise ValueError(f"tolerance must be in [0, 1) (0.01: one point of accuracy), got {tolerance!r}")
    return float(tolerance)


def _tolerated(sweep: list[Record], baseline: float, tolerance: float,
               measure: Callable[[Record, str], float]) -> Tolerated | None:
    """The largest level of ``sweep`` up to which every level keeps the accuracy; ``None`` if the first does not.

    ``measure(record, name)`` reads the record's ``norm_loss`` and ``rel_error``.
    """
    kept = None
    for record in sorted(sweep, key=lambda record: number(record, "level")):
        if baseline - number(record, "top1") > tolerance + _SLACK:
            break
        kept = record
    if kept is None:
        return None
    return Tolerated(level=number(kept, "level"), norm_loss=measure(kept, "norm_loss"),
                     rel_error=measure(kept, "rel_error"), top1=number(kept, "top1"), params=number(kept, "params"),
                     factored_params=number(kept, "factored_params"))


def tolerated_norm_loss(records: Sequence[Record], tolerance: float = 0.01) -> dict[str, dict[str, Tolerated | None]]:
    """The largest truncation of each layer alone, per cut, that keeps the accuracy within ``tolerance``.

    From the ``sweep`` records (see the module notes for the rule).

    Returns
    -------
    dict
        ``{layer: {cut: Tolerated or None}}``, layers and cuts in the order of the records; ``None``
        where even the smallest level loses more than ``tolerance``.

    Raises
    ------
    ValueError
        Without a baseline, or with a malformed record.

    Examples
    --------
    >>> records = [{"key": ["baseline"], "top1": 0.9}] + [
    ...     {"key": ["sweep", "conv1", "o|ihw", level], "layer": "conv1", "cut": "o|ihw", "level": level, "top1": top1,
    ...      "rel_error": level, "norm_loss": level / 10, "params": 100, "factored_params": 60}
    ...     for level, top1 in [(0.1, 0.9), (0.3, 0.89), (0.5, 0.8)]]
    >>> kept = tolerated_norm_loss(records)["conv1"]["o|ihw"]
    >>> kept.level, kept.top1, kept.norm_loss
    (0.3, 0.89, 0.03)
    >>> tolerated_norm_loss(records, tolerance=0.001)["conv1"]["o|ihw"].level
    0.1
    """
    baseline, tolerance = number(require_baseline(records), "top1"), _check_tolerance(tolerance)
    sweeps: dict[str, dict[str, list[Record]]] = {}
    for record in of_kind(records, "sweep"):
        sweeps.setdefault(field(record, "layer"), {}).setdefault(field(record, "cut"), []).append(record)
    return {layer: {cut: _tolerated(sweep, baseline, tolerance, number) for cut, sweep in by_cut.items()}
            for layer, by_cut in sweeps.items()}


def tolerated_norm_loss_all(records: Sequence[Record], tolerance: float = 0.01) -> dict[str, Tolerated | None]:
    """As :func:`tolerated_norm_loss`, for every layer truncated at once (the ``sweep_all`` records).

    The norm loss and relative error are the largest among the layers (:func:`~tnlib_torch.study.figures.layers_max`).

    Returns
    -------
    dict
        ``{cut: Tolerated or None}``.
    """
    baseline, tolerance = number(require_baseline(records), "top1"), _check_tolerance(tolerance)
    sweeps: dict[str, list[Record]] = {}
    for record in of_kind(records, "sweep_all"):
        sweeps.setdefault(field(record, "cut"), []).append(record)
    return {cut: _tolerated(sweep, baseline, tolerance, layers_max) for cut, sweep in sweeps.items()}


def _curve(record: Record) -> Curve:
    return Curve(tuple(accuracy_curve(record)[1]))


def _schedule(record: Record) -> dict[str, object]:
    """How a record was fine-tuned."""
    return {name: field(record, name) for name in ("epochs", "lr", "seed")}


def control_curve(records: Sequence[Record]) -> Curve | None:
    """The accuracy of the untruncated model fine-tuned like the recoveries (``recovery_control``).

    ``None`` if it was not measured.
    """
    controls = of_kind(records, "recovery_control")
    return _curve(controls[0]) if controls else None


def recovery_gains(records: Sequence[Record]) -> list[RecoveryGain]:
    """Each ``recovery`` record beside the control, in the order of the records.

    Raises
    ------
    ValueError
        If a recovery was fine-tuned with another ``epochs``, ``lr`` or ``seed`` than the control: the
        two would not compare.
    """
    controls, control = of_kind(records, "recovery_control"), control_curve(records)
    gains = []
    for record in of_kind(records, "recovery"):
        for other in controls:
            if _schedule(record) != _schedule(other):
                raise ValueError(f"the record {list(record['key'])} was fine-tuned with {_schedule(record)}, the "
                                 f"control with {_schedule(other)}: they do not compare")
        gains.append(RecoveryGain(target=field(record, "target"), cut=field(record, "cut"),
                                  level=number(record, "level"), curve=_curve(record),
                                  control=control))
    return gains


def decompositions(records: Sequence[Record]) -> list[Decomposition]:
    """The ``decomposition`` records, in their order, as :class:`Decomposition`."""
    return [Decomposition(method=field(record, "method"), budget=number(record, "budget"),
                          params_before=number(record, "params_before"), params_after=number(record, "params_after"),
                          ratio=number(record, "ratio"), before=number(record, "before", "top1"),
                          after=number(record, "after", "top1"))
            for record in of_kind(records, "decomposition")]


def lowest_entropy(records: Sequence[Record]) -> dict[str, tuple[str, float]]:
    """The cut of least von Neumann entropy (bits) of each layer's kernel: ``{layer: (cut, entropy)}``.

    From the ``spectrum`` records; the first cut in their order wins a tie.
    """
    lowest: dict[str, tuple[str, float]] = {}
    for record in of_kind(records, "spectrum"):
        layer, entropy = field(record, "layer"), number(record, "entropy")
        if layer not in lowest or entropy < lowest[layer][1]:
            lowest[layer] = (field(record, "cut"), entropy)
    return lowest


# -- formatting -----------------------------------------------------------------------------------------------------

def _percent(value: float, digits: int = 2) -> str:
    return f"{100 * value:.{digits}f}%"


def _points(change: float) -> str:
    return f"{100 * change:+.2f} points"


def _plural(count: float, noun: str) -> str:
    return f"{count:g} {noun}{'' if count == 1 else 's'}"


def _cell(text: str) -> str:
    """``text`` for a table cell: its ``|`` (the cuts') escaped."""
    return text.replace("|", r"\|")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(_cell(text) for text in line) + " |" for line in lines)


def _image(figures: Collection[str], stem: str) -> list[str]:
    """The Markdown of the figure ``stem`` (PNG shown, SVG linked), if it was drawn."""
    if stem not in figures:
        return []
    path = f"{FIGURE_FOLDER}/{stem}"
    return [f"![{_CAPTIONS[stem]}]({path}.png)\n\n*{_CAPTIONS[stem]}* ([SVG]({path}.svg))"]


def _best(by_cut: Mapping[str, Tolerated | None]) -> tuple[str, Tolerated] | None:
    """The cut of the largest tolerated norm loss, and its truncation; ``None`` if no cut keeps the accuracy."""
    kept = [(cut, tolerated) for cut, tolerated in by_cut.items() if tolerated is not None]
    return max(kept, key=lambda item: item[1].norm_loss, default=None)


def _tolerance_sentence(subject: str, by_cut: Mapping[str, Tolerated | None], tolerance: float) -> str:
    cuts, within = _plural(len(by_cut), "cut"), _plural(100 * tolerance, "point")
    best = _best(by_cut)
    if best is None:
        return f"Across {cuts}, {subject} keeps the accuracy within {within} at no level: even the smallest loses more."
    cut, kept = best
    return (f"Across {cuts}, {subject} loses up to {_percent(kept.norm_loss, 1)} of its norm at <= {within} of "
            f"accuracy, on cut `{cut}` (level {kept.level:g}: relative error {kept.rel_error:.3f}, "
            f"top-1 {_percent(kept.top1)}).")


def _recovery_sentence(gain: RecoveryGain) -> str:
    what = "every layer" if gain.target == ALL else f"layer `{gain.target}`"
    curve = gain.curve
    text = (f"Fine-tuning for {_plural(len(curve.top1) - 1, 'epoch')} after truncating {what} across `{gain.cut}` "
            f"at level {gain.level:g} takes top-1 from {_percent(curve.before)} to {_percent(curve.after)} "
            f"({_points(curve.change)})")
    if gain.control is None:
        return text + "; no control was measured, so how much of that repairs the truncation is unknown."
    return (text + f"; the same fine-tuning changes the untruncated model by {_points(gain.control.change)}, so it "
            f"repairs {_points(gain.gain)} of the truncation.")


def _decomposition_sentence(rows: Sequence[Decomposition], budget: float, baseline: float) -> str:
    ranked = sorted((row for row in rows if row.budget == budget), key=lambda row: -row.after)
    parts = ", ".join(f"`{row.method}` {_percent(row.after)} ({_percent(row.ratio, 1)} of the parameters)"
                      for row in ranked)
    return (f"At budget {budget:g}, top-1 after fine-tuning: {parts}; `{ranked[0].method}` keeps the most, "
            f"{_points(ranked[0].after - baseline)} from the baseline.")


def _config_value(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ", ".join(map(str, value)) or "(all)"
    return str(value)


# -- sections -------------------------------------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class _Summary:
    """Everything the report states, computed once."""

    baseline: Record
    tolerance: float
    one: dict[str, dict[str, Tolerated | None]]
    every: dict[str, Tolerated | None]
    gains: list[RecoveryGain]
    control: Curve | None
    rows: list[Decomposition]
    entropy: dict[str, tuple[str, float]]

    @property
    def top1(self) -> float:
        return number(self.baseline, "top1")

    @property
    def within(self) -> str:
        return _plural(100 * self.tolerance, "point")


def _header(records: Sequence[Record], config: StudyConfig) -> list[str]:
    return [f"# Compressibility study: `{config.model}` on `{config.dataset}`",
            f"Tensor-network compressibility of the conv kernels, after Singh, Jahromi & Orus (2024): "
            f"{_plural(len(records), 'record')} of the study with fingerprint `{config.fingerprint()}`. "
            "Accuracies are top-1 on the test set; a point is 0.01 of accuracy.",
            "## Configuration",
            _table(["field", "value"], [[name, _config_value(value)] for name, value in config.to_dict().items()])]


def _baseline_section(summary: _Summary) -> list[str]:
    baseline = summary.baseline
    loss = field(baseline, "loss")
    layers = field(baseline, "layers")
    return ["## Baseline",
            f"Top-1 {_percent(summary.top1)}, top-5 {_percent(number(baseline, 'top5'))}, loss "
            f"{'-' if loss is None else f'{loss:.4f}'} on {int(number(baseline, 'count')):,} test samples. The model "
            f"has {int(number(baseline, 'params')):,} parameters and {_plural(len(layers), 'dense conv layer')}: "
            + ", ".join(f"`{layer}`" for layer in layers) + "."]


def _findings(summary: _Summary) -> list[str]:
    sentences = [_tolerance_sentence(f"layer `{layer}`", by_cut, summary.tolerance)
                 for layer, by_cut in summary.one.items()]
    if summary.every:
        sentences.append(_tolerance_sentence("each layer, with all truncated at once,", summary.every,
                                             summary.tolerance))
    sentences += [_recovery_sentence(gain) for gain in summary.gains]
    budgets = dict.fromkeys(row.budget for row in summary.rows)
    sentences += [_decomposition_sentence(summary.rows, budget, summary.top1) for budget in budgets]
    return ["## Findings", "\n".join(f"- {sentence}" for sentence in sentences)] if sentences else []


def _spectra_section(summary: _Summary, figures: Collection[str]) -> list[str]:
    if not summary.entropy:
        return []
    lowest = "; ".join(f"`{layer}` across `{cut}`, {entropy:.3f} bits" for layer, (cut, entropy)
                       in summary.entropy.items())
    return ["## Spectra and entanglement entropy",
            f"Lowest entropy of each kernel: {lowest}. The lower the entropy across a cut, the fewer singular "
            "values hold the kernel's weight, and the better a truncation across that cut keeps it.",
            *_image(figures, "spectra"), *_image(figures, "entropy")]


def _kept_cell(kept: Tolerated | None) -> str:
    return "-" if kept is None else f"{_percent(kept.norm_loss, 1)} ({kept.rel_error:.3f})"


def _one_layer_table(summary: _Summary) -> list[str]:
    cuts = list(dict.fromkeys(cut for by_cut in summary.one.values() for cut in by_cut))
    rows = [[f"`{layer}`", *(_kept_cell(by_cut[cut]) if cut in by_cut else "" for cut in cuts)]
            for layer, by_cut in summary.one.items()]
    largest = []
    for cut in cuts:
        best = _best({layer: by_cut[cut] for layer, by_cut in summary.one.items() if cut in by_cut})
        largest.append("-" if best is None else f"{_kept_cell(best[1])} `{best[0]}`")
    return ["### One layer at a time",
            f"Each cell: the norm loss `1 - ||K~|| / ||K||` of the largest level up to which every level keeps top-1 "
            f"within {summary.within} of the baseline (at least {_percent(summary.top1 - summary.tolerance)}), and "
            "in parentheses its relative error `||K - K~|| / ||K||`; -: even the smallest level loses more; "
            "blank: not measured. The last row gives the layer of the largest.",
            _table(["layer", *cuts], [*rows, ["**largest**", *largest]])]


def _all_layers_table(summary: _Summary) -> list[str]:
    rows = [[cut, "-", "-", "-", "-", "-"] if kept is None else
            [cut, f"{kept.level:g}", _percent(kept.norm_loss, 1), f"{kept.rel_error:.3f}", _percent(kept.top1),
             _percent(kept.factored_params / kept.params, 1)]
            for cut, kept in summary.every.items()]
    return ["### All layers at once",
            f"The largest level up to which every level keeps top-1 within {summary.within} of the baseline, per cut; "
            "norm loss and relative error are the largest among the layers; the last column is the parameters of "
            "the layers stored as two factors across the cut, over their dense parameters.",
            _table(["cut", "level", "norm loss", "relative error", "top-1", "factored / dense"], rows)]


def _truncation_section(summary: _Summary, figures: Collection[str]) -> list[str]:
    if not summary.one and not summary.every:
        return []
    return ["## Truncation across a cut",
            *(_one_layer_table(summary) if summary.one else []),
            *(_all_layers_table(summary) if summary.every else []),
            *_image(figures, "accuracy")]


def _recovery_row(name: str, gain: RecoveryGain | None, curve: Curve, epochs: int) -> list[str]:
    accuracies = [_percent(top1) for top1 in curve.top1[1:]]
    where = ["", ""] if gain is None else [gain.cut, f"{gain.level:g}"]
    if gain is None or gain.control is None or gain.gain is None:
        gains = ["", ""]
    else:
        gains = [_points(gain.control.change), _points(gain.gain)]
    return [name, *where, _percent(curve.before), *accuracies, *[""] * (epochs - len(accuracies)),
            _points(curve.change), *gains]


def _recovery_section(summary: _Summary, figures: Collection[str]) -> list[str]:
    curves = [gain.curve for gain in summary.gains] + ([summary.control] if summary.control else [])
    if not curves:
        return []
    epochs = max(len(curve.top1) for curve in curves) - 1
    rows = [_recovery_row("control (not truncated)", None, summary.control, epochs)] if summary.control else []
    rows += [_recovery_row("every layer" if gain.target == ALL else f"`{gain.target}`", gain, gain.curve, epochs)
             for gain in summary.gains]
    header = ["truncated", "cut", "level", "before", *(f"epoch {epoch}" for epoch in range(1, epochs + 1)),
              "change", "control's change", "gain"]
    return ["## Recovery by fine-tuning",
            "Top-1 before fine-tuning and after each epoch; the gain is the change less the control's (the "
            "untruncated model fine-tuned the same way): what fine-tuning repairs of the truncation.",
            _table(header, rows), *_image(figures, "recovery")]


def _decomposition_section(summary: _Summary, figures: Collection[str]) -> list[str]:
    if not summary.rows:
        return []
    rows = [[f"`{row.method}`", f"{row.budget:g}", f"{row.params_after:,.0f} / {row.params_before:,.0f}",
             f"{row.ratio:.3f}", _percent(row.before), _percent(row.after), _points(row.after - row.before)]
            for row in summary.rows]
    header = ["method", "budget", "params after / before", "ratio", "top-1 before", "top-1 after", "change"]
    return ["## Decompositions at equal parameter budget",
            "The selected layers factorized at a parameter budget (params of those layers after / before), "
            "top-1 before and after fine-tuning.",
            _table(header, rows), *_image(figures, "decompositions")]


def _summary(records: Sequence[Record], config: object, tolerance: object) -> _Summary:
    """The summaries of the records, after checking the arguments of the report."""
    if not isinstance(config, StudyConfig):
        raise TypeError(f"config must be a StudyConfig, got {type(config).__name__}")
    baseline, tolerance = require_baseline(records), _check_tolerance(tolerance)
    return _Summary(baseline=baseline, tolerance=tolerance, one=tolerated_norm_loss(records, tolerance),
                    every=tolerated_norm_loss_all(records, tolerance), gains=recovery_gains(records),
                    control=control_curve(records), rows=decompositions(records), entropy=lowest_entropy(records))


def report_text(records: Sequence[Record], config: StudyConfig, figures: Collection[str] = (),
                tolerance: float = 0.01) -> str:
    """The Markdown of the report; ``figures`` are the stems of the figures drawn (linked in ``figures/``).

    Sections without data are left out.

    Raises
    ------
    ValueError
        Without a baseline, with a malformed record, or with a figure stem not in
        :data:`~tnlib_torch.study.figures.FIGURES`.
    """
    unknown = sorted(set(figures) - FIGURES.keys())
    if unknown:
        raise ValueError(f"unknown figure(s) {', '.join(unknown)}; the figures are {', '.join(FIGURES)}")
    summary = _summary(records, config, tolerance)
    sections = [_header(records, config), _baseline_section(summary), _findings(summary),
                _spectra_section(summary, figures), _truncation_section(summary, figures),
                _recovery_section(summary, figures), _decomposition_section(summary, figures)]
    return "\n\n".join(block for section in sections for block in section) + "\n"


def write_report(output: str | os.PathLike[str], records: Sequence[Record], config: StudyConfig,
                 tolerance: float = 0.01) -> list[Path]:
    """Write the figures into ``output/figures/`` and the report ``output/report.md``; the paths written.

    Each figure of :data:`~tnlib_torch.study.figures.FIGURES` with data is written as PNG and SVG
    (:func:`~tnlib_torch.study.figures.save`), then the report (:func:`report_text`) that links them,
    every file atomically.  The records and arguments are checked before anything is written.

    Parameters
    ----------
    output
        The folder; created if missing.
    records
        The records of the study (:func:`tnlib_torch.study.store.read_records`).
    config
        The study's configuration, shown in the report.
    tolerance
        The drop of top-1 accuracy a truncation may cause and still keep the accuracy (0.01: one point).

    Raises
    ------
    ValueError
        Without a baseline, or with a malformed record.
    """
    if not isinstance(output, (str, os.PathLike)):
        raise TypeError(f"output must be a path (str or os.PathLike), got {type(output).__name__}")
    _summary(records, config, tolerance)  # fail fast, before the figures are drawn
    drawn = {stem: draw(records) for stem, draw in FIGURES.items()}
    figures = {stem: figure for stem, figure in drawn.items() if figure is not None}
    text = report_text(records, config, figures, tolerance)
    output = Path(output)
    paths = [path for stem, figure in figures.items() for path in save(figure, output / FIGURE_FOLDER, stem)]
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output / REPORT, text)
    return [*paths, output / REPORT]
