"""Calibration on data: input moments equal brute force, give the data metric, and BatchNorm recalibration."""

import copy
import re
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch import nn  # noqa: E402

import tnlib  # noqa: E402
import tnlib_torch  # noqa: E402
from tests.core.test_api import plain_signature  # noqa: E402
from tnlib.metric import kronecker_factors  # noqa: E402
from tnlib_torch import LayerMoments, input_moments, recalibrate_batchnorm  # noqa: E402


def _brute_moment(conv: nn.Conv2d, x: torch.Tensor, group: int) -> np.ndarray:
    """E[P P^T] of one group by explicit loops over samples and output positions."""
    x = x.double()
    pad = conv._reversed_padding_repeated_twice
    mode = "constant" if conv.padding_mode == "zeros" else conv.padding_mode
    xp = nn.functional.pad(x, pad, mode=mode).numpy()
    (kh, kw), (sh, sw), (dh, dw) = conv.kernel_size, conv.stride, conv.dilation
    cg = conv.in_channels // conv.groups
    rows = (xp.shape[2] - dh * (kh - 1) - 1) // sh + 1
    cols = (xp.shape[3] - dw * (kw - 1) - 1) // sw + 1
    total, count = np.zeros((cg * kh * kw,) * 2), 0
    for n in range(xp.shape[0]):
        for y in range(rows):
            for z in range(cols):
                window = xp[n, group * cg:(group + 1) * cg, y * sh:y * sh + dh * (kh - 1) + 1:dh,
                            z * sw:z * sw + dw * (kw - 1) + 1:dw]
                p = window.reshape(-1)
                total += np.outer(p, p)
                count += 1
    return total / count


CONVS = {
    "plain": dict(in_channels=3, out_channels=4, kernel_size=3),
    "stride_padding": dict(in_channels=3, out_channels=4, kernel_size=(3, 2), stride=(2, 1), padding=(1, 2)),
    "dilation": dict(in_channels=2, out_channels=3, kernel_size=3, dilation=2, padding=1),
    "groups": dict(in_channels=4, out_channels=6, kernel_size=3, groups=2, padding=1),
    "reflect": dict(in_channels=3, out_channels=2, kernel_size=3, padding=1, padding_mode="reflect"),
    "circular_same": dict(in_channels=2, out_channels=2, kernel_size=(2, 3), padding="same", padding_mode="circular"),
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("spec", sorted(CONVS))
def test_the_full_moment_equals_brute_force(spec, dtype):
    torch.manual_seed(0)
    conv = nn.Conv2d(**CONVS[spec], dtype=dtype)
    x = torch.randn(5, conv.in_channels, 7, 6, dtype=dtype)
    lm = input_moments(conv, x)[""]
    assert lm.full and lm.groups == conv.groups and lm.samples == 5
    for g in range(conv.groups):
        brute = _brute_moment(conv, x, g)
        if dtype == torch.float64:  # float64 products: exact up to float64 round-off
            np.testing.assert_allclose(lm.moments[g]["ihw"], brute, rtol=1e-10, atol=1e-12)
        else:  # float32 products over <= 210 positions: round-off ~1e-7 * sqrt(210) of the largest entry
            np.testing.assert_allclose(lm.moments[g]["ihw"], brute, rtol=0, atol=1e-5 * np.abs(brute).max())


def test_the_kronecker_form_is_the_normalized_partial_traces():
    torch.manual_seed(1)
    conv = nn.Conv2d(4, 4, 3, padding=1, groups=2).double()  # float64: both forms exact to round-off
    x = torch.randn(6, 4, 5, 5, dtype=torch.float64)
    full, factored = input_moments(conv, x)[""], input_moments(conv, x, max_full=17)[""]
    assert full.full and not factored.full
    for g in range(2):
        expected = kronecker_factors(full.moments[g]["ihw"], "ihw", (2, 3, 3), ["i", "hw"])
        for part in ("i", "hw"):
            np.testing.assert_allclose(factored.moments[g][part], expected[part], rtol=1e-10)
        # each metric form from the factors has the Kronecker product of the factors
        svd = factored.metric("svd", group=g)["ihw"]
        np.testing.assert_allclose(svd, np.kron(expected["i"], expected["hw"]), rtol=1e-10)
        np.testing.assert_allclose(np.trace(svd), np.trace(full.moments[g]["ihw"]), rtol=1e-10)
        # one matrix per label: the same Kronecker product as the factors of the full moment
        per_label, exact = factored.metric("cp", group=g), full.metric("cp", group=g)
        np.testing.assert_allclose(np.kron(np.kron(per_label["i"], per_label["h"]), per_label["w"]),
                                   np.kron(np.kron(exact["i"], exact["h"]), exact["w"]), rtol=1e-10)


def _dead_channel_model() -> nn.Sequential:
    """conv -> ReLU -> grouped conv, where the ReLU outputs of channels 1, 4 and 5 are zero on any input."""
    torch.manual_seed(8)
    model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.Conv2d(6, 4, 3, groups=2), nn.Flatten(),
                          nn.Linear(4 * 4 * 4, 3))
    with torch.no_grad():
        model[0].weight[[1, 4, 5]] = 0.0
        model[0].bias[[1, 4]] = 0.0
        model[0].bias[5] = -1.0  # a negative constant: the ReLU kills it too
    return model


