"""Factorized conv and linear layers: exact at full rank, equal to their own folded conv, trainable, scriptable."""

from __future__ import annotations

import math
import random
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import tnlib  # noqa: E402
import tnlib_torch as tt  # noqa: E402
from tests.core.test_api import plain_signature  # noqa: E402
from tnlib_torch.layers.chain import at_common_ranks  # noqa: E402
from tnlib_torch.layers.factorized import MPS_ORDERS, _core_stage  # noqa: E402
from tnlib_torch.layers.geometry import fold  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CUTS = ("o|ihw", "i|ohw", "oh|iw", "ow|ih")
CONV_LAYERS = (tt.CPConv2d, tt.Tucker2Conv2d, tt.MPSConv2d, tt.SVDConv2d)


def random_config(seed: int) -> dict:
    """A conv geometry drawn at random: channels, rectangular kernel, stride, padding, dilation, groups, bias."""
    rng = random.Random(seed)
    kind = rng.choice(["dense", "grouped", "depthwise"])
    if kind == "dense":
        groups, in_g, out_g = 1, rng.randint(1, 4), rng.randint(1, 4)
    elif kind == "grouped":
        groups, in_g, out_g = rng.randint(2, 3), rng.randint(1, 3), rng.randint(1, 3)
    else:
        groups, in_g, out_g = rng.randint(2, 4), 1, rng.randint(1, 2)
    padding = rng.choice(["int", "pair", "same", "valid"])
    stride = (1, 1) if padding == "same" else (rng.randint(1, 3), rng.randint(1, 3))
    padding = {"int": rng.randint(0, 2), "pair": (rng.randint(0, 2), rng.randint(0, 2))}.get(padding, padding)
    return {"in_channels": groups * in_g, "out_channels": groups * out_g,
            "kernel_size": (rng.randint(1, 5), rng.randint(1, 5)), "stride": stride, "padding": padding,
            "dilation": (rng.randint(1, 2), rng.randint(1, 2)), "groups": groups, "bias": rng.random() < 0.7,
            "padding_mode": rng.choice(["zeros", "reflect", "replicate", "circular"])}


CONFIGS = [random_config(seed) for seed in range(48)]


def make_conv(config: dict, seed: int = 0, dtype=torch.float64) -> nn.Conv2d:
    torch.manual_seed(seed)
    return nn.Conv2d(**config, dtype=dtype)


