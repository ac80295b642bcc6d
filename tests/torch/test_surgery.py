"""In-place truncation of conv kernels: the core's truncate, group by group, with the model's selection."""

from __future__ import annotations

import re
from collections import OrderedDict
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import tnlib  # noqa: E402
from tests.core.test_api import plain_signature  # noqa: E402
from tnlib_torch import LayerCompression, LayerReport, select_convs, truncate_conv_, truncate_model_  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def make_conv(in_ch: int = 6, out_ch: int = 8, groups: int = 1, dtype=torch.float64, **kwargs) -> nn.Conv2d:
    torch.manual_seed(0)
    return nn.Conv2d(in_ch, out_ch, 3, groups=groups, dtype=dtype, **kwargs)


def relative_error(reference: torch.Tensor, approx: torch.Tensor) -> float:
    return float((reference - approx).norm() / reference.norm())


@pytest.mark.parametrize(("cut", "max_rank"), [("o|ihw", 3), ("oi|hw", 2), (["o|ihw", "h|oiw"], [4, 2])])
def test_truncate_conv_is_the_core_truncate_of_the_weight(cut, max_rank):
    conv = make_conv(dtype=torch.float32)
    reference, expected = tnlib.truncate(conv.weight.detach().clone(), cut, "oihw", max_rank=max_rank)
    info = truncate_conv_(conv, cut, max_rank=max_rank)
    assert torch.equal(conv.weight.detach(), reference)
    assert info == expected


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("requires_grad", [True, False])
def test_parameter_object_dtype_device_and_requires_grad_are_kept(dtype, requires_grad):
    conv = make_conv(dtype=dtype)
    conv.weight.requires_grad_(requires_grad)
    weight = conv.weight
    truncate_conv_(conv, "o|ihw", max_rank=2)
    assert conv.weight is weight and isinstance(weight, nn.Parameter)
    assert (weight.dtype, weight.device, weight.requires_grad) == (dtype, torch.device("cpu"), requires_grad)
    assert weight.grad is None and weight.grad_fn is None


@pytest.mark.gpu
def test_a_cuda_kernel_is_truncated_on_its_device():
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    conv = make_conv(dtype=torch.float32).cuda()
    weight = conv.weight
    reference, _ = tnlib.truncate(weight.detach().cpu(), "o|ihw", "oihw", max_rank=2)
    assert truncate_conv_(conv, "o|ihw", max_rank=2).rank == 2
    assert conv.weight is weight and weight.is_cuda
    torch.testing.assert_close(weight.detach().cpu(), reference, rtol=1e-4, atol=1e-5)


def test_half_precision_kernels_are_truncated_in_float32():
    conv = make_conv(dtype=torch.float16)
    reference, _ = tnlib.truncate(conv.weight.detach().float(), "o|ihw", "oihw", max_rank=2)
    assert truncate_conv_(conv, "o|ihw", max_rank=2).rank == 2
    assert conv.weight.dtype == torch.float16 and torch.equal(conv.weight.detach(), reference.half())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("groups", [1, 2])
def test_half_precision_truncation_reports_the_error_of_the_kernel_written_back(dtype, groups):
    """Regression: the report was the float32 truncation's, not that of the rounded kernel written back."""
    conv = make_conv(4, 6, groups=groups, dtype=dtype)
    original = conv.weight.detach().double().clone()
    info = truncate_conv_(conv, "o|ihw", max_rank=2)
    stored = conv.weight.detach().double()
    measured = float((stored - original).norm() / original.norm())
    assert info.rel_error == pytest.approx(measured, rel=1e-9)
    assert info.norm_loss == pytest.approx(1 - float(stored.norm() / original.norm()), rel=1e-9, abs=1e-15)


def test_truncated_conv_computes_conv2d_with_the_truncated_kernel():
    conv = make_conv(6, 8, groups=2, stride=2, padding=1, dilation=2, bias=True)
    truncate_conv_(conv, "i|ohw", max_rank=1)
    kernel = conv.weight.detach().clone()
    x = torch.randn(2, 6, 9, 9, dtype=torch.float64)
    expected = F.conv2d(x, kernel, conv.bias, stride=2, padding=1, dilation=2, groups=2)
    torch.testing.assert_close(conv(x), expected, rtol=0, atol=0)