@pytest.mark.parametrize("max_full", [2304, 20])  # full and Kronecker-factored moments of the second conv
def test_dead_inputs_are_the_channels_that_are_zero_on_the_data(max_full):
    model = _dead_channel_model()
    x = torch.randn(8, 3, 6, 6)
    moments = input_moments(model, x, max_full=max_full, linear=True)
    assert moments["2"].full == (max_full == 2304) and moments["2"].groups == 2
    assert moments["2"].dead_inputs == (1, 4, 5)  # numbered over both groups: group 1 holds channels 3, 4, 5
    assert moments["0"].dead_inputs == ()
    # the dead channels' rows of the full moment vanish: the moment is singular there
    m = moments["2"].metric("svd", group=0)["ihw"].reshape(3, 9, 27)
    assert not m[1].any() and m[0].any() and m[2].any()
    # a linear layer's features: the flattened outputs of the conv, none dead
    assert moments["4"].dead_inputs == ()


def test_every_input_is_dead_when_the_input_is_zero():
    lm = input_moments(nn.Linear(5, 2), torch.zeros(4, 5), linear=True)[""]
    assert lm.dead_inputs == (0, 1, 2, 3, 4)
    conv = input_moments(nn.Conv2d(2, 2, 3), torch.zeros(3, 2, 5, 5), max_full=4)[""]
    assert not conv.full and conv.dead_inputs == (0, 1)


def test_the_metric_forms_of_a_full_moment():
    torch.manual_seed(2)
    conv = nn.Conv2d(2, 3, 3)
    lm = input_moments(conv, torch.randn(4, 2, 6, 6))[""]
    m = lm.moments[0]["ihw"]
    assert lm.metric("svd")["ihw"] is not None and np.array_equal(lm.metric("svd")["ihw"], m)
    for kind, parts in (("tucker2", ["i", "hw"]), ("mps", ["i", "h", "w"]), ("cp", ["i", "h", "w"])):
        expected = kronecker_factors(m, "ihw", (2, 3, 3), parts)
        got = lm.metric(kind)
        assert sorted(got) == sorted(parts)
        for part in parts:
            np.testing.assert_allclose(got[part], expected[part])
    assert not lm.moments[0]["ihw"].flags.writeable
    with pytest.raises(ValueError, match="kind"):
        lm.metric("tucker")
    with pytest.raises(ValueError, match="group"):
        lm.metric("svd", group=1)


def test_streaming_over_batches_equals_one_batch_and_samples_bounds_what_is_seen():
    torch.manual_seed(3)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 3, stride=2),
                          nn.Flatten(), nn.Linear(2 * 3 * 3, 5)).double()  # float64: no round-off per batch
    x = torch.randn(10, 3, 7, 7, dtype=torch.float64)
    one = input_moments(model, x, batch_size=10, linear=True)
    loader = [(x[i:i + 3], torch.zeros(3)) for i in range(0, 10, 3)]  # batches of 3, 3, 3, 1
    streamed = input_moments(model, loader, linear=True)
    assert list(one) == ["0", "2", "4"]
    for name in one:
        assert streamed[name].samples == 10 and streamed[name].positions == one[name].positions
        np.testing.assert_allclose(streamed[name].moments[0][one[name].labels],
                                   one[name].moments[0][one[name].labels], rtol=1e-10)
    bounded = input_moments(model, loader, samples=4, linear=True)
    first = input_moments(model, x[:4], linear=True)
    assert bounded["0"].samples == 4 and bounded["0"].positions == 4 * 49
    for name in first:
        np.testing.assert_allclose(bounded[name].moments[0][first[name].labels],
                                   first[name].moments[0][first[name].labels], rtol=1e-10)
    assert one["4"].labels == "i" and one["4"].metric("svd")["i"].shape == (18, 18)


