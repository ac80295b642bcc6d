"""The study's decomposition stage (tnlib_torch.study.decomposition): the selected layers factorized at one parameter
budget, data-free and calibrated, before and after fine-tuning; every method at equal parameters."""

from __future__ import annotations

import json
import math

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

import tnlib_torch as tt  # noqa: E402
from tests.torch import digits_study  # noqa: E402
from tests.torch.digits_study import model_is_never_modified, pristine  # noqa: E402, F401
from tnlib_torch.study.decomposition import (  # noqa: E402
    CALIBRATED,
    DATA_FREE,
    DECOMPOSITION_METHODS,
    EQUAL_SHARE,
    decomposition_at_params,
)

LAYERS = ["conv1", "conv2", "conv3", "conv4"]
STRUCTURES = {"cp": "CPConv2d", "tucker2": "Tucker2Conv2d", "mps": "MPSConv2d", "svd": "SVDConv2d"}
BUDGET = 0.5
CALIBRATION_SAMPLES = 96
#: The fine-tuning of these tests: one epoch at the rate of fine-tuning a converged model.
TRAINING = {"epochs": 1, "lr": 0.005, "seed": 0}


#: The training images the decompositions are fine-tuned on (a few, to keep the tests fast).
FINE_TUNING_SAMPLES = 256


def train_loader(samples: int | None = FINE_TUNING_SAMPLES) -> torch.utils.data.DataLoader:
    return digits_study.train_loader(64, samples)


def calibration_loader() -> torch.utils.data.DataLoader:
    """The first CALIBRATION_SAMPLES training images of a seeded permutation, in order, as the study takes them."""
    images = tt.digits()
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))[:CALIBRATION_SAMPLES]
    return tt.loader(torch.utils.data.Subset(images, order.tolist()), batch_size=32)


@pytest.fixture(scope="module")
def test_loader() -> torch.utils.data.DataLoader:
    return digits_study.test_loader(450)


@pytest.fixture(scope="module")
def model() -> nn.Module:
    """A four-layer CNN trained for 3 epochs on digits."""
    return digits_study.trained_cnn((8, 16, 32, 32), epochs=3)


@pytest.fixture(scope="module")
def decomposed(model, pristine, test_loader) -> dict[tuple[str, str], dict]:
    """Every method in both modes, CP with few sweeps."""
    return {(method, mode): decomposition_at_params(model, method, BUDGET, train_loader(), test_loader, **TRAINING,
                                                    cp_max_iter=10, calibration=calibration)
            for method in DECOMPOSITION_METHODS
            for mode, calibration in ((DATA_FREE, None), (CALIBRATED, calibration_loader()))}


def kernel_params(model: nn.Module) -> int:
    return sum(dict(model.named_modules())[layer].weight.numel() for layer in LAYERS)


def metrics(result: dict) -> dict:
    return {name: result[name] for name in ("top1", "top5", "loss", "count")}


# -- the records ----------------------------------------------------------------------------------------------------

#: compress's CP candidates are fits at a geometric ladder of 12 ranks (compression/structures.py, CP_LADDER), whose
#: costs step by half of a rank's cost at the ranks a budget of one half chooses: the budget allocation
#: (compression/allocation.py) can only stop on a rung, and lands below EQUAL_SHARE x budget when the rung above
#: does not fit.  The study needs a fill step in compress (see the report of issue 16).
CP_LADDER_MISSES = pytest.mark.xfail(reason="compress's CP budget stops on a coarse ladder of ranks", strict=False)


@pytest.mark.parametrize("method", [pytest.param("cp", marks=CP_LADDER_MISSES), "svd", "tucker2", "mps"])
def test_every_method_is_compared_at_equal_parameters_data_free(model, decomposed, method):
    """EQUAL_SHARE x budget <= params after / before <= budget, over the selected layers."""
    check_equal_parameters(model, decomposed[method, DATA_FREE], method, DATA_FREE)


@pytest.mark.parametrize("method", DECOMPOSITION_METHODS)
def test_every_method_is_compared_at_equal_parameters_calibrated(model, decomposed, method):
    check_equal_parameters(model, decomposed[method, CALIBRATED], method, CALIBRATED)


def check_equal_parameters(model: nn.Module, record: dict, method: str, mode: str) -> None:
    dense = kernel_params(model)  # the VanillaCNN's convs have no bias
    assert record["key"] == ["decomposition", method, BUDGET, mode] and (record["method"], record["mode"]) == (
        method, mode)
    assert record["params_before"] == dense and record["ratio"] == record["params_after"] / dense
    assert record["params_after"] == sum(entry["params_after"] for entry in record["layers"])
    assert record["model_params_before"] - record["model_params_after"] == dense - record["params_after"]
    assert STRUCTURES[method] in {entry["structure"] for entry in record["layers"]}
    assert record["equal_params"] == (record["ratio"] >= EQUAL_SHARE * BUDGET)
    assert EQUAL_SHARE * BUDGET <= record["ratio"] <= BUDGET


