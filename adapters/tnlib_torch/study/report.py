"""The report of a compressibility study: its figures and ``report.md``, from its records.

:func:`write_report` draws the figures of :mod:`tnlib_torch.study.figures` into ``output/figures/``
and writes ``output/report.md``, every file atomically: the configuration, the baseline, and the
findings of :mod:`tnlib_torch.study.findings` stated in numbers, with tables and the figures.
:func:`report_text` is the Markdown alone.
"""

from __future__ import annotations

import collections
import os
import statistics
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

from tnlib_torch.study.config import StudyConfig
from tnlib_torch.study.figures import FIGURES, save
from tnlib_torch.study.findings import Curve, Decomposition, Findings, RecoveryGain, Tolerated, summarize
from tnlib_torch.study.measure import ALL
from tnlib_torch.study.records import Record, field, number
from tnlib_torch.study.store import atomic_write_text

__all__ = ["FIGURE_FOLDER", "REPORT", "report_text", "write_report"]

#: The report's file name, in the output folder.
REPORT = "report.md"
#: The folder of the figures, in the output folder.
FIGURE_FOLDER = "figures"

#: The caption of each figure of :data:`~tnlib_torch.study.figures.FIGURES`.
_CAPTIONS = {
    "spectra": "Singular values of each kernel across each cut, normalized by the largest",
    "entropy": "Von Neumann entropy (bits) of each kernel across each cut",
    "accuracy": "Top-1 accuracy against the norm lost to the truncation, per cut",
    "recovery": "Top-1 accuracy per epoch of fine-tuning (epoch 0: before)",
    "decompositions": "Decompositions at equal parameter budget, before and after fine-tuning",
}

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

def _within(findings: Findings) -> str:
    """The tolerance in words, e.g. ``"1 point"``."""
    return _plural(100 * findings.tolerance, "point")


def _header(records: Sequence[Record], config: StudyConfig) -> list[str]:
    return [f"# Compressibility study: `{config.model}` on `{config.dataset}`",
            f"Tensor-network compressibility of the conv kernels, after Singh, Jahromi & Orus (2024): "
            f"{_plural(len(records), 'record')} of the study with fingerprint `{config.fingerprint()}`. "
            "Accuracies are top-1 on the test set; a point is 0.01 of accuracy.",
            "## Configuration",
            _table(["field", "value"], [[name, _config_value(value)] for name, value in config.to_dict().items()])]


def _baseline_section(findings: Findings) -> list[str]:
    baseline = findings.baseline
    loss = field(baseline, "loss")
    layers = field(baseline, "layers")
    return ["## Baseline",
            f"Top-1 {_percent(findings.top1)}, top-5 {_percent(number(baseline, 'top5'))}, loss "
            f"{'-' if loss is None else f'{loss:.4f}'} on {int(number(baseline, 'count')):,} test samples. The model "
            f"has {int(number(baseline, 'params')):,} parameters and {_plural(len(layers), 'dense conv layer')}: "
            + ", ".join(f"`{layer}`" for layer in layers) + "."]


def _overview_sentence(findings: Findings) -> str | None:
    """The one-layer results in one sentence: the median and range of each layer's best cut, and those cuts."""
    best = [_best(by_cut) for by_cut in findings.one_layer.values()]
    if len(best) < 2:
        return None
    kept = [pick for pick in best if pick is not None]
    within = _within(findings)
    if not kept:
        return f"Truncated one at a time, none of the {len(best)} layers keeps top-1 within {within} across any cut."
    losses = sorted(tolerated.norm_loss for _, tolerated in kept)
    counts = collections.Counter(cut for cut, _ in kept).most_common()
    subject = (f"each of the {len(best)} layers keeps" if len(kept) == len(best)
               else f"{len(kept)} of the {len(best)} layers keep")
    return (f"Truncated one at a time across its best cut, {subject} top-1 within {within} while losing a median "
            f"{_percent(statistics.median(losses), 1)} of its norm ({_percent(losses[0], 1)} to "
            f"{_percent(losses[-1], 1)}); the best cut is " + ", ".join(
                f"`{cut}` for {_plural(count, 'layer')}" for cut, count in counts) + ".")


def _findings_section(findings: Findings) -> list[str]:
    overview = _overview_sentence(findings)
    sentences = [overview] if overview else []
    sentences += [_tolerance_sentence(f"layer `{layer}`", by_cut, findings.tolerance)
                  for layer, by_cut in findings.one_layer.items()]
    if findings.all_layers:
        sentences.append(_tolerance_sentence("each layer, with all truncated at once,", findings.all_layers,
                                             findings.tolerance))
    sentences += [_recovery_sentence(gain) for gain in findings.gains]
    budgets = dict.fromkeys(row.budget for row in findings.decompositions)
    sentences += [_decomposition_sentence(findings.decompositions, budget, findings.top1) for budget in budgets]
    return ["## Findings", "\n".join(f"- {sentence}" for sentence in sentences)] if sentences else []


def _spectra_section(findings: Findings, figures: Collection[str]) -> list[str]:
    if not findings.lowest_entropy:
        return []
    lowest = "; ".join(f"`{layer}` across `{cut}`, {entropy:.3f} bits" for layer, (cut, entropy)
                       in findings.lowest_entropy.items())
    return ["## Spectra and entanglement entropy",
            f"Lowest entropy of each kernel: {lowest}. The lower the entropy across a cut, the fewer singular "
            "values hold the kernel's weight, and the better a truncation across that cut keeps it.",
            *_image(figures, "spectra"), *_image(figures, "entropy")]


