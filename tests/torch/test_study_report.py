"""The study's figures and report, from synthetic records whose findings are known in advance."""

from __future__ import annotations

import math
import os
import re
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("matplotlib")

from tnlib_torch.study.config import StudyConfig  # noqa: E402
from tnlib_torch.study.figures import (  # noqa: E402
    FIGURES,
    accuracy_figure,
    decomposition_figure,
    entropy_figure,
    recovery_figure,
    save,
    spectra_figure,
)
from tnlib_torch.study.findings import (  # noqa: E402
    Tolerated,
    control_curve,
    decompositions,
    lowest_entropy,
    recovery_gains,
    summarize,
    tolerated_norm_loss,
    tolerated_norm_loss_all,
)
from tnlib_torch.study.report import FIGURE_FOLDER, REPORT, report_text, write_report  # noqa: E402

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
SPECTRA = [
    {"key": ["spectrum", layer, cut], "layer": layer, "cut": cut, "shape": [8, 4, 3, 3], "matrix_shape": [8, 36],
     "singular_values": values, "norm": 5.0, "rank": sum(v > 0 for v in values), "entropy": entropy,
     "renyi2": entropy / 2, "levels": [0.1], "ranks_for_levels": [2]}
    for layer, cut, values, entropy in [("conv1", "o|ihw", [4.0, 2.0, 1.0, 0.0], 0.8),
                                        ("conv1", "oi|hw", [3.0, 3.0, 2.0], 1.5),
                                        ("conv2", "o|ihw", [5.0, 1.0, 0.1], 0.3),
                                        ("conv2", "oi|hw", [2.0, 2.0, 2.0, 2.0], 2.0)]
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


def tolerated(layer: str, level: float, top1: float) -> Tolerated:
    return Tolerated(level=level, norm_loss=norm_loss(level, layer), rel_error=rel_error(level, layer), top1=top1,
                     params=296, factored_params=140)


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
                                        top1=0.895, params=592, factored_params=400),
                     "oi|hw": None}


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


def test_decompositions_and_lowest_entropy():
    cp, tucker2 = decompositions(RECORDS)
    assert (cp.method, cp.budget, cp.params_before, cp.params_after, cp.before, cp.after) == (
        "cp", 0.5, 592, 290, 0.6, 0.85)
    assert tucker2.ratio == 296 / 592
    assert lowest_entropy(RECORDS) == {"conv1": ("o|ihw", 0.8), "conv2": ("o|ihw", 0.3)}


def test_summarize_gathers_every_finding_at_its_tolerance():
    findings = summarize(RECORDS, tolerance=0.005)
    assert findings.baseline is BASELINE and findings.top1 == 0.9 and findings.tolerance == 0.005
    assert findings.one_layer == tolerated_norm_loss(RECORDS, 0.005) != tolerated_norm_loss(RECORDS)
    assert findings.all_layers == tolerated_norm_loss_all(RECORDS, 0.005)
    assert findings.gains == recovery_gains(RECORDS) and findings.control == control_curve(RECORDS)
    assert findings.decompositions == decompositions(RECORDS)
    assert findings.lowest_entropy == lowest_entropy(RECORDS)


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
    texts = [text.get_text() for text in entropy_figure(RECORDS).axes[0].texts]
    assert texts == ["0.80", "1.50", "0.30", "2.00"]
    assert [ax.get_title() for ax in accuracy_figure(RECORDS).axes] == ["cut o|ihw", "cut oi|hw"]
    recovery = recovery_figure(RECORDS).axes[0]
    assert [list(line.get_xdata()) for line in recovery.lines[:3]] == [[0, 1, 2]] * 3
    labels = [label.get_text() for label in decomposition_figure(RECORDS).axes[0].get_xticklabels()]
    assert labels == ["cp\nbudget 0.5\nratio 0.490", "tucker2\nbudget 0.5\nratio 0.500"]


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
    stems = ["spectra", "entropy", "accuracy", "recovery", "decompositions"]
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
    assert len(links) == 10 and all(not Path(link).is_absolute() for link in links)
    assert all((output / link).is_file() for link in links)


