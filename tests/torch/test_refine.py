"""Sequential error correction: the exact least-squares refit, the order, the Adam path and bad input."""

import copy
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import tnlib_torch  # noqa: E402
from tnlib_torch.compression.refine import ADAM_SAMPLES, LayerRefinement, refine_  # noqa: E402


def _compressed(model: nn.Module, method: str, **options) -> nn.Module:
    return tnlib_torch.compress(model, method, **options)[0]


def _rows(t: torch.Tensor, groups: int) -> np.ndarray:
    """``(groups, channels per group, positions)`` of a conv map ``(n, C, H, W)`` or of features ``(n, C)``."""
    a = t.detach().numpy()
    n, c = a.shape[:2]
    return a.reshape(n, groups, c // groups, -1).transpose(1, 2, 0, 3).reshape(groups, c // groups, -1)


def _least_squares(z: torch.Tensor, y: torch.Tensor, groups: int) -> np.ndarray:
    """``[U_g, b_g]`` minimizing ``sum ||U_g z_g + b_g - y_g||**2`` per group, by numpy's lstsq."""
    solutions = []
    for zg, yg in zip(_rows(z, groups), _rows(y, groups)):
        design = np.vstack([zg, np.ones((1, zg.shape[1]))]).T
        solutions.append(np.linalg.lstsq(design, yg.T, rcond=None)[0].T)
    return np.stack(solutions)


def _stage_weights(stage: nn.Module, groups: int) -> np.ndarray:
    """The stage's ``[U_g, b_g]``, shape ``(groups, out per group, in per group + 1)``."""
    out = stage.weight.shape[0]
    weight = stage.weight.detach().reshape(groups, out // groups, -1)
    return torch.cat([weight, stage.bias.detach().reshape(groups, -1, 1)], dim=2).numpy()


def _relative_error(approx: torch.Tensor, exact: torch.Tensor) -> float:
    return float((approx - exact).norm() / exact.norm())


def _conv_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1)).double()


def test_one_layer_last_stage_is_the_least_squares_solution_and_the_errors_are_measured():
    model = _conv_model()
    compressed = _compressed(model, "tucker2", ranks=2)
    unrefined = copy.deepcopy(compressed)
    x = torch.randn(20, 3, 7, 7, dtype=torch.float64)
    result = refine_(model, compressed, ["0"], x, batch_size=6, ridge=0.0)["0"]
    layer = compressed[0]
    with torch.no_grad():
        z, y = layer.layers[:-1](x), model[0](x)
        before, after = _relative_error(unrefined(x), y), _relative_error(compressed(x), y)
    np.testing.assert_allclose(_stage_weights(layer.layers[-1], 1), _least_squares(z, y, 1), rtol=0, atol=1e-8)
    assert (result.name, result.method, result.samples) == ("0", "least_squares", 20)
    assert result.error_before == pytest.approx(before, rel=1e-8)
    assert result.error_after == pytest.approx(after, rel=1e-6)
    assert result.error_after < result.error_before
    for stage, kept in zip(layer.layers[:-1], unrefined[0].layers[:-1]):  # only the last stage moves
        assert torch.equal(stage.weight, kept.weight)


def test_the_ridge_is_small_and_samples_cut_the_data():
    model = _conv_model()
    compressed = _compressed(model, "tucker2", ranks=2)
    x = torch.randn(20, 3, 7, 7, dtype=torch.float64)
    result = refine_(model, compressed, "0", x, samples=13, batch_size=5)["0"]
    with torch.no_grad():
        z, y = compressed[0].layers[:-1](x[:13]), model[0](x[:13])
    assert result.samples == 13
    np.testing.assert_allclose(_stage_weights(compressed[0].layers[-1], 1), _least_squares(z, y, 1), rtol=0,
                               atol=1e-4)


