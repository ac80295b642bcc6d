"""compress(method="svd", budget=...) choosing each layer's SVD cut (cut="auto"), and the metric of each cut."""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import tnlib_torch as tt  # noqa: E402
from tnlib.metric import kronecker_factors  # noqa: E402
from tnlib_torch.compression.structures import SVD_CUTS, SVDCutChoice, SVDStructure, structure_of  # noqa: E402


def planted(cut: str, rank: int, seed: int = 0) -> torch.Tensor:
    """A 16x16x3x3 kernel of exactly ``rank`` across ``cut`` (``"oh|iw"`` or ``"ow|ih"``) and full rank across the
    others."""
    gen = torch.Generator().manual_seed(seed)
    left = torch.randn(16 * 3, rank, generator=gen, dtype=torch.float64)
    right = torch.randn(rank, 16 * 3, generator=gen, dtype=torch.float64)
    kernel = (left @ right).reshape(16, 3, 16, 3)  # (o, a, i, b): a the output side's axis, b the input side's
    return kernel.permute(0, 2, 1, 3) if cut == "oh|iw" else kernel.permute(0, 2, 3, 1)


def two_convs(seed: int = 0) -> nn.Sequential:
    """A kernel planted low-rank across ``oh|iw`` and one across ``ow|ih``, then a 1x1 conv."""
    torch.manual_seed(seed)
    model = nn.Sequential(OrderedDict(
        a=nn.Conv2d(16, 16, 3, padding=1), act=nn.ReLU(), b=nn.Conv2d(16, 16, 3, padding=1), mix=nn.Conv2d(16, 8, 1),
    )).double().eval()
    with torch.no_grad():
        model.a.weight.copy_(planted("oh|iw", 2, seed))
        model.b.weight.copy_(planted("ow|ih", 3, seed + 1))
    return model


def images(n: int = 32, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 16, 8, 8, generator=gen, dtype=torch.float64) * torch.linspace(0.2, 2.0, 16).reshape(
        1, -1, 1, 1).double()


def objective(allocation: dict) -> float:
    """The objective of the allocation a budget built (``scores["allocation"]``)."""
    chosen = allocation["chosen"]
    return allocation["cuts"][chosen.split()[1]] if chosen.startswith("cut ") else allocation[chosen]


@pytest.mark.parametrize("calibrated", [False, True])
def test_auto_gives_a_planted_kernel_the_cut_it_is_low_rank_across(calibrated):
    model = two_convs()
    extra = {"calibration": images(), "recalibrate": False} if calibrated else {}
    _, report = tt.compress(model, "svd", budget=0.2, seed=0, **extra)
    a, b = report.layers["a"], report.layers["b"]
    assert (a.structure, a.cut, b.cut) == ("SVDConv2d", "oh|iw", "ow|ih")
    assert a.ranks[0] >= 2 and b.ranks[0] >= 3
    assert a.rel_error < 1e-8 and b.rel_error < 1e-8  # exact at its planted rank
    assert report.layers["mix"].cut in (None, "o|ihw")  # a 1x1 conv is a matrix: its one split
    assert "SVDConv2d oh|iw" in report.table()
    assert tt.LayerCompression.from_dict(a.to_dict()).cut == "oh|iw"


def test_auto_is_the_default_of_an_svd_budget_and_a_fixed_call_keeps_o_ihw():
    model = two_convs()
    budgeted = tt.compress(model, "svd", budget=0.2)[1]
    assert budgeted.layers["a"].cut == "oh|iw" and "cuts" in budgeted.scores["allocation"]
    fixed = tt.compress(model, "svd", max_rank=2)[1]
    assert {layer.cut for layer in fixed.layers.values()} == {"o|ihw"}
    explicit = tt.compress(model, "svd", budget=0.2, cut="i|ohw")[1]
    assert {explicit.layers[name].cut for name in ("a", "b")} == {"i|ohw"}


