"""Model-wide compression: copy and in-place semantics, the three policies, the report, exact costs, bad input."""

from __future__ import annotations

import math
import re
from collections import OrderedDict

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import tnlib  # noqa: E402
import tnlib_torch as tt  # noqa: E402
from tnlib_torch.compression.costs import ChainCosts  # noqa: E402
from tnlib_torch.compression.policies import (  # noqa: E402
    AccuracyPolicy,
    BudgetPolicy,
    FixedPolicy,
    TruncationPolicy,
    policy_for,
)
from tnlib_torch.compression.request import check_request  # noqa: E402
from tnlib_torch.compression.structures import CP_RIDGE, CPStructure, rank_grid  # noqa: E402

INPUT = (4, 12, 10)
EXACT_METHODS = ("tucker2", "mps", "svd")


def low_rank_kernel(out: int, in_g: int, kh: int, kw: int, groups: int, rank: int, gen: torch.Generator):
    """A kernel whose every group has Tucker ranks ``(rank, rank)`` on its channel modes."""
    blocks = []
    for _ in range(groups):
        core = torch.randn(rank, rank, kh, kw, generator=gen, dtype=torch.float64)
        u_o = torch.randn(out // groups, rank, generator=gen, dtype=torch.float64)
        u_i = torch.randn(in_g, rank, generator=gen, dtype=torch.float64)
        blocks.append(torch.einsum("abhw,oa,ib->oihw", core, u_o, u_i))
    return torch.cat(blocks)


def make_model(low_rank: int | None = None, seed: int = 0) -> nn.Sequential:
    """Convs of several geometries (stride, padding kinds and modes, groups, 1x1, rectangular) and a classifier."""
    torch.manual_seed(seed)
    model = nn.Sequential(OrderedDict(
        stem=nn.Conv2d(4, 12, 3, padding=1, padding_mode="reflect"),
        act1=nn.ReLU(),
        down=nn.Conv2d(12, 16, (3, 2), stride=(2, 1), padding=(1, 0), groups=2, bias=False),
        act2=nn.ReLU(),
        same=nn.Conv2d(16, 16, 3, padding="same", dilation=(1, 2), padding_mode="circular"),
        mix=nn.Conv2d(16, 24, 1),
        pool=nn.AdaptiveAvgPool2d(1),
        flat=nn.Flatten(),
        fc=nn.Linear(24, 10),
    )).double()
    if low_rank is not None:
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for module in model.modules():
                if isinstance(module, nn.Conv2d):
                    out, in_g, kh, kw = module.weight.shape
                    module.weight.copy_(low_rank_kernel(out, in_g, kh, kw, module.groups, low_rank, gen))
                elif isinstance(module, nn.Linear):
                    u, v = (torch.randn(d, low_rank, generator=gen, dtype=torch.float64) for d in module.weight.shape)
                    module.weight.copy_(u @ v.T)
    return model


def sample(batch: int = 3) -> torch.Tensor:
    return torch.randn(batch, *INPUT, generator=torch.Generator().manual_seed(1), dtype=torch.float64)


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).detach().norm() / b.detach().norm())


# ----------------------------------------------------------------------------------------------- copy and in place


def test_compress_returns_a_compressed_copy_and_leaves_the_model_as_it_is():
    model = make_model(low_rank=2)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    small, report = tt.compress(model, "tucker2", rel_error=1e-9, linear=True)
    assert small is not model
    assert all(type(m) in (nn.Conv2d, nn.Linear) for m in (model.stem, model.down, model.same, model.mix, model.fc))
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert {type(small.stem), type(small.mix), type(small.fc)} == {tt.Tucker2Conv2d, tt.SVDConv2d, tt.SVDLinear}
    assert report.params_before == tt.count_params(model) and report.params_after == tt.count_params(small)


def test_compress_in_place_gives_the_same_model_and_report_as_the_copy():
    model = make_model(low_rank=2)
    small, report = tt.compress(model, "svd", cut="oh|iw", rel_error=1e-9)
    in_place = tt.compress_(model, "svd", cut="oh|iw", rel_error=1e-9)
    assert in_place == report
    assert model.state_dict().keys() == small.state_dict().keys()
    assert all(torch.equal(model.state_dict()[k], v) for k, v in small.state_dict().items())