def test_include_and_exclude_select_the_layers():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(4, 4, 3))
    x = torch.randn(2, 3, 8, 8)
    assert list(input_moments(model, x, include="1")) == ["1"]
    assert list(input_moments(model, x, exclude="1")) == ["0"]


@pytest.mark.parametrize("rel_error", [0.05, 0.2, 0.5])
def test_the_truncation_reports_the_measured_relative_output_error(rel_error):
    torch.manual_seed(4)
    conv = nn.Conv2d(6, 8, 3, padding=1).double()
    # correlated inputs, so that the data metric differs from the Frobenius norm
    mix = torch.randn(6, 6, dtype=torch.float64)
    x = torch.einsum("ij,njhw->nihw", mix, torch.randn(40, 6, 8, 8, dtype=torch.float64))
    lm = input_moments(conv, x)[""]
    kernel = conv.weight.detach().numpy()
    truncated, info = tnlib.truncate(kernel, "o|ihw", rel_error=rel_error, metric=lm.metric("svd"))
    assert info.rel_error <= rel_error + 1e-12
    conv_nobias = lambda w: nn.functional.conv2d(x, torch.as_tensor(w), padding=1)  # noqa: E731
    y, y_truncated = conv_nobias(kernel), conv_nobias(truncated)
    measured = float(torch.linalg.norm(y - y_truncated) / torch.linalg.norm(y))
    assert measured == pytest.approx(info.rel_error, rel=1e-6)


def _bn_model() -> nn.Module:
    torch.manual_seed(5)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, momentum=0.3), nn.ReLU(), nn.Dropout(0.5),
                         nn.Conv2d(4, 2, 3), nn.BatchNorm2d(2))


def test_recalibrate_batchnorm_equals_torchs_cumulative_statistics_and_changes_nothing_else():
    model = _bn_model()
    model[1].train()
    model[3].train()  # a flag that must survive
    batches = [torch.randn(8, 3, 9, 9) for _ in range(3)]
    reference = copy.deepcopy(model)
    reference[3].p = 0.0  # update_bn runs the whole model in training mode; recalibrate keeps dropout off
    torch.optim.swa_utils.update_bn([(b, 0) for b in batches], reference)
    before = copy.deepcopy(model.state_dict())
    flags = [m.training for m in model.modules()]
    assert recalibrate_batchnorm(model, batches) is model
    stats = ("running_mean", "running_var", "num_batches_tracked")
    after = model.state_dict()
    for key, value in after.items():
        if key.endswith(stats) and key.startswith(("1.", "5.")):
            torch.testing.assert_close(value, reference.state_dict()[key])
        else:
            assert torch.equal(value, before[key]), key
    assert [m.training for m in model.modules()] == flags
    assert model[1].momentum == 0.3 and model[5].momentum == 0.1
    # the first BatchNorm sees the conv's outputs: its mean is their mean over the whole data
    with torch.no_grad():
        y = torch.cat([model[0](b) for b in batches])
    torch.testing.assert_close(model[1].running_mean, y.mean(dim=(0, 2, 3)))


def _trained_statistics(model: nn.Module) -> nn.Module:
    """``model`` with running statistics unlike any batch's, as if estimated on other data."""
    with torch.no_grad():
        for norm in (model[1], model[5]):
            norm.running_mean.uniform_(-1.0, 1.0)
            norm.running_var.uniform_(0.5, 2.0)
    return model