class _TwoConvs(nn.Module):
    """Two convs declared in the reverse of the order the forward pass runs them."""

    def __init__(self) -> None:
        super().__init__()
        self.late = nn.Conv2d(6, 5, 3, padding=1)
        self.early = nn.Conv2d(3, 6, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.late(torch.relu(self.early(x)))


def test_two_layers_are_refined_in_forward_order_each_against_the_compressed_inputs():
    torch.manual_seed(1)
    model = _TwoConvs().double()
    compressed = _compressed(model, "tucker2", ranks=2)
    unrefined = copy.deepcopy(compressed)
    x = torch.randn(16, 3, 6, 6, dtype=torch.float64)
    results = refine_(model, compressed, ["late", "early"], x, ridge=0.0)
    assert list(results) == ["early", "late"]
    with torch.no_grad():
        z = compressed.late.layers[:-1](torch.relu(compressed.early(x)))  # the refined first layer's outputs
        y = model.late(torch.relu(model.early(x)))
        refined_error, unrefined_error = _relative_error(compressed(x), model(x)), _relative_error(unrefined(x), y)
    np.testing.assert_allclose(_stage_weights(compressed.late.layers[-1], 1), _least_squares(z, y, 1), rtol=0,
                               atol=1e-8)
    assert all(r.error_after <= r.error_before for r in results.values())
    assert results["late"].error_after == pytest.approx(refined_error, rel=1e-6)  # the last layer is the output
    assert refined_error < unrefined_error


LEAST_SQUARES_CASES = {
    "tucker2_grouped": (nn.Conv2d(4, 6, 3, padding=1, groups=2), "tucker2", dict(ranks=1), 2),
    "cp": (nn.Conv2d(3, 4, 3, padding=1), "cp", dict(rank=2, seed=0, fit={"max_iter": 10}), 1),
    "mps": (nn.Conv2d(3, 4, 3, padding=1), "mps", dict(max_bond=2), 1),
    "mps_mirrored": (nn.Conv2d(3, 4, 3, padding=1), "mps", dict(max_bond=2, order="ohwi"), 1),
    "svd_1x1": (nn.Conv2d(5, 4, 1), "svd", dict(max_rank=2), 1),
    "svd_linear": (nn.Linear(7, 5), "svd", dict(max_rank=2, linear=True), 1),
}


@pytest.mark.parametrize("case", sorted(LEAST_SQUARES_CASES))
def test_structures_with_a_pointwise_last_stage_are_refitted_exactly(case):
    torch.manual_seed(2)
    layer, method, options, groups = LEAST_SQUARES_CASES[case]
    model = nn.Sequential(layer).double()
    compressed = _compressed(model, method, **options)
    shape = (12, layer.in_features) if isinstance(layer, nn.Linear) else (12, layer.in_channels, 5, 5)
    x = torch.randn(*shape, dtype=torch.float64)
    result = refine_(model, compressed, ["0"], x, ridge=0.0)["0"]
    with torch.no_grad():
        z, y = compressed[0].layers[:-1](x), model[0](x)
    assert result.method == "least_squares"
    assert result.error_after <= result.error_before
    np.testing.assert_allclose(_stage_weights(compressed[0].layers[-1], groups), _least_squares(z, y, groups),
                               rtol=0, atol=1e-8)


def test_a_float32_layer_is_refitted_without_raising_its_error():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1))
    compressed = _compressed(model, "tucker2", ranks=2)
    x = torch.randn(10, 3, 6, 6)
    result = refine_(model, compressed, ["0"], x)["0"]
    with torch.no_grad():
        measured = _relative_error(compressed(x).double(), model(x).double())
    assert result.error_after < result.error_before
    assert result.error_after == pytest.approx(measured, rel=1e-4)


def test_a_spatial_last_stage_takes_adam_on_the_kept_samples_and_lowers_the_error():
    torch.manual_seed(4)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1)).double()
    compressed = _compressed(model, "svd", max_rank=1, cut="i|ohw")
    assert compressed[0].layers[-1].kernel_size == (3, 3)
    unrefined = copy.deepcopy(compressed)
    x = torch.randn(ADAM_SAMPLES + 20, 3, 4, 4, dtype=torch.float64)
    result = refine_(model, compressed, ["0"], x, steps=10, lr=1e-2)["0"]
    kept = x[:ADAM_SAMPLES]
    with torch.no_grad():
        y = model(kept)
        before, after = _relative_error(unrefined(kept), y), _relative_error(compressed(kept), y)
    assert (result.method, result.samples) == ("adam", ADAM_SAMPLES)
    assert result.error_before == pytest.approx(before, rel=1e-10)
    assert result.error_after == pytest.approx(after, rel=1e-10)
    assert result.error_after < result.error_before


def test_layers_left_dense_are_skipped_and_reported():
    torch.manual_seed(5)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3)).double()
    compressed = _compressed(model, "tucker2", ranks=2, include="2")
    dense = copy.deepcopy(compressed[0].state_dict())
    results = refine_(model, compressed, ["0", "2"], torch.randn(4, 3, 8, 8, dtype=torch.float64))
    assert results["0"] == LayerRefinement("0", "skipped", None, None, 0)
    assert results["2"].method == "least_squares"
    assert all(torch.equal(v, dense[k]) for k, v in compressed[0].state_dict().items())
    record = results["2"].to_dict()
    assert record == {"name": "2", "method": "least_squares", "error_before": results["2"].error_before,
                      "error_after": results["2"].error_after, "samples": 4}
    assert json.loads(json.dumps(record)) == record