@pytest.mark.parametrize("method", EXACT_METHODS)
def test_a_rel_error_target_is_met_by_every_layer_and_low_rank_models_are_recovered(method):
    model = make_model(low_rank=2)
    x = sample()
    small, report = tt.compress(model, method, rel_error=1e-9, linear=True)
    assert all(layer.rel_error <= 1e-9 for layer in report.layers.values())
    assert all(layer.structure not in ("Conv2d", "Linear") for layer in report.layers.values())
    assert report.params_after < report.params_before
    assert rel_diff(small(x), model(x)) < 1e-10


def test_tucker2_finds_the_ranks_of_a_low_rank_model():
    report = tt.compress(make_model(low_rank=2), "tucker2", rel_error=1e-9)[1]
    assert {name: layer.ranks for name, layer in report.layers.items()} == {
        "stem": (2, 2), "down": (2, 2), "same": (2, 2), "mix": (2,)}


@pytest.mark.parametrize(("method", "kwargs"), [("tucker2", {"ranks": 3}), ("cp", {"rank": 3, "fit": {"seed": 0}}),
                                                 ("mps", {"max_bond": 3}), ("svd", {"max_rank": 3})])
def test_a_compressed_layer_computes_the_conv_of_its_folded_kernel_and_reports_its_error(method, kwargs):
    model = make_model()
    small, report = tt.compress(model, method, include="same", **kwargs)
    layer, original = small.same, model.same.weight.detach()
    folded = layer.to_conv()
    x = torch.randn(2, 16, 7, 9, dtype=torch.float64)
    torch.testing.assert_close(layer(x), folded(x), rtol=1e-10, atol=1e-12)
    entry = report.layers["same"]
    assert entry.rel_error == pytest.approx(rel_diff(folded.weight, original), rel=1e-9)
    assert entry.norm_loss == pytest.approx(1 - float(folded.weight.detach().norm() / original.norm()), rel=1e-9,
                                            abs=1e-12)
    assert entry.ranks and max(entry.ranks) == 3


def test_matrices_get_the_svd_whatever_the_method_and_a_tucker_pair_caps_the_rank_by_its_smaller_entry():
    model = make_model()
    small, report = tt.compress(model, "tucker2", ranks=(6, 4), linear=True)
    assert isinstance(small.mix, tt.SVDConv2d) and small.mix.rank == 4
    assert isinstance(small.fc, tt.SVDLinear) and small.fc.rank == 4
    assert small.stem.ranks == (6, 4)  # 12 output and 4 input channels allow it


def test_a_rank_above_a_small_layer_is_capped_to_what_the_layer_allows():
    small, _ = tt.compress(make_model(), "tucker2", ranks=8, include="stem")
    assert small.stem.ranks == (8, 4)  # 4 input channels


def test_a_layer_that_would_not_shrink_is_kept_dense_with_a_note():
    model = make_model()  # random kernels: an exact target needs full ranks
    small, report = tt.compress(model, "tucker2", rel_error=0.0, include=["stem", "same"])
    assert type(small.stem) is nn.Conv2d and small.stem is not model.stem
    for name in ("stem", "same"):
        entry = report.layers[name]
        assert (entry.structure, entry.ranks, entry.rel_error) == ("Conv2d", (), 0.0)
        assert entry.params_after == entry.params_before and "kept dense" in entry.note


def test_compressing_a_compressed_model_leaves_the_factorized_layers_alone():
    small, _ = tt.compress(make_model(low_rank=2), "tucker2", rel_error=1e-9, include="stem")
    again, report = tt.compress(small, "svd", max_rank=2)
    assert set(report.layers) == {"down", "same", "mix"}
    assert again.stem.layers.core.weight.shape == small.stem.layers.core.weight.shape


def test_selection_and_training_state_carry_over():
    model = make_model(low_rank=2)
    model.eval()
    model.same.weight.requires_grad_(False)
    small, report = tt.compress(model, "tucker2", rel_error=1e-9, exclude="down", layers=slice(1, None))
    assert set(report.layers) == {"same", "mix"}
    assert not small.same.training and not small.mix.training
    assert not any(p.requires_grad for p in small.same.parameters())
    assert all(p.requires_grad for p in small.mix.parameters())