@pytest.mark.parametrize(
    ("in_ch", "out_ch", "groups", "cut"),
    [(8, 12, 4, "o|ihw"), (6, 6, 6, "oi|hw"), (4, 8, 4, "h|oiw"), (8, 12, 2, ["o|ihw", "i|ohw"])],
    ids=["grouped", "depthwise", "depthwise-x2", "grouped-two-cuts"],
)
def test_grouped_convs_are_truncated_group_by_group(in_ch, out_ch, groups, cut):
    conv = make_conv(in_ch, out_ch, groups=groups)
    original = conv.weight.detach().clone()
    info = truncate_conv_(conv, cut, max_rank=1, seed=0)
    blocks = original.split(out_ch // groups)
    expected = [tnlib.truncate(block, cut, "oihw", max_rank=1, seed=0) for block in blocks]
    torch.testing.assert_close(conv.weight.detach(), torch.cat([kernel for kernel, _ in expected]), rtol=0, atol=0)
    assert info.steps == tuple(group_info for _, group_info in expected)
    assert info.ranks == tuple(rank for _, group_info in expected for rank in group_info.ranks)
    assert info.cut == (cut if isinstance(cut, str) else None)
    # the combined report is exact for the whole kernel
    truncated = conv.weight.detach()
    assert info.rel_error == pytest.approx(relative_error(original, truncated), rel=1e-10)
    assert info.norm_loss == pytest.approx(1 - float(truncated.norm() / original.norm()), rel=1e-8)
    assert info.discarded_weight == pytest.approx(1 - float(truncated.norm() ** 2 / original.norm() ** 2), rel=1e-8)


@pytest.mark.parametrize("groups", [1, 3])
@pytest.mark.parametrize("cut", ["o|ihw", "ow|ih", ["i|ohw", "oi|hw"]])
@pytest.mark.parametrize("target", [0.1, 0.4, 0.8])
def test_rel_error_target_is_met_for_the_whole_kernel(groups, cut, target):
    conv = make_conv(6, 12, groups=groups)
    original = conv.weight.detach().clone()
    info = truncate_conv_(conv, cut, rel_error=target)
    assert relative_error(original, conv.weight.detach()) <= target + 1e-12
    assert info.rel_error == pytest.approx(relative_error(original, conv.weight.detach()), rel=1e-10)


def test_a_max_rank_above_the_cut_bound_is_a_cap_that_does_not_bind():
    conv = make_conv(6, 8)
    original = conv.weight.detach().clone()
    info = truncate_conv_(conv, "w|oih", max_rank=1000)
    assert info.rank == 3 and info.rel_error < 1e-12
    torch.testing.assert_close(conv.weight.detach(), original)


@pytest.mark.parametrize(
    ("conv", "kwargs", "error", "message"),
    [
        (nn.Linear(4, 4), {}, TypeError, r"conv must be a torch\.nn\.Conv2d .*got Linear"),
        (nn.Conv1d(4, 4, 3), {}, TypeError, r"conv must be a torch\.nn\.Conv2d .*got Conv1d"),
        (nn.Conv2d(4, 4, 3), {"max_rank": 0}, ValueError, r"max_rank must be a positive integer"),
        (nn.Conv2d(4, 4, 3), {"cut": "o|ihx"}, ValueError, r"cut 'o\|ihx' .*unknown label\(s\) 'x'"),
        (nn.Conv2d(4, 4, 3), {"rel_error": 2.0}, ValueError, r"rel_error must lie in \[0, 1\]"),
        (nn.Conv2d(4, 4, 3), {"cut": ["o|ihw"], "max_rank": [1, 2]}, ValueError, r"max_rank must be an int or one"),
    ],
)
def test_bad_input_is_refused_naming_the_argument(conv, kwargs, error, message):
    kwargs = {"cut": "o|ihw", **kwargs}
    with pytest.raises(error, match=message):
        truncate_conv_(conv, **kwargs)


def test_bad_weights_are_refused_naming_the_weight():
    conv = nn.Conv2d(4, 4, 3)
    conv.weight = nn.Parameter(torch.ones(4, 36))
    with pytest.raises(ValueError, match=r"conv\.weight must have 4 dimensions .*got shape \(4, 36\)"):
        truncate_conv_(conv, "o|ihw")
    conv = nn.Conv2d(4, 4, 3)
    with torch.no_grad():
        conv.weight[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match=r"conv\.weight contains NaN or Inf"):
        truncate_conv_(conv, "o|ihw")


# -- truncate_model_ ---------------------------------------------------------------------------------------------


def make_model() -> nn.Module:
    torch.manual_seed(0)
    block = nn.Sequential(OrderedDict(conv1=nn.Conv2d(8, 16, 3, padding=1, groups=4), conv2=nn.Conv2d(16, 16, 1)))
    return nn.Sequential(
        OrderedDict(
            stem=nn.Conv2d(3, 8, 3, padding=1),
            bn=nn.BatchNorm2d(8),
            layer1=block,
            dw=nn.Conv2d(16, 16, 3, groups=16, bias=False),
            pool=nn.AdaptiveAvgPool2d(1),
            flat=nn.Flatten(),
            head=nn.Linear(16, 10),
        )
    )


ALL_CONVS = ["stem", "layer1.conv1", "layer1.conv2", "dw"]


@pytest.mark.parametrize(
    ("selection", "expected"),
    [
        ({}, ALL_CONVS),
        ({"include": "layer1.*"}, ["layer1.conv1", "layer1.conv2"]),
        ({"include": ["stem", "*conv2"]}, ["stem", "layer1.conv2"]),
        ({"exclude": "layer1.conv?"}, ["stem", "dw"]),
        ({"layers": slice(1, None)}, ALL_CONVS[1:]),
        ({"layers": [-1, 0]}, ["stem", "dw"]),
        ({"layers": 2}, ["layer1.conv2"]),
        ({"where": lambda name, conv: conv.groups == 1}, ["stem", "layer1.conv2"]),
        ({"include": "layer1.*", "exclude": "*2", "layers": [1, 2]}, ["layer1.conv1"]),
    ],
)
def test_selection_filters_combine_and_keep_model_order(selection, expected):
    assert [name for name, _ in select_convs(make_model(), **selection)] == expected


def test_truncate_model_truncates_only_the_selected_convs():
    model = make_model()
    before = {name: p.detach().clone() for name, p in model.named_parameters()}
    report = truncate_model_(model, "o|ihw", max_rank=2, layers=slice(1, None), exclude="dw")
    assert list(report) == ["layer1.conv1", "layer1.conv2"]
    changed = {name for name, p in model.named_parameters() if not torch.equal(p.detach(), before[name])}
    assert changed == {"layer1.conv1.weight", "layer1.conv2.weight"}


def test_report_numbers_match_hand_counts():
    model = make_model()
    stem_weight = model.stem.weight.detach().clone()
    report = truncate_model_(model, "o|ihw", max_rank=2, seed=0)
    stem, grouped, pointwise, depthwise = (report[name] for name in ALL_CONVS)
    assert isinstance(stem, LayerReport)
    # stem: 8 x 3 x 3 x 3 + 8 biases; factors across o|ihw: 2 * (8 + 27) + 8
    assert (stem.shape, stem.groups, stem.ranks, stem.params, stem.factored_params) == ((8, 3, 3, 3), 1, (2,), 224, 78)
    assert stem.rel_error == pytest.approx(relative_error(stem_weight, model.stem.weight.detach()), rel=1e-5)
    assert stem.norm_loss == pytest.approx(1 - float(model.stem.weight.detach().norm() / stem_weight.norm()), abs=1e-6)
    # 4 groups of a 4 x 2 x 3 x 3 kernel: 16 * 2 * 9 + 16 parameters; 4 * 2 * (4 + 18) + 16 as factors
    assert (grouped.shape, grouped.groups, grouped.ranks) == ((16, 2, 3, 3), 4, (2, 2, 2, 2))
    assert (grouped.params, grouped.factored_params) == (304, 192)
    # 1x1: 16 x 16 + 16; 2 * (16 + 16) + 16
    assert (pointwise.ranks, pointwise.params, pointwise.factored_params) == ((2,), 272, 80)
    # depthwise, one output per group: every group keeps its rank 1; 16 * (1 + 9) as factors
    assert (depthwise.ranks, depthwise.params, depthwise.factored_params) == ((1,) * 16, 144, 160)
    assert depthwise.rel_error == 0.0
    assert stem.to_dict()["info"]["ranks"] == [2]


def test_several_cuts_have_no_factored_count():
    report = truncate_model_(make_model(), ["o|ihw", "i|ohw"], max_rank=1, include="stem")
    assert report["stem"].ranks == (1, 1) and report["stem"].factored_params is None


def test_a_rel_error_target_holds_for_every_layer():
    model = make_model()
    before = {name: conv.weight.detach().clone() for name, conv in select_convs(model)}
    report = truncate_model_(model, "oi|hw", rel_error=0.3)
    for name, conv in select_convs(model):
        assert relative_error(before[name], conv.weight.detach()) <= 0.3 + 1e-6
        assert report[name].rel_error <= 0.3 + 1e-12


def test_a_failing_layer_leaves_the_model_unchanged():
    model = make_model()
    with torch.no_grad():
        model.dw.weight[0, 0, 0, 0] = float("inf")
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=r"model\.dw\.weight contains NaN or Inf"):
        truncate_model_(model, "o|ihw", max_rank=1)
    assert all(torch.equal(p.detach(), b) for p, b in zip(model.parameters(), before))


