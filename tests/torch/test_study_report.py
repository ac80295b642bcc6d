"""The study's figures and report, from synthetic records whose findings are known in advance."""

from __future__ import annotations

import math
import os
import re
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("matplotlib")

from tnlib_torch.study.config import StudyConfig  # noqa: E402
from tnlib_torch.study.figures import (  # noqa: E402
    FIGURES,
    accuracy_figure,
    decomposition_figure,
    entropy_figure,
    predictors_figure,
    recovery_figure,
    save,
    spectra_figure,
)
from tnlib_torch.study.findings import (  # noqa: E402
    MIN_LAYERS,
    Tolerated,
    control_curve,
    cut_spectra,
    decompositions,
    depth_trend,
    drop_predictors,
    most_compressible,
    rank_decompositions,
    recovery_gains,
    summarize,
    tolerated_norm_loss,
    tolerated_norm_loss_all,
    untruncated_cuts,
)
from tnlib_torch.study.hits import pack_hits  # noqa: E402
from tnlib_torch.study.report import FIGURE_FOLDER, REPORT, report_text, write_report  # noqa: E402
from tnlib_torch.study.statistics import paired_comparison  # noqa: E402

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CUTS = ("o|ihw", "oi|hw")
LEVELS = (0.1, 0.3, 0.5)

#: Top-1 after truncating one layer across one cut at each of LEVELS; the baseline is 0.9.
SWEEP_TOP1 = {
    ("conv1", "o|ihw"): (0.899, 0.89, 0.80),  # 0.3 drops exactly one point: still within
    ("conv1", "oi|hw"): (0.90, 0.87, 0.895),  # 0.5 passes after 0.3 failed: only 0.1 is tolerated
    ("conv2", "o|ihw"): (0.85, 0.895, 0.80),  # even the smallest level loses more
    ("conv2", "oi|hw"): (0.90, 0.90, 0.899),  # every level within
}
#: Top-1 with every layer truncated at once.
SWEEP_ALL_TOP1 = {"o|ihw": (0.895, 0.70, 0.5), "oi|hw": (0.85, 0.6, 0.4)}


def rel_error(level: float, layer: str) -> float:
    """The realized relative error, a little under the level, different per layer."""
    return level * (0.95 if layer == "conv1" else 0.9)


def norm_loss(level: float, layer: str) -> float:
    """``1 - ||K~|| / ||K||`` of a truncation with that relative error: ``||K~||^2 = ||K||^2 - ||K - K~||^2``."""
    return 1 - math.sqrt(1 - rel_error(level, layer) ** 2)


def metrics(top1: float) -> dict:
    return {"top1": top1, "top5": 0.99, "loss": 0.3, "count": 1000}


def trained(before: float, history: list[float], epochs: int = 2) -> dict:
    return {"epochs": epochs, "lr": 0.01, "seed": 0, "before": metrics(before),
            "history": [{"epoch": i + 1, "lr": 0.01, "train_loss": 0.5, "train_top1": 0.8, **metrics(top1)}
                        for i, top1 in enumerate(history)],
            "after": metrics(history[-1])}


def layer_entry(layer: str, level: float) -> dict:
    return {"layer": layer, "shape": [8, 4, 3, 3], "rank": 4, "rel_error": rel_error(level, layer),
            "norm_loss": norm_loss(level, layer), "params": 296, "factored_params": 200}


BASELINE = {"key": ["baseline"], "params": 5000, "layers": ["conv1", "conv2"], **metrics(0.9)}
def bits(values: list[float]) -> float:
    """The von Neumann entropy (bits) of the Schmidt weights of ``values``."""
    weights = np.square(values) / np.sum(np.square(values))
    weights = weights[weights > 0]
    return float(-(weights * np.log2(weights)).sum())


#: (layer, cut, singular values, matrix shape, rank needed at level 0.3).
SPECTRA_CASES = [("conv1", "o|ihw", [4.0, 2.0, 1.0, 0.0], [4, 18], 2),   # full rank 4, 3 non-zero, truncatable
                 ("conv1", "oi|hw", [3.0, 3.0, 2.0], [3, 24], 3),        # every level keeps all 3: cannot truncate
                 ("conv2", "o|ihw", [5.0, 1.0, 0.1], [3, 24], 1),
                 ("conv2", "oi|hw", [2.0, 2.0, 2.0, 2.0], [4, 18], 4)]   # flat: entropy 2 bits = log2(4), the max
