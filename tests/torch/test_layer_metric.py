"""The factorized layers fitted in a data metric: optimal for, and reporting, the error of the layer's outputs."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

torch = pytest.importorskip("torch")
nn = torch.nn

import tnlib_torch as tt  # noqa: E402
from tnlib_torch.compression.calibration import LayerMoments, input_moments  # noqa: E402

#: A fit: ``fit(dense, metric) -> layer`` at fixed ranks (caps that bind), so that a fit with and one
#: without a metric have the same ranks; and the ``LayerMoments.metric`` kind its metric takes.
Fit = Callable[[nn.Module, object], nn.Module]
FITS: dict[str, tuple[Fit, str]] = {
    "SVDConv2d": (lambda conv, metric: tt.SVDConv2d.from_conv(conv, max_rank=3, metric=metric), "svd"),
    "Tucker2Conv2d": (lambda conv, metric: tt.Tucker2Conv2d.from_conv(conv, ranks=(3, 3), metric=metric), "tucker2"),
    "MPSConv2d": (lambda conv, metric: tt.MPSConv2d.from_conv(conv, max_bond=(3, 6, 4), metric=metric), "mps"),
    "CPConv2d": (lambda conv, metric: tt.CPConv2d.from_conv(conv, rank=4, seed=0, max_iter=10, metric=metric), "cp"),
    "SVDLinear": (lambda linear, metric: tt.SVDLinear.from_linear(linear, max_rank=3, metric=metric), "svd"),
}
CONV_FITS = [name for name in FITS if name != "SVDLinear"]

#: Input channels (features of the linear layer), their standard deviations decaying geometrically to this:
#: inputs this anisotropic make a fit to the outputs clearly unlike a fit to the kernel.
CHANNELS, FEATURES, DECAY = 6, 12, 0.02


def _dense(name: str, groups: int = 1, kernel_size: int = 3, dtype: torch.dtype = torch.float64) -> nn.Module:
    """A layer with random weights (seeded), with bias."""
    torch.manual_seed(0)
    if name == "SVDLinear":
        return nn.Linear(FEATURES, 10).to(dtype)
    return nn.Conv2d(CHANNELS, 8, kernel_size, padding=kernel_size // 2, groups=groups).to(dtype)


def _data(dense: nn.Module, samples: int = 48) -> torch.Tensor:
    """Inputs ``z diag(d)`` (channels or features scaled by ``d``, geometric from 1 to ``DECAY``), float64.

    The images ``z`` (6 x 6) are white noise averaged over 3 x 3 windows: correlated across a patch, as images are.
    """
    gen = torch.Generator().manual_seed(1)
    if isinstance(dense, nn.Linear):
        return torch.randn(samples, FEATURES, generator=gen, dtype=torch.float64) @ torch.diag(_decay(FEATURES))
    z = nn.functional.avg_pool2d(torch.randn(samples, CHANNELS, 8, 8, generator=gen, dtype=torch.float64), 3, 1)
    return z * _decay(CHANNELS)[:, None, None]


def _decay(n: int) -> torch.Tensor:
    return torch.from_numpy(np.geomspace(1.0, DECAY, n))


def _moments(dense: nn.Module, x: torch.Tensor) -> LayerMoments:
    """The second moments of ``dense``'s inputs on ``x``, by the library's calibration pass."""
    return input_moments(nn.Sequential(dense), x, linear=isinstance(dense, nn.Linear))["0"]


def output_error(layer: nn.Module, dense: nn.Module, x: torch.Tensor) -> float:
    """``||(layer(x) - b) - (dense(x) - b)|| / ||dense(x) - b||`` over all samples and positions, in float64."""
    with torch.no_grad():
        layer, dense, x = layer.double(), dense.double(), x.double()
        bias = dense.bias.reshape(-1, *[1] * (x.ndim - 2))
        target = dense(x) - bias
        return float(torch.linalg.vector_norm(layer(x) - bias - target) / torch.linalg.vector_norm(target))


def _root(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The symmetric square root of a positive definite matrix and its inverse."""
    w, v = np.linalg.eigh(m)
    return (v * np.sqrt(w)) @ v.T, (v / np.sqrt(w)) @ v.T


def _moment_of_random_vectors(n: int, seed: int) -> np.ndarray:
    """``X X^T / N`` of ``N = 4 n`` random vectors ``Q diag(d) z``: anisotropic (``d`` from 1 to 0.05), correlated
    (``Q`` a random rotation), condition number about ``9 / 0.05**2``."""
    rng = np.random.default_rng(seed)
    rotation = np.linalg.qr(rng.standard_normal((n, n)))[0]
    x = rotation @ np.diag(np.geomspace(1.0, 0.05, n)) @ rng.standard_normal((n, 4 * n))
    return x @ x.T / x.shape[1]