def _bn_pair() -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(6)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3)).double()
    compressed = _compressed(model, "tucker2", ranks=2)
    compressed[1].train()  # a flag that must survive
    return model, compressed


def _snapshot(*models: nn.Module) -> list:
    return [(copy.deepcopy(m.state_dict()), [s.training for s in m.modules()]) for m in models]


def _assert_unchanged(models: tuple[nn.Module, ...], snapshot: list) -> None:
    for model, (state, flags) in zip(models, snapshot):
        assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
        assert [m.training for m in model.modules()] == flags
        assert all(not m._forward_pre_hooks and not m._forward_hooks for m in model.modules())


def test_flags_survive_and_no_hook_is_left_behind():
    model, compressed = _bn_pair()
    x = torch.randn(5, 3, 8, 8, dtype=torch.float64)
    flags = [m.training for m in compressed.modules()]
    refine_(model, compressed, ["0", "3"], x)
    assert [m.training for m in compressed.modules()] == flags
    assert all(not m._forward_pre_hooks and not m._forward_hooks for m in (*model.modules(), *compressed.modules()))


def _other_tree() -> tuple[nn.Module, nn.Module]:
    model, compressed = _bn_pair()
    compressed[2] = nn.Tanh()
    return model, compressed


def _other_shape() -> tuple[nn.Module, nn.Module]:
    model, compressed = _bn_pair()
    compressed[3] = tnlib_torch.Tucker2Conv2d(4, 4, 3, ranks=2, padding=1).double()
    return model, compressed


GOOD = torch.randn(5, 3, 8, 8, dtype=torch.float64)
BAD_INPUT = {
    "missing_name": (_bn_pair, dict(names=["0", "9"]), ValueError, "'9' is not a module of original"),
    "not_a_layer": (_bn_pair, dict(names=["2"]), TypeError, "'2' must be an nn.Conv2d or nn.Linear"),
    "repeated": (_bn_pair, dict(names=["0", "0"]), ValueError, "must not repeat"),
    "not_names": (_bn_pair, dict(names=[0]), TypeError, "names must be"),
    "other_tree": (_other_tree, dict(), ValueError, "same module tree.*'2'"),
    "other_shape": (_other_shape, dict(), ValueError, "layer '3'.*shapes"),
    "empty": (_bn_pair, dict(data=[]), ValueError, "no batch"),
    "nan": (_bn_pair, dict(data=[GOOD, torch.full_like(GOOD, float("nan"))]), ValueError, "batch 1 have NaN"),
    "one_shot": (_bn_pair, dict(data=iter([GOOD])), TypeError, "re-iterable"),
    "wrong_channels": (_bn_pair, dict(data=[GOOD[:, :2]]), ValueError, "batch 0 of shape"),
    "ridge": (_bn_pair, dict(ridge=-1.0), ValueError, "ridge"),
    "lr": (_bn_pair, dict(lr=0.0), ValueError, "lr must be > 0"),
    "steps": (_bn_pair, dict(steps=0), ValueError, "steps"),
    "samples": (_bn_pair, dict(samples=1.5), TypeError, "samples"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUT))
def test_bad_input_is_refused_and_leaves_both_models_unchanged(case):
    build, arguments, error, message = BAD_INPUT[case]
    model, compressed = build()
    snapshot = _snapshot(model, compressed)
    call = dict(names=["0", "3"], data=[GOOD, GOOD]) | arguments
    with pytest.raises(error, match=message):
        refine_(model, compressed, call.pop("names"), call.pop("data"), **call)
    _assert_unchanged((model, compressed), snapshot)


class _Spoiled:
    """Good batches on the first ``good`` readings, then a NaN batch."""

    def __init__(self, good: int) -> None:
        self.good = good

    def __iter__(self):
        self.good -= 1
        return iter([GOOD if self.good >= 0 else torch.full_like(GOOD, float("nan"))])


def test_a_failure_after_a_layer_was_refitted_restores_the_compressed_model():
    model, compressed = _bn_pair()
    snapshot = _snapshot(model, compressed)
    with pytest.raises(ValueError, match="NaN"):  # read for the order, then for '0' (refitted), then for '3'
        refine_(model, compressed, ["0", "3"], _Spoiled(good=2))
    _assert_unchanged((model, compressed), snapshot)