def _kept_cell(kept: Tolerated | None) -> str:
    return "-" if kept is None else f"{_percent(kept.norm_loss, 1)} ({kept.rel_error:.3f})"


def _one_layer_table(findings: Findings) -> list[str]:
    cuts = list(dict.fromkeys(cut for by_cut in findings.one_layer.values() for cut in by_cut))
    rows = [[f"`{layer}`", *(_kept_cell(by_cut[cut]) if cut in by_cut else "" for cut in cuts)]
            for layer, by_cut in findings.one_layer.items()]
    largest = []
    for cut in cuts:
        best = _best({layer: by_cut[cut] for layer, by_cut in findings.one_layer.items() if cut in by_cut})
        largest.append("-" if best is None else f"{_kept_cell(best[1])} `{best[0]}`")
    return ["### One layer at a time",
            "Each cell: the norm loss `1 - ||K~|| / ||K||` of the largest level up to which every level keeps top-1 "
            f"within {_within(findings)} of the baseline (at least "
            f"{_percent(findings.top1 - findings.tolerance)}), and in parentheses its relative error "
            "`||K - K~|| / ||K||`; -: even the smallest level loses more; "
            "blank: not measured. The last row gives the layer of the largest.",
            _table(["layer", *cuts], [*rows, ["**largest**", *largest]])]


def _all_layers_table(findings: Findings) -> list[str]:
    rows = [[cut, "-", "-", "-", "-", "-"] if kept is None else
            [cut, f"{kept.level:g}", _percent(kept.norm_loss, 1), f"{kept.rel_error:.3f}", _percent(kept.top1),
             _percent(kept.factored_params / kept.params, 1)]
            for cut, kept in findings.all_layers.items()]
    return ["### All layers at once",
            f"The largest level up to which every level keeps top-1 within {_within(findings)} of the baseline, "
            "per cut; "
            "norm loss and relative error are the largest among the layers; the last column is the parameters of "
            "the layers stored as two factors across the cut, over their dense parameters.",
            _table(["cut", "level", "norm loss", "relative error", "top-1", "factored / dense"], rows)]


def _truncation_section(findings: Findings, figures: Collection[str]) -> list[str]:
    if not findings.one_layer and not findings.all_layers:
        return []
    return ["## Truncation across a cut",
            *(_one_layer_table(findings) if findings.one_layer else []),
            *(_all_layers_table(findings) if findings.all_layers else []),
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


def _recovery_section(findings: Findings, figures: Collection[str]) -> list[str]:
    curves = [gain.curve for gain in findings.gains] + ([findings.control] if findings.control else [])
    if not curves:
        return []
    epochs = max(len(curve.top1) for curve in curves) - 1
    rows = [_recovery_row("control (not truncated)", None, findings.control, epochs)] if findings.control else []
    rows += [_recovery_row("every layer" if gain.target == ALL else f"`{gain.target}`", gain, gain.curve, epochs)
             for gain in findings.gains]
    header = ["truncated", "cut", "level", "before", *(f"epoch {epoch}" for epoch in range(1, epochs + 1)),
              "change", "control's change", "gain"]
    return ["## Recovery by fine-tuning",
            "Top-1 before fine-tuning and after each epoch; the gain is the change less the control's (the "
            "untruncated model fine-tuned the same way): what fine-tuning repairs of the truncation.",
            _table(header, rows), *_image(figures, "recovery")]


def _decomposition_section(findings: Findings, figures: Collection[str]) -> list[str]:
    if not findings.decompositions:
        return []
    rows = [[f"`{row.method}`", f"{row.budget:g}", f"{row.params_after:,.0f} / {row.params_before:,.0f}",
             f"{row.ratio:.3f}", _percent(row.before), _percent(row.after), _points(row.after - row.before)]
            for row in findings.decompositions]
    header = ["method", "budget", "params after / before", "ratio", "top-1 before", "top-1 after", "change"]
    return ["## Decompositions at equal parameter budget",
            "The selected layers factorized at a parameter budget (params of those layers after / before), "
            "top-1 before and after fine-tuning.",
            _table(header, rows), *_image(figures, "decompositions")]


def _check_config(config: object) -> StudyConfig:
    if not isinstance(config, StudyConfig):
        raise TypeError(f"config must be a StudyConfig, got {type(config).__name__}")
    return config


def _markdown(findings: Findings, records: Sequence[Record], config: StudyConfig, figures: Collection[str]) -> str:
    """The report of ``findings``, linking the drawn ``figures``; sections without data are left out."""
    sections = [_header(records, config), _baseline_section(findings), _findings_section(findings),
                _spectra_section(findings, figures), _truncation_section(findings, figures),
                _recovery_section(findings, figures), _decomposition_section(findings, figures)]
    return "\n\n".join(block for section in sections for block in section) + "\n"


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
    config = _check_config(config)
    return _markdown(summarize(records, tolerance), records, config, figures)


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
    config = _check_config(config)
    findings = summarize(records, tolerance)  # fails fast, before the figures are drawn
    drawn = {stem: draw(records) for stem, draw in FIGURES.items()}
    figures = {stem: figure for stem, figure in drawn.items() if figure is not None}
    text = _markdown(findings, records, config, figures)
    output = Path(output)
    paths = [path for stem, figure in figures.items() for path in save(figure, output / FIGURE_FOLDER, stem)]
    output.mkdir(parents=True, exist_ok=True)
    atomic_write_text(output / REPORT, text)
    return [*paths, output / REPORT]
