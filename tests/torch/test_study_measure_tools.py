"""What the study's measurements share: evaluations recorded with their hits, fine-tuning, the channels-last layout."""

from __future__ import annotations

import copy

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

import tnlib_torch as tt  # noqa: E402
from tests.torch import digits_study  # noqa: E402
from tnlib_torch.study.hits import unpack_hits  # noqa: E402
from tnlib_torch.study.measure_tools import METRICS, fine_tuned, metrics, to_channels_last  # noqa: E402


def train_loader() -> torch.utils.data.DataLoader:
    return digits_study.train_loader(128)


@pytest.fixture(scope="module")
def test_loader() -> torch.utils.data.DataLoader:
    return digits_study.test_loader(100)


@pytest.fixture(scope="module")
def model() -> nn.Module:
    """A small CNN trained for one epoch on digits."""
    return digits_study.trained_cnn((4, 4, 8, 8), epochs=1, batch_size=128)


@pytest.fixture(scope="module")
def tuned(model, test_loader) -> dict:
    return fine_tuned(copy.deepcopy(model), train_loader(), test_loader, epochs=2, lr=0.02, seed=0)


def test_metrics_hold_the_hits_of_every_sample_in_loader_order(model, test_loader):
    result = metrics(model, test_loader)
    expected = tt.evaluate(model, test_loader, hits=True)
    assert {name: result[name] for name in METRICS} == {name: expected[name] for name in METRICS}
    hits = unpack_hits(result["hits"], result["count"])
    assert hits.tolist() == expected["hits"].tolist() and hits.mean() == pytest.approx(result["top1"], abs=1e-12)
    assert set(result) == {*METRICS, "hits"}


def test_fine_tuned_records_hits_before_and_after_and_not_per_epoch(tuned):
    for name in ("before", "after"):
        assert set(tuned[name]) == {*METRICS, "hits"}
        hits = unpack_hits(tuned[name]["hits"], tuned[name]["count"])
        assert hits.mean() == pytest.approx(tuned[name]["top1"], abs=1e-12)
    assert [entry["epoch"] for entry in tuned["history"]] == [1, 2]
    assert all("hits" not in entry for entry in tuned["history"])
    # "after" is the model as the last epoch left it: the metrics of the last entry, evaluated again with the hits
    assert {name: tuned["after"][name] for name in METRICS} == {name: tuned["history"][-1][name] for name in METRICS}
    assert tuned["after"]["hits"] != tuned["before"]["hits"]


def test_fine_tuned_repeats_exactly_and_is_fine_tune_in_the_channels_last_layout(model, test_loader, tuned):
    again = copy.deepcopy(model)
    assert fine_tuned(again, train_loader(), test_loader, epochs=2, lr=0.02, seed=0) == tuned
    assert again.conv1.weight.is_contiguous(memory_format=torch.channels_last)
    by_hand = to_channels_last(copy.deepcopy(model))
    batches = train_loader()
    batches.generator.manual_seed(0)
    tt.fine_tune(by_hand, batches, 2, lr=0.02, seed=0, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), by_hand.state_dict().values()))


def test_a_diverged_fine_tuning_ends_on_the_model_as_it_diverged(model, test_loader):
    record = fine_tuned(copy.deepcopy(model), train_loader(), test_loader, epochs=2, lr=1e4, seed=0)
    (last,) = record["history"]
    assert record["diverged"].startswith("fine_tune diverged in epoch 1") and last["train_loss"] is None
    assert {name: record["after"][name] for name in METRICS} == {name: last[name] for name in METRICS}
    assert "hits" in record["after"]


def test_the_channels_last_layout_keeps_every_value_and_the_outputs(model, test_loader):
    reference = copy.deepcopy(model).eval()
    moved = to_channels_last(copy.deepcopy(model).eval())
    assert all(torch.equal(a, b) for a, b in zip(reference.state_dict().values(), moved.state_dict().values()))
    convs = [module for module in moved.modules() if isinstance(module, nn.Conv2d)]
    assert convs and all(conv.weight.is_contiguous(memory_format=torch.channels_last) for conv in convs)
    assert not reference.conv2.weight.is_contiguous(memory_format=torch.channels_last)
    inputs, _ = next(iter(test_loader))
    with torch.no_grad():
        np.testing.assert_allclose(moved(inputs).numpy(), reference(inputs).numpy(), rtol=1e-4, atol=1e-5)
