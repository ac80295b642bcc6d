"""The study's measurements: each record against the library call it stands for, on a small CNN trained on digits."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

import tnlib  # noqa: E402
import tnlib_torch as tt  # noqa: E402
import tnlib_torch.study.measure as measure  # noqa: E402
from tests.torch import digits_study  # noqa: E402
from tests.torch.digits_study import model_is_never_modified, pristine  # noqa: E402, F401
from tnlib_torch.compression.calibrated import output_error  # noqa: E402
from tnlib_torch.compression.calibration import input_moments  # noqa: E402
from tnlib_torch.study.decomposition import DECOMPOSITION_METHODS, decomposition_at_params  # noqa: E402
from tnlib_torch.study.hits import unpack_hits  # noqa: E402
from tnlib_torch.study.measure import (  # noqa: E402
    baseline,
    layer_spectra,
    recovery,
    recovery_control,
    sweep_layer,
    truncate_all,
    truncate_one,
)

LAYERS = ["conv1", "conv2", "conv3", "conv4"]
CUTS = [str(cut) for cut in tnlib.all_cuts("oihw")]
TRAINING = {"epochs": 2, "lr": 0.05, "seed": 0}


# -- fixtures ------------------------------------------------------------------------------------------


def train_loader() -> torch.utils.data.DataLoader:
    return digits_study.train_loader(64)


@pytest.fixture(scope="module")
def test_loader() -> torch.utils.data.DataLoader:
    return digits_study.test_loader(450)


@pytest.fixture(scope="module")
def model() -> nn.Module:
    """A four-layer CNN trained for 3 epochs on digits (about 97% test accuracy)."""
    return digits_study.trained_cnn((8, 8, 16, 16), epochs=3)


@pytest.fixture(scope="module")
def recovered(model, pristine, test_loader) -> dict:
    """Every layer truncated at half the norm across o|ihw, then fine-tuned."""
    return recovery(model, "all", "o|ihw", 0.5, train_loader(), test_loader, **TRAINING)


@pytest.fixture(scope="module")
def decomposed(model, pristine, test_loader) -> dict[str, dict]:
    return {method: decomposition_at_params(model, method, 0.3, train_loader(), test_loader, epochs=1, lr=0.05,
                                            seed=0, cp_max_iter=20)
            for method in DECOMPOSITION_METHODS}


def kernel(model: nn.Module, layer: str) -> torch.Tensor:
    return dict(model.named_modules())[layer].weight.detach()


def side_sizes(shape, cut: str) -> tuple[int, int]:
    """Rows and columns of the kernel's matricization across ``cut``."""
    dims = dict(zip("oihw", shape))
    left, right = cut.split("|")
    return math.prod(dims[c] for c in left), math.prod(dims[c] for c in right)


def metrics(record: dict) -> dict:
    return {name: record[name] for name in ("top1", "top5", "loss", "count")}


def assert_close_metrics(result: dict, expected: dict) -> None:
    """The same evaluation to round-off (another memory layout, another solver): a tied logit flipped at most."""
    count = expected["count"]
    assert result["count"] == count
    assert all(abs(result[name] - expected[name]) <= 1 / count + 1e-12 for name in ("top1", "top5"))
    assert math.isclose(result["loss"], expected["loss"], rel_tol=1e-5)


# -- baseline and spectra ---------------------------------------------------------------------------------


def test_baseline_is_the_evaluation_of_the_model(model, test_loader):
    record = baseline(model, test_loader)
    assert record["key"] == ["baseline"] and record["layers"] == LAYERS
    assert metrics(record) == tt.evaluate(model, test_loader) and record["top1"] > 0.9
    assert record["params"] == tt.count_params(model)


