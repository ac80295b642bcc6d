"""Parameter and MAC accounting against hand counts."""

from __future__ import annotations

from collections import OrderedDict

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

import tnlib_torch as tt  # noqa: E402
from tnlib_torch import MAC_RULES, LayerCost, count_macs, count_params, layer_costs  # noqa: E402


def hand_built_model() -> nn.Module:
    return nn.Sequential(
        OrderedDict(
            conv1=nn.Conv2d(3, 8, 3, stride=2, padding=1),  # 16x16 -> 8x8
            bn=nn.BatchNorm2d(8),
            relu=nn.ReLU(),
            conv2=nn.Conv2d(8, 16, 3, padding=2, dilation=2, groups=4, bias=False),  # 8x8 -> 8x8
            pool=nn.AdaptiveAvgPool2d(1),
            flat=nn.Flatten(),
            fc=nn.Linear(16, 10),
        )
    )


class OneByOneThenThreeByThree(nn.Module):
    """A factorized layer: a container of a 1x1 and a 3x3 conv."""

    def __init__(self) -> None:
        super().__init__()
        self.reduce = nn.Conv2d(16, 4, 1, bias=False)
        self.spatial = nn.Conv2d(4, 32, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.spatial(self.reduce(x))


def test_hand_built_model():
    model = hand_built_model()
    costs = layer_costs(model, (3, 16, 16))
    assert costs == {
        "conv1": LayerCost(params=8 * 3 * 9 + 8, macs=8 * 8 * 8 * 3 * 9),
        "conv2": LayerCost(params=16 * 2 * 9, macs=16 * 8 * 8 * 2 * 9),
        "fc": LayerCost(params=16 * 10 + 10, macs=16 * 10),
    }
    assert count_macs(model, (3, 16, 16)) == 13824 + 18432 + 160
    assert count_params(model) == 224 + 2 * 8 + 288 + 170  # BatchNorm's weight and bias count as parameters
    assert costs["fc"].params == costs["fc"][0] == 170


def test_a_chain_of_a_1x1_and_a_3x3_conv_is_counted_leaf_by_leaf():
    model = nn.Sequential(OneByOneThenThreeByThree(), nn.ReLU())
    assert layer_costs(model, [16, 10, 10]) == {
        "0.reduce": (16 * 4, 4 * 10 * 10 * 16),
        "0.spatial": (32 * 4 * 9 + 32, 32 * 10 * 10 * 4 * 9),
    }
    assert count_macs(model, (16, 10, 10)) == 6400 + 115200


def test_linear_counts_every_leading_dimension_and_reused_layers_every_call():
    shared = nn.Linear(7, 7, bias=False)
    model = nn.Sequential(shared, shared, nn.Linear(7, 3), nn.Linear(3, 3))
    costs = layer_costs(model, (5, 7))
    assert costs == {"0": (49, 2 * 5 * 7 * 7), "2": (24, 5 * 7 * 3), "3": (12, 5 * 3 * 3)}
    assert count_params(model) == 49 + 24 + 12  # the shared weight once


def test_a_layer_the_forward_pass_skips_costs_no_macs():
    class Skipping(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.used, self.unused = nn.Linear(4, 2), nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.used(x)

    assert layer_costs(Skipping(), (4,)) == {"used": (10, 8), "unused": (10, 0)}


def test_training_modes_are_restored_and_hooks_removed():
    model = hand_built_model().train()
    model.bn.eval()
    seen = []
    model.bn.register_forward_hook(lambda module, inputs, output: seen.append(module.training))
    layer_costs(model, (3, 16, 16))
    assert seen == [False]  # the pass runs in eval mode
    assert model.training and not model.bn.training and model.conv1.training
    assert all(len(m._forward_hooks) == 0 for m in model.modules() if m is not model.bn)


def test_modes_and_hooks_are_restored_when_the_forward_pass_fails():
    model = hand_built_model().train()
    with pytest.raises(ValueError, match=r"input_size \(4, 16, 16\) does not fit the model"):
        layer_costs(model, (4, 16, 16))  # conv1 expects 3 channels
    assert all(m.training for m in model.modules())
    assert all(len(m._forward_hooks) == 0 for m in model.modules())


def test_the_input_takes_the_model_dtype():
    model = hand_built_model().double()
    assert count_macs(model, (3, 16, 16)) == 13824 + 18432 + 160


def test_a_model_without_parameters_runs_in_float32():
    assert layer_costs(nn.Sequential(nn.ReLU(), nn.Flatten()), (2, 3)) == {}


@pytest.mark.parametrize(
    ("model", "input_size", "error", "message"),
    [
        ("resnet", (3, 8, 8), TypeError, r"model must be a torch\.nn\.Module, got str"),
        (nn.Linear(3, 3), 3, TypeError, r"input_size must be a non-empty sequence of positive ints"),
        (nn.Linear(3, 3), "3", TypeError, r"input_size must be"),
        (nn.Linear(3, 3), (), ValueError, r"input_size must be"),
        (nn.Linear(3, 3), (0,), ValueError, r"input_size must be .*got \(0,\)"),
        (nn.Linear(3, 3), (3.0,), ValueError, r"input_size must be"),
    ],
)
def test_bad_input_is_refused_naming_the_argument(model, input_size, error, message):
    with pytest.raises(error, match=message):
        count_macs(model, input_size)


def test_count_params_needs_a_module():
    with pytest.raises(TypeError, match=r"module must be a torch\.nn\.Module, got list"):
        count_params([nn.Linear(2, 2)])


def macs_of_a_real_pass(model: nn.Module, input_size: tuple[int, ...]) -> int:
    """The count as it was before the meta-device pass: hooks on a real forward pass on zeros."""
    total = []
    leaves = [m for m in model.modules() if next(m.children(), None) is None and type(m) in MAC_RULES]
    handles = [m.register_forward_hook(lambda m, i, o: total.append(MAC_RULES[type(m)](m, o))) for m in leaves]
    with torch.no_grad():
        model.eval()(torch.zeros((1, *input_size), dtype=next(model.parameters()).dtype))
    for handle in handles:
        handle.remove()
    return sum(total)


@pytest.mark.parametrize(("make", "input_size"), [
    (hand_built_model, (3, 16, 16)),
    (lambda: tt.build_model("resnet20", num_classes=10), (3, 32, 32)),
    (lambda: tt.build_model("vanilla_cnn", num_classes=10), (3, 32, 32)),
    (lambda: tt.MPSConv2d(6, 8, (3, 2), 2, stride=2, padding=1, groups=2, padding_mode="reflect"), (6, 9, 11)),
    (lambda: tt.CPConv2d(4, 6, 3, 2, padding="same", padding_mode="circular"), (4, 7, 7)),
])
def test_the_meta_pass_counts_what_a_real_pass_counts(make, input_size):
    torch.manual_seed(0)
    model = make()
    assert count_macs(model, input_size) == macs_of_a_real_pass(model, input_size) > 0


def test_a_huge_input_is_counted_without_allocating_it():
    """Regression: the count ran a real forward pass (12 TB of input here); the meta device allocates nothing."""
    conv = nn.Conv2d(3, 8, 3, padding=1)
    assert count_macs(conv, (3, 10**6, 10**6)) == 8 * 10**12 * 27
    assert conv.weight.device.type == "cpu" and not conv.weight.is_meta


class DataDependent(nn.Module):
    """A model whose forward pass reads a value, which the meta device cannot give."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * (1.0 + float(x.sum()))


def test_a_model_the_meta_device_cannot_run_is_counted_on_a_real_pass():
    model = DataDependent()
    assert count_macs(model, (2, 4, 5)) == 3 * 20 * 2
    assert all(len(m._forward_hooks) == 0 for m in model.modules())


@pytest.mark.parametrize("input_size", [(3,), (3, 16), (3, 16, 16, 16), (4, 16, 16)])
def test_an_input_size_the_model_cannot_take_is_refused_naming_input_size(input_size):
    with pytest.raises(ValueError, match=r"input_size .* does not fit the model.*without the batch dimension"):
        count_macs(hand_built_model(), input_size)