@pytest.mark.parametrize(
    ("selection", "error", "message"),
    [
        ({"include": "layer2.*"}, ValueError, r"include pattern 'layer2\.\*' matches no nn\.Conv2d"),
        ({"include": 3}, TypeError, r"include must be a glob pattern"),
        ({"exclude": [None]}, TypeError, r"exclude must be a glob pattern"),
        ({"layers": [4]}, ValueError, r"layers: index 4 is out of range for a model with 4 nn\.Conv2d layers"),
        ({"layers": [0.5]}, TypeError, r"layers must be an int, a sequence of ints or a slice"),
        ({"where": "groups"}, TypeError, r"where must be a callable"),
    ],
)
def test_bad_selection_is_refused_naming_the_argument(selection, error, message):
    with pytest.raises(error, match=message):
        truncate_model_(make_model(), "o|ihw", max_rank=1, **selection)


def test_model_must_be_a_module():
    with pytest.raises(TypeError, match=r"model must be a torch\.nn\.Module, got list"):
        truncate_model_([nn.Conv2d(2, 2, 1)], "o|ihw")


# -- docs --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["truncate_conv_", "truncate_model_", "select_convs", "count_params", "count_macs", "layer_costs"]
)
def test_documented_signatures_match_the_code(name):
    import tnlib_torch

    docs = (ROOT / "docs" / "torch_surgery.md").read_text()
    documented = re.findall(rf"^tnlib_torch\.{name}\((.*)\)\s*$", docs, re.M)
    assert documented == [plain_signature(getattr(tnlib_torch, name))]


def test_a_layer_report_is_the_one_layer_record_and_reads_back_from_json():
    import json

    report = truncate_model_(make_model(), "o|ihw", max_rank=2, seed=0)
    assert LayerReport is LayerCompression
    for layer in report.values():
        assert layer.structure == "truncated" and layer.params_before == layer.params_after == layer.params
        assert LayerReport.from_dict(json.loads(json.dumps(layer.to_dict()))) == layer  # info and its steps too
    assert len(report["layer1.conv1"].info.steps) == 4