def test_a_reference_corrects_the_statistics_by_the_paired_change():
    reference = _trained_statistics(_bn_model())
    model = copy.deepcopy(reference)
    with torch.no_grad():
        model[0].weight.mul_(1.5)  # the "compression": the first conv's outputs change
    batches = [torch.randn(8, 3, 9, 9) for _ in range(3)]
    held = copy.deepcopy(model.state_dict())
    measured, measured_reference = (recalibrate_batchnorm(copy.deepcopy(m), batches) for m in (model, reference))
    reference_state = _state(reference)
    assert recalibrate_batchnorm(model, batches, reference=reference) is model
    for n in ("1", "5"):
        mean, var = (measured.get_submodule(n).running_mean, measured.get_submodule(n).running_var)
        ref_mean, ref_var = (measured_reference.get_submodule(n).running_mean,
                             measured_reference.get_submodule(n).running_var)
        torch.testing.assert_close(model.get_submodule(n).running_mean, held[f"{n}.running_mean"] + mean - ref_mean)
        torch.testing.assert_close(model.get_submodule(n).running_var, held[f"{n}.running_var"] * var / ref_var)
    _assert_unchanged(reference, reference_state)
    # an unchanged network keeps its statistics: the paired change is zero
    same = copy.deepcopy(reference)
    recalibrate_batchnorm(same, batches, reference=reference)
    for key, value in same.state_dict().items():
        if key.endswith(("running_mean", "running_var")):
            torch.testing.assert_close(value, reference.state_dict()[key], rtol=1e-6, atol=1e-6)


def test_a_channel_dead_in_the_reference_gets_the_models_own_estimate():
    reference = _trained_statistics(_bn_model())
    with torch.no_grad():
        reference[0].weight[2].zero_()
        reference[0].bias[2] = 0.0  # channel 2 of the first BatchNorm's input is zero: no variance
    model = copy.deepcopy(reference)
    with torch.no_grad():
        model[0].weight[2].fill_(0.1)
    batches = [torch.randn(8, 3, 9, 9)]
    recalibrate_batchnorm(model, batches, reference=reference)
    estimated = recalibrate_batchnorm(copy.deepcopy(model), batches)
    assert bool(torch.isfinite(model[1].running_var).all())
    torch.testing.assert_close(model[1].running_var[2], estimated[1].running_var[2])


def test_a_reference_without_the_models_batchnorm_is_refused():
    model = _bn_model()
    wider = _bn_model()
    wider[5] = nn.BatchNorm2d(3)
    state = _state(model)
    with pytest.raises(ValueError, match="reference has no BatchNorm '5' of 2 features"):
        recalibrate_batchnorm(model, torch.randn(2, 3, 9, 9), reference=wider)
    with pytest.raises(TypeError, match="reference must be a torch.nn.Module"):
        recalibrate_batchnorm(model, torch.randn(2, 3, 9, 9), reference="model")
    with pytest.raises(TypeError, match="must be re-iterable"):
        recalibrate_batchnorm(model, iter([torch.randn(2, 3, 9, 9)]), reference=_bn_model())
    _assert_unchanged(model, state)