def test_gradients_flow_through_every_compressed_layer():
    small, _ = tt.compress(make_model(low_rank=2), "cp", rank=2, fit={"seed": 0, "max_iter": 20}, linear=True)
    small(sample()).square().sum().backward()
    assert all(p.grad is not None and bool(p.grad.abs().sum() > 0) for p in small.parameters() if p.requires_grad)


@pytest.mark.parametrize("fit, ridge", [({}, CP_RIDGE), ({"ridge": 0.0}, 0.0), ({"ridge": 0.2}, 0.2),
                                        ({"method": "lm"}, None)])
def test_compress_fits_cp_with_its_ridge_unless_told_otherwise(fit, ridge):
    model = make_model()
    small, _ = tt.compress(model, "cp", rank=2, include="same", fit={"max_iter": 10, **fit}, seed=0)
    options = {"method": "lm"} if ridge is None else {"ridge": ridge}
    expected = tt.CPConv2d.from_conv(model.same, 2, max_iter=10, seed=0, **options)
    assert torch.equal(small.same.folded_weight(), expected.folded_weight())


def test_truncate_is_truncate_model_on_a_copy():
    model = make_model()
    small, report = tt.compress(model, "truncate", cut=["o|ihw", "oh|iw"], rel_error=0.4)
    reference = make_model()
    expected = tt.truncate_model_(reference, ["o|ihw", "oh|iw"], rel_error=0.4)
    assert all(torch.equal(a, b) for a, b in zip(small.state_dict().values(), reference.state_dict().values()))
    for name, entry in report.layers.items():
        assert entry.structure == "truncated" and entry.ranks == expected[name].ranks
        assert entry.rel_error == pytest.approx(expected[name].rel_error, rel=1e-9)
        assert entry.norm_loss == pytest.approx(expected[name].norm_loss, rel=1e-9)
        assert entry.params_after == entry.params_before


# --------------------------------------------------------------------------------------------------------- report


def test_report_numbers_match_hand_counts():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 4, 1, bias=False))
    small, report = tt.compress(model, "tucker2", ranks=(4, 2), input_size=(8, 10, 10))
    first, second = report.layers["0"], report.layers["2"]
    # dense 3x3: 16*8*9 + 16 weights, 16*100 outputs * 72 MACs; Tucker-2 (4, 2): 8->2 1x1, 2->4 3x3, 4->16 1x1 + bias
    assert (first.params_before, first.macs_before) == (1168, 115200)
    assert (first.params_after, first.macs_after) == (8 * 2 + 2 * 4 * 9 + 4 * 16 + 16, (2 * 8 + 4 * 18 + 16 * 4) * 100)
    # the 1x1 16->4 conv at SVD rank min(4, 2) = 2: 16->2 and 2->4, no bias
    assert (second.params_before, second.macs_before) == (64, 6400)
    assert (second.params_after, second.macs_after) == (2 * 16 + 4 * 2, (2 * 16 + 4 * 2) * 100)
    assert (report.params_before, report.params_after) == (1232, 168 + 40)
    assert (report.macs_before, report.macs_after) == (121600, 15200 + 4000)
    assert report.param_ratio == pytest.approx(1232 / 208) and report.mac_ratio == pytest.approx(121600 / 19200)
    text = report.table()
    assert "Tucker2Conv2d" in text and "1,168 -> 168" in text and "5.92x fewer parameters" in text
    data = report.to_dict()
    assert data["layers"][0]["ranks"] == [4, 2] and data["input_size"] == [8, 10, 10]


def test_without_input_size_the_report_has_no_macs():
    report = tt.compress(make_model(low_rank=2), "svd", max_rank=2)[1]
    assert report.macs_before is None and report.mac_ratio is None
    assert all(layer.macs_before is None and layer.macs_after is None for layer in report.layers.values())


# ---------------------------------------------------------------------------------------------------- exact costs


