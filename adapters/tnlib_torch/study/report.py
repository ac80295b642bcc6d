"""The report of a compressibility study: its figures and ``report.md``, from its records.

:func:`write_report` draws the figures of :mod:`tnlib_torch.study.figures` into ``output/figures/``
and writes ``output/report.md``, every file atomically: the configuration, the baseline, what limits
the findings (warnings: too few test samples for the tolerance, records without per-sample hits, a
fine-tuning that lowered the control or a decomposition, budgets missed, findings unavailable), and the
findings of :mod:`tnlib_torch.study.findings` stated in numbers with their uncertainty
(:mod:`tnlib_torch.study.statistics`: every accuracy with its Wilson interval, differences from the
baseline by the paired test on the same samples), with tables and the figures.  :func:`report_text`
is the Markdown alone.
"""

from __future__ import annotations

import collections
import os
import statistics
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

from tnlib_torch.study.config import StudyConfig
from tnlib_torch.study.figures import FIGURES, save
from tnlib_torch.study.findings import (
    MIN_LAYERS,
    RANK_FRACTION,
    Curve,
    CutSpectrum,
    Findings,
    Ranking,
    RecoveryGain,
    Tolerated,
    most_compressible,
    summarize,
)
from tnlib_torch.study.measure import ALL
from tnlib_torch.study.records import Record, field, number, sorted_cuts
from tnlib_torch.study.statistics import WITHIN, Correlation, PairedComparison, accuracy_interval
from tnlib_torch.study.store import atomic_write_text

__all__ = ["FIGURE_FOLDER", "REPORT", "report_text", "write_report"]

#: The report's file name, in the output folder.
REPORT = "report.md"
#: The folder of the figures, in the output folder.
FIGURE_FOLDER = "figures"