# ------------------------------------------------------------------------------------------- the full-kernel refit


def _two_convs() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 5, 3, padding=1)).double().eval()


def _patch_rows(conv: nn.Conv2d, x: torch.Tensor) -> np.ndarray:
    """The unfolded patches of ``conv``'s input, ``(positions, C kh kw)``."""
    cols = nn.functional.unfold(x, conv.kernel_size, padding=conv.padding)
    return cols.transpose(1, 2).reshape(-1, cols.shape[1]).detach().numpy()


def test_the_kernel_refit_of_an_exact_structure_reaches_the_least_squares_kernel_for_the_compressed_inputs():
    """Layer 2 at full SVD rank can hold any kernel: the refit is the dense least-squares fit of the original layer's
    outputs from the compressed layer's inputs, and the reported error is that fit's."""
    model, x = _two_convs(), torch.randn(24, 3, 8, 8, dtype=torch.float64)
    compressed = _compressed(model, "svd", max_rank=1, include="0")
    compressed[2] = tnlib_torch.SVDConv2d.from_conv(model[2], max_rank=5)  # rank 5 = out channels: any kernel
    result = refine_(model, compressed, ["0", "2"], x, refit="kernel", ridge=0.0)["2"]
    assert result.method == "kernel"
    with torch.no_grad():
        x_tilde, x_orig = compressed[1](compressed[0](x)), model[1](model[0](x))
    p_tilde, p = _patch_rows(model[2], x_tilde), _patch_rows(model[2], x_orig)
    target = p @ model[2].weight.detach().reshape(5, -1).numpy().T
    solution = np.linalg.lstsq(p_tilde, target, rcond=None)[0]
    residual = np.linalg.norm(p_tilde @ solution - target) / np.linalg.norm(target)
    assert result.error_after == pytest.approx(residual, rel=1e-6)
    np.testing.assert_allclose(compressed[2].folded_weight().detach().reshape(5, -1).numpy(), solution.T,
                               rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize(("method", "options"), [("tucker2", {"ranks": 2}), ("svd", {"max_rank": 2, "cut": "oh|iw"}),
                                                 ("mps", {"max_bond": 2}), ("cp", {"rank": 3, "seed": 0})])
def test_the_kernel_refit_never_raises_a_layers_error_and_reports_the_measured_one(method, options):
    model, x = _two_convs(), torch.randn(16, 3, 8, 8, dtype=torch.float64)
    compressed = _compressed(model, method, **options)
    results = refine_(model, compressed, ["0", "2"], x, refit="kernel", fit={"seed": 0})
    assert [r.method for r in results.values()] == ["kernel", "kernel"]
    assert all(r.error_after <= r.error_before for r in results.values())
    with torch.no_grad():  # the reported error is the layer's, bias excluded, on its compressed inputs
        x_tilde = compressed[1](compressed[0](x))
        bias = model[2].bias.reshape(1, -1, 1, 1)
        measured = _relative_error(compressed[2](x_tilde) - bias, model[2](model[1](model[0](x))) - bias)
    assert results["2"].error_after == pytest.approx(measured, rel=1e-6)


def test_kernel_refittable_needs_a_known_structure_and_a_small_patch():
    from tnlib_torch.compression.kernel_refit import kernel_refittable

    model = _two_convs()
    layer = _compressed(model, "tucker2", ranks=2)[2]
    assert kernel_refittable(model[2], layer) and not kernel_refittable(model[2], layer, max_full=53)
    assert not kernel_refittable(model[2], model[2])


def test_compress_takes_the_kernel_refit_and_refuses_an_unknown_one():
    model, x = _two_convs(), torch.randn(16, 3, 8, 8, dtype=torch.float64)
    small, report = tnlib_torch.compress(model, "tucker2", ranks=2, calibration=x, refine="kernel", seed=0)
    assert report.calibration["refine"] == "kernel"
    assert all(layer.refined_error is not None for layer in report.layers.values())
    with pytest.raises(TypeError, match="refine must be True, False or one of 'stage', 'kernel'"):
        tnlib_torch.compress(model, "tucker2", ranks=2, calibration=x, refine="all")
    with pytest.raises(ValueError, match="refit"):
        refine_(model, copy.deepcopy(small), ["2"], x, refit="everything")
    with pytest.raises(TypeError, match="fit must be a mapping"):
        refine_(model, copy.deepcopy(small), ["2"], x, refit="kernel", fit="lm")