# -- planted oracles: the metric-optimal rank-r approximation, by hand ------------------------------------


def _metric_optimal(matrix: np.ndarray, rank: int, left: np.ndarray | None, right: np.ndarray | None) -> np.ndarray:
    """``argmin ||L_l^T (W - X) L_r||_F`` over rank-``r`` ``X``: the truncated SVD of ``L_l^T W L_r``, mapped back."""
    rows, cols = matrix.shape
    l_left, inv_left = _root(left) if left is not None else (np.eye(rows),) * 2
    l_right, inv_right = _root(right) if right is not None else (np.eye(cols),) * 2
    u, s, vt = np.linalg.svd(l_left @ matrix @ l_right)
    return inv_left @ (u[:, :rank] * s[:rank]) @ vt[:rank] @ inv_right


@pytest.mark.parametrize("cut, group", [("o|ihw", "ihw"), ("oh|iw", "iw"), ("i|ohw", "i"), ("o|ihw", "o"),
                                        ("oh|iw", "oh")])
def test_svd_conv_is_the_metric_optimal_split_computed_by_hand(cut, group):
    conv = _dense("SVDConv2d")
    kernel = conv.weight.detach().numpy()
    sizes = dict(zip("oihw", kernel.shape))
    m = _moment_of_random_vectors(int(np.prod([sizes[c] for c in group])), seed=2)
    layer = tt.SVDConv2d.from_conv(conv, cut=cut, max_rank=3, metric={group: m})

    left, right = cut.split("|")
    rows, cols = (left, right) if "o" in left else (right, left)
    order = rows + cols
    matrix = np.transpose(kernel, ["oihw".index(c) for c in order]).reshape(
        np.prod([sizes[c] for c in rows]), -1)
    on_rows = group in rows
    approx = _metric_optimal(matrix, 3, m if on_rows else None, None if on_rows else m)
    expected = np.transpose(approx.reshape([sizes[c] for c in order]), np.argsort(["oihw".index(c) for c in order]))
    assert np.allclose(layer.folded_weight().detach().numpy(), expected, rtol=0, atol=1e-8 * np.abs(expected).max())

    l_group = _root(m)[0]
    weighted = (lambda t: l_group @ t) if on_rows else (lambda t: t @ l_group)
    assert layer.info.rel_error == pytest.approx(
        np.linalg.norm(weighted(matrix - approx)) / np.linalg.norm(weighted(matrix)), rel=1e-9)


def test_svd_conv_with_one_metric_per_label_weights_both_sides_of_the_cut():
    """``{"i", "h", "w"}`` across ``oh|iw``: ``h`` weights the rows, ``i`` and ``w`` the columns (Kronecker)."""
    conv = _dense("SVDConv2d")
    kernel = conv.weight.detach().numpy()
    metric = {"i": _moment_of_random_vectors(6, seed=4), "h": _moment_of_random_vectors(3, seed=5),
              "w": _moment_of_random_vectors(3, seed=6)}
    layer = tt.SVDConv2d.from_conv(conv, cut="oh|iw", max_rank=4, metric=metric)
    matrix = np.transpose(kernel, (0, 2, 1, 3)).reshape(24, 18)
    approx = _metric_optimal(matrix, 4, np.kron(np.eye(8), metric["h"]), np.kron(metric["i"], metric["w"]))
    expected = np.transpose(approx.reshape(8, 3, 6, 3), (0, 2, 1, 3))
    assert np.allclose(layer.folded_weight().detach().numpy(), expected, rtol=0, atol=1e-8 * np.abs(expected).max())


def test_svd_linear_is_the_metric_optimal_split_computed_by_hand():
    linear = _dense("SVDLinear")
    weight = linear.weight.detach().numpy()
    m = _moment_of_random_vectors(FEATURES, seed=3)
    layer = tt.SVDLinear.from_linear(linear, max_rank=4, metric={"i": torch.from_numpy(m)})
    expected = _metric_optimal(weight, 4, None, m)
    assert np.allclose(layer.folded_weight().detach().numpy(), expected, rtol=0, atol=1e-8 * np.abs(expected).max())
    root = _root(m)[0]
    assert layer.info.rel_error == pytest.approx(
        np.linalg.norm((weight - expected) @ root) / np.linalg.norm(weight @ root), rel=1e-9)