SPECTRA = [
    {"key": ["spectrum", layer, cut], "layer": layer, "cut": cut, "shape": [8, 4, 3, 3], "matrix_shape": shape,
     "singular_values": values, "norm": float(np.linalg.norm(values)), "rank": sum(v > 0 for v in values),
     "entropy": bits(values), "renyi2": 1.0, "levels": [0.3], "ranks_for_levels": [needed]}
    for layer, cut, values, shape, needed in SPECTRA_CASES
]
SWEEPS = [
    {"key": ["sweep", layer, cut, level], "layer": layer, "cut": cut, "level": level, "shape": [8, 4, 3, 3],
     "rank": 3, "rel_error": rel_error(level, layer), "norm_loss": norm_loss(level, layer), "params": 296,
     "factored_params": 140, **metrics(top1)}
    for (layer, cut), accuracies in SWEEP_TOP1.items() for level, top1 in zip(LEVELS, accuracies)
]
SWEEPS_ALL = [
    {"key": ["sweep_all", cut, level], "cut": cut, "level": level,
     "layers": [layer_entry("conv1", level), layer_entry("conv2", level)], "params": 592, "factored_params": 400,
     **metrics(top1)}
    for cut, accuracies in SWEEP_ALL_TOP1.items() for level, top1 in zip(LEVELS, accuracies)
]
RECOVERIES = [
    {"key": ["recovery", "conv1", "o|ihw", 0.5], "target": "conv1", "cut": "o|ihw", "level": 0.5,
     "layers": [layer_entry("conv1", 0.5)], **trained(0.80, [0.86, 0.88])},
    {"key": ["recovery", "all", "o|ihw", 0.5], "target": "all", "cut": "o|ihw", "level": 0.5,
     "layers": [layer_entry("conv1", 0.5), layer_entry("conv2", 0.5)], **trained(0.5, [0.8, 0.85])},
]
CONTROL = {"key": ["recovery_control"], **trained(0.9, [0.905, 0.91])}
DECOMPOSITIONS = [
    {"key": ["decomposition", method, 0.5], "method": method, "budget": 0.5, "layers": [], "params_before": 592,
     "params_after": after, "ratio": after / 592, "model_params_before": 5000, "model_params_after": 4700,
     **trained(before, [after_top1], epochs=1)}
    for method, after, before, after_top1 in [("cp", 290, 0.6, 0.85), ("tucker2", 296, 0.7, 0.87)]
]
RECORDS = [BASELINE, *SPECTRA, *SWEEPS, *SWEEPS_ALL, *RECOVERIES, CONTROL, *DECOMPOSITIONS]


def tolerated(layer: str, level: float, top1: float, comparison=None) -> Tolerated:
    return Tolerated(level=level, norm_loss=norm_loss(level, layer), rel_error=rel_error(level, layer), top1=top1,
                     count=1000, params=296, factored_params=140, saves=True, comparison=comparison)


BASE_HITS = np.arange(1000) < 900  # the baseline gets the first 900 of 1000 samples right


def hits_of(top1: float) -> np.ndarray:
    """Hits with ``top1`` of 1000 right: the baseline's, less its last right ones or plus its first wrong ones."""
    right = round(1000 * top1)
    return np.arange(1000) < right


def with_hits(record: dict) -> dict:
    """``record`` with the per-sample hits of each of its evaluations (itself, ``before``, ``after``)."""
    record = dict(record)
    for name in ("before", "after"):
        if name in record:
            record[name] = {**record[name], "hits": pack_hits(hits_of(record[name]["top1"]))}
    if "top1" in record:
        record["hits"] = pack_hits(hits_of(record["top1"]))
    return record


#: RECORDS as the study records them now, with per-sample hits.
HIT_RECORDS = [with_hits(record) for record in RECORDS]


def sweep(layer: str, cut: str, level: float, top1: float, **fields) -> dict:
    """A one-layer truncation record, with hits."""
    return with_hits({**SWEEPS[0], "key": ["sweep", layer, cut, level], "layer": layer, "cut": cut, "level": level,
                      "rel_error": rel_error(level, layer), "norm_loss": norm_loss(level, layer), "top1": top1,
                      **fields})


def leftovers(folder: Path) -> list[str]:
    """Temporary files of atomic writes left anywhere under ``folder``."""
    return [name for _, _, names in os.walk(folder) for name in names if name.startswith(".") or name.endswith(".tmp")]


@pytest.fixture(scope="module")
def config() -> StudyConfig:
    return StudyConfig(cuts=CUTS, levels=LEVELS)


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory, config: StudyConfig) -> tuple[Path, list[Path]]:
    """The report of RECORDS, written once for the tests that read it."""
    output = tmp_path_factory.mktemp("study") / "report"
    return output, write_report(output, RECORDS, config)


# -- summaries ------------------------------------------------------------------------------------------------------

def test_tolerated_norm_loss_per_layer_and_cut():
    assert tolerated_norm_loss(RECORDS) == {
        "conv1": {"o|ihw": tolerated("conv1", 0.3, 0.89), "oi|hw": tolerated("conv1", 0.1, 0.90)},
        "conv2": {"o|ihw": None, "oi|hw": tolerated("conv2", 0.5, 0.899)},
    }