def test_spectra_are_the_core_spectra_of_each_kernel_across_each_cut(model):
    levels = [0.05, 0.3, 0.5]
    records = layer_spectra(model, levels=levels)
    assert [r["key"] for r in records] == [["spectrum", layer, cut] for layer in LAYERS for cut in CUTS]
    for record in records:
        weight = kernel(model, record["layer"]).double()
        spectrum = tnlib.spectra(weight, "oihw")[record["cut"]]
        assert record["singular_values"] == spectrum.singular_values.tolist()
        assert record["shape"] == list(weight.shape)
        assert record["matrix_shape"] == list(side_sizes(weight.shape, record["cut"]))
        assert (record["rank"], record["norm"]) == (spectrum.rank, spectrum.norm)
        assert record["ranks_for_levels"] == [spectrum.rank_for(level) for level in levels]
        assert math.isclose(record["norm"], float(weight.norm()), rel_tol=1e-12)
        p = np.asarray(record["singular_values"]) ** 2 / record["norm"] ** 2       # Schmidt weights, by hand
        assert math.isclose(record["entropy"], float(-(p[p > 0] * np.log2(p[p > 0])).sum()), rel_tol=1e-9)
        assert math.isclose(record["renyi2"], float(-np.log2((p**2).sum())), rel_tol=1e-9)
        assert 0 <= record["renyi2"] <= record["entropy"] <= math.log2(len(p)) + 1e-12


def test_spectra_select_layers_by_glob_patterns_in_model_order(model):
    assert {r["layer"] for r in layer_spectra(model, include="conv[23]")} == {"conv2", "conv3"}
    assert list(dict.fromkeys(r["layer"] for r in layer_spectra(model, include=["conv4", "conv1"]))) == [
        "conv1", "conv4"]


# -- truncation sweep ---------------------------------------------------------------------------------------


def test_truncating_one_layer_is_truncate_conv_on_a_copy(model, test_loader):
    for layer in LAYERS:
        weight = kernel(model, layer)
        spectra = tnlib.spectra(weight.double(), "oihw")
        for cut in CUTS:
            for level in (0.2, 0.5):
                record = truncate_one(model, layer, cut, level, test_loader)
                manual = copy.deepcopy(model)
                info = tt.truncate_conv_(dict(manual.named_modules())[layer], cut, rel_error=level)
                rows, columns = side_sizes(weight.shape, cut)
                where = (layer, cut, level)
                assert record["key"] == ["sweep", layer, cut, level], where
                assert record["rank"] == info.rank == spectra[cut].rank_for(level), where
                assert record["rel_error"] == info.rel_error <= level, where
                assert record["norm_loss"] == info.norm_loss, where
                assert record["params"] == weight.numel(), where                   # the convs have no bias
                assert record["factored_params"] == record["rank"] * (rows + columns), where
                assert metrics(record) == tt.evaluate(manual, test_loader), where


def test_a_truncation_removes_accuracy_and_a_vanishing_one_removes_none(model, test_loader):
    reference = tt.evaluate(model, test_loader)
    aggressive = truncate_one(model, "conv3", "o|ihw", 0.6, test_loader)
    assert aggressive["rank"] < 16 and aggressive["top1"] < reference["top1"] - 0.05
    for record in (truncate_one(model, "conv3", "oi|hw", 1e-9, test_loader),
                   truncate_all(model, "o|ihw", 1e-9, test_loader)):
        assert (record["top1"], record["top5"]) == (reference["top1"], reference["top5"])
        assert math.isclose(record["loss"], reference["loss"], rel_tol=1e-5)
        assert record["noop"] and not record["saves"]
    assert record["layers"][-1]["rank"] == 16                                      # the full rank of conv4
    assert not aggressive["noop"] and aggressive["saves"]


def test_a_cut_is_keyed_as_all_cuts_writes_it(model, test_loader):
    mirrored = truncate_one(model, "conv2", "ihw|o", np.float64(0.3), test_loader)
    assert mirrored == truncate_one(model, "conv2", "o|ihw", 0.3, test_loader)
    assert mirrored["key"] == ["sweep", "conv2", "o|ihw", 0.3] and type(mirrored["level"]) is float


def test_truncating_all_layers_is_each_layer_truncated_at_once(model, test_loader):
    record = truncate_all(model, "oi|hw", 0.3, test_loader)
    manual = copy.deepcopy(model)
    infos = {layer: tt.truncate_conv_(dict(manual.named_modules())[layer], "oi|hw", rel_error=0.3) for layer in LAYERS}
    assert record["key"] == ["sweep_all", "oi|hw", 0.3]
    assert [e["layer"] for e in record["layers"]] == LAYERS
    for entry in record["layers"]:
        info = infos[entry["layer"]]
        assert (entry["rank"], entry["rel_error"], entry["norm_loss"]) == (info.rank, info.rel_error, info.norm_loss)
    assert metrics(record) == tt.evaluate(manual, test_loader)
    dense = sum(kernel(model, layer).numel() for layer in LAYERS)
    assert record["params"] == sum(e["params"] for e in record["layers"]) == dense
    assert record["factored_params"] == sum(e["rank"] * (e["shape"][0] * e["shape"][1] + 9) for e in record["layers"])
    assert not record["noop"] and record["saves"] == (record["factored_params"] < record["params"])
    some = truncate_all(model, "oi|hw", 0.3, test_loader, include="conv[34]")
    assert [e["layer"] for e in some["layers"]] == ["conv3", "conv4"] and some["layers"] == record["layers"][2:]


