"""Variants of one layer evaluated in one pass: the evaluations of the whole model, from its downstream part only."""

from __future__ import annotations

import copy
import math

import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import tnlib_torch as tt  # noqa: E402
from tests.torch import digits_study  # noqa: E402
from tnlib_torch.study.suffix import evaluate_variants  # noqa: E402


def batches(seed: int = 0, count: int = 2, size: int = 8, channels: int = 3,
            side: int = 32) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(size, channels, side, side, generator=generator),
             torch.randint(0, 10, (size,), generator=generator)) for _ in range(count)]


@pytest.fixture(scope="module")
def resnet() -> nn.Module:
    """A ResNet-20 (residual blocks: a conv's output meets a shortcut), random weights, BatchNorm statistics set."""
    torch.manual_seed(0)
    model = tt.build_model("resnet20", num_classes=10)
    model.train()
    with torch.no_grad():
        for inputs, _ in batches(seed=1):
            model(inputs)
    return model


def variants_of(model: nn.Module, layer: str, seed: int = 0) -> list[torch.Tensor]:
    weight = dict(model.named_modules())[layer].weight.detach()
    generator = torch.Generator().manual_seed(seed)
    return [weight * 0.5, weight + 0.3 * weight.std() * torch.randn(weight.shape, generator=generator),
            torch.zeros_like(weight)]


def evaluated_whole(model: nn.Module, layer: str, weight: torch.Tensor, loader) -> dict:
    changed = copy.deepcopy(model)
    with torch.no_grad():
        dict(changed.named_modules())[layer].weight.copy_(weight)
    return tt.evaluate(changed, loader, hits=True)


def assert_same_evaluation(result: dict, expected: dict) -> None:
    assert {k for k in result} == {k for k in expected}
    assert (result["top1"], result["top5"], result["count"]) == (expected["top1"], expected["top5"], expected["count"])
    assert (result["hits"] == expected["hits"]).all()
    assert math.isclose(result["loss"], expected["loss"], rel_tol=1e-6)


def call_counter(model: nn.Module, layer: str) -> list[int]:
    calls = [0]
    dict(model.named_modules())[layer].register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.parametrize("layer", ["conv1", "layer1.0.conv1", "layer2.0.conv2", "layer3.2.conv2"])
def test_each_variant_is_evaluated_as_the_whole_model_with_that_weight(resnet, layer):
    loader = batches()
    weights = variants_of(resnet, layer)
    original, results = evaluate_variants(resnet, layer, weights, loader, hits=True)
    assert_same_evaluation(original, tt.evaluate(resnet, loader, hits=True))
    assert len(results) == len(weights)
    for weight, result in zip(weights, results):
        assert_same_evaluation(result, evaluated_whole(resnet, layer, weight, loader))
    assert len({result["loss"] for result in results}) == len(weights)       # the variants do differ


def test_only_what_the_layer_influences_runs_again_for_each_variant(resnet):
    model = copy.deepcopy(resnet)
    stem, block, late = (call_counter(model, name) for name in ("conv1", "layer3.2.conv1", "layer3.2.conv2"))
    evaluate_variants(model, "layer3.2.conv2", variants_of(model, "layer3.2.conv2"), batches(count=2))
    # the stem and the conv before the varied one run once per batch; the varied conv once per batch and variant
    assert (stem[0], block[0], late[0]) == (2, 2, 2 * (1 + 3))


def test_the_weight_and_the_training_flags_are_restored_also_after_an_error(resnet):
    model = copy.deepcopy(resnet)
    model.train()
    model.layer2.eval()
    state = {name: value.clone() for name, value in model.state_dict().items()}
    flags = {name: module.training for name, module in model.named_modules()}
    loader = batches(count=2)
    evaluate_variants(model, "layer2.0.conv1", variants_of(model, "layer2.0.conv1"), loader)
    bad = [loader[0], (loader[1][0], torch.full((8,), 10))]                   # class 10 of 10: refused in batch 2
    with pytest.raises(ValueError, match=r"targets must be class indices in \[0, 10\)"):
        evaluate_variants(model, "layer2.0.conv1", variants_of(model, "layer2.0.conv1"), bad)
    assert all(torch.equal(value, state[name]) for name, value in model.state_dict().items())
    assert {name: module.training for name, module in model.named_modules()} == flags


def test_a_model_fx_cannot_trace_is_run_whole_for_each_variant():
    torch.manual_seed(0)
    model = digits_study.Branchy(in_channels=3)
    with pytest.raises(torch.fx.proxy.TraceError):
        torch.fx.symbolic_trace(model)
    loader, weights = batches(side=8), variants_of(model, "conv2")
    stem = call_counter(model, "conv1")
    original, results = evaluate_variants(model, "conv2", weights, loader, hits=True)
    assert stem[0] == 2 * (1 + 3)
    assert_same_evaluation(original, tt.evaluate(model, loader, hits=True))
    for weight, result in zip(weights, results):
        assert_same_evaluation(result, evaluated_whole(model, "conv2", weight, loader))


class Functional(nn.Module):
    """Reads a conv's weight as an attribute (F.conv2d) besides calling a second conv as a module."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.conv = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)
        self.head = nn.Linear(4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem(x))
        x = x + F.conv2d(x, self.conv.weight, self.conv.bias, padding=1)
        return self.head(x.mean(dim=(2, 3)))


def test_a_weight_read_as_an_attribute_is_varied_too():
    torch.manual_seed(0)
    model = Functional()
    loader, weights = batches(side=8), variants_of(model, "conv")
    stem = call_counter(model, "stem")
    _, results = evaluate_variants(model, "conv", weights, loader, hits=True)
    assert stem[0] == 2                                                       # the traced split, not the fallback
    for weight, result in zip(weights, results):
        assert_same_evaluation(result, evaluated_whole(model, "conv", weight, loader))


@pytest.mark.parametrize(("layer", "weights", "error", "match"), [
    ("conv9", [], ValueError, "layer 'conv9' is not a module of the model"),
    ("relu", [], ValueError, "layer 'relu' has no tensor weight"),
    (1, [], TypeError, "layer must be the name of a module"),
    ("conv1", torch.zeros(16, 3, 3, 3), TypeError, "weights must be a sequence of tensors"),
    ("conv1", [torch.zeros(16, 3, 3, 3), "w"], TypeError, r"weights\[1\] must be a tensor, got str"),
    ("conv1", [torch.zeros(16, 3, 1, 1)], ValueError, r"weights\[0\] has shape \(16, 3, 1, 1\), not that of conv1"),
])
def test_bad_arguments_are_refused_by_name(resnet, layer, weights, error, match):
    with pytest.raises(error, match=match):
        evaluate_variants(resnet, layer, weights, batches(count=1))