def test_a_tighter_tolerance_tolerates_less():
    assert tolerated_norm_loss(RECORDS, tolerance=0.005)["conv1"] == {"o|ihw": tolerated("conv1", 0.1, 0.899),
                                                                      "oi|hw": tolerated("conv1", 0.1, 0.90)}
    assert tolerated_norm_loss(RECORDS, tolerance=0.2)["conv2"]["o|ihw"] == tolerated("conv2", 0.5, 0.80)


def test_tolerated_norm_loss_all_takes_the_largest_layer():
    every = tolerated_norm_loss_all(RECORDS)
    assert every == {"o|ihw": Tolerated(level=0.1, norm_loss=norm_loss(0.1, "conv1"), rel_error=rel_error(0.1, "conv1"),
                                        top1=0.895, count=1000, params=592, factored_params=400, saves=True,
                                        comparison=None),
                     "oi|hw": None}


def test_with_hits_the_tolerated_truncation_carries_the_paired_test():
    found = tolerated_norm_loss(HIT_RECORDS)
    # conv1 o|ihw at 0.3: 10 of the baseline's 900 right samples lost, none gained: -1 point, not shown within
    kept = found["conv1"]["o|ihw"]
    assert kept.comparison == paired_comparison(hits_of(0.89), BASE_HITS)
    assert (kept.comparison.lost, kept.comparison.gained, kept.comparison.verdict) == (10, 0, "undecided")
    # conv2 oi|hw at 0.5: one sample lost of 1000, within one point
    assert found["conv2"]["oi|hw"].comparison.verdict == "within"
    assert tolerated_norm_loss(RECORDS)["conv1"]["o|ihw"].comparison is None  # older records: no hits


def test_hits_of_other_samples_do_not_compare():
    records = [with_hits(BASELINE), {**with_hits(SWEEPS[0]), "count": 8, "hits": pack_hits(np.ones(8, bool))}]
    with pytest.raises(ValueError, match="evaluated on 8 test samples, the baseline on 1000"):
        tolerated_norm_loss(records)


def test_no_op_levels_are_left_out_and_a_cut_no_level_changes_cannot_be_truncated():
    records = [BASELINE,
               sweep("conv1", "h|oiw", 0.1, 0.9, noop=True), sweep("conv1", "h|oiw", 0.3, 0.9, noop=True),
               sweep("conv1", "o|ihw", 0.1, 0.9, noop=True), sweep("conv1", "o|ihw", 0.3, 0.85)]
    assert tolerated_norm_loss(records) == {"conv1": {"o|ihw": None}}  # the only change loses 5 points
    assert untruncated_cuts(records) == {"conv1": ["h|oiw"]}
    # older records without noop: a truncation with relative error 0 changed nothing
    old = [BASELINE, {**SWEEPS[0], "rel_error": 0.0, "norm_loss": 0.0}]
    assert untruncated_cuts(old) == {"conv1": ["o|ihw"]} and tolerated_norm_loss(old) == {}


def test_a_truncation_that_saves_no_parameters_is_flagged_and_not_a_best_cut(config: StudyConfig):
    records = [BASELINE, sweep("conv1", "o|ihw", 0.5, 0.9, factored_params=400),
               sweep("conv1", "oi|hw", 0.1, 0.9, saves=True)]
    found = tolerated_norm_loss(records)["conv1"]
    assert found["o|ihw"].saves is False and found["oi|hw"].saves is True
    text = report_text(records, config)
    assert f"| `conv1` | {100 * norm_loss(0.5, 'conv1'):.1f}% ({rel_error(0.5, 'conv1'):.3f}) † |" in text
    best = f"loses up to {100 * norm_loss(0.1, 'conv1'):.1f}% of its norm within 1 point of accuracy, on cut `oi|hw`"
    assert best in text


def test_recovery_gain_is_the_recovery_less_the_control_change():
    one, every = recovery_gains(RECORDS)
    assert (one.target, one.cut, one.level, every.target) == ("conv1", "o|ihw", 0.5, "all")
    assert one.curve.top1 == (0.80, 0.86, 0.88) and one.control == control_curve(RECORDS)
    assert one.control.top1 == (0.9, 0.905, 0.91)
    assert one.curve.change == pytest.approx(0.08) and one.control.change == pytest.approx(0.01)
    assert one.gain == pytest.approx(0.07) and every.gain == pytest.approx(0.34)


def test_recovery_without_a_control_has_no_gain():
    (gain, _) = recovery_gains([record for record in RECORDS if record is not CONTROL])
    assert gain.control is None and gain.gain is None and gain.curve.change == pytest.approx(0.08)


def test_a_control_fine_tuned_otherwise_does_not_compare():
    with pytest.raises(ValueError, match="fine-tuned with .*'lr': 0.01.*'lr': 0.1.*do not compare"):
        recovery_gains([*RECOVERIES, {**CONTROL, "lr": 0.1}])