@pytest.mark.parametrize("method", DECOMPOSITION_METHODS)
def test_the_mode_says_what_data_the_fits_saw(decomposed, method):
    free, calibrated = decomposed[method, DATA_FREE], decomposed[method, CALIBRATED]
    assert free["calibration_samples"] == 0 and calibrated["calibration_samples"] == CALIBRATION_SAMPLES
    assert all(entry["output_error"] is None for entry in free["layers"])
    errors = [entry["output_error"] for entry in calibrated["layers"] if entry["params_after"] < entry["params_before"]]
    assert errors and all(0 < error < 1 for error in errors)


@pytest.mark.parametrize("method", DECOMPOSITION_METHODS)
def test_fine_tuning_keeps_the_factorized_layers_and_moves_the_model(decomposed, method):
    record = decomposed[method, DATA_FREE]
    (epoch,) = record["history"]
    assert (record["epochs"], record["lr"], record["seed"]) == (1, 0.005, 0) and epoch["lr"] == pytest.approx(0.005)
    assert math.isfinite(epoch["train_loss"]) and "diverged" not in record
    assert metrics(record["after"]) == metrics(epoch) and record["after"] != record["before"]


def test_the_record_is_compress_then_fine_tune_by_hand(model, test_loader, decomposed):
    """The calibrated svd record: compress(..., calibration=..., sensitivity="none") evaluated, then one epoch of
    fine_tune, evaluated."""
    compressed, _ = tt.compress(model, "svd", budget=BUDGET, seed=0, calibration=calibration_loader(),
                                sensitivity="none")
    before = metrics(tt.evaluate(compressed, test_loader))
    batches = train_loader()
    batches.generator.manual_seed(0)
    tt.fine_tune(compressed, batches, 1, lr=0.005, seed=0, progress=False)
    after = metrics(tt.evaluate(compressed, test_loader))
    record = decomposed["svd", CALIBRATED]
    assert metrics(record["before"]) == pytest.approx(before, rel=1e-6)
    assert metrics(record["after"]) == pytest.approx(after, rel=1e-6)


def test_a_record_repeats_for_its_seed_and_is_plain_json(model, test_loader, decomposed):
    again = decomposition_at_params(model, "cp", BUDGET, train_loader(), test_loader, **TRAINING, cp_max_iter=10,
                                    calibration=calibration_loader())
    assert again == decomposed["cp", CALIBRATED]
    for record in decomposed.values():
        assert json.loads(json.dumps(record, allow_nan=False)) == record, record["key"]


def test_only_the_selected_layers_are_compressed(model, test_loader):
    record = decomposition_at_params(model, "mps", BUDGET, train_loader(), test_loader, **TRAINING, include="conv4")
    assert [entry["layer"] for entry in record["layers"]] == ["conv4"]
    assert record["layers"][0]["structure"] == "MPSConv2d" and record["ratio"] <= BUDGET


# -- arguments ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("changes", "error", "match"), [
    ({"method": "truncate"}, ValueError, "method must be one of 'svd', 'cp', 'tucker2', 'mps'; got 'truncate'"),
    ({"method": None}, TypeError, "method must be a string"),
    ({"budget": 0}, ValueError, r"budget must be in \(0, 1\]"),
    ({"budget": 1.5}, ValueError, r"budget must be in \(0, 1\]"),
    ({"epochs": 0}, ValueError, r"epochs must be a positive integer \(>= 1\), got 0"),
    ({"lr": math.nan}, ValueError, "lr must be a finite number > 0"),
    ({"method": "cp", "cp_max_iter": 0}, ValueError, r"cp_max_iter must be a positive integer \(>= 1\), got 0"),
    ({"include": "linear"}, ValueError, "include: pattern 'linear' matches no dense conv"),
    ({"calibration": [torch.zeros(4, 3, 8, 8)]}, ValueError, "channel"),
])
def test_bad_arguments_are_refused_by_name(model, test_loader, changes, error, match):
    arguments = {"method": "svd", "budget": BUDGET, "train_loader": train_loader(), "test_loader": test_loader,
                 **TRAINING, **changes}
    with pytest.raises(error, match=match):
        decomposition_at_params(model, **arguments)