# -- the error on the data ----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(FITS))
def test_a_metric_fit_errs_clearly_less_on_its_data_than_a_kernel_fit(name):
    fit, kind = FITS[name]
    dense = _dense(name)
    x = _data(dense)
    fitted = fit(dense, _moments(dense, x).metric(kind))
    plain = fit(dense, None)
    assert fitted.folded_weight().shape == plain.folded_weight().shape  # the same ranks
    on_data, kernel_fit = output_error(fitted, dense, x), output_error(plain, dense, x)
    # the optimum of the output error at its rank for SVD, of a (Kronecker) approximation of it otherwise;
    # measured on these inputs: 0.65 (SVDConv2d), 0.61 (Tucker-2), 0.55 (MPS), 0.48 (CP), 0.55 (SVDLinear) times
    # the kernel fit's error
    assert on_data <= kernel_fit + 1e-9
    assert on_data <= 0.75 * kernel_fit


@pytest.mark.parametrize("name, kernel_size", [("SVDConv2d", 3), ("SVDLinear", None), ("Tucker2Conv2d", 1)])
def test_the_reported_error_is_the_relative_error_of_the_outputs_on_the_data(name, kernel_size):
    """Exact structures with the full moment: ``{"ihw": M}`` (SVD), and Tucker-2 of a 1x1 conv, whose
    ``{"i": M_i, "hw": M_hw}`` is the full moment."""
    fit, kind = FITS[name]
    dense = _dense(name, kernel_size=kernel_size or 3)
    x = _data(dense)
    layer = fit(dense, _moments(dense, x).metric(kind))
    assert layer.info.rel_error == pytest.approx(output_error(layer, dense, x), abs=1e-6)
    assert 0.01 < layer.info.rel_error < 0.99  # a real truncation


@pytest.mark.parametrize("name", ["SVDConv2d", "SVDLinear"])
def test_a_single_precision_layer_reports_the_output_error_of_its_stored_factors(name):
    fit, kind = FITS[name]
    dense = _dense(name, dtype=torch.float32)
    x = _data(dense)
    layer = fit(dense, _moments(dense, x.float()).metric(kind))
    assert layer.layers[0].weight.dtype == torch.float32
    # the moment of float32 inputs is accumulated in float64: the same metric as the float64 data's, to round-off
    assert layer.info.rel_error == pytest.approx(output_error(layer, dense, x.float()), abs=1e-6)


# -- groups ---------------------------------------------------------------------------------------------------


def _group_conv(conv: nn.Conv2d, g: int) -> nn.Conv2d:
    """Group ``g`` of a grouped conv as a conv of its own (its kernel block and bias)."""
    out_g, in_g = conv.out_channels // conv.groups, conv.in_channels // conv.groups
    part = nn.Conv2d(in_g, out_g, conv.kernel_size, padding=conv.padding).double()
    with torch.no_grad():
        part.weight.copy_(conv.weight[g * out_g:(g + 1) * out_g])
        part.bias.copy_(conv.bias[g * out_g:(g + 1) * out_g])
    return part


@pytest.mark.parametrize("name", CONV_FITS)
def test_a_grouped_conv_with_one_metric_per_group_is_each_group_fitted_alone(name):
    fit, kind = FITS[name]
    conv = _dense(name, groups=2)
    moments = _moments(conv, _data(conv))
    metrics = [moments.metric(kind, g) for g in range(2)]
    layer = fit(conv, metrics)
    by_hand = [fit(_group_conv(conv, g), metrics[g]) for g in range(2)]
    expected = torch.cat([part.folded_weight() for part in by_hand])
    assert torch.allclose(layer.folded_weight(), expected, rtol=0, atol=1e-10 * float(expected.detach().abs().max()))


def test_groups_meeting_an_error_target_at_different_ranks_are_refitted_in_their_metrics():
    """The second pass at the common rank keeps each group's metric; the whole report is in the metric norm."""
    conv = _dense("SVDConv2d", groups=2)
    with torch.no_grad():  # group 1 of rank 1 plus a little: its target is met at a lower rank than group 0's
        conv.weight[4:] = conv.weight[4:1 + 4].repeat(4, 1, 1, 1) + 1e-3 * conv.weight[4:]
    x = _data(conv)
    moments = _moments(conv, x)
    metrics = [moments.metric("svd", g) for g in range(2)]
    layer = tt.SVDConv2d.from_conv(conv, rel_error=0.3, metric=metrics)
    alone = [tt.SVDConv2d.from_conv(_group_conv(conv, g), rel_error=0.3, metric=metrics[g]) for g in range(2)]
    assert alone[0].rank > alone[1].rank == 1 and layer.rank == alone[0].rank
    common = [tt.SVDConv2d.from_conv(_group_conv(conv, g), max_rank=layer.rank, metric=metrics[g]) for g in range(2)]
    expected = torch.cat([part.folded_weight() for part in common])
    assert torch.allclose(layer.folded_weight(), expected, rtol=0, atol=1e-10 * float(expected.detach().abs().max()))
    assert layer.info.rel_error == pytest.approx(output_error(layer, conv, x), abs=1e-6)
    assert layer.info.rel_error <= 0.3