def test_decompositions():
    cp, tucker2 = decompositions(RECORDS)
    assert (cp.method, cp.budget, cp.mode, cp.params_before, cp.params_after, cp.before, cp.after, cp.count) == (
        "cp", 0.5, "data-free", 592, 290, 0.6, 0.85, 1000)
    assert tucker2.ratio == 296 / 592 and not tucker2.short_of_budget
    short = decompositions([{**DECOMPOSITIONS[0], "params_after": 260, "ratio": 260 / 592, "mode": "calibrated"}])
    assert short[0].short_of_budget and short[0].mode == "calibrated"  # 0.439 < 0.9 x 0.5


def test_decompositions_are_ranked_with_a_paired_test_of_the_lead():
    (ranking,) = rank_decompositions(HIT_RECORDS)
    assert (ranking.phase, [row.method for row in ranking.methods]) == ("after", ["tucker2", "cp"])
    # tucker2 gets 870 samples right, cp the first 850 of them: 20 discordant pairs, all for tucker2
    assert (ranking.lead.gained, ranking.lead.lost) == (20, 0)
    assert ranking.lead.p_value == pytest.approx(2 * 0.5 ** 20)
    (before,) = rank_decompositions(HIT_RECORDS, after=False)
    assert [row.method for row in before.methods] == ["tucker2", "cp"] and before.phase == "before"
    assert rank_decompositions(RECORDS)[0].lead is None  # no hits


def test_spectra_are_normalized_and_flat_cuts_cannot_be_truncated():
    spectra = cut_spectra(RECORDS)
    conv1, conv2 = spectra["conv1"], spectra["conv2"]
    assert conv1["o|ihw"].max_entropy == pytest.approx(2.0) and conv1["o|ihw"].full_rank == 4
    assert conv1["o|ihw"].normalized_entropy == pytest.approx(bits([4, 2, 1]) / 2)
    assert conv2["oi|hw"].normalized_entropy == pytest.approx(1.0)  # flat at full rank: the maximum
    # a quarter of the full rank: 1 of 4 (or of 3) singular values kept
    assert conv1["o|ihw"].norm_loss == pytest.approx(1 - math.sqrt(16 / 21))
    assert conv2["o|ihw"].norm_loss == pytest.approx(1 - math.sqrt(25 / 26.01))
    assert [conv1["oi|hw"].truncatable, conv2["oi|hw"].truncatable, conv2["o|ihw"].truncatable] == [False, False, True]
    best = most_compressible(spectra)
    assert (best["conv1"].cut, best["conv2"].cut) == ("o|ihw", "o|ihw")
    flat_only = [BASELINE, SPECTRA[1]]
    assert most_compressible(cut_spectra(flat_only)) == {"conv1": None}
    one_row = {**SPECTRA[0], "matrix_shape": [1, 72], "singular_values": [3.0], "entropy": 0.0, "ranks_for_levels": [1]}
    assert cut_spectra([BASELINE, one_row])["conv1"]["o|ihw"].normalized_entropy is None


def test_summarize_gathers_every_finding_at_its_tolerance():
    findings = summarize(RECORDS, tolerance=0.005)
    assert findings.baseline is BASELINE and findings.top1 == 0.9 and findings.tolerance == 0.005
    assert findings.one_layer == tolerated_norm_loss(RECORDS, 0.005) != tolerated_norm_loss(RECORDS)
    assert findings.all_layers == tolerated_norm_loss_all(RECORDS, 0.005)
    assert findings.gains == recovery_gains(RECORDS) and findings.control == control_curve(RECORDS)
    assert findings.decompositions == decompositions(RECORDS) and findings.rankings == rank_decompositions(RECORDS)
    assert findings.spectra == cut_spectra(RECORDS) and findings.untruncated == untruncated_cuts(RECORDS)
    assert findings.predictors == drop_predictors(RECORDS) and not findings.has_hits
    assert summarize(HIT_RECORDS).has_hits


# -- validation -----------------------------------------------------------------------------------------------------

def test_a_missing_baseline_is_a_clear_error(tmp_path: Path, config: StudyConfig):
    without = [record for record in RECORDS if record is not BASELINE]
    for call in (lambda: tolerated_norm_loss(without), lambda: tolerated_norm_loss_all(without),
                 lambda: report_text(without, config), lambda: write_report(tmp_path / "out", without, config)):
        with pytest.raises(ValueError, match=r"no baseline \(a record with key \['baseline'\]\)"):
            call()
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("records, error, message", [
    ("records", TypeError, "records must be a list"),
    ([BASELINE, 3], TypeError, r"records\[1\] must be a record"),
    ([BASELINE, {"top1": 0.5}], ValueError, r"records\[1\] has no valid key"),
    ([BASELINE, {**SWEEPS[0], "top1": None}], ValueError, r"'sweep', 'conv1', 'o\|ihw', 0.1\] has \['top1'\] = None"),
    ([BASELINE, {k: v for k, v in SWEEPS[0].items() if k != "norm_loss"}], ValueError, r"has no entry \['norm_loss'\]"),
])
def test_malformed_records_are_refused_naming_the_record(records, error, message):
    with pytest.raises(error, match=message):
        tolerated_norm_loss(records)