@pytest.mark.parametrize("calibrated", [False, True])
@pytest.mark.parametrize("budget", [0.15, 0.3, 0.6])
def test_the_auto_objective_is_at_most_every_single_cuts_at_the_same_budget(calibrated, budget):
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(16, 12, 3, padding=1), nn.ReLU(), nn.Conv2d(12, 16, (3, 2), padding=1),
                          nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1)).double().eval()
    extra = {"calibration": images(), "recalibrate": False} if calibrated else {}
    auto = tt.compress(model, "svd", budget=budget, seed=0, **extra)[1].scores["allocation"]
    chosen = objective(auto)
    assert set(auto["cuts"]) == set(SVD_CUTS)
    for cut in SVD_CUTS:
        single = tt.compress(model, "svd", budget=budget, cut=cut, seed=0, **extra)[1].scores["allocation"]
        assert chosen <= objective(single) + 1e-12
        assert auto["cuts"][cut] is None or chosen <= auto["cuts"][cut] + 1e-12


def test_the_data_free_objective_is_the_kernels_exact_squared_error():
    """Eckart-Young along every cut: the estimates the allocation sums are the built layers' errors."""
    model = two_convs(seed=5)
    with torch.no_grad():
        model.a.weight.add_(0.1 * torch.randn_like(model.a.weight))
    _, report = tt.compress(model, "svd", budget=0.25, seed=0)
    allocation = report.scores["allocation"]
    squared = sum(layer.rel_error ** 2 for layer in report.layers.values())
    assert objective(allocation) == pytest.approx(squared, rel=1e-8)


def test_a_cut_choice_offers_every_cut_and_builds_the_one_asked():
    conv = two_convs().a
    choice = structure_of(conv, "svd", {}, "auto", "ihwo")
    assert isinstance(choice, SVDCutChoice) and list(choice.variants()) == list(SVD_CUTS)
    layer = choice.at(("ow|ih", 4))
    assert isinstance(layer, tt.SVDConv2d) and (layer.cut, layer.rank) == ("ow|ih", 4)
    assert choice.at(("ow|ih", 4)) is layer
    assert isinstance(structure_of(nn.Conv2d(4, 4, 1), "svd", {}, "auto", "ihwo"), SVDStructure)


def test_auto_without_a_budget_is_refused():
    with pytest.raises(ValueError, match=r"cut='auto' chooses each layer's cut in a budget's allocation"):
        tt.compress(two_convs(), "svd", cut="auto", max_rank=2)
    with pytest.raises(ValueError, match=r"cut is only for method 'svd' or 'truncate'"):
        tt.compress(two_convs(), "tucker2", budget=0.5, cut="auto")


@pytest.mark.parametrize(("cut", "parts"), [("oh|iw", ("iw", "h")), ("ow|ih", ("ih", "w")), ("i|ohw", ("i", "hw")),
                                            ("iw|oh", ("iw", "h"))])
def test_each_cut_is_fitted_in_the_kronecker_metric_of_its_two_sides(cut, parts):
    model = nn.Sequential(nn.Conv2d(6, 5, 3, padding=1)).double()
    x = images(16)[:, :6] * torch.arange(1, 9, dtype=torch.float64).reshape(1, 1, 8, 1)  # rows of unequal scale
    moments = tt.input_moments(model, x)["0"]
    expected = kronecker_factors(moments.moments[0]["ihw"], "ihw", moments.dims, parts)
    metric = SVDStructure(model[0], {}, cut, moments).metrics[0]
    assert set(metric) == set(parts)
    for part in parts:
        np.testing.assert_allclose(metric[part], expected[part], rtol=1e-12)
    assert SVDStructure(model[0], {}, "o|ihw", moments).metrics[0].keys() == {"ihw"}


def test_split_metric_of_factored_moments_is_the_kronecker_product_of_the_per_label_factors():
    model = nn.Sequential(nn.Conv2d(6, 5, 3, padding=1)).double()
    moments = tt.input_moments(model, images(8)[:, :6], max_full=10)["0"]
    assert not moments.full
    assert moments.split_metric(("i", "hw")) == dict(moments.moments[0])
    single = moments.metric("mps")
    np.testing.assert_allclose(moments.split_metric(("iw", "h"))["iw"], np.kron(single["i"], single["w"]))
    with pytest.raises(ValueError, match="parts must split 'ihw'"):
        moments.split_metric(("wi", "h"))