def calibration_loader() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first 128 training images of digits, in batches of 64."""
    inputs, targets = next(iter(tt.loader(tt.digits(), batch_size=128)))
    return [(inputs[:64], targets[:64]), (inputs[64:], targets[64:])]


def assert_same_sweep_record(sweep: dict, one: dict) -> None:
    """``sweep`` is ``one`` to round-off: every field ``one`` has (``sweep`` adds at most ``hits``)."""
    where = sweep["key"]
    assert sweep["key"] == one["key"] and set(one) <= set(sweep) and set(sweep) - set(one) <= {"hits"}, where
    count = one["count"]
    for name, value in one.items():
        if name in ("top1", "top5"):       # float32 round-off may flip the rank of a tied logit: one sample at most
            assert abs(sweep[name] - value) <= 1 / count + 1e-12, (where, name)
        elif name == "hits":
            assert (unpack_hits(sweep[name], count) != unpack_hits(value, count)).sum() <= 1, where
        elif isinstance(value, float):
            assert math.isclose(sweep[name], value, rel_tol=1e-5, abs_tol=1e-6), (where, name, sweep[name], value)
        else:
            assert sweep[name] == value, (where, name)


def test_a_layer_sweep_gives_the_records_of_truncate_one(model, test_loader):
    """Every (cut, level) record of sweep_layer equals truncate_one's, cut-major, levels in the given order."""
    levels = [0.5, 0.05, 0.9]
    calibration = calibration_loader()
    records = sweep_layer(model, "conv3", CUTS, levels, test_loader, calibration=calibration)
    assert [r["key"] for r in records] == [["sweep", "conv3", cut, level] for cut in CUTS for level in levels]
    for record in records:
        one = truncate_one(model, "conv3", record["cut"], record["level"], test_loader, calibration=calibration)
        assert_same_sweep_record(record, one)
    assert {r["noop"] for r in records} == {True, False} and {r["saves"] for r in records} == {True, False}


def test_a_layer_sweeps_hits_and_metrics_are_those_of_the_truncated_model(model, test_loader):
    for record in sweep_layer(model, "conv2", ["oh|iw"], [0.3, 0.6], test_loader):
        manual = copy.deepcopy(model)
        info = tt.truncate_conv_(dict(manual.named_modules())[record["layer"]], "oh|iw", rel_error=record["level"])
        expected = tt.evaluate(manual, test_loader, hits=True)
        assert record["rank"] == info.rank and not record["noop"]
        assert (unpack_hits(record["hits"], record["count"]) != expected["hits"]).sum() <= 1
        assert math.isclose(record["loss"], expected["loss"], rel_tol=1e-5)


def test_levels_that_keep_the_same_rank_share_one_kernel_and_a_full_rank_is_the_baseline(model, test_loader,
                                                                                          monkeypatch):
    evaluated = []

    def recording(model, layer, weights, loader, hits=False):
        evaluated.append(len(weights))
        return evaluate_variants(model, layer, weights, loader, hits=hits)

    evaluate_variants = measure.evaluate_variants
    monkeypatch.setattr(measure, "evaluate_variants", recording)
    levels = [1e-9, 0.3, 0.31, 0.32, 0.6]
    records = sweep_layer(model, "conv4", ["o|ihw", "oi|hw"], levels, test_loader)
    ranks = {(r["cut"], r["rank"]) for r in records if not r["noop"]}
    assert evaluated == [len(ranks)] and len(ranks) < 8                # one evaluation per distinct truncation
    reference = tt.evaluate(model, test_loader, hits=True)
    for record in records:
        same = [r for r in records if (r["cut"], r["rank"]) == (record["cut"], record["rank"])]
        assert all(metrics(r) == metrics(record) and r["hits"] == record["hits"] for r in same)
        full = min(side_sizes(record["shape"], record["cut"]))
        assert record["noop"] == (record["rank"] == full) == (record["level"] == 1e-9)
        if record["noop"]:                                             # the model itself, not a rounded copy
            assert_close_metrics(record, reference)
            assert (record["rel_error"], record["norm_loss"]) == (0, 0)
            assert (unpack_hits(record["hits"], record["count"]) != reference["hits"]).sum() <= 1
        assert record["saves"] == (record["factored_params"] < record["params"])
        assert record["data_error"] is None