def test_bad_arguments_are_refused(tmp_path: Path, config: StudyConfig):
    with pytest.raises(ValueError, match="tolerance must be in"):
        tolerated_norm_loss(RECORDS, tolerance=1.5)
    with pytest.raises(TypeError, match="config must be a StudyConfig"):
        report_text(RECORDS, config.to_dict())
    with pytest.raises(ValueError, match="unknown figure"):
        report_text(RECORDS, config, figures=["pie"])
    with pytest.raises(ValueError, match="singular values"):
        spectra_figure([{**SPECTRA[0], "singular_values": [1.0, -1.0]}])
    with pytest.raises(ValueError, match="plain file name"):
        save(recovery_figure(RECORDS), tmp_path, "../escape")


# -- figures --------------------------------------------------------------------------------------------------------

def test_figures_draw_what_the_records_hold():
    spectra = spectra_figure(RECORDS)
    assert [ax.get_title() for ax in spectra.axes] == ["conv1", "conv2"]
    assert [len(ax.lines) for ax in spectra.axes] == [2, 2]
    assert list(spectra.axes[0].lines[0].get_ydata()) == [1.0, 0.5, 0.25]  # s_k / s_1, the zero left out
    one, other = spectra.axes[0].lines  # equal spectra stay apart: other marker, style, and a small shift in k
    assert one.get_marker() != other.get_marker() and one.get_linestyle() != other.get_linestyle()
    assert list(one.get_xdata() + 0.004) == pytest.approx([1 / 4, 2 / 4, 3 / 4])  # k / full rank, shifted
    assert other.get_xdata()[0] - one.get_xdata()[0] == pytest.approx(1 / 3 - 1 / 4 + 0.008)
    texts = [text.get_text() for text in entropy_figure(RECORDS).axes[0].texts]
    assert texts == [f"{bits(values) / math.log2(min(shape)):.2f}\n{bits(values):.2f} b"
                     for _, _, values, shape, _ in SPECTRA_CASES]
    accuracy = accuracy_figure(RECORDS)
    assert [ax.get_title() for ax in accuracy.axes] == ["cut o|ihw", "cut oi|hw"]
    assert accuracy.axes[0].get_ylim() == accuracy.axes[1].get_ylim()  # one accuracy axis for the panels compared
    predictors = predictors_figure(RECORDS)
    assert [len(ax.collections) for ax in predictors.axes] == [2, 0]  # no data error recorded
    assert predictors.axes[0].get_ylim() == predictors.axes[1].get_ylim()
    recovery = recovery_figure(RECORDS).axes[0]
    assert [list(line.get_xdata()) for line in recovery.lines[:3]] == [[0, 1, 2]] * 3
    labels = [label.get_text() for label in decomposition_figure(RECORDS).axes[0].get_xticklabels()]
    assert labels == ["cp\ndata-free\nbudget 0.5\nratio 0.490", "tucker2\ndata-free\nbudget 0.5\nratio 0.500"]


def test_figures_and_findings_follow_the_model_not_the_order_of_recording(config: StudyConfig):
    shuffled = [BASELINE, *reversed(SPECTRA), *reversed(SWEEPS), *reversed(SWEEPS_ALL), *reversed(RECOVERIES),
                CONTROL, *DECOMPOSITIONS]
    assert [ax.get_title() for ax in spectra_figure(shuffled).axes] == ["conv1", "conv2"]
    assert [line.get_label() for line in spectra_figure(shuffled).axes[0].lines] == ["o|ihw", "oi|hw"]
    assert [ax.get_title() for ax in accuracy_figure(shuffled).axes] == ["cut o|ihw", "cut oi|hw"]
    assert [list(by_cut) for by_cut in tolerated_norm_loss(shuffled).values()] == [["o|ihw", "oi|hw"]] * 2
    assert [gain.target for gain in recovery_gains(shuffled)] == ["conv1", "all"]
    assert report_text(shuffled, config) == report_text(RECORDS, config)


def test_every_layer_of_a_resnet20_has_its_own_color():
    layers = [f"conv{index}" for index in range(19)]
    records = [{**BASELINE, "layers": layers}] + [
        {**SWEEPS[0], "key": ["sweep", layer, "o|ihw", 0.1], "layer": layer} for layer in layers]
    points = accuracy_figure(records).axes[0].collections
    assert len(points) == 19 and len({tuple(dots.get_facecolor()[0]) for dots in points}) == 19