def meta_layers():
    geometry = dict(in_channels=12, out_channels=18, kernel_size=(3, 2), stride=(2, 1), padding=(1, 0), groups=3,
                    dilation=(1, 2), padding_mode="reflect")
    return [
        (tt.Tucker2Conv2d(**geometry, ranks=(4, 3)), [4, 3, 4, 6]),
        (tt.CPConv2d(**geometry, rank=5, bias=False), [4, 5, 5, 5, 6]),
        (tt.MPSConv2d(**geometry, bond_dims=(2, 5, 3), order="owhi"), [4, 3, 5, 2, 6]),
        (tt.SVDConv2d(**geometry, rank=3, cut="ow|ih"), [4, 3, 6]),
        (tt.SVDLinear(12, 7, rank=3), [12, 3, 7]),
    ]


@pytest.mark.parametrize(("layer", "widths"), meta_layers())
def test_chain_costs_equal_the_counts_of_the_built_layer(layer, widths):
    shape = (12,) if isinstance(layer, tt.SVDLinear) else (12, 11, 9)
    costs = ChainCosts.of(layer, shape)
    assert costs.params(widths) == tt.count_params(layer)
    assert costs.macs(widths) == tt.count_macs(layer, shape)
    vectorized = costs.params([np.array([w, w]) for w in widths])
    assert vectorized.tolist() == [tt.count_params(layer)] * 2


def test_rank_grid_keeps_every_rank_or_spreads_them_ending_at_full():
    assert rank_grid(5, 8).tolist() == [1, 2, 3, 4, 5]
    grid = rank_grid(100, 12)
    assert grid[0] == 1 and grid[-1] == 100 and len(grid) == 12 and np.all(np.diff(grid) > 0)


# --------------------------------------------------------------------------------------------------------- budget


@pytest.mark.parametrize("method", ["tucker2", "mps", "svd"])
@pytest.mark.parametrize("budget_on", ["params", "macs"])
def test_a_budget_is_met_on_the_selected_layers(method, budget_on):
    model = make_model()
    small, report = tt.compress(model, method, budget=0.4, budget_on=budget_on, input_size=INPUT)
    before = sum(getattr(layer, f"{budget_on}_before") for layer in report.layers.values())
    after = sum(getattr(layer, f"{budget_on}_after") for layer in report.layers.values())
    assert after <= 0.4 * before
    assert report.policy == "budget" and report.budget == 0.4 and report.budget_on == budget_on


def test_a_full_budget_keeps_every_layer_dense():
    model = make_model()
    small, report = tt.compress(model, "svd", budget=1.0)
    assert all(layer.structure == "Conv2d" and layer.note for layer in report.layers.values())
    x = sample()
    torch.testing.assert_close(small(x), model(x), rtol=0, atol=0)


def test_the_svd_budget_beats_one_rank_fraction_for_all_layers():
    """Greedy allocation against the same cut of every layer at one fraction of its full rank, at no more cost."""
    model = make_model(low_rank=3)
    with torch.no_grad():  # a full-rank layer beside low-rank ones: the uniform fraction wastes ranks on those
        model.same.weight.copy_(torch.randn_like(model.same.weight))
    uniform = tt.compress(model, "svd", max_rank=6)[1]
    cost = sum(layer.params_after for layer in uniform.layers.values())
    total = sum(layer.params_before for layer in uniform.layers.values())
    allocated = tt.compress(model, "svd", budget=cost / total)[1]
    assert sum(layer.params_after for layer in allocated.layers.values()) <= cost
    squared = [sum(layer.rel_error**2 for layer in r.layers.values()) for r in (allocated, uniform)]
    assert squared[0] < squared[1]