def test_the_data_error_is_the_relative_change_of_the_layers_outputs_on_the_calibration_inputs(model, test_loader):
    calibration = calibration_loader()
    conv = dict(model.named_modules())["conv2"]
    seen = []
    handle = conv.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    tt.evaluate(model, calibration)
    handle.remove()
    inputs = torch.cat(seen).double()
    weight = conv.weight.detach().double()
    records = sweep_layer(model, "conv2", ["o|ihw", "hw|oi"], [1e-9, 0.4], test_loader, calibration=calibration)
    for record in records:
        truncated = copy.deepcopy(model)
        tt.truncate_conv_(dict(truncated.named_modules())["conv2"], record["cut"], rel_error=record["level"])
        change = kernel(truncated, "conv2").double() - weight

        def outputs(w):
            return torch.nn.functional.conv2d(inputs, w, stride=conv.stride, padding=conv.padding)
        measured = float(outputs(change).norm() / outputs(weight).norm())
        assert math.isclose(record["data_error"], measured, rel_tol=1e-4, abs_tol=1e-6), record["key"]
    assert records[0]["data_error"] == 0.0 and records[1]["data_error"] > 0.01
    moments = input_moments(model, calibration, include="conv2")["conv2"]
    assert output_error(moments, weight, weight) == 0.0


def test_a_model_fx_cannot_trace_is_swept_whole_with_the_same_records(test_loader):
    torch.manual_seed(0)
    branchy = digits_study.Branchy(in_channels=1)
    with pytest.raises(torch.fx.proxy.TraceError):
        torch.fx.symbolic_trace(branchy)
    records = sweep_layer(branchy, "conv1", ["o|ihw", "oi|hw"], [0.2, 0.5], test_loader)
    for record in records:
        assert_same_sweep_record(record, truncate_one(branchy, "conv1", record["cut"], record["level"], test_loader))


def test_a_layer_sweep_reads_the_test_and_calibration_loaders_once(model, test_loader):
    class Counted:
        def __init__(self, batches):
            self.batches, self.passes = batches, 0

        def __iter__(self):
            self.passes += 1
            return iter(self.batches)

    test, calibration = Counted(test_loader), Counted(calibration_loader())
    sweep_layer(model, "conv1", CUTS, [0.1, 0.5], test, calibration=calibration)
    assert (test.passes, calibration.passes) == (1, 1)


# -- recovery ----------------------------------------------------------------------------------------------


def test_fine_tuning_recovers_an_aggressive_truncation(model, test_loader, recovered):
    assert recovered["key"] == ["recovery", "all", "o|ihw", 0.5]
    assert_close_metrics(recovered["before"], truncate_all(model, "o|ihw", 0.5, test_loader))
    assert recovered["before"]["top1"] < 0.5                                        # aggressive: accuracy is lost
    assert recovered["after"]["top1"] >= recovered["before"]["top1"] + 0.3          # and mostly won back
    assert [h["epoch"] for h in recovered["history"]] == [1, 2]
    assert metrics(recovered["after"]) == metrics(recovered["history"][-1])


def test_recovery_is_deterministic_for_a_seed_whatever_ran_before(model, test_loader):
    batches = train_loader()                           # one loader, consumed by each run in turn
    run = [recovery(model, "conv3", "oh|iw", 0.6, batches, test_loader, epochs=1, lr=0.05, seed=seed)
           for seed in (1, 1, 2)]
    assert run[0] == run[1]
    assert run[0]["history"] != run[2]["history"]      # the seed draws the shuffles
    assert [e["layer"] for e in run[0]["layers"]] == ["conv3"] and run[0]["key"] == ["recovery", "conv3", "oh|iw", 0.6]