def make_input(conv: nn.Module, seed: int = 1) -> torch.Tensor:
    """A batch for a conv or a factorized conv, in its dtype."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(2, conv.in_channels, 10, 11, generator=gen, dtype=next(conv.parameters()).dtype)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).norm() / b.norm()) if b.norm() > 0 else float(a.norm())


def full_rank_layers(conv: nn.Conv2d) -> list:
    return [tt.Tucker2Conv2d.from_conv(conv), *(tt.MPSConv2d.from_conv(conv, order=o) for o in MPS_ORDERS),
            *(tt.SVDConv2d.from_conv(conv, cut=c) for c in CUTS)]


def truncated_layers(conv: nn.Conv2d, seed: int) -> list:
    shape = (conv.out_channels // conv.groups, *conv.weight.shape[1:])  # CP ranks above prod / max are refused
    return [tt.CPConv2d.from_conv(conv, min(1 + seed % 3, math.prod(shape) // max(shape)), max_iter=3, seed=seed),
            tt.Tucker2Conv2d.from_conv(conv, ranks=1), tt.MPSConv2d.from_conv(conv, MPS_ORDERS[seed % 4], max_bond=1),
            tt.SVDConv2d.from_conv(conv, CUTS[seed % 4], max_rank=1)]


# -- equivalence ----------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(len(CONFIGS)))
@torch.no_grad()
def test_exact_structures_at_full_rank_reproduce_the_conv(seed):
    conv = make_conv(CONFIGS[seed], seed)
    x = make_input(conv, seed)
    expected = conv(x)
    for layer in full_rank_layers(conv):
        assert rel(layer(x), expected) < 1e-10, layer
        assert rel(layer.to_conv()(x), expected) < 1e-10, layer
        assert layer.info.rel_error < 1e-10


@pytest.mark.parametrize("seed", range(len(CONFIGS)))
@torch.no_grad()
def test_every_structure_computes_the_conv_of_its_folded_kernel(seed):
    conv = make_conv(CONFIGS[seed], seed)
    x = make_input(conv, seed)
    for layer in truncated_layers(conv, seed):
        y, dense = layer(x), layer.to_conv()
        assert y.shape == conv(x).shape
        assert rel(dense(x), y) < 1e-10, layer
        assert layer.info.rel_error == pytest.approx(rel(dense.weight, conv.weight), abs=1e-9)


def test_to_conv_keeps_dtype_device_bias_and_geometry():
    conv = nn.Conv2d(6, 4, (3, 2), stride=(2, 1), padding="valid", dilation=(1, 2), groups=2, padding_mode="circular")
    x = make_input(conv)
    for layer in [*full_rank_layers(conv), tt.CPConv2d.from_conv(conv, 2, seed=0)]:
        dense = layer.to_conv()
        assert layer.layers[0].weight.dtype == dense.weight.dtype == torch.float32
        assert dense.weight.device == conv.weight.device
        assert torch.equal(dense.bias, conv.bias)
        for name in ("in_channels", "out_channels", "kernel_size", "stride", "padding", "dilation", "groups",
                     "padding_mode"):
            assert getattr(dense, name) == getattr(conv, name) == getattr(layer, name), name
        assert rel(dense(x), layer(x)) < 1e-5


@pytest.mark.gpu
def test_fits_and_folds_stay_on_the_gpu():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    conv = make_conv(CONFIGS[3]).cuda()
    x = make_input(conv).cuda()
    for layer in [*full_rank_layers(conv), tt.CPConv2d.from_conv(conv, 1, seed=0)]:
        assert all(p.is_cuda for p in layer.parameters()) and layer.to_conv().weight.is_cuda
        assert rel(layer.to_conv()(x), layer(x)) < 1e-10


def test_svd_linear_splits_a_linear_layer():
    torch.manual_seed(0)
    linear = nn.Linear(7, 5, dtype=torch.float64)
    x = torch.randn(3, 7, dtype=torch.float64)
    full = tt.SVDLinear.from_linear(linear)
    assert full.rank == 5 and rel(full(x), linear(x)) < 1e-12
    half = tt.SVDLinear.from_linear(linear, max_rank=2)
    assert half.rank == 2 and rel(half.to_linear()(x), half(x)) < 1e-12
    s = torch.linalg.svdvals(linear.weight.detach())
    assert half.info.rel_error == pytest.approx(float(s[2:].norm() / s.norm()))
    assert tt.SVDLinear.from_linear(linear, rel_error=1.0).rank == 1  # a layer keeps at least one channel


def test_one_by_one_convs_split_by_svd():
    torch.manual_seed(0)
    conv = nn.Conv2d(8, 6, 1, stride=2, dtype=torch.float64)
    x = make_input(conv)
    layer = tt.SVDConv2d.from_conv(conv, max_rank=3)
    assert [tuple(s.weight.shape) for s in layer.layers] == [(3, 8, 1, 1), (6, 3, 1, 1)]
    assert layer.layers[0].stride == (2, 2) and rel(layer.to_conv()(x), layer(x)) < 1e-12


# -- fits: error targets and groups -----------------------------------------------------------------


def grouped_conv_with_different_group_ranks() -> nn.Conv2d:
    """Three groups: a rank-one kernel, a random one and a tiny one, so that error targets give different ranks."""
    conv = nn.Conv2d(6, 9, 3, groups=3, padding=1, dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        vectors = [torch.randn(d, generator=gen, dtype=torch.float64) for d in (3, 2, 3, 3)]
        conv.weight[:3] = torch.einsum("o,i,h,w->oihw", *vectors)
        conv.weight[6:] *= 1e-3
    return conv


@pytest.mark.parametrize("make", [
    lambda conv: tt.Tucker2Conv2d.from_conv(conv, rel_error=0.3),
    lambda conv: tt.MPSConv2d.from_conv(conv, rel_error=0.3),
    lambda conv: tt.SVDConv2d.from_conv(conv, cut="oh|iw", rel_error=0.3),
], ids=["tucker2", "mps", "svd"])
def test_error_targets_hold_for_grouped_convs_at_one_common_rank(make):
    conv = grouped_conv_with_different_group_ranks()
    layer = make(conv)
    measured = rel(layer.to_conv().weight, conv.weight)
    assert measured <= 0.3 + 1e-12
    assert layer.info.rel_error == pytest.approx(measured, abs=1e-12)
    assert len(layer.info.steps) == 3 and all(step.ranks == layer.info.ranks for step in layer.info.steps)
    x = make_input(conv)
    assert rel(layer.to_conv()(x), layer(x)) < 1e-10


def built_ranks(layer) -> tuple[int, ...]:
    """The ranks the built sub-layers carry per group, read off their weight shapes."""
    g = layer.geometry.groups
    widths = tuple(stage.weight.shape[0] // g for stage in layer.layers)[:-1]
    if isinstance(layer, tt.Tucker2Conv2d):
        return widths[1], widths[0]  # (R_o, R_i): the core maps R_i to R_o
    if isinstance(layer, tt.MPSConv2d) and layer.order[0] == "o":
        return widths[::-1]  # the chain runs from i: the order's bonds read backwards
    return widths


@pytest.mark.parametrize("make", [
    lambda conv: tt.Tucker2Conv2d.from_conv(conv, rel_error=0.3),
    lambda conv: tt.Tucker2Conv2d.from_conv(conv, rel_error=1e-9),
    lambda conv: tt.MPSConv2d.from_conv(conv, rel_error=0.3),
    lambda conv: tt.MPSConv2d.from_conv(conv, order="owhi", rel_error=1e-9),
    lambda conv: tt.SVDConv2d.from_conv(conv, cut="oh|iw", rel_error=0.3),
    lambda conv: tt.SVDConv2d.from_conv(conv, rel_error=1e-9),
], ids=["tucker2", "tucker2-tight", "mps", "mps-tight", "svd", "svd-tight"])
def test_reported_ranks_agree_with_the_steps_and_the_built_factors(make):
    """Regression: a group whose refit at the common ranks erred more by round-off kept a report of its own ranks."""
    conv = grouped_conv_with_different_group_ranks()
    for _ in range(3):  # the same layer and report every time
        layer = make(conv)
        ranks = layer.info.ranks
        declared = {tt.Tucker2Conv2d: "ranks", tt.MPSConv2d: "bond_dims"}.get(type(layer))
        assert ranks == built_ranks(layer) == (getattr(layer, declared) if declared else (layer.rank,))
        assert [step.ranks for step in layer.info.steps] == [ranks] * 3


def test_fits_that_differ_by_round_off_keep_the_fit_at_the_common_ranks():
    kernel = torch.as_tensor(np.random.default_rng(0).standard_normal((3, 2, 3, 3)))

    def fit(ranks, error):
        t = tnlib.tucker(kernel, ranks, modes=(0, 1))
        return t.ranks, [t.core], replace(t.info, rel_error=error)

    first, second = fit((1, 1), 1e-16), fit((3, 2), 6e-16)
    assert at_common_ranks(first, second) is second


def test_a_group_keeps_its_own_fit_padded_with_zeros_where_the_common_bonds_would_err_more():
    """TT-SVD's error is not monotone in the bonds: for this kernel bonds (3, 3, 1) err more than (2, 3, 1)."""
    rng = np.random.default_rng(1)
    rng.integers(2, 5, size=4)  # the draw that picked the shape in the search that found this kernel
    kernel = torch.as_tensor(rng.standard_normal((3, 3, 4, 4)) * rng.standard_normal((3, 3, 4, 4)) ** 2)

    def fit(bonds):
        m = tnlib.mps(kernel, order="ihwo", max_bond=bonds)
        return m.bond_dims, [_core_stage(core, label) for core, label in zip(m.cores, "ihwo")], m.info

    first, second = fit([2, 3, 1]), fit([3, 3, 1])
    assert second[2].rel_error > first[2].rel_error + 1e-3
    ranks, weights, info = at_common_ranks(first, second)
    assert ranks == info.ranks == (3, 3, 1) and info == replace(first[2], ranks=(3, 3, 1))
    assert [w.shape for w in weights] == [w.shape for w in second[1]]
    folded = fold([(w, 1) for w in weights], 1)
    assert torch.allclose(folded, tnlib.mps(kernel, order="ihwo", max_bond=[2, 3, 1]).to_dense(), atol=1e-12)
    assert at_common_ranks(second, first) is first  # a fit that errs no more is kept as it is


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
@pytest.mark.parametrize("make", [
    lambda conv: tt.Tucker2Conv2d.from_conv(conv, rel_error=0.0),
    lambda conv: tt.SVDConv2d.from_conv(conv, rel_error=0.0),
    lambda conv: tt.MPSConv2d.from_conv(conv, rel_error=0.0),
    lambda conv: tt.CPConv2d.from_conv(conv, 4, max_iter=3, seed=0),
], ids=["tucker2", "svd", "mps", "cp"])
def test_low_precision_layers_report_the_error_of_the_stored_factors(make, dtype):
    """Regression: a float16 conv fitted exactly in float64 reported 0.0 while its stored factors erred 3e-4."""
    conv = make_conv({"in_channels": 4, "out_channels": 6, "kernel_size": 3, "groups": 2}, dtype=dtype)
    layer = make(conv)
    assert all(p.dtype == dtype for p in layer.parameters())
    stored = fold([(stage.weight.detach().double(), stage.groups) for stage in layer.layers], 2)
    measured = rel(stored, conv.weight.double())
    assert measured > 0 and layer.info.rel_error == pytest.approx(measured, rel=1e-9, abs=1e-15)
    if hasattr(layer.info, "norm_loss"):
        expected = 1 - float(stored.norm() / conv.weight.detach().double().norm())
        assert layer.info.norm_loss == pytest.approx(expected, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_linear_reports_the_error_of_the_stored_factors(dtype):
    torch.manual_seed(0)
    linear = nn.Linear(7, 5, dtype=dtype)
    layer = tt.SVDLinear.from_linear(linear, rel_error=0.0)
    stored = layer.layers[1].weight.detach().double() @ layer.layers[0].weight.detach().double()
    measured = rel(stored, linear.weight.double())
    assert measured > 1e-5 and layer.info.rel_error == pytest.approx(measured, rel=1e-9)


def test_cp_fit_reports_history_and_error():
    conv = make_conv({"in_channels": 4, "out_channels": 6, "kernel_size": 3, "groups": 2})
    layer = tt.CPConv2d.from_conv(conv, 3, method="lm", max_iter=5, seed=0)
    assert isinstance(layer.info, tt.CPFitInfo) and layer.info.rank == layer.rank == 3
    assert len(layer.info.history) == 2 and all(1 <= len(h) <= 5 for h in layer.info.history)
    assert layer.info.rel_error == pytest.approx(rel(layer.to_conv().weight, conv.weight), abs=1e-10)


def test_cp_ridge_is_the_core_fit_with_that_ridge():
    conv = make_conv({"in_channels": 5, "out_channels": 6, "kernel_size": 3})
    kernel = conv.weight.detach().double()
    for ridge in (0.0, 0.5):
        layer = tt.CPConv2d.from_conv(conv, 3, max_iter=20, seed=0, ridge=ridge)
        fit = tnlib.cp(kernel, 3, max_iter=20, seed=0, ridge=ridge)
        assert torch.allclose(layer.folded_weight().detach().double(), fit.to_dense(), atol=1e-6)
    with pytest.raises(ValueError, match="ridge applies to method='als' only"):
        tt.CPConv2d.from_conv(conv, 3, method="lm", ridge=0.5)


def test_cp_significance_reads_the_current_factors():
    conv = make_conv({"in_channels": 5, "out_channels": 6, "kernel_size": (3, 2)})
    layer = tt.CPConv2d.from_conv(conv, 3, max_iter=20, seed=0)
    fit = tnlib.cp(conv.weight.detach(), 3, max_iter=20, seed=0)
    sig = layer.significance()
    assert torch.allclose(sig.scores, tnlib.cp_significance(fit).scores, rtol=1e-10)
    assert sig.importance("i").shape == (5,) and sig.importance("hw").shape == (3, 2)
    assert float(sig.importance("o").sum()) == pytest.approx(1.0)
    grouped = tt.CPConv2d.from_conv(make_conv({"in_channels": 4, "out_channels": 6, "kernel_size": 3, "groups": 2}),
                                    2, seed=0)
    dense, folded = grouped.cp_tensor().to_dense(), grouped.folded_weight().detach()
    assert dense.shape == (6, 4, 3, 3) and grouped.significance().scores.shape == (4,)
    assert torch.allclose(dense[:3, :2], folded[:3]) and torch.allclose(dense[3:, 2:], folded[3:])
    assert float(dense[:3, 2:].abs().max()) == 0.0


# -- training, serialization, compilation ----------------------------------------------------------

GEOMETRY = {"in_channels": 4, "out_channels": 6, "kernel_size": (3, 2), "stride": (2, 1), "padding": 1, "groups": 2,
            "padding_mode": "reflect"}
FROM_SCRATCH = {tt.CPConv2d: {"rank": 2}, tt.Tucker2Conv2d: {"ranks": (2, 1)},
                tt.MPSConv2d: {"bond_dims": (2, 3, 2), "order": "owhi"}, tt.SVDConv2d: {"rank": 2, "cut": "ow|ih"}}


@pytest.mark.parametrize("cls", CONV_LAYERS, ids=lambda c: c.__name__)
def test_gradients_reach_every_factor(cls):
    torch.manual_seed(0)
    layer = cls(**GEOMETRY, **FROM_SCRATCH[cls], dtype=torch.float64)
    layer(make_input(layer)).square().sum().backward()
    for name, param in layer.named_parameters():
        assert param.grad is not None and float(param.grad.abs().sum()) > 0, name


@pytest.mark.parametrize("cls", CONV_LAYERS, ids=lambda c: c.__name__)
def test_state_dict_loads_into_a_fresh_layer_of_the_same_config(cls):
    torch.manual_seed(0)
    trained = cls(**GEOMETRY, **FROM_SCRATCH[cls], dtype=torch.float64)
    fresh = cls(**GEOMETRY, **FROM_SCRATCH[cls], dtype=torch.float64)
    fresh.load_state_dict(trained.state_dict())
    x = make_input(trained)
    assert torch.equal(fresh(x), trained(x))


def test_state_dict_of_a_fitted_layer_loads_into_one_built_from_its_ranks():
    conv = make_conv(GEOMETRY)
    x = make_input(conv)
    for layer in truncated_layers(conv, 1):
        ranks = {name: getattr(layer, name) for name in FROM_SCRATCH[type(layer)]}
        fresh = type(layer)(**GEOMETRY, **ranks, dtype=torch.float64)
        fresh.load_state_dict(layer.state_dict())
        assert torch.equal(fresh(x), layer(x))


def scripted_layers() -> list:
    torch.manual_seed(0)
    return [cls(**GEOMETRY, **FROM_SCRATCH[cls]) for cls in CONV_LAYERS]


JIT_DEPRECATED = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")


@JIT_DEPRECATED
@pytest.mark.parametrize("layer", scripted_layers(), ids=lambda m: type(m).__name__)
def test_layers_script_and_export(layer):
    x = make_input(layer)
    layer.info = tnlib.TruncationInfo((1,), 0.0, 0.0, 0.0)  # a Python-only attribute does not get in the way
    assert torch.equal(torch.jit.script(layer)(x), layer(x))
    exported = torch.export.export(layer, (x,))
    assert torch.allclose(exported.module()(x), layer(x))


@JIT_DEPRECATED
def test_svd_linear_scripts():
    layer = tt.SVDLinear(7, 5, 2)
    x = torch.randn(3, 7)
    assert torch.equal(torch.jit.script(layer)(x), layer(x))


# -- initialization -------------------------------------------------------------------------------


@pytest.mark.parametrize("layer", [
    lambda: tt.CPConv2d(6, 8, 3, 4), lambda: tt.Tucker2Conv2d(6, 8, (3, 2), (3, 2)),
    lambda: tt.MPSConv2d(6, 8, 3, 2), lambda: tt.SVDConv2d(6, 8, 3, 4, cut="oh|iw"),
    lambda: tt.CPConv2d(4, 8, 3, 2, groups=4), lambda: tt.SVDLinear(9, 7, 3),
], ids=["cp", "tucker2", "mps", "svd", "cp-depthwise", "linear"])
def test_folded_init_has_the_variance_of_pytorch_default_init(layer):
    """Over many draws every folded entry has variance 1 / (3 fan_in); the bias lies in PyTorch's bounds."""
    torch.manual_seed(0)
    layer = layer()
    draws = []
    for _ in range(300):
        layer.reset_parameters()
        draws.append(layer.folded_weight().detach())
    fan_in = draws[0][0].numel()
    variance = torch.stack(draws).square().mean()  # zero mean by symmetry
    assert float(variance) * 3 * fan_in == pytest.approx(1.0, rel=0.1)
    assert float(layer.layers[-1].bias.detach().abs().max()) <= fan_in**-0.5


# -- bad input ------------------------------------------------------------------------------------


def test_unsupported_modules_are_refused_naming_the_supported_ones():
    for bad in (nn.Conv1d(2, 2, 3), nn.Linear(3, 3), nn.ConvTranspose2d(2, 2, 3)):
        for cls in CONV_LAYERS:
            args = (1,) if cls is tt.CPConv2d else ()
            with pytest.raises(TypeError, match=r"conv must be a torch\.nn\.Conv2d .*got " + type(bad).__name__):
                cls.from_conv(bad, *args)
    with pytest.raises(TypeError, match=r"linear must be a torch\.nn\.Linear .*got Conv2d"):
        tt.SVDLinear.from_linear(nn.Conv2d(2, 2, 1))


def test_non_4d_weights_are_refused():
    conv = nn.Conv2d(4, 4, 3)
    conv.weight = nn.Parameter(torch.zeros(4, 4, 9))
    for cls in CONV_LAYERS:
        with pytest.raises(ValueError, match=r"conv\.weight must have 4 dimensions .* got shape \(4, 4, 9\)"):
            cls.from_conv(conv, *((1,) if cls is tt.CPConv2d else ()))


@pytest.mark.parametrize("call, error, message", [
    (lambda c: tt.CPConv2d.from_conv(c, 0), ValueError, r"rank must be a positive integer \(>= 1\), got 0"),
    (lambda c: tt.CPConv2d.from_conv(c, 1000), ValueError, r"rank = 1000 exceeds 36, the most useful"),
    (lambda c: tt.CPConv2d.from_conv(c, 2.0), TypeError, r"rank must be a positive integer, got 2.0"),
    (lambda c: tt.Tucker2Conv2d(4, 8, 3, ranks=(1, 5)), ValueError, r"ranks\[1\] = 5 exceeds 4"),
    (lambda c: tt.Tucker2Conv2d(4, 8, 3, ranks=0), ValueError, r"ranks must be a positive integer \(>= 1\)"),
    (lambda c: tt.SVDConv2d(4, 8, 3, rank=9), ValueError, r"rank = 9 exceeds 8, the most the cut 'o\|ihw'"),
    (lambda c: tt.SVDConv2d.from_conv(c, max_rank=0), ValueError, r"max_rank"),
    (lambda c: tt.SVDLinear(4, 8, 5), ValueError, r"rank = 5 exceeds 4"),
    (lambda c: tt.MPSConv2d(4, 8, 3, bond_dims=(5, 1, 1)), ValueError, r"bond_dims\[0\] = 5 exceeds 4"),
    (lambda c: tt.MPSConv2d(4, 8, 3, bond_dims=(2, 2)), ValueError, r"bond_dims must be an int or 3 ints"),
    (lambda c: tt.MPSConv2d.from_conv(c, max_bond=0), ValueError, r"max_bond"),
    (lambda c: tt.MPSConv2d.from_conv(c, order="iohw"), ValueError, r"order must put i and o at the two ends"),
    (lambda c: tt.MPSConv2d.from_conv(c, order="oihx"), ValueError, r"order must be a permutation of 'oihw'"),
    (lambda c: tt.SVDConv2d.from_conv(c, cut="o|ihx"), ValueError, r"cut 'o\|ihx' must split all of the labels"),
    (lambda c: tt.SVDConv2d.from_conv(c, cut="oi|hw"), ValueError, r"cut 'oi\|hw' puts o and i on the same side"),
    (lambda c: tt.SVDConv2d(4, 8, 3, 1, cut="h|oiw"), ValueError, r"puts o and i on the same side"),
    (lambda c: tt.SVDConv2d.from_conv(c, cut=3), TypeError, r"cut must be a string"),
    (lambda c: tt.CPConv2d(4, 6, 3, 1, groups=4), ValueError, r"out_channels = 6 must be divisible by groups = 4"),
    (lambda c: tt.CPConv2d(4, 6, 3, 1, stride=2, padding="same"), ValueError, r"padding='same' needs stride 1"),
    (lambda c: tt.CPConv2d(4, 6, 3, 1, padding="full"), ValueError, r"padding must be an int, a pair"),
    (lambda c: tt.CPConv2d(4, 6, 3, 1, padding_mode="mirror"), ValueError, r"padding_mode must be one of"),
    (lambda c: tt.CPConv2d(4, 6, (0, 3), 1), ValueError, r"kernel_size must be a positive integer \(>= 1\), got 0"),
    (lambda c: tt.CPConv2d(4, 6, 3, 1, padding=-1), ValueError,
     r"padding must be a non-negative integer \(>= 0\), got -1"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_bad_arguments_are_refused_naming_the_argument(call, error, message):
    conv = nn.Conv2d(4, 8, 3)
    with pytest.raises(error, match=message):
        call(conv)


# -- docs -----------------------------------------------------------------------------------------

DOCUMENTED = [tt.CPConv2d, tt.CPConv2d.from_conv, tt.Tucker2Conv2d, tt.Tucker2Conv2d.from_conv, tt.MPSConv2d,
              tt.MPSConv2d.from_conv, tt.SVDConv2d, tt.SVDConv2d.from_conv, tt.SVDLinear, tt.SVDLinear.from_linear]


@pytest.mark.parametrize("obj", DOCUMENTED, ids=lambda o: o.__qualname__)
def test_documented_signatures_match_the_code(obj):
    page = (ROOT / "docs" / "torch_layers.md").read_text()
    documented = re.findall(rf"^tnlib_torch\.{re.escape(obj.__qualname__)}\((.*)\)\s*$", page, re.M)
    assert documented == [plain_signature(obj)]


def test_tucker2_ranks_above_the_channels_are_caps_that_do_not_bind():
    conv = nn.Conv2d(4, 8, 3, bias=False)
    capped = tt.Tucker2Conv2d.from_conv(conv, ranks=(9, 99))
    exact = tt.Tucker2Conv2d.from_conv(conv, ranks=(8, 4))
    assert capped.ranks == exact.ranks == (8, 4)
    assert torch.equal(capped.to_conv().weight, exact.to_conv().weight)


def test_tucker2_cutoff_is_the_cores_cutoff_per_group():
    gen = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(8, 12, 3, groups=2, bias=False).double()
    planted = [torch.einsum("abhw,oa,ib->oihw", torch.randn(r, 2, 3, 3, generator=gen, dtype=torch.float64),
                            torch.randn(6, r, generator=gen, dtype=torch.float64),
                            torch.randn(4, 2, generator=gen, dtype=torch.float64)) for r in (2, 3)]
    with torch.no_grad():  # group ranks (2, 2) and (3, 2), under round-off noise
        conv.weight.copy_(torch.cat(planted) + 1e-9 * torch.randn(12, 4, 3, 3, generator=gen, dtype=torch.float64))
    layer = tt.Tucker2Conv2d.from_conv(conv, cutoff=1e-6)
    groups = conv.weight.detach().split(6)
    fits = [tnlib.tucker(kernel, cutoff=1e-6, modes=(0, 1)) for kernel in groups]
    assert [fit.ranks for fit in fits] == [(2, 2), (3, 2)]
    common = (3, 2)
    assert layer.ranks == common
    assert [step.ranks for step in layer.info.steps] == [common] * 2


def test_cp_fit_info_holds_each_groups_core_report():
    conv = make_conv({"in_channels": 4, "out_channels": 6, "kernel_size": 3, "groups": 2})
    layer = tt.CPConv2d.from_conv(conv, 3, max_iter=5, seed=0)
    kernels = conv.weight.detach().double().split(3)
    assert layer.info.steps == tuple(tnlib.cp(k, 3, max_iter=5, seed=0).info for k in kernels)
    assert layer.info.ranks == (3,) and layer.info.history == tuple(step.history for step in layer.info.steps)
    assert layer.info.converged == all(step.converged for step in layer.info.steps)
    folded = layer.to_conv().weight.detach().double()
    assert layer.info.norm_loss == pytest.approx(1 - float(folded.norm() / conv.weight.detach().double().norm()),
                                                 abs=1e-12)


def test_an_svd_split_keeps_one_value_of_a_zero_weight_and_refuses_a_nan():
    zero = nn.Linear(5, 4)
    with torch.no_grad():
        zero.weight.zero_()
    assert tt.SVDLinear.from_linear(zero, rel_error=0.5).rank == 1
    bad = nn.Linear(5, 4)
    with torch.no_grad():
        bad.weight[0, 0] = float("nan")
    with pytest.raises(ValueError, match="weight"):
        tt.SVDLinear.from_linear(bad, max_rank=2)