#: The caption of each figure of :data:`~tnlib_torch.study.figures.FIGURES`.
_CAPTIONS = {
    "spectra": "Singular values of each kernel across each cut, normalized by the largest, against the fraction "
               "of the full rank; each cut has its own marker and line style, and its points are shifted by up to "
               "0.024 along x so that equal spectra stay visible",
    "entropy": "Von Neumann entropy of each kernel across each cut over its maximum log2(min(rows, columns)) "
               "(color and first number), and in bits (second number)",
    "accuracy": "Top-1 accuracy against the norm lost to the truncation, per cut, on one accuracy axis; hollow "
                "points: levels that changed nothing",
    "predictors": "Accuracy drop of each one-layer truncation against the kernel's norm loss and against the data "
                  "error (shared drop axis)",
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


def _interval(top1: float, count: int) -> tuple[float, float]:
    """The Wilson interval of an accuracy measured on ``count`` samples."""
    return accuracy_interval(round(top1 * count), count)


def _accuracy(top1: float, count: int) -> str:
    """An accuracy and its 95% Wilson interval, e.g. ``98.67% [97.1, 99.4]``."""
    low, high = _interval(top1, count)
    return f"{_percent(top1)} [{100 * low:.1f}, {100 * high:.1f}]"


def _difference(comparison: PairedComparison | None) -> str:
    """A paired difference with its interval, e.g. ``-0.89 points [-2.02, +0.24]``; ``-`` without one."""
    if comparison is None:
        return "-"
    return f"{_points(comparison.difference)} [{100 * comparison.low:+.2f}, {100 * comparison.high:+.2f}]"


def _verdict(comparison: PairedComparison | None) -> str:
    """The paired test's verdict for a table; ``-`` without hits."""
    return "-" if comparison is None else comparison.verdict


def _rho(correlation: Correlation) -> str:
    return f"{correlation.rho:+.2f} [{correlation.low:+.2f}, {correlation.high:+.2f}]"


def _best(by_cut: Mapping[str, Tolerated | None]) -> tuple[str, Tolerated] | None:
    """The cut of the largest tolerated norm loss among truncations that save parameters; ``None`` if none.

    A truncation whose two factors hold as many parameters as the dense kernel compresses nothing, so
    it is not a best cut whatever norm it loses.
    """
    kept = [(cut, tolerated) for cut, tolerated in by_cut.items() if tolerated is not None and tolerated.saves]
    return max(kept, key=lambda item: item[1].norm_loss, default=None)


def _significance(tolerated: Tolerated, within: str) -> str:
    """What the paired test says of a tolerated truncation, as a clause."""
    comparison = tolerated.comparison
    if comparison is None:
        return "no paired test: the records hold no per-sample hits"
    if comparison.verdict == WITHIN:
        return f"the paired test shows it within {within}: difference {_difference(comparison)}"
    different = ("below the baseline" if comparison.difference < 0 else "above the baseline") \
        if comparison.p_value < 1 - comparison.confidence else "not significantly different from the baseline"
    return (f"undecided whether within {within}: the paired difference {_difference(comparison)} reaches past "
            f"-{within}; {different}, exact McNemar p = {comparison.p_value:.2g}")


def _tolerance_sentence(subject: str, by_cut: Mapping[str, Tolerated | None], within: str) -> str:
    cuts = _plural(len(by_cut), "truncatable cut")
    best = _best(by_cut)
    if best is None:
        if any(kept is not None for kept in by_cut.values()):
            return (f"Across {cuts}, {subject} keeps the accuracy within {within} only where the two factors save no "
                    "parameters.")
        return f"Across {cuts}, {subject} keeps the accuracy within {within} at no level: even the smallest loses more."
    cut, kept = best
    return (f"Across {cuts}, {subject} loses up to {_percent(kept.norm_loss, 1)} of its norm within {within} of "
            f"accuracy, on cut `{cut}` (level {kept.level:g}: relative error {kept.rel_error:.3f}, top-1 "
            f"{_accuracy(kept.top1, kept.count)}; {_significance(kept, within)}).")


def _recovery_sentence(gain: RecoveryGain) -> str:
    what = "every layer" if gain.target == ALL else f"layer `{gain.target}`"
    curve = gain.curve
    text = (f"Fine-tuning for {_plural(len(curve.top1) - 1, 'epoch')} after truncating {what} across `{gain.cut}` "
            f"at level {gain.level:g} takes top-1 from {_accuracy(curve.before, curve.count)} to "
            f"{_accuracy(curve.after, curve.count)} ({_points(curve.change)})")
    if gain.control is None:
        return text + "; no control was measured, so how much of that repairs the truncation is unknown."
    return (text + f"; the same fine-tuning changes the untruncated model by {_points(gain.control.change)}, so it "
            f"repairs {_points(gain.gain)} of the truncation.")


def _decomposition_sentence(ranking: Ranking) -> str:
    """The methods of one budget and mode ranked, and whether the first is ahead of the second on the samples."""
    phase = ranking.phase
    parts = ", ".join(f"`{row.method}` {_accuracy(getattr(row, phase), row.count)} "
                      f"({_percent(row.ratio, 1)} of the parameters{', short of the budget' * row.short_of_budget})"
                      for row in ranking.methods)
    why = " (fine-tuning lowered the control, so the methods are not ranked after it)" if phase == "before" else ""
    text = f"At budget {ranking.budget:g}, {ranking.mode}, top-1 {phase} fine-tuning{why}: {parts}."
    lead = ranking.lead
    if lead is not None:
        first, second = ranking.methods[0].method, ranking.methods[1].method
        verdict = ("significant" if lead.p_value < 1 - lead.confidence
                   else "not significant: the samples do not tell the two apart")
        text += (f" `{first}` less `{second}` on the same samples: {_difference(lead)} (exact McNemar "
                 f"p = {lead.p_value:.2g}, {verdict}).")
    return text


def _config_value(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, (list, tuple)):
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
            "Accuracies are top-1 on the test set, each with its 95% Wilson interval in brackets; a point is 0.01 "
            "of accuracy. A difference from the baseline is paired (the same test samples), with its 95% "
            "Agresti-Min interval from the samples one model gets right and the other wrong; it is within the "
            "tolerance when the whole interval is above minus the tolerance (a non-inferiority test), not within "
            "when the whole interval is below it, and undecided otherwise.",
            "## Configuration",
            _table(["field", "value"], [[name, _config_value(value)] for name, value in config.to_dict().items()])]