def test_the_cp_budget_fits_a_ladder_of_ranks_and_meets_the_budget():
    model = make_model()
    # the ladder of the 16x16x3x3 "same": geometric from 1 to 60, the largest rank whose factors are smaller
    ladder = CPStructure(model.same, {"seed": 0, "max_iter": 10}).candidates()
    largest = min(16 * 16 * 9 // 16, (16 * 16 * 9 - 1) // (16 + 16 + 3 + 3))
    ranks = [r for (r,) in ladder.ranks]
    assert largest == 60 and ranks == [1, 2, 3, 4, 6, 9, 14, 20, 29, 41, 60]
    # the candidates are the warm-started ladder's fits (fit's max_iter bounds each rung, CP_RIDGE each fit)
    rungs = tnlib.cp_ladder(model.same.weight.detach().double(), ranks, sweeps=10, seed=0, labels="oihw",
                            ridge=CP_RIDGE)
    np.testing.assert_allclose(ladder.errors, [rung.info.rel_error ** 2 for rung in rungs], rtol=1e-10)
    assert np.all(np.diff(ladder.errors) <= 1e-12)
    small, report = tt.compress(model, "cp", budget=0.5, include=["same", "mix"], fit={"max_iter": 10}, seed=0)
    # rank R of "same" costs 16 R + 3 R + 3 R + 16 R + 16 (depthwise spatial stages); 20 is the largest rung that
    # fits beside the dense "mix" (408) under half of 2320 + 408, and beats every SVD rank of "mix" that would fit
    assert (report.layers["same"].ranks, report.layers["same"].params_after) == ((20,), 38 * 20 + 16)
    assert report.layers["same"].rel_error ** 2 <= ladder.errors[ranks.index(20)] + 1e-12  # continued from its rung
    assert report.layers["mix"].structure == "Conv2d" and type(small.mix) is nn.Conv2d
    assert sum(layer.params_after for layer in report.layers.values()) <= 0.5 * (16 * 16 * 9 + 16 + 16 * 24 + 24)


def test_a_depthwise_stage_costs_linearly_at_every_rank():
    """The CP chain's costs read off a rank-1 layer (where depthwise and dense convs look alike) stay exact."""
    costs = ChainCosts.of(tt.CPConv2d(16, 16, 3, rank=1, device="meta"), (16, 8, 8))
    for rank in (2, 6, 19):
        layer = tt.CPConv2d(16, 16, 3, rank=rank)
        widths = [16, rank, rank, rank, 16]
        assert costs.params(widths) == tt.count_params(layer) and costs.macs(widths) == tt.count_macs(layer, (16, 8, 8))


def test_a_budget_below_the_smallest_ranks_is_refused():
    with pytest.raises(ValueError, match="below the cheapest allocation"):
        tt.compress(make_model(), "svd", budget=0.01)


# ------------------------------------------------------------------------------------------------------- accuracy


def test_the_accuracy_policy_keeps_the_layer_the_score_depends_on():
    model = make_model()
    calls = []

    def evaluate(m: nn.Module) -> float:
        calls.append(type(m.same).__name__)
        assert not torch.is_grad_enabled()
        return 1.0 if isinstance(m.same, nn.Conv2d) else 0.0  # any compression of "same" is fatal

    small, report = tt.compress(model, "tucker2", budget=0.85, evaluate=evaluate, eval_points=3,
                                include=["stem", "same", "mix"])
    assert type(small.same) is nn.Conv2d and not isinstance(small.stem, nn.Conv2d)
    assert report.policy == "accuracy" and report.scores["baseline"] == 1.0
    assert [score for *_, score in report.scores["same"]] == [0.0] * len(report.scores["same"])
    assert len(calls) == 1 + sum(len(report.scores[name]) for name in ("stem", "same", "mix"))
    assert type(model.same) is nn.Conv2d  # the copy was scored, and every scored layer put back


def test_the_accuracy_policy_trades_the_least_harmful_layers_first():
    model = make_model(low_rank=2)
    x = sample()
    reference = model(x)

    def evaluate(m: nn.Module) -> float:
        return -rel_diff(m(x), reference)

    small, report = tt.compress(model, "svd", budget=0.5, evaluate=evaluate, input_size=INPUT)
    after = sum(layer.params_after for layer in report.layers.values())
    assert after <= 0.5 * sum(layer.params_before for layer in report.layers.values())
    assert rel_diff(small(x), reference) < 1e-8  # the low-rank kernels lose nothing at the ranks it can afford


def test_evaluate_must_return_a_number():
    with pytest.raises(ValueError, match="evaluate must return a number"):
        tt.compress(make_model(), "svd", budget=0.5, evaluate=lambda m: float("nan"))


# ------------------------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "message"),
    [
        (("pca",), {"rel_error": 0.1}, ValueError, r"method must be one of 'tucker2', 'cp'"),
        (("cp",), {"ranks": 4}, ValueError, r"ranks is the size limit of method 'tucker2'; method 'cp' takes rank"),
        (("tucker2",), {"max_rank": 4}, ValueError, r"max_rank is the size limit of method 'svd' and 'truncate'"),
        (("tucker2",), {"ranks": 0}, ValueError, r"ranks must be >= 1"),
        (("cp",), {"rank": 2.5}, TypeError, r"rank must be an int or a sequence of ints"),
        (("tucker2",), {}, ValueError, r"give method 'tucker2' a criterion \(ranks, rel_error, cutoff\) or a budget"),
        (("cp",), {"cutoff": 0.1}, ValueError, r"cutoff is only for method 'tucker2' or 'mps' or 'svd' or 'truncate'"),
        (("tucker2",), {"cut": "o|ihw", "ranks": 2}, ValueError, r"cut is only for method 'svd' or 'truncate'"),
        (("svd",), {"order": "ihwo", "max_rank": 2}, ValueError, r"order is only for method 'mps'"),
        (("svd",), {"budget": 0.5, "max_rank": 2}, ValueError, r"do not also give max_rank"),
        (("svd",), {"budget": 0.0}, ValueError, r"budget must be a fraction in \(0, 1\]"),
        (("svd",), {"budget": 1.5}, ValueError, r"budget must be a fraction in \(0, 1\]"),
        (("svd",), {"budget": 0.5, "budget_on": "flops"}, ValueError, r"budget_on must be one of 'params', 'macs'"),
        (("svd",), {"budget": 0.5, "budget_on": "macs"}, ValueError, r"budget_on='macs' needs input_size"),
        (("truncate",), {"budget": 0.5}, ValueError, r"method 'truncate' keeps dense kernels"),
        (("truncate",), {"rel_error": 0.1, "linear": True}, ValueError, r"linear=True is not supported"),
        (("svd",), {"rel_error": 0.1, "evaluate": lambda m: 1.0}, ValueError, r"evaluate needs a budget"),
        (("svd",), {"budget": 0.5, "evaluate": 3}, TypeError, r"evaluate must be a callable"),
        (("svd",), {"budget": 0.5, "evaluate": lambda m: 1.0, "eval_points": 0}, ValueError, r"eval_points must"),
        (("svd",), {"rel_error": 0.1, "fit": "lm"}, TypeError, r"fit must be a mapping"),
        (("svd",), {"rel_error": 0.1, "include": "nothing*"}, ValueError, r"include pattern 'nothing\*' matches no"),
        (("svd",), {"rel_error": 0.1, "where": lambda n, m: False}, ValueError, r"no nn\.Conv2d layer of the model"),
        (("cp",), {"rank": 2, "fit": {"bogus": 1}}, TypeError, r"layer 'stem': .*bogus"),
        (("svd",), {"cut": "oi|hw", "max_rank": 2}, ValueError, r"layer 'stem': cut 'oi\|hw' puts o and i"),
        (("svd",), {"cut": "x|oih", "max_rank": 2}, ValueError, r"layer 'stem': .*x"),
    ],
)
def test_bad_arguments_are_refused_naming_them(args, kwargs, error, message):
    model = make_model()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(error, match=message):
        tt.compress_(model, *args, **kwargs)
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert type(model.stem) is nn.Conv2d