def test_the_legend_of_a_resnet20_fits_inside_its_figure():
    layers = [f"layer{index}.conv" for index in range(19)]
    records = [{**BASELINE, "layers": layers}] + [
        {**SWEEPS[0], "key": ["sweep", layer, "o|ihw", 0.1], "layer": layer} for layer in layers]
    figure = predictors_figure(records)  # one row of panels: the shortest figure with a legend of every layer
    renderer = figure.canvas.get_renderer()
    figure.draw(renderer)
    (legend,) = figure.legends
    assert len(legend.get_texts()) == 19
    box, frame = legend.get_window_extent(renderer), figure.bbox
    assert frame.x0 <= box.x0 and box.x1 <= frame.x1 and frame.y0 <= box.y0 and box.y1 <= frame.y1


@pytest.mark.parametrize("draw", FIGURES.values())
def test_a_kind_without_data_gives_no_figure(draw):
    assert draw([BASELINE]) is None


def test_figures_leave_pyplot_alone():
    if "matplotlib.pyplot" in sys.modules:
        pytest.skip("another test imported pyplot")
    for draw in FIGURES.values():
        assert type(draw(RECORDS).canvas).__name__ == "FigureCanvasAgg"
    assert "matplotlib.pyplot" not in sys.modules


def test_save_writes_png_and_svg_atomically(tmp_path: Path):
    paths = save(recovery_figure(RECORDS), tmp_path / "new", "recovery")
    assert paths == [tmp_path / "new" / "recovery.png", tmp_path / "new" / "recovery.svg"]
    assert paths[0].read_bytes().startswith(PNG_SIGNATURE)
    assert ElementTree.parse(paths[1]).getroot().tag == "{http://www.w3.org/2000/svg}svg"
    assert leftovers(tmp_path) == []


# -- the report -----------------------------------------------------------------------------------------------------

def test_write_report_writes_every_figure_and_the_report(written):
    output, paths = written
    stems = ["spectra", "entropy", "accuracy", "predictors", "recovery", "decompositions"]
    figures = output / FIGURE_FOLDER
    assert paths == [figures / f"{stem}.{ext}" for stem in stems for ext in ("png", "svg")] + [output / REPORT]
    for path in paths[:-1:2]:
        assert path.read_bytes().startswith(PNG_SIGNATURE)
    for path in paths[1::2]:
        assert ElementTree.parse(path).getroot().tag.endswith("svg")
    assert sorted(os.listdir(output)) == [FIGURE_FOLDER, REPORT] and leftovers(output) == []


def test_report_links_to_figures_that_exist(written):
    output, _ = written
    text = (output / REPORT).read_text()
    links = re.findall(r"\]\(([^)]+)\)", text)
    assert len(links) == 12 and all(not Path(link).is_absolute() for link in links)
    assert all((output / link).is_file() for link in links)


def test_report_states_the_numbers(written, config: StudyConfig):
    text = (written[0] / REPORT).read_text()
    conv1 = f"{100 * norm_loss(0.3, 'conv1'):.1f}%"
    conv2 = f"{100 * norm_loss(0.5, 'conv2'):.1f}%"
    assert (f"Across 2 truncatable cuts, layer `conv1` loses up to {conv1} of its norm within 1 point of accuracy, on "
            f"cut `o|ihw` (level 0.3: relative error {rel_error(0.3, 'conv1'):.3f}, top-1 89.00% [86.9, 90.8]; no "
            "paired test: the records hold no per-sample hits).") in text
    assert f"layer `conv2` loses up to {conv2} of its norm within 1 point of accuracy, on cut `oi|hw`" in text
    median = f"{100 * (norm_loss(0.3, 'conv1') + norm_loss(0.5, 'conv2')) / 2:.1f}%"
    assert (f"- Truncated one at a time across its best cut (of those whose two factors save parameters), each of the "
            f"2 layers keeps top-1 within 1 point while losing a median {median} of its norm ({conv1} to {conv2}); "
            "the best cut is `o|ihw` for 1 layer, `oi|hw` for 1 layer.") in text
    # the layer x cut table: conv2 keeps nothing across o|ihw
    assert f"| `conv1` | {conv1} ({rel_error(0.3, 'conv1'):.3f}) | " in text
    assert f"| `conv2` | - | {conv2} ({rel_error(0.5, 'conv2'):.3f}) |" in text
    assert r"| o\|ihw | 0.1 | " in text and r"| oi\|hw | - | - | - | - | - | - | - |" in text
    # every accuracy with its Wilson interval (90% of 1000: [88.0, 91.7])
    assert "Top-1 90.00% [88.0, 91.7], top-5 99.00% [98.2, 99.5]" in text
    # recovery: +8 points, the control +1 point, so fine-tuning repairs 7 points of the truncation
    assert "takes top-1 from 80.00% [77.4, 82.4] to 88.00% [85.8, 89.9] (+8.00 points)" in text
    assert "changes the untruncated model by +1.00 points, so it repairs +7.00 points of the truncation" in text
    assert (r"| `conv1` | o\|ihw | 0.5 | 80.00% [77.4, 82.4] | 86.00% [83.7, 88.0] | 88.00% [85.8, 89.9] | "
            "+8.00 points | +1.00 points | +7.00 points |") in text
    assert "### Data-free" in text
    assert "| `cp` | 0.5 | 290 / 592 | 0.490 | 60.00% [56.9, 63.0] | 85.00% [82.7, 87.1] | +25.00 points |" in text
    assert ("At budget 0.5, data-free, top-1 after fine-tuning: `tucker2` 87.00% [84.8, 88.9] (50.0% of the "
            "parameters), `cp` 85.00% [82.7, 87.1] (49.0% of the parameters).") in text
    assert f"fingerprint `{config.fingerprint()}`" in text
    # the spectra: normalized entropy and norm lost at a quarter of the rank; the flat cuts cannot be truncated
    assert f"| `conv2` | {bits([5, 1, 0.1]) / math.log2(3):.2f} / {100 * (1 - math.sqrt(25 / 26.01)):.1f}% | " \
           "1.00 / 50.0% (cannot) |" in text
    assert "`conv2` across `o|ihw` (2.0%)" in text