def _baseline_section(findings: Findings) -> list[str]:
    baseline = findings.baseline
    loss = field(baseline, "loss")
    layers = field(baseline, "layers")
    return ["## Baseline",
            f"Top-1 {_accuracy(findings.top1, findings.count)}, top-5 "
            f"{_accuracy(number(baseline, 'top5'), findings.count)}, loss "
            f"{'-' if loss is None else f'{loss:.4f}'} on {findings.count:,} test samples. The model "
            f"has {int(number(baseline, 'params')):,} parameters and {_plural(len(layers), 'dense conv layer')}: "
            + ", ".join(f"`{layer}`" for layer in layers) + "."]


def _warnings(findings: Findings) -> list[str]:
    """What limits the findings: too few test samples, missing hits, a fine-tuning that hurt, budgets missed."""
    warnings = []
    low, high = _interval(findings.top1, findings.count)
    half = max(findings.top1 - low, high - findings.top1)
    if half > findings.tolerance:
        warnings.append(f"**Too few test samples for the tolerance.** On {findings.count:,} samples the baseline's "
                        f"accuracy is known to within {100 * half:.1f} points (95%), more than the "
                        f"{_within(findings)} that \"keeps the accuracy\" allows: one sample is "
                        f"{100 / findings.count:.2f} points. Differences of a point are then mostly noise"
                        + ("; the paired tests below say which are resolved" if findings.has_hits else "")
                        + ". Evaluate on more samples (`--eval-samples`, or a larger test set).")
    if not findings.has_hits:
        warnings.append("**No per-sample hits.** The records were made before the study recorded which samples each "
                        "model gets right, so no paired test is available: \"within\" reads the point estimates "
                        "alone. Measure again in a new folder to get them.")
    if findings.control_lowered:
        control = findings.control
        warnings.append(f"**Fine-tuning lowered the control.** The untruncated model fine-tuned the same way went "
                        f"from {_accuracy(control.before, control.count)} to "
                        f"{_accuracy(control.after, control.count)}: the fine-tuning schedule itself costs "
                        "accuracy, so accuracies after fine-tuning mix repair and damage, and the decompositions "
                        "are ranked by their accuracy before it.")
    hurt = [row for row in findings.decompositions if row.lowered]
    if hurt:
        how = " (significantly, by the paired test)" if findings.has_hits else " (by more than a point)"
        warnings.append("**Fine-tuning lowered some decompositions.** " + ", ".join(
            f"`{row.method}` ({row.mode}) from {_accuracy(row.before, row.count)} to {_accuracy(row.after, row.count)}"
            for row in hurt) + how + ": the fine-tuning schedule does not suit them (a learning rate too high for "
            "the factorized layers?), so their accuracy after it says little about the decomposition.")
    short = [row for row in findings.decompositions if row.short_of_budget]
    if short:
        warnings.append("**Decompositions short of their budget.** " + ", ".join(
            f"`{row.method}` ({row.mode}) keeps {_percent(row.ratio, 1)} of the parameters at budget {row.budget:g}"
            for row in short) + ": fewer than 0.9 x budget, so they are not compared at equal parameters.")
    unavailable = list(findings.predictors.unavailable)
    if unavailable:
        warnings.append("**Unavailable.** " + "; ".join(unavailable) + ".")
    return ["## Warnings", "\n".join(f"- {warning}" for warning in warnings)] if warnings else []