def test_the_control_is_the_untruncated_model_fine_tuned_identically(model, test_loader, recovered):
    control = recovery_control(model, train_loader(), test_loader, **TRAINING)
    assert control["key"] == ["recovery_control"]
    assert {k: control[k] for k in TRAINING} == {k: recovered[k] for k in TRAINING} == TRAINING
    assert [h["lr"] for h in control["history"]] == [h["lr"] for h in recovered["history"]]
    assert_close_metrics(control["before"], tt.evaluate(model, test_loader))


def test_a_diverged_run_is_recorded_with_where_it_diverged(model, test_loader):
    record = recovery_control(model, train_loader(), test_loader, epochs=2, lr=1e4, seed=0)
    assert record["diverged"].startswith("fine_tune diverged in epoch 1, step ")
    (last,) = record["history"]  # the epoch that diverged, with the model as it ended
    assert last["epoch"] == 1 and last["train_loss"] is None
    assert metrics(record["after"]) == {name: last[name] for name in ("top1", "top5", "loss", "count")}
    assert record["after"]["loss"] is None
    json.dumps(record, allow_nan=False)


# -- the per-layer entries of a decomposition (the measurement itself: test_study_decomposition.py) ----------


def test_layer_entries_are_layer_compressions_and_read_back(model, test_loader, decomposed):
    """The study's per-layer entries are LayerCompression.to_dict() under the study's keys, old entries read too."""
    swept = truncate_all(model, "o|ihw", 0.3, test_loader)["layers"][0]
    layer = tt.LayerCompression.from_dict(swept)
    assert (layer.name, layer.structure, layer.ranks, layer.params) == ("conv1", "truncated", (swept["rank"],),
                                                                        swept["params"])
    assert {"layer", "shape", "rank", "rel_error", "norm_loss", "params", "factored_params"} <= set(swept)
    (entry, *_) = decomposed["tucker2"]["layers"]
    assert {"layer", "structure", "ranks", "params_before", "params_after", "rel_error", "norm_loss", "note"} <= set(
        entry)
    assert tt.LayerCompression.from_dict(entry).to_dict() == {"name": entry["layer"], "info": None, **{
        k: v for k, v in entry.items() if k != "layer"}}
    old = {k: swept[k] for k in ("layer", "shape", "rank", "rel_error", "norm_loss", "params", "factored_params")}
    assert tt.LayerCompression.from_dict(old) == layer


def test_the_svd_arm_is_the_cut_truncation_across_the_cut_of_each_layer(model, decomposed):
    for entry in decomposed["svd"]["layers"]:
        if entry["structure"] == "SVDConv2d":
            (rank,) = entry["ranks"]
            cut = entry.get("cut") or "o|ihw"                 # the cut compress chose (records before it: o|ihw)
            weight = kernel(model, entry["layer"])
            assert entry["params_after"] == rank * sum(side_sizes(weight.shape, cut))
            spectrum = tnlib.spectrum(weight.double(), cut)
            assert math.isclose(entry["rel_error"], spectrum.rel_error(rank), rel_tol=1e-4)


# -- records and arguments ------------------------------------------------------------------------------------


def test_every_record_is_plain_json(model, test_loader, recovered, decomposed):
    records = [baseline(model, test_loader), *layer_spectra(model, include="conv1"),
               truncate_one(model, "conv2", "o|ihw", 0.3, test_loader), truncate_all(model, "o|ihw", 0.3, test_loader),
               *sweep_layer(model, "conv2", ["o|ihw"], [1e-9, 0.3], test_loader, calibration=calibration_loader()),
               recovered, *decomposed.values()]
    for record in records:
        assert json.loads(json.dumps(record, allow_nan=False)) == record, record["key"]  # no tuples, NaN or tensors


def grouped_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 8, 3, padding=1, groups=2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))


def test_grouped_convs_are_not_measured(test_loader):
    model = grouped_model()
    assert {r["layer"] for r in layer_spectra(model)} == {"0"}
    assert baseline(model, test_loader)["layers"] == ["0"]
    with pytest.raises(ValueError, match=r"layer '1' is a grouped conv \(groups=2\), unmeasured; the dense convs"):
        truncate_one(model, "1", "o|ihw", 0.3, test_loader)
    with pytest.raises(ValueError, match="no nn.Conv2d with groups == 1"):
        layer_spectra(nn.Sequential(nn.Conv2d(4, 4, 3, groups=4)))


