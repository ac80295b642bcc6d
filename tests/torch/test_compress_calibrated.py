"""compress with calibration data: fits in each layer's data metric, sensitivities, refinement, BatchNorm, bad input."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")
nn = torch.nn
F = torch.nn.functional

import tnlib_torch as tt  # noqa: E402
from tnlib_torch.compression.allocation import Option, allocate, allocate_uniformly, total_error  # noqa: E402
from tnlib_torch.compression.calibrated import output_error  # noqa: E402
from tnlib_torch.compression.sensitivity import NOISE, layer_sensitivities  # noqa: E402
from tnlib_torch.compression.structures import CP_RIDGE  # noqa: E402


def anisotropic_images(n: int, seed: int = 0) -> torch.Tensor:
    """Images whose channels have very different scales and are correlated: a data metric far from identity."""
    gen = torch.Generator().manual_seed(seed)
    scales = torch.tensor([3.0, 1.0, 0.3, 0.1], dtype=torch.float64)
    mix = torch.randn(4, 4, generator=gen, dtype=torch.float64) * scales
    z = torch.randn(n, 4, 10, 10, generator=gen, dtype=torch.float64)
    return torch.einsum("cd,ndhw->nchw", mix, z)


def small_net(seed: int = 0, batchnorm: bool = True) -> nn.Sequential:
    torch.manual_seed(seed)
    layers = [nn.Conv2d(4, 12, 3, padding=1)]
    if batchnorm:
        layers.append(nn.BatchNorm2d(12))
    layers += [nn.ReLU(), nn.Conv2d(12, 12, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(),
               nn.Linear(48, 5)]
    return nn.Sequential(*layers).double().eval()


def layer_output_error(conv: nn.Module, approx: nn.Module, x: torch.Tensor) -> float:
    """The measured relative error of ``approx``'s outputs against ``conv``'s on ``x``, biases removed."""
    def bias_free(module: nn.Module) -> torch.Tensor:
        out = module(x)
        bias = conv.bias if conv.bias is not None else torch.zeros(out.shape[1], dtype=out.dtype)
        return out - bias.reshape(1, -1, 1, 1)

    with torch.no_grad():
        reference = bias_free(conv)
        return float((bias_free(approx) - reference).norm() / reference.norm())


# ------------------------------------------------------------------------------------------------ fits in the metric


@pytest.mark.parametrize(("method", "size", "kind"), [("svd", dict(max_rank=4), "svd"),
                                                      ("tucker2", dict(ranks=(5, 2)), "tucker2"),
                                                      ("mps", dict(max_bond=3), "mps"),
                                                      ("cp", dict(rank=6), "cp")])
def test_a_calibrated_fit_is_the_layer_fitted_in_its_data_metric(method, size, kind):
    model, x = small_net(batchnorm=False), anisotropic_images(64)
    small, report = tt.compress(model, method, **size, calibration=x, include="0", seed=0)
    moments = tt.input_moments(model, x, include="0")["0"]
    constructor = {"svd": lambda c, **k: tt.SVDConv2d.from_conv(c, "o|ihw", **k),
                   "tucker2": tt.Tucker2Conv2d.from_conv,
                   "mps": lambda c, **k: tt.MPSConv2d.from_conv(c, "ihwo", **k),
                   "cp": tt.CPConv2d.from_conv}[method]
    keyword = {"svd": "max_rank", "tucker2": "ranks", "mps": "max_bond", "cp": "rank"}[method]
    extra = {"seed": 0} if method in ("cp", "mps", "svd") else {}
    extra.update({"ridge": CP_RIDGE} if method == "cp" else {})
    by_hand = constructor(model[0], **{keyword: size[keyword]}, metric=moments.metric(kind), **extra)
    torch.testing.assert_close(small[0].folded_weight(), by_hand.folded_weight(), rtol=1e-9, atol=1e-12)
    measured = layer_output_error(model[0], small[0], x)
    assert report.layers["0"].output_error == pytest.approx(measured, rel=1e-6)


@pytest.mark.parametrize(("method", "size"), [("svd", dict(max_rank=4)), ("tucker2", dict(ranks=(5, 2))),
                                              ("mps", dict(max_bond=3))])
def test_calibration_lowers_the_output_error_at_the_same_ranks(method, size):
    model, x = small_net(batchnorm=False), anisotropic_images(64)
    blind, blind_report = tt.compress(model, method, **size, include="0", seed=0)
    calibrated, report = tt.compress(model, method, **size, calibration=x, include="0", seed=0)
    assert blind_report.layers["0"].ranks == report.layers["0"].ranks
    blind_error = layer_output_error(model[0], blind[0], x)
    calibrated_error = layer_output_error(model[0], calibrated[0], x)
    assert calibrated_error < 0.8 * blind_error  # the metric fit is clearly better on anisotropic data
    assert report.layers["0"].rel_error >= blind_report.layers["0"].rel_error - 1e-12  # at some kernel error


def test_the_svd_split_is_optimal_in_the_metric():
    """Eckart-Young in the metric: the calibrated SVD split at rank r is the truncated SVD of W L mapped back."""
    model, x = small_net(batchnorm=False), anisotropic_images(64)
    small, _ = tt.compress(model, "svd", max_rank=3, calibration=x, include="0", seed=0)
    moment = tt.input_moments(model, x, include="0")["0"].metric("svd")["ihw"]
    values, vectors = torch.linalg.eigh(torch.tensor(moment))
    root = vectors @ torch.diag(values.clamp_min(values.max() * 1e-8).sqrt()) @ vectors.T
    w = model[0].weight.detach().reshape(12, -1)
    u, s, vt = torch.linalg.svd(w @ root, full_matrices=False)
    optimal = (u[:, :3] * s[:3]) @ vt[:3] @ torch.linalg.inv(root)
    torch.testing.assert_close(small[0].folded_weight().reshape(12, -1), optimal, rtol=1e-7, atol=1e-9)


def test_output_error_from_factored_moments_is_the_kronecker_norm():
    model, x = small_net(batchnorm=False), anisotropic_images(32)
    full = tt.input_moments(model, x, include="2")["2"]
    factored = tt.input_moments(model, x, include="2", max_full=10)["2"]
    w = model[2].weight.detach()
    approx = w + 0.1 * torch.randn(w.shape, generator=torch.Generator().manual_seed(1), dtype=w.dtype)
    kron = factored.metric("svd")["ihw"]
    d, k = (w - approx).reshape(12, -1).numpy(), w.reshape(12, -1).numpy()
    expected = math.sqrt((d @ kron * d).sum() / (k @ kron * k).sum())
    assert output_error(factored, w, approx) == pytest.approx(expected, rel=1e-9)
    assert output_error(full, w, approx) == pytest.approx(layer_output_error(model[2], _with_weight(model[2], approx),
                                                                             F.relu(model[0](x))), rel=1e-6)


def _with_weight(conv: nn.Conv2d, weight: torch.Tensor) -> nn.Conv2d:
    twin = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, padding=conv.padding).double()
    with torch.no_grad():
        twin.weight.copy_(weight)
        twin.bias.copy_(conv.bias)
    return twin


# ------------------------------------------------------------------------------------ budget, sensitivity, refinement


def test_a_calibrated_budget_weighs_output_errors_and_beats_uniform_on_its_objective():
    model, x = small_net(), anisotropic_images(64)
    _, report = tt.compress(model, "tucker2", budget=0.4, calibration=x, seed=0, sensitivity="fisher")
    allocation = report.scores["allocation"]
    assert set(allocation["weights"]) == {"0", "3"} and all(w > 0 for w in allocation["weights"].values())
    chosen = allocation[allocation["chosen"]]
    assert allocation["uniform"] is None or chosen <= allocation["uniform"]
    kept = sum(layer.params_after for layer in report.layers.values())
    assert kept <= 0.4 * sum(layer.params_before for layer in report.layers.values())
    assert all(layer.output_error is not None for layer in report.layers.values())
    _, unweighted = tt.compress(model, "tucker2", budget=0.4, calibration=x, seed=0, sensitivity="none")
    assert unweighted.scores["allocation"]["weights"] is None and "sensitivity" not in unweighted.calibration["seconds"]


def test_the_default_sensitivity_is_fisher_for_a_classifier_and_none_otherwise():
    classifier, x = small_net(), anisotropic_images(64)
    _, fisher = tt.compress(classifier, "tucker2", budget=0.4, calibration=x, seed=0, sensitivity="fisher")
    _, auto = tt.compress(classifier, "tucker2", budget=0.4, calibration=x, seed=0)
    assert auto.calibration["sensitivity"] == "fisher"
    assert auto.scores["allocation"]["weights"] == fisher.scores["allocation"]["weights"]
    assert {name: layer.ranks for name, layer in auto.layers.items()} == {
        name: layer.ranks for name, layer in fisher.layers.items()}
    features = small_net()[:5]  # ends with a ReLU: (batch, 12, 10, 10) outputs, no logits
    _, report = tt.compress(features, "tucker2", budget=0.4, calibration=x, seed=0)
    assert report.calibration["sensitivity"] == "none" and report.scores["allocation"]["weights"] is None
    _, fixed = tt.compress(classifier, "tucker2", ranks=4, calibration=x, seed=0)
    assert fixed.calibration["sensitivity"] == "none" and "sensitivity" not in fixed.calibration["seconds"]


def test_the_cp_budget_uses_the_budget():
    model, x = small_net(), anisotropic_images(32)
    for calibration in (None, x):
        _, report = tt.compress(model, "cp", budget=0.3, calibration=calibration, seed=0, include="3")
        layer = report.layers["3"]
        assert 0.2 * layer.params_before <= layer.params_after <= 0.3 * layer.params_before


def test_fisher_sensitivity_of_the_logits_layer_is_half_the_softmax_variance_times_the_output_power():
    """For the layer giving the logits, E[g_j^2] over labels drawn from p is p_j (1 - p_j), exactly."""
    model, x = small_net(batchnorm=False), anisotropic_images(512)
    head = model[6]
    weights = layer_sensitivities(model, {"6": head}, x, kind="fisher", samples=512, seed=0)
    with torch.no_grad():
        logits = model(x)
        p = logits.softmax(dim=1)
        y = logits - head.bias
    expected = 0.5 * float(((p - p**2).mean(0) * (y**2).mean(0)).sum())
    assert weights["6"] == pytest.approx(expected, rel=0.15)  # the drawn labels' sampling error
    measured = layer_sensitivities(model, {"6": head}, x, kind="measured", samples=512, seed=0)
    assert measured["6"] == pytest.approx(expected, rel=0.35)  # KL at noise NOISE, not infinitesimal
    assert NOISE < 1


def last_conv_output(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    outputs = []
    hook = model[3].register_forward_hook(lambda module, inputs, output: outputs.append(output))
    with torch.no_grad():
        model(x)
    hook.remove()
    return outputs[0]


def test_refine_reports_lower_errors_in_the_compressed_network():
    model, x = small_net(), anisotropic_images(64)
    plain_model, plain = tt.compress(model, "tucker2", ranks=3, calibration=x, seed=0, recalibrate=False)
    small, refined = tt.compress(model, "tucker2", ranks=3, calibration=x, seed=0, refine=True, recalibrate=False)
    assert refined.calibration["refine"] and "refine" in refined.calibration["seconds"]
    for name in ("0", "3"):
        assert refined.layers[name].refined_error is not None
    # what the refit lowers: the last conv's output error in the compressed network, on its own inputs
    reference = last_conv_output(model, x)
    assert (last_conv_output(small, x) - reference).norm() < (last_conv_output(plain_model, x) - reference).norm()
    assert plain.layers["0"].refined_error is None


def test_batchnorm_is_corrected_by_the_change_on_the_calibration_data():
    model, x = small_net(), anisotropic_images(64)
    with torch.no_grad():
        model[1].running_mean.fill_(5.0)
        model[1].running_var.fill_(2.0)
    small, _ = tt.compress(model, "svd", max_rank=4, calibration=x, seed=0)
    with torch.no_grad():
        outputs, original = small[0](x), model[0](x)
    dims = (0, 2, 3)
    torch.testing.assert_close(small[1].running_mean, 5.0 + outputs.mean(dims) - original.mean(dims))
    torch.testing.assert_close(small[1].running_var, 2.0 * outputs.var(dims) / original.var(dims))
    assert float(model[1].running_mean[0]) == 5.0  # compress works on a copy
    kept, report = tt.compress(model, "svd", max_rank=4, calibration=x, seed=0, recalibrate=False)
    assert float(kept[1].running_mean[0]) == 5.0 and not report.calibration["recalibrate"]
    assert "batchnorm" not in report.calibration["seconds"]


# ---------------------------------------------------------------------------------------------------------- bad input


def _state(model: nn.Module) -> dict:
    return {key: value.clone() for key, value in model.state_dict().items()}


@pytest.mark.parametrize(("data", "kind", "match"), [
    (torch.randn(8, 3, 10, 10, dtype=torch.float64), ValueError, "batch 0"),  # wrong channel count
    (torch.randn(8, 4, dtype=torch.float64), ValueError, "batch 0"),  # wrong shape
    ([], ValueError, "no batch"),  # an empty loader
    (torch.full((8, 4, 10, 10), math.nan, dtype=torch.float64), ValueError, "NaN"),
    (torch.randn(8, 4, 10, 10, dtype=torch.float64, device="meta"), ValueError, "meta"),  # another device
    ("images", TypeError, "data must be"),
])
def test_bad_calibration_data_is_refused_before_anything_changes(data, kind, match):
    model = small_net()
    before, types = _state(model), [type(m) for m in model]
    with pytest.raises(kind, match=match):
        tt.compress_(model, "tucker2", budget=0.5, calibration=data, refine=True)
    assert [type(m) for m in model] == types
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


@pytest.mark.parametrize(("options", "kind", "match"), [
    (dict(calibration_samples=10), ValueError, "calibration_samples need calibration data"),
    (dict(refine=True), ValueError, "refine need calibration data"),
    (dict(sensitivity="measured"), ValueError, "sensitivity need calibration data"),
    (dict(calibration=torch.zeros(1), sensitivity="hessian"), ValueError, "sensitivity"),
    (dict(calibration=torch.zeros(1), refine="yes"), TypeError, "refine"),
    (dict(calibration=torch.zeros(1), calibration_samples=0), ValueError, "calibration_samples"),
    (dict(recalibrate=False), ValueError, "recalibrate need calibration data"),
    (dict(calibration=torch.zeros(1), recalibrate="no"), TypeError, "recalibrate"),
])
def test_bad_calibration_options_name_the_argument(options, kind, match):
    with pytest.raises(kind, match=match):
        tt.compress(small_net(), "tucker2", budget=0.5, **options)


def test_equal_weights_need_no_data():
    """``sensitivity="none"`` asks for nothing a data-free compress lacks: it is the data-free compress."""
    model = small_net()
    plain, report = tt.compress(model, "tucker2", budget=0.5, seed=0)
    alike, alike_report = tt.compress(model, "tucker2", budget=0.5, seed=0, sensitivity="none")
    assert alike_report.calibration is None and report.calibration is None
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(alike.state_dict()[key], value, rtol=0, atol=0)


def test_truncation_takes_no_calibration():
    with pytest.raises(ValueError, match="calibration is for the factorized methods"):
        tt.compress(small_net(), "truncate", max_rank=2, calibration=anisotropic_images(4))


def test_a_model_without_the_layers_named_is_refused():
    with pytest.raises(ValueError, match="matches no nn.Conv2d"):
        tt.compress(small_net(), "svd", budget=0.5, include="nothing*", calibration=anisotropic_images(4))


# --------------------------------------------------------------------------------------------------------- allocation


def test_the_floor_keeps_every_layer_above_its_share_when_the_budget_allows():
    options = {"a": [Option(None, 100, 0.0), Option(1, 50, 0.01), Option(2, 5, 0.02)],
               "b": [Option(None, 100, 0.0), Option(1, 50, 0.5), Option(2, 30, 0.9)]}
    assert allocate(options, 60)["a"].cost == 5  # without a floor, a is starved
    floored = allocate(options, 80, floor=0.3)
    assert floored["a"].cost >= 30 and sum(o.cost for o in floored.values()) <= 80
    assert allocate(options, 40, floor=0.3)["a"].cost == 5  # the floor is dropped when it makes the budget unreachable


def test_the_uniform_allocation_takes_each_layers_best_option_at_the_fraction():
    options = {"a": [Option(None, 100, 0.0), Option(1, 50, 0.01), Option(2, 5, 0.02)],
               "b": [Option(None, 10, 0.0), Option(1, 6, 0.3), Option(2, 4, 0.5)]}
    uniform = allocate_uniformly(options, 0.5)
    assert uniform == {"a": options["a"][1], "b": options["b"][2]}
    assert total_error(uniform) == pytest.approx(0.51)
    assert allocate_uniformly(options, 0.01) is None