def test_report_states_the_numbers(written, config: StudyConfig):
    text = (written[0] / REPORT).read_text()
    conv1 = f"{100 * norm_loss(0.3, 'conv1'):.1f}%"
    conv2 = f"{100 * norm_loss(0.5, 'conv2'):.1f}%"
    assert (f"Across 2 cuts, layer `conv1` loses up to {conv1} of its norm at <= 1 point of accuracy, on cut `o|ihw` "
            f"(level 0.3: relative error {rel_error(0.3, 'conv1'):.3f}, top-1 89.00%).") in text
    assert f"layer `conv2` loses up to {conv2} of its norm at <= 1 point of accuracy, on cut `oi|hw`" in text
    median = f"{100 * (norm_loss(0.3, 'conv1') + norm_loss(0.5, 'conv2')) / 2:.1f}%"
    assert (f"- Truncated one at a time across its best cut, each of the 2 layers keeps top-1 within 1 point while "
            f"losing a median {median} of its norm ({conv1} to {conv2}); the best cut is `o|ihw` for 1 layer, "
            "`oi|hw` for 1 layer.") in text
    # the layer x cut table: conv2 keeps nothing across o|ihw
    assert f"| `conv1` | {conv1} ({rel_error(0.3, 'conv1'):.3f}) | " in text
    assert f"| `conv2` | - | {conv2} ({rel_error(0.5, 'conv2'):.3f}) |" in text
    assert r"| o\|ihw | 0.1 | " in text and r"| oi\|hw | - | - | - | - | - |" in text
    # recovery: +8 points, the control +1 point, so fine-tuning repairs 7 points of the truncation
    assert "takes top-1 from 80.00% to 88.00% (+8.00 points)" in text
    assert "changes the untruncated model by +1.00 points, so it repairs +7.00 points of the truncation" in text
    assert r"| `conv1` | o\|ihw | 0.5 | 80.00% | 86.00% | 88.00% | +8.00 points | +1.00 points | +7.00 points |" in text
    assert "| control (not truncated) |  |  | 90.00% | 90.50% | 91.00% | +1.00 points |  |  |" in text
    assert "| `cp` | 0.5 | 290 / 592 | 0.490 | 60.00% | 85.00% | +25.00 points |" in text
    assert "`tucker2` 87.00% (50.0% of the parameters), `cp` 85.00% (49.0% of the parameters)" in text
    assert f"fingerprint `{config.fingerprint()}`" in text and "Top-1 90.00%, top-5 99.00%" in text


def test_the_overview_counts_the_layers_that_keep_the_accuracy(config: StudyConfig):
    def without(*pairs):
        return [r for r in RECORDS if not (r["key"][0] == "sweep" and tuple(r["key"][1:3]) in pairs)]

    conv1 = f"{100 * norm_loss(0.3, 'conv1'):.1f}%"
    text = report_text(without(("conv2", "oi|hw")), config)
    assert (f"1 of the 2 layers keep top-1 within 1 point while losing a median {conv1} of its norm ({conv1} to "
            f"{conv1}); the best cut is `o|ihw` for 1 layer.") in text
    text = report_text(without(("conv2", "oi|hw"), ("conv1", "oi|hw")), config, tolerance=0.0)
    assert "Truncated one at a time, none of the 2 layers keeps top-1 within 0 points across any cut." in text


def test_sections_without_data_are_left_out(tmp_path: Path, config: StudyConfig):
    paths = write_report(tmp_path, [BASELINE, *SWEEPS], config)
    assert [path.name for path in paths] == ["accuracy.png", "accuracy.svg", REPORT]
    text = (tmp_path / REPORT).read_text()
    assert "## Truncation across a cut" in text and "All layers at once" not in text
    assert "Recovery" not in text and "Decompositions" not in text and "spectra.png" not in text


def test_writing_again_replaces_the_report(tmp_path: Path, config: StudyConfig):
    write_report(tmp_path, [BASELINE, *SWEEPS], config)
    write_report(tmp_path, RECORDS, config, tolerance=0.2)
    assert "at <= 20 points of accuracy" in (tmp_path / REPORT).read_text()
    assert leftovers(tmp_path) == []