DEFAULTS = {
    truncate_one: {"layer": "conv2", "cut": "o|ihw", "level": 0.3},
    sweep_layer: {"layer": "conv2", "cuts": ["o|ihw"], "levels": [0.3]},
    truncate_all: {"cut": "o|ihw", "level": 0.3},
    layer_spectra: {},
    recovery: {"target": "conv2", "cut": "o|ihw", "level": 0.3, "epochs": 1, "lr": 0.05, "seed": 0},
    recovery_control: {"epochs": 1, "lr": 0.05, "seed": 0},
}


@pytest.mark.parametrize(("function", "changes", "error", "match"), [
    (truncate_one, {"layer": "conv9"}, ValueError, r"layer 'conv9' is not a conv of the model; .*'conv1', 'conv2'"),
    (truncate_one, {"layer": 2}, TypeError, "layer must be the name of a conv"),
    (truncate_one, {"cut": "o|ihx"}, ValueError, "must split all of the labels 'oihw'"),
    (truncate_one, {"cut": ["o|ihw", "i|ohw"]}, TypeError, "cut must be a string"),
    (truncate_one, {"level": 0}, ValueError, r"level must be in \(0, 1\), got 0"),
    (truncate_one, {"level": 1.0}, ValueError, r"level must be in \(0, 1\)"),
    (truncate_one, {"level": float("nan")}, ValueError, r"level must be in \(0, 1\)"),
    (truncate_one, {"level": "0.3"}, TypeError, "level must be a real number"),
    (truncate_one, {"level": True}, TypeError, "level must be a real number"),
    (sweep_layer, {"layer": "conv9"}, ValueError, r"layer 'conv9' is not a conv of the model"),
    (sweep_layer, {"cuts": "o|ihw"}, TypeError, "cuts must be a non-empty sequence of cuts of 'oihw'"),
    (sweep_layer, {"cuts": []}, TypeError, "cuts must be a non-empty sequence"),
    (sweep_layer, {"cuts": ["o|ihw", "ihw|o"]}, ValueError, r"cuts holds 'o\|ihw' twice"),
    (sweep_layer, {"cuts": ["o|ihx"]}, ValueError, "must split all of the labels 'oihw'"),
    (sweep_layer, {"levels": 0.3}, TypeError, r"levels must be a non-empty sequence of relative errors in \(0, 1\)"),
    (sweep_layer, {"levels": [0.3, 1.0]}, ValueError, r"levels must be in \(0, 1\), got 1.0"),
    (sweep_layer, {"levels": [0.3, 0.3]}, ValueError, "levels holds 0.3 twice"),
    (sweep_layer, {"calibration": [torch.zeros(2, 1, 8, 8, dtype=torch.long)]}, (TypeError, ValueError),
     "floating"),
    (truncate_all, {"include": "linear"}, ValueError,
     r"include: pattern 'linear' matches no dense conv of the model; .*'conv4'"),
    (truncate_all, {"include": []}, TypeError, "include must be a glob pattern"),
    (layer_spectra, {"levels": [0.1, 1.0]}, ValueError, r"levels must be in \(0, 1\)"),
    (layer_spectra, {"levels": 0.1}, TypeError, "levels must be a non-empty sequence"),
    (recovery, {"target": "all", "include": "conv*", "epochs": 0}, ValueError,
     "epochs must be a positive integer \\(>= 1\\), got 0"),
    (recovery, {"include": "conv2"}, ValueError, "include selects the layers of target='all' only"),
    (recovery, {"lr": 0}, ValueError, "lr must be a finite number > 0"),
    (recovery_control, {"seed": -1}, ValueError, "seed must be a non-negative integer \\(>= 0\\), got -1"),
    (recovery_control, {"epochs": 1.5}, TypeError, "epochs must be a positive integer, got 1.5"),
])
def test_bad_arguments_are_refused_by_name(model, test_loader, function, changes, error, match):
    loaders = {truncate_one: {"loader": test_loader}, truncate_all: {"loader": test_loader},
               sweep_layer: {"loader": test_loader}, layer_spectra: {}}
    arguments = {**DEFAULTS[function], **loaders.get(function, {"train_loader": train_loader(),
                                                                 "test_loader": test_loader}), **changes}
    with pytest.raises(error, match=match):
        function(model, **arguments)


def test_a_model_that_is_not_a_module_is_refused(test_loader):
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got str"):
        baseline("cnn", test_loader)