def _overview_sentence(findings: Findings) -> str | None:
    """The one-layer results in one sentence: the median and range of each layer's best cut, and those cuts."""
    best = [_best(by_cut) for by_cut in findings.one_layer.values()]
    if len(best) < 2:
        return None
    kept = [pick for pick in best if pick is not None]
    within = _within(findings)
    if not kept:
        return (f"Truncated one at a time, none of the {len(best)} layers keeps top-1 within {within} across any cut "
                "that saves parameters.")
    losses = sorted(tolerated.norm_loss for _, tolerated in kept)
    counts = collections.Counter(cut for cut, _ in kept).most_common()
    subject = (f"each of the {len(best)} layers keeps" if len(kept) == len(best)
               else f"{len(kept)} of the {len(best)} layers keep")
    text = (f"Truncated one at a time across its best cut (of those whose two factors save parameters), {subject} "
            f"top-1 within {within} while losing a median {_percent(statistics.median(losses), 1)} of its norm "
            f"({_percent(losses[0], 1)} to {_percent(losses[-1], 1)}); the best cut is " + ", ".join(
                f"`{cut}` for {_plural(count, 'layer')}" for cut, count in counts) + ".")
    if findings.has_hits:
        shown = sum(_verdict(tolerated.comparison) == WITHIN for _, tolerated in kept)
        text += (f" The paired test shows {shown} of these {len(kept)} within {within}; the others are not "
                 "significant (undecided).")
    return text


def _untruncated_sentence(findings: Findings) -> str | None:
    if not findings.untruncated:
        return None
    return ("Cannot be truncated (every level keeps the full rank across the cut, so nothing was cut and the "
            "accuracy says nothing): " + "; ".join(
                f"`{layer}` across " + ", ".join(f"`{cut}`" for cut in cuts)
                for layer, cuts in findings.untruncated.items()) + ".")


def _predictor_sentences(findings: Findings) -> list[str]:
    predictors = findings.predictors
    sentences = []
    if predictors.norm_loss is not None:
        text = (f"What predicts the accuracy drop (baseline top-1 less top-1) of a one-layer truncation: across "
                f"{predictors.norm_loss.count} truncations that changed a kernel, Spearman's rho with the kernel's "
                f"norm loss is {_rho(predictors.norm_loss)}")
        if predictors.data_error is not None:
            text += f", with the data error (output error on the calibration data) {_rho(predictors.data_error)}"
        sentences.append(text + " (95% intervals, Fisher z; the truncations of one layer and cut at several levels "
                                "are not independent, so the intervals are optimistic).")
    difference = predictors.difference
    if difference is not None:
        if difference.high < 0:
            verdict = "the data error predicts the drop better"
        elif difference.low > 0:
            verdict = "the norm loss predicts the drop better"
        else:
            verdict = "the samples cannot tell which predicts better"
        sentences.append(f"The difference rho(norm loss) - rho(data error) is {_rho(difference)} over "
                         f"{difference.count} truncations ({difference.method}): {verdict}.")
    depth = findings.depth
    if depth.per_layer:
        medians = ", ".join(f"`{layer}` {_percent(loss, 1)}" for layer, loss in depth.per_layer.items())
        text = f"Tolerated norm loss by depth (median over each layer's truncatable cuts): {medians}"
        if depth.correlation is None:
            text += (f"; {_plural(len(depth.per_layer), 'layer')} are too few for a rank correlation with an "
                     f"interval (at least {MIN_LAYERS})." if len(depth.per_layer) < MIN_LAYERS
                     else "; constant, so no rank correlation.")
        else:
            text += f"; Spearman's rho with the layer's index {_rho(depth.correlation)}."
        sentences.append(text)
    return sentences


def _findings_section(findings: Findings) -> list[str]:
    within = _within(findings)
    overview = _overview_sentence(findings)
    sentences = [overview] if overview else []
    sentences += [_tolerance_sentence(f"layer `{layer}`", by_cut, within)
                  for layer, by_cut in findings.one_layer.items()]
    untruncated = _untruncated_sentence(findings)
    sentences += [untruncated] if untruncated else []
    if findings.all_layers:
        sentences.append(_tolerance_sentence("each layer, with all truncated at once,", findings.all_layers, within))
    sentences += _predictor_sentences(findings)
    sentences += [_recovery_sentence(gain) for gain in findings.gains]
    sentences += [_decomposition_sentence(ranking) for ranking in findings.rankings]
    return ["## Findings", "\n".join(f"- {sentence}" for sentence in sentences)] if sentences else []


def _spectrum_cell(item: CutSpectrum) -> str:
    entropy = "-" if item.normalized_entropy is None else f"{item.normalized_entropy:.2f}"
    mark = "" if item.truncatable else " (cannot)"
    return f"{entropy} / {_percent(item.norm_loss, 1)}{mark}"