def test_bad_models_are_refused():
    with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
        tt.compress("resnet", "svd", rel_error=0.1)
    model = make_model()
    with torch.no_grad():
        model.same.weight[0, 0, 0, 0] = math.nan
    with pytest.raises(ValueError, match="layer 'same': its weight contains NaN"):
        tt.compress(model, "svd", rel_error=0.1)


# --------------------------------------------------------------------------------------------------------- export


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
@pytest.mark.parametrize("method", ["tucker2", "cp", "mps", "svd"])
def test_a_compressed_model_scripts_and_exports_with_its_numbers(method):
    """tests/torch/test_export.py covers every structure and ONNX; this is the model compress hands back."""
    model = make_model()
    small, _ = tt.compress(model, method, budget=0.5, linear=True, fit={"seed": 0, "max_iter": 10} if method == "cp"
                           else None)
    small.eval()
    x = sample()
    with torch.no_grad():
        expected = small(x)
        torch.testing.assert_close(torch.jit.script(small)(x), expected, rtol=1e-12, atol=1e-12)
        program = torch.export.export(small, (x,))
        torch.testing.assert_close(program.module()(x), expected, rtol=1e-12, atol=1e-12)


def test_documented_signature_matches_the_code():
    from pathlib import Path

    from tests.core.test_api import plain_signature

    docs = (Path(__file__).resolve().parents[2] / "docs" / "torch_compress.md").read_text()
    assert re.findall(r"^tnlib_torch\.compress_\((.*)\)\s*$", docs, re.M) == [plain_signature(tt.compress_)]
    assert re.findall(r"^tnlib_torch\.compress\((.*?)\)  ", docs, re.M) == ["model, method='tucker2', **options"]