def _state(model: nn.Module) -> tuple[dict, list[bool], list]:
    norms = [m.momentum for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    return copy.deepcopy(model.state_dict()), [m.training for m in model.modules()], norms


def _assert_unchanged(model: nn.Module, state: tuple[dict, list[bool], list]) -> None:
    params, flags, momenta = state
    assert all(torch.equal(v, params[k]) for k, v in model.state_dict().items())
    assert [m.training for m in model.modules()] == flags
    assert [m.momentum for m in model.modules() if isinstance(m, nn.BatchNorm2d)] == momenta
    assert all(not m._forward_pre_hooks for m in model.modules())


BAD_DATA = {
    "channels": ([torch.randn(2, 3, 9, 9), torch.randn(2, 5, 9, 9)], ValueError,
                 r"batch 1 of shape \(2, 5, 9, 9\) in layer '0'"),
    "empty": ([], ValueError, "no batch"),
    "nan": ([torch.randn(2, 3, 9, 9), torch.full((2, 3, 9, 9), float("nan"))], ValueError, "batch 1 have NaN"),
    "inf": (torch.full((2, 3, 9, 9), float("inf")), ValueError, "NaN or infinite"),
    "integer": ([torch.zeros(2, 3, 9, 9, dtype=torch.int64)], TypeError, "floating-point"),
    "not_iterable": (3.0, TypeError, "data must be"),
    "dict": ({"x": torch.zeros(2)}, TypeError, "data must be"),
    "bad_batch": ([{"x": 1}], TypeError, "batch 0"),
}


@pytest.mark.parametrize("case", sorted(BAD_DATA))
@pytest.mark.parametrize("function", [input_moments, recalibrate_batchnorm])
def test_bad_data_leaves_the_model_unchanged(function, case):
    data, error, message = BAD_DATA[case]
    model = _bn_model()
    model[3].train()
    state = _state(model)
    with pytest.raises(error, match=message):
        function(model, data)
    _assert_unchanged(model, state)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(samples=0), ValueError, "samples"),
    (dict(samples=2.5), TypeError, "samples"),
    (dict(include="nope"), ValueError, "'nope' matches no"),
    (dict(max_full=0), ValueError, "max_full"),
    (dict(linear="yes"), TypeError, "linear"),
    (dict(batch_size=0), ValueError, "batch_size"),
    (dict(exclude="*"), ValueError, "select no layer"),
])
def test_bad_arguments_name_the_argument(kwargs, error, message):
    model = _bn_model()
    state = _state(model)
    with pytest.raises(error, match=message):
        input_moments(model, torch.randn(2, 3, 9, 9), **kwargs)
    _assert_unchanged(model, state)


def test_a_model_on_the_meta_device_is_refused():
    with pytest.raises(ValueError, match="meta"):
        input_moments(nn.Conv2d(3, 2, 3, device="meta"), torch.randn(2, 3, 5, 5))
    with pytest.raises(TypeError, match="model"):
        recalibrate_batchnorm("model", torch.randn(2, 3, 5, 5))


def test_layer_moments_is_frozen():
    lm = input_moments(nn.Conv2d(1, 1, 2), torch.randn(1, 1, 3, 3))[""]
    assert isinstance(lm, LayerMoments) and lm.positions == 4
    with pytest.raises(AttributeError):
        lm.samples = 3


@pytest.mark.parametrize("name", ["input_moments", "recalibrate_batchnorm"])
def test_documented_signatures_match_the_code(name):
    docs = (Path(__file__).resolve().parents[2] / "docs" / "torch_calibration.md").read_text()
    documented = re.findall(rf"^tnlib_torch\.{name}\((.*)\)\s*$", docs, re.M)
    assert documented == [plain_signature(getattr(tnlib_torch, name))]


def test_a_linear_layer_averages_over_every_leading_index():
    torch.manual_seed(6)
    layer = nn.Linear(5, 3).double()
    x = torch.randn(4, 7, 5, dtype=torch.float64)
    lm = input_moments(layer, x, linear=True)[""]
    rows = x.reshape(-1, 5).numpy()
    assert (lm.labels, lm.dims, lm.positions, lm.samples) == ("i", (5,), 28, 4)
    np.testing.assert_allclose(lm.metric("svd")["i"], rows.T @ rows / 28, rtol=1e-12)
    with pytest.raises(ValueError, match="kind"):
        lm.metric("tucker2")


def test_samples_stops_reading_the_data_early():
    def batches():
        yield torch.randn(3, 2, 4, 4)
        yield torch.randn(3, 2, 4, 4)
        raise AssertionError("read past the samples asked for")

    lm = input_moments(nn.Conv2d(2, 2, 3), batches(), samples=5)[""]
    assert lm.samples == 5 and lm.positions == 5 * 4


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_inputs_move_to_the_models_device():
    torch.manual_seed(7)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)).double()
    x = torch.randn(6, 3, 8, 8, dtype=torch.float64)
    on_cpu = input_moments(model, x)["0"].moments[0]["ihw"]
    on_gpu = input_moments(copy.deepcopy(model).cuda(), x)["0"].moments[0]["ihw"]
    np.testing.assert_allclose(on_gpu, on_cpu, rtol=1e-10)
    recalibrate_batchnorm(model, x)
    gpu = recalibrate_batchnorm(copy.deepcopy(model).cuda(), x)
    torch.testing.assert_close(gpu[1].running_var.cpu(), model[1].running_var)