def test_one_mapping_is_the_metric_of_every_group():
    conv = _dense("Tucker2Conv2d", groups=2)
    metric = _moments(conv, _data(conv)).metric("tucker2", 1)
    fit = FITS["Tucker2Conv2d"][0]
    assert torch.equal(fit(conv, metric).folded_weight(), fit(conv, [metric, metric]).folded_weight())


# -- no metric ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(FITS))
def test_metric_none_is_the_kernel_fit(name):
    fit = FITS[name][0]
    dense = _dense(name)
    plain = {"SVDLinear": lambda: tt.SVDLinear.from_linear(dense, max_rank=3),
             "SVDConv2d": lambda: tt.SVDConv2d.from_conv(dense, max_rank=3),
             "Tucker2Conv2d": lambda: tt.Tucker2Conv2d.from_conv(dense, ranks=(3, 3)),
             "MPSConv2d": lambda: tt.MPSConv2d.from_conv(dense, max_bond=(3, 6, 4)),
             "CPConv2d": lambda: tt.CPConv2d.from_conv(dense, rank=4, seed=0, max_iter=10)}[name]()
    given = fit(dense, None)
    assert torch.equal(given.folded_weight(), plain.folded_weight())
    assert given.info.rel_error == plain.info.rel_error


# -- bad input ----------------------------------------------------------------------------------------------------

M54, M6 = np.eye(54), np.eye(6)  # a patch (6 channels of a 3x3 kernel), and the channels alone


@pytest.mark.parametrize("call, error, message", [
    (lambda: tt.Tucker2Conv2d.from_conv(_dense("", groups=2), metric=[{"i": np.eye(3)}]), ValueError,
     r"metric must hold one mapping per conv group: the conv has 2 group\(s\), got 1"),
    (lambda: tt.SVDConv2d.from_conv(_dense(""), metric=[{"ihw": M54}] * 2), ValueError,
     r"metric must hold one mapping per conv group: the conv has 1 group\(s\), got 2"),
    (lambda: tt.SVDConv2d.from_conv(_dense(""), metric=M54), TypeError, r"metric must be None, a mapping"),
    (lambda: tt.SVDConv2d.from_conv(_dense(""), metric="ihw"), TypeError, r"metric must be None, a mapping"),
    (lambda: tt.CPConv2d.from_conv(_dense(""), rank=2, metric=[M54]), TypeError, r"metric\[0\] must be a mapping"),
    (lambda: tt.Tucker2Conv2d.from_conv(_dense(""), metric={"ihw": M54}), ValueError,
     r"metric: tucker .* splits the group 'ihw'"),
    (lambda: tt.MPSConv2d.from_conv(_dense(""), metric={"ihw": M54}), ValueError,
     r"metric: mps .* splits the group 'ihw'"),
    (lambda: tt.CPConv2d.from_conv(_dense(""), rank=2, metric={"hw": np.eye(9)}), ValueError,
     r"metric: cp .* splits the group 'hw'"),
    (lambda: tt.SVDConv2d.from_conv(_dense(""), cut="i|ohw", metric={"ihw": M54}), ValueError,
     r"metric: the cut 'i\|ohw' splits the group 'ihw'"),
    (lambda: tt.SVDConv2d.from_conv(_dense(""), metric={"ihw": M6}), ValueError,
     r"metric\['ihw'\] must have shape \(54, 54\)"),
    (lambda: tt.SVDLinear.from_linear(_dense("SVDLinear"), metric=np.eye(FEATURES)), TypeError,
     r"metric must be None or a mapping"),
    (lambda: tt.SVDLinear.from_linear(_dense("SVDLinear"), metric={"oi": np.eye(120)}), ValueError,
     r"metric: the cut 'o\|i' splits the group 'oi'"),
], ids=lambda v: "" if callable(v) or isinstance(v, type) else v[:40])
def test_a_bad_metric_is_refused_naming_metric(call, error, message):
    with pytest.raises(error, match=message):
        call()