# ----------------------------------------------------------------------------------------------- policies and seed


def request(method: str, **given):
    arguments = dict(rel_error=None, sizes=dict(ranks=None, rank=None, max_bond=None, max_rank=None),
                     options=dict(cutoff=None, cut=None, order=None), fit=None, seed=None, linear=False, budget=None,
                     budget_on="params", evaluate=None, eval_points=9, input_size=None)
    return check_request(method, **{**arguments, **given})


def test_the_policy_is_chosen_once_from_the_checked_request():
    cases = [(request("svd", rel_error=0.1), "fixed", FixedPolicy),
             (request("truncate", rel_error=0.1), "fixed", TruncationPolicy),
             (request("svd", budget=0.5), "budget", BudgetPolicy),
             (request("svd", budget=0.5, evaluate=len), "accuracy", AccuracyPolicy)]
    for checked, name, kind in cases:
        assert checked.policy == name and type(policy_for(checked, None)) is kind
    assert not hasattr(cases[0][0], "structure")  # the checked request builds nothing


@pytest.mark.parametrize(("method", "kwargs"), [
    ("cp", {"rank": 3}),
    ("svd", {"max_rank": 3, "fit": {"method": "randomized"}}),
    ("truncate", {"max_rank": 2, "fit": {"method": "randomized"}}),
])
def test_seed_makes_a_compression_repeat_and_is_fit_seed(method, kwargs):
    model = make_model()
    reports = [tt.compress(model, method, seed=0, **kwargs)[1] for _ in range(2)]
    fit = {**kwargs.pop("fit", {}), "seed": 0}
    by_fit = tt.compress(model, method, fit=fit, **kwargs)[1]
    assert reports[0].layers == reports[1].layers == by_fit.layers


def test_tucker2_takes_a_seed_it_does_not_need():
    model = make_model()
    seeded, plain = (tt.compress(model, "tucker2", ranks=4, **extra)[1] for extra in ({"seed": 3}, {}))
    assert seeded.layers == plain.layers


@pytest.mark.parametrize(("kwargs", "error", "match"), [
    ({"seed": 0, "fit": {"seed": 1}}, ValueError, r"seed is given twice"),
    ({"seed": -1}, ValueError, r"seed"),
    ({"seed": 1.5}, TypeError, r"seed"),
])
def test_a_bad_or_doubled_seed_is_refused(kwargs, error, match):
    with pytest.raises(error, match=match):
        tt.compress(make_model(), "cp", rank=2, **kwargs)


def test_seed_defaults_to_none_as_in_the_core():
    import inspect

    import tnlib
    assert inspect.signature(tt.compress_).parameters["seed"].default is None
    assert inspect.signature(tnlib.cp).parameters["seed"].default is None


def test_tucker2_cutoff_is_the_layers_cutoff():
    model = make_model(low_rank=3)
    small, report = tt.compress(model, "tucker2", cutoff=1e-6, include="same")
    layer = tt.Tucker2Conv2d.from_conv(model.same, cutoff=1e-6)
    assert report.layers["same"].ranks == layer.ranks == (3, 3)
    torch.testing.assert_close(small.same.folded_weight(), layer.folded_weight())


def test_every_layer_record_round_trips_through_json():
    import json
    for report in (tt.compress(make_model(), "tucker2", ranks=4, input_size=INPUT)[1],
                   tt.compress(make_model(), "truncate", max_rank=2)[1]):
        for layer in report.layers.values():
            assert tt.LayerCompression.from_dict(json.loads(json.dumps(layer.to_dict()))) == layer
    truncated = report.layers["stem"]
    assert truncated.structure == "truncated" and truncated.factored_params == 2 * (12 + 36) + 12
    assert truncated.info.ranks == truncated.ranks == (2,) and tt.LayerReport is tt.LayerCompression