def test_old_records_give_a_report_that_says_what_is_unavailable(written):
    text = (written[0] / REPORT).read_text()
    assert "**No per-sample hits.**" in text and "no paired test is available" in text
    assert "data error: the sweep records hold none" in text
    assert "Spearman's rho with the kernel's norm loss is" in text  # needs neither hits nor data errors


def test_with_hits_the_report_states_the_paired_tests(config: StudyConfig):
    text = report_text(HIT_RECORDS, config)
    assert "No per-sample hits" not in text
    assert ("undecided whether within 1 point: the paired difference -1.00 points [-1.64, -0.35] reaches past "
            "-1 point; below the baseline, exact McNemar p = 0.002") in text
    assert "the paired test shows it within 1 point: difference -0.10 points [-0.38, +0.18]" in text
    assert "The paired test shows 1 of these 2 within 1 point; the others are not significant (undecided)." in text
    assert f"| `conv1` | {100 * norm_loss(0.3, 'conv1'):.1f}% ({rel_error(0.3, 'conv1'):.3f}) ? |" in text
    assert r"| `conv2` | oi\|hw | 0.5 | " in text and "| -0.10 points [-0.38, +0.18] | within |" in text
    assert "`tucker2` less `cp` on the same samples: +2.00 points [+1.11, +2.88] (exact McNemar p = 1.9e-06, " \
           "significant)." in text


def test_too_few_test_samples_for_the_tolerance_are_a_warning(config: StudyConfig):
    # 90% of 1000: the Wilson half-width is 2 points, more than the tolerance of 1 point
    assert "**Too few test samples for the tolerance.** On 1,000 samples" in report_text(RECORDS, config)
    assert "Too few test samples" not in report_text(RECORDS, config, tolerance=0.05)
    many = [{**BASELINE, "count": 100_000}]
    assert "Too few test samples" not in report_text(many, config)


def test_a_control_that_fine_tuning_lowered_stops_the_ranking_after_fine_tuning(config: StudyConfig):
    lowered = {**CONTROL, **trained(0.9, [0.88, 0.87])}
    text = report_text([BASELINE, lowered, *DECOMPOSITIONS], config)
    assert "**Fine-tuning lowered the control.**" in text and "90.00% [88.0, 91.7] to 87.00% [84.8, 88.9]" in text
    assert "Fine-tuning lowered some decompositions" not in text
    hurt = {**DECOMPOSITIONS[0], **trained(0.6, [0.3], epochs=1)}
    assert ("**Fine-tuning lowered some decompositions.** `cp` (data-free) from 60.00% [56.9, 63.0] to 30.00% "
            "[27.2, 32.9]") in report_text([BASELINE, hurt], config)
    assert ("top-1 before fine-tuning (fine-tuning lowered the control, so the methods are not ranked after it): "
            "`tucker2` 70.00% [67.1, 72.8]") in text


def test_decompositions_come_per_mode_and_short_budgets_are_flagged(config: StudyConfig):
    calibrated = {**DECOMPOSITIONS[0], "key": ["decomposition", "cp", 0.5, "calibrated"], "mode": "calibrated",
                  "params_after": 260, "ratio": 260 / 592}
    text = report_text([BASELINE, *DECOMPOSITIONS, calibrated], config)
    assert "### Data-free" in text and "### Calibrated" in text
    assert "| `cp` | 0.5 | 260 / 592 | 0.439 † |" in text
    assert "`cp` (calibrated) keeps 43.9% of the parameters at budget 0.5: fewer than 0.9 x budget" in text
    assert "At budget 0.5, calibrated, top-1 after fine-tuning: `cp` 85.00% [82.7, 87.1] (43.9% of the parameters, " \
           "short of the budget)." in text