def _levels(findings: Findings) -> str:
    """The levels of the spectra records, e.g. ``(0.1, 0.2, 0.3)``."""
    items = [item for by_cut in findings.spectra.values() for item in by_cut.values()]
    levels = sorted({level for item in items for level in item.levels})
    return "(" + ", ".join(f"{level:g}" for level in levels) + ")" if levels else "measured"


def _spectra_section(findings: Findings, figures: Collection[str]) -> list[str]:
    if not findings.spectra:
        return []
    fraction = _percent(RANK_FRACTION, 0)
    best = most_compressible(findings.spectra)
    lowest = "; ".join(f"`{layer}` across `{item.cut}` ({_percent(item.norm_loss, 1)})" if item else
                       f"`{layer}`: no cut can be truncated at the levels" for layer, item in best.items())
    cuts = list(dict.fromkeys(cut for by_cut in findings.spectra.values() for cut in by_cut))
    rows = [[f"`{layer}`", *(_spectrum_cell(by_cut[cut]) if cut in by_cut else "" for cut in cuts)]
            for layer, by_cut in findings.spectra.items()]
    return ["## Spectra and entanglement entropy",
            f"Most compressible cut of each kernel, the one that loses the least norm when truncated to {fraction} "
            f"of its full rank: {lowest}. Raw entropies do not compare across cuts: a cut with 3 rows (`h|oiw`, "
            "`w|oih`) has at most log2(3) = 1.585 bits, one with 64 rows 6 bits; each cell gives the entropy over "
            f"that maximum, log2(min(rows, columns)) (1: a flat spectrum), and the norm lost at {fraction} of the "
            f"rank; (cannot): at none of the levels {_levels(findings)} does the kept rank fall below the full rank "
            "across that cut (the spectrum is too flat), so it is not ranked.",
            _table(["layer", *cuts], rows),
            *_image(figures, "spectra"), *_image(figures, "entropy")]


def _kept_cell(kept: Tolerated | None) -> str:
    if kept is None:
        return "-"
    marks = ("" if kept.saves else " †") + ("" if kept.comparison is None or kept.comparison.verdict == WITHIN
                                            else " ?")
    return f"{_percent(kept.norm_loss, 1)} ({kept.rel_error:.3f}){marks}"


def _one_layer_table(findings: Findings) -> list[str]:
    cuts = sorted_cuts(cut for by_cut in [*findings.one_layer.values(), *findings.untruncated.values()]
                       for cut in by_cut)
    layers = list(dict.fromkeys([*findings.one_layer, *findings.untruncated]))

    def cell(layer: str, cut: str) -> str:
        if cut in findings.untruncated.get(layer, ()):
            return "="
        by_cut = findings.one_layer.get(layer, {})
        return _kept_cell(by_cut[cut]) if cut in by_cut else ""

    rows = [[f"`{layer}`", *(cell(layer, cut) for cut in cuts)] for layer in layers]
    largest = []
    for cut in cuts:
        best = _best({layer: by_cut[cut] for layer, by_cut in findings.one_layer.items() if cut in by_cut})
        largest.append("-" if best is None else f"{_kept_cell(best[1])} `{best[0]}`")
    return ["### One layer at a time",
            "Each cell: the norm loss `1 - ||K~|| / ||K||` of the largest level up to which every level that changes "
            f"the kernel keeps top-1 within {_within(findings)} of the baseline (at least "
            f"{_percent(findings.top1 - findings.tolerance)}), and in parentheses its relative error "
            "`||K - K~|| / ||K||`; ?: the paired test does not show it within (undecided); †: stored as two "
            "factors it has no fewer parameters than dense, so it saves nothing; -: even the smallest level loses "
            "more; =: cannot be truncated (every level keeps the full rank); blank: not measured. The last row "
            "gives the layer of the largest among truncations that save parameters.",
            _table(["layer", *cuts], [*rows, ["**largest**", *largest]]),
            *_one_layer_details(findings)]