def test_the_report_names_what_predicts_the_drop_and_the_depth_trend(config: StudyConfig):
    layers = [f"conv{index}" for index in range(MIN_LAYERS)]
    baseline = {**BASELINE, "layers": layers}
    records = [baseline]
    for depth, layer in enumerate(layers):
        for level in (0.1, 0.3):
            drop = 0.001 * (depth + 1) * (10 if level == 0.3 else 1)
            records.append(sweep(layer, "o|ihw", level, round(0.9 - drop, 3),
                                 norm_loss=0.01 * (depth % 3 + 1) * level, data_error=drop * 2))
    predictors = drop_predictors(records)
    assert predictors.data_error.rho == pytest.approx(1.0) and predictors.norm_loss.rho < 0.9
    assert predictors.difference.high < 0 and predictors.unavailable == ()
    trend = depth_trend(records, tolerated_norm_loss(records, tolerance=0.05))
    assert list(trend.per_layer) == layers and trend.correlation is not None
    text = report_text(records, config, tolerance=0.05)
    assert "the data error predicts the drop better" in text
    assert f"Spearman's rho with the layer's index {trend.correlation.rho:+.2f}" in text
    few = report_text([BASELINE, *SWEEPS], config)
    assert "2 layers are too few for a rank correlation with an interval (at least 10)" in few


def test_the_overview_counts_the_layers_that_keep_the_accuracy(config: StudyConfig):
    def without(*pairs):
        return [r for r in RECORDS if not (r["key"][0] == "sweep" and tuple(r["key"][1:3]) in pairs)]

    conv1 = f"{100 * norm_loss(0.3, 'conv1'):.1f}%"
    text = report_text(without(("conv2", "oi|hw")), config)
    assert (f"1 of the 2 layers keep top-1 within 1 point while losing a median {conv1} of its norm ({conv1} to "
            f"{conv1}); the best cut is `o|ihw` for 1 layer.") in text
    text = report_text(without(("conv2", "oi|hw"), ("conv1", "oi|hw")), config, tolerance=0.0)
    assert ("Truncated one at a time, none of the 2 layers keeps top-1 within 0 points across any cut that saves "
            "parameters.") in text


def test_sections_without_data_are_left_out(tmp_path: Path, config: StudyConfig):
    paths = write_report(tmp_path, [BASELINE, *SWEEPS], config)
    assert [path.name for path in paths] == ["accuracy.png", "accuracy.svg", "predictors.png", "predictors.svg", REPORT]
    text = (tmp_path / REPORT).read_text()
    assert "## Truncation across a cut" in text and "All layers at once" not in text
    assert "Recovery" not in text and "Decompositions" not in text and "spectra.png" not in text


def test_writing_again_replaces_the_report(tmp_path: Path, config: StudyConfig):
    write_report(tmp_path, [BASELINE, *SWEEPS], config)
    write_report(tmp_path, RECORDS, config, tolerance=0.2)
    assert "within 20 points of accuracy" in (tmp_path / REPORT).read_text()
    assert leftovers(tmp_path) == []


def test_a_baseline_alone_warns_of_nothing_it_did_not_measure(config: StudyConfig):
    text = report_text([with_hits(BASELINE)], config, tolerance=0.05)
    assert "## Warnings" not in text and "## Findings" not in text
    nothing_changed = [BASELINE, sweep("conv1", "o|ihw", 0.1, 0.9, noop=True)]
    assert drop_predictors(nothing_changed).unavailable == (
        "rank correlations: no one-layer truncation changed a kernel",)


def test_a_zero_kernel_loses_no_norm():
    zero = {**SPECTRA[0], "singular_values": [0.0, 0.0], "entropy": 0.0, "ranks_for_levels": [0]}
    assert cut_spectra([BASELINE, zero])["conv1"]["o|ihw"].norm_loss == 0.0


def test_a_decomposition_record_says_whether_it_spent_its_budget():
    flagged = {**DECOMPOSITIONS[1], "equal_params": False}  # the record's word wins over its ratio (0.5)
    assert decompositions([BASELINE, flagged])[0].short_of_budget


def test_a_decomposition_lowered_by_fine_tuning_is_one_the_paired_test_shows_lower():
    one_sample = with_hits({**DECOMPOSITIONS[0], **trained(0.6, [0.599], epochs=1)})
    hundred = with_hits({**DECOMPOSITIONS[0], **trained(0.6, [0.5], epochs=1)})
    noise, drop = decompositions([BASELINE, one_sample, hundred])
    assert (noise.tuning.lost, noise.lowered) == (1, False)
    assert (drop.tuning.lost, drop.lowered) == (100, True)