def _tolerated_row(kept: Tolerated) -> list[str]:
    return [f"{kept.level:g}", _percent(kept.norm_loss, 1), f"{kept.rel_error:.3f}",
            _percent(kept.factored_params / kept.params, 1) + ("" if kept.saves else " †"),
            _accuracy(kept.top1, kept.count), _difference(kept.comparison), _verdict(kept.comparison)]


_TOLERATED_HEADER = ["level", "norm loss", "relative error", "factored / dense", "top-1", "difference", "paired test"]


def _one_layer_details(findings: Findings) -> list[str]:
    rows = [[f"`{layer}`", cut, *_tolerated_row(kept)] for layer, by_cut in findings.one_layer.items()
            for cut, kept in by_cut.items() if kept is not None]
    if not rows:
        return []
    return ["The tolerated truncations in full: the parameters stored as two factors over dense (†: no saving), "
            "top-1 with its interval, the paired difference from the baseline with its interval, and the paired "
            "test's verdict.",
            _table(["layer", "cut", *_TOLERATED_HEADER], rows)]


def _all_layers_table(findings: Findings) -> list[str]:
    rows = [[cut, *(["-"] * len(_TOLERATED_HEADER) if kept is None else _tolerated_row(kept))]
            for cut, kept in findings.all_layers.items()]
    return ["### All layers at once",
            f"The largest level up to which every level keeps top-1 within {_within(findings)} of the baseline, "
            "per cut (levels that change no kernel left out); norm loss and relative error are the largest among the "
            "layers; factored / dense is the parameters of the layers stored as two factors across the cut over "
            "their dense parameters (†: no saving).",
            _table(["cut", *_TOLERATED_HEADER], rows)]


def _truncation_section(findings: Findings, figures: Collection[str]) -> list[str]:
    if not findings.one_layer and not findings.all_layers and not findings.untruncated:
        return []
    return ["## Truncation across a cut",
            *(_one_layer_table(findings) if findings.one_layer or findings.untruncated else []),
            *(_all_layers_table(findings) if findings.all_layers else []),
            *_image(figures, "accuracy"), *_image(figures, "predictors")]


def _recovery_row(name: str, gain: RecoveryGain | None, curve: Curve, epochs: int) -> list[str]:
    accuracies = [_accuracy(top1, curve.count) for top1 in curve.top1[1:]]
    where = ["", ""] if gain is None else [gain.cut, f"{gain.level:g}"]
    if gain is None or gain.control is None or gain.gain is None:
        gains = ["", ""]
    else:
        gains = [_points(gain.control.change), _points(gain.gain)]
    return [name, *where, _accuracy(curve.before, curve.count), *accuracies, *[""] * (epochs - len(accuracies)),
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
    header = ["method", "budget", "params after / before", "ratio", "top-1 before", "top-1 after", "change"]
    blocks = ["## Decompositions at equal parameter budget",
              "The selected layers factorized at a parameter budget (params of those layers after / before; "
              "†: fewer than 0.9 x budget, not at equal parameters), top-1 before and after fine-tuning, one table "
              "per mode (data-free: fitted to the kernels; calibrated: to the layers' outputs on calibration data)."]
    for mode in dict.fromkeys(row.mode for row in findings.decompositions):
        rows = [[f"`{row.method}`", f"{row.budget:g}", f"{row.params_after:,.0f} / {row.params_before:,.0f}",
                 f"{row.ratio:.3f}" + (" †" if row.short_of_budget else ""), _accuracy(row.before, row.count),
                 _accuracy(row.after, row.count), _points(row.after - row.before)]
                for row in findings.decompositions if row.mode == mode]
        blocks += [f"### {mode.capitalize()}", _table(header, rows)]
    return [*blocks, *_image(figures, "decompositions")]


def _check_config(config: object) -> StudyConfig:
    if not isinstance(config, StudyConfig):
        raise TypeError(f"config must be a StudyConfig, got {type(config).__name__}")
    return config


def _markdown(findings: Findings, records: Sequence[Record], config: StudyConfig, figures: Collection[str]) -> str:
    """The report of ``findings``, linking the drawn ``figures``; sections without data are left out."""
    sections = [_header(records, config), _baseline_section(findings), _warnings(findings), _findings_section(findings),
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
