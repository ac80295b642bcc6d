"""Data-aware norms: every structure with a ``metric`` is its Frobenius self on ``T' = T x L^T``, mapped back."""

import numpy as np
import pytest
import scipy.linalg

import tnlib
from tests.oracles import metric_rel_error, psd_sqrt, second_moment
from tnlib.decompositions.tucker import TUCKER_METHODS
from tnlib.metric import METRIC_RIDGE, METRIC_TOLERANCE, kronecker_factors

SHAPE = (8, 4, 3, 3)


@pytest.fixture
def kernel(rng):
    return rng.standard_normal(SHAPE)


def moments(rng, groups, **kwargs):
    """One sampled second moment per group of the ``oihw`` kernel."""
    dims = dict(zip("oihw", SHAPE))
    return {g: second_moment(rng, int(np.prod([dims[c] for c in g])), **kwargs) for g in groups}


def host(backend, x):
    return backend.to_numpy(x)


def truncated(b, rank):
    u, s, vh = np.linalg.svd(b, full_matrices=False)
    return (u[:, :rank] * s[:rank]) @ vh[:rank]


# ---------------------------------------------------------------- the planted optimum


def test_truncate_with_a_column_group_is_the_svd_of_w_times_l_mapped_back(backend, rng, kernel):
    """``o|ihw`` with ``{"ihw": M}``: the truncated SVD of ``W_(o|ihw) L`` times ``L^{-1}``."""
    metric = moments(rng, ["ihw"])
    root = np.real(scipy.linalg.sqrtm(metric["ihw"]))
    expected = truncated(kernel.reshape(8, 36) @ root, 3) @ np.linalg.inv(root)
    result, info = tnlib.truncate(backend.asarray(kernel), "o|ihw", max_rank=3, metric=metric)
    np.testing.assert_allclose(host(backend, result).reshape(8, 36), expected, atol=1e-10)
    measured = np.linalg.norm((kernel.reshape(8, 36) - expected) @ root) / np.linalg.norm(kernel.reshape(8, 36) @ root)
    assert info.rank == 3 and info.rel_error == pytest.approx(measured, rel=1e-10)


def test_truncate_with_a_row_group_in_its_own_label_order(backend, rng, kernel):
    """``hi|ow`` with ``{"hi": M}``: rows run over ``(h, i)`` in the group's order, not the tensor's."""
    metric = {"hi": second_moment(rng, 12)}
    root = np.real(scipy.linalg.sqrtm(metric["hi"]))
    rows = kernel.transpose(2, 1, 0, 3).reshape(12, 24)  # (h, i) x (o, w)
    expected = np.linalg.inv(root) @ truncated(root @ rows, 2)
    result, info = tnlib.truncate(backend.asarray(kernel), "ih|ow", max_rank=2, metric=metric)
    np.testing.assert_allclose(host(backend, result).transpose(2, 1, 0, 3).reshape(12, 24), expected, atol=1e-10)
    assert info.rel_error == pytest.approx(metric_rel_error(kernel, host(backend, result), metric, "oihw"), rel=1e-8)


def test_truncated_svd_takes_a_right_metric_and_returns_m_orthonormal_rows(backend, rng):
    a = rng.standard_normal((10, 12))
    metric = second_moment(rng, 12)
    root = np.real(scipy.linalg.sqrtm(metric))
    u, s, vh, info = tnlib.truncated_svd(backend.asarray(a), max_rank=4, metric=metric)
    u, s, vh = host(backend, u), host(backend, s), host(backend, vh)
    np.testing.assert_allclose((u * s) @ vh, truncated(a @ root, 4) @ np.linalg.inv(root), atol=1e-10)
    np.testing.assert_allclose(vh @ metric @ vh.T, np.eye(4), atol=1e-10)
    np.testing.assert_allclose(u.T @ u, np.eye(4), atol=1e-12)
    assert info.rel_error == pytest.approx(np.linalg.norm((a - (u * s) @ vh) @ root) / np.linalg.norm(a @ root))


# ---------------------------------------------------------------- the rel_error guarantee in the metric's norm


@pytest.mark.parametrize("target", [0.2, 0.5])
def test_truncate_guarantees_rel_error_in_the_metric_over_several_cuts(backend, rng, kernel, target):
    metric = moments(rng, ["i", "hw"])
    result, info = tnlib.truncate(backend.asarray(kernel), ["o|ihw", "i|ohw", "oi|hw"], rel_error=target,
                                  metric=metric)
    measured = metric_rel_error(kernel, host(backend, result), metric, "oihw")
    assert measured <= target + 1e-12
    assert info.rel_error == pytest.approx(measured, rel=1e-8)


def test_truncated_svd_guarantees_rel_error_in_the_metric(rng):
    a, metric = rng.standard_normal((16, 20)), second_moment(rng, 20)
    u, s, vh, info = tnlib.truncated_svd(a, rel_error=0.3, metric=metric)
    root = psd_sqrt(metric)
    measured = np.linalg.norm((a - (u * s) @ vh) @ root) / np.linalg.norm(a @ root)
    assert measured <= 0.3 + 1e-12 and info.rel_error == pytest.approx(measured, rel=1e-8)


@pytest.mark.parametrize("method", list(TUCKER_METHODS))
def test_tucker2_guarantees_rel_error_in_the_metric(backend, rng, kernel, method):
    metric = moments(rng, ["i", "hw"])
    t = tnlib.tucker(backend.asarray(kernel), rel_error=0.4, modes=(0, 1), method=method, metric=metric)
    dense = host(backend, t.to_dense())
    measured = metric_rel_error(kernel, dense, metric, "oihw")
    assert measured <= 0.4 + 1e-12
    assert t.info.rel_error == pytest.approx(measured, rel=1e-8)
    # the factor of a weighted mode is M-orthonormal, that of an unweighted one orthonormal
    u_o, u_i = (host(backend, f) for f in t.factors)
    np.testing.assert_allclose(u_i.T @ metric["i"] @ u_i, np.eye(u_i.shape[1]), atol=1e-10)
    np.testing.assert_allclose(u_o.T @ u_o, np.eye(u_o.shape[1]), atol=1e-10)


def test_mps_guarantees_rel_error_in_a_per_label_metric(backend, rng, kernel):
    metric = moments(rng, ["i", "h", "o"])
    m = tnlib.mps(backend.asarray(kernel), order="iohw", rel_error=0.3, metric=metric)
    measured = metric_rel_error(kernel, host(backend, m.to_dense()), metric, "oihw")
    assert measured <= 0.3 + 1e-12
    assert m.info.rel_error == pytest.approx(measured, rel=1e-8)
    assert m.center is None  # the weighted first site is no longer left-orthonormal


def test_mps_keeps_its_canonical_centre_when_only_the_last_site_is_weighted(rng, kernel):
    m = tnlib.mps(kernel, max_bond=3, metric=moments(rng, ["w"]))
    assert m.center == 3


@pytest.mark.parametrize("method", list(tnlib.CP_METHODS))
def test_cp_reports_the_measured_error_in_a_per_label_metric(backend, rng, method):
    a, b, c = (rng.standard_normal((d, 3)) for d in (6, 5, 4))
    t = np.einsum("ir,jr,kr->ijk", a, b, c) + 0.1 * rng.standard_normal((6, 5, 4))
    metric = {"a": second_moment(rng, 6), "c": second_moment(rng, 4)}
    model = tnlib.cp(backend.asarray(t), 3, method=method, seed=0, max_iter=200, metric=metric)
    measured = metric_rel_error(t, host(backend, model.to_dense()), metric, "abc")
    assert model.info.rel_error == pytest.approx(measured, rel=1e-6)
    assert model.history[-1] == pytest.approx(measured, rel=1e-6)
    norms = [np.linalg.norm(host(backend, f), axis=0) for f in model.factors]
    np.testing.assert_allclose(norms, 1.0, rtol=1e-12)  # still unit-norm columns, sorted weights
    assert np.all(np.diff(host(backend, model.weights)) <= 0)


def test_cp_maps_a_warm_start_into_the_metric_space(rng):
    t = np.einsum("ir,jr,kr->ijk", *(rng.standard_normal((d, 2)) for d in (5, 4, 3)))
    metric = {"a": second_moment(rng, 5)}
    exact = tnlib.cp(t, 2, method="lm", seed=0, max_iter=200, metric=metric)
    restarted = tnlib.cp(t, 2, method="lm", init=exact, max_iter=0, metric=metric)
    assert restarted.info.rel_error == pytest.approx(exact.info.rel_error, abs=1e-12)
    assert restarted.info.rel_error < 1e-8


# ---------------------------------------------------------------- identity and concentrated metrics


def identities(groups):
    dims = dict(zip("oihw", SHAPE))
    return {g: np.eye(int(np.prod([dims[c] for c in g]))) for g in groups}


def test_an_identity_metric_gives_the_unweighted_result(backend, kernel):
    x = backend.asarray(kernel)
    plain, info = tnlib.truncate(x, ["o|ihw", "oi|hw"], max_rank=[3, 5])
    weighted, winfo = tnlib.truncate(x, ["o|ihw", "oi|hw"], max_rank=[3, 5], metric=identities(["i", "hw", "o"]))
    np.testing.assert_allclose(host(backend, weighted), host(backend, plain), atol=1e-12)
    assert winfo.rel_error == pytest.approx(info.rel_error, abs=1e-12)
    tk, tkw = (tnlib.tucker(x, ranks=(4, 2), modes=(0, 1), metric=m) for m in (None, identities(["i", "hw"])))
    np.testing.assert_allclose(host(backend, tkw.to_dense()), host(backend, tk.to_dense()), atol=1e-12)
    mp, mpw = (tnlib.mps(x, max_bond=3, metric=m) for m in (None, identities(["o", "i", "h", "w"])))
    np.testing.assert_allclose(host(backend, mpw.to_dense()), host(backend, mp.to_dense()), atol=1e-12)
    sp, spw = (tnlib.spectra(x, metric=m) for m in (None, identities(["o", "h"])))
    for key in sp:
        np.testing.assert_allclose(spw[key].singular_values, sp[key].singular_values, atol=1e-12)
    cpm, cpw = (tnlib.cp(x, 3, seed=0, max_iter=20, metric=m) for m in (None, identities(["o", "i"])))
    np.testing.assert_allclose(host(backend, cpw.to_dense()), host(backend, cpm.to_dense()), atol=1e-10)


def test_a_metric_concentrated_on_some_channels_favours_them(rng):
    """Inputs 0 and 1 carry the signal and hold a rank-2 part; inputs 2 and 3 are large, rarely excited noise."""
    kernel = np.empty(SHAPE)
    kernel[:, :2] = (rng.standard_normal((8, 2)) @ rng.standard_normal((2, 18))).reshape(8, 2, 3, 3)
    kernel[:, 2:] = 10 * rng.standard_normal((8, 2, 3, 3))
    metric = {"i": second_moment(rng, 4, samples=4000, scales=[10.0, 10.0, 0.1, 0.1])}
    weighted, _ = tnlib.truncate(kernel, "o|ihw", max_rank=2, metric=metric)
    plain, _ = tnlib.truncate(kernel, "o|ihw", max_rank=2)
    assert metric_rel_error(kernel, weighted, metric, "oihw") < 0.2 * metric_rel_error(kernel, plain, metric, "oihw")
    favoured = np.linalg.norm(kernel[:, :2] - weighted[:, :2])
    assert favoured < 0.1 * np.linalg.norm(kernel[:, :2] - plain[:, :2])


# ---------------------------------------------------------------- singular moments


def test_a_singular_moment_is_regularized_by_the_documented_ridge(backend, rng, kernel):
    """A rank-5 moment over 36 inputs: eigenvalues clipped at ``METRIC_RIDGE * lambda_max``, finite results."""
    assert METRIC_RIDGE == 1e-8
    metric = {"ihw": second_moment(rng, 36, samples=5)}
    result, info = tnlib.truncate(backend.asarray(kernel), "o|ihw", max_rank=3, metric=metric)
    result = host(backend, result)
    assert np.all(np.isfinite(result))
    root = psd_sqrt(metric["ihw"], METRIC_RIDGE)
    expected = truncated(kernel.reshape(8, 36) @ root, 3) @ np.linalg.inv(root)
    np.testing.assert_allclose(result.reshape(8, 36), expected, atol=1e-6 * np.abs(expected).max())
    regularized = metric_rel_error(kernel, result, metric, "oihw", ridge=METRIC_RIDGE)
    assert info.rel_error == pytest.approx(regularized, rel=1e-6)


def test_a_singular_moment_keeps_spectra_and_decompositions_finite(rng, kernel):
    metric = {"i": second_moment(rng, 4, samples=1), "hw": second_moment(rng, 9, samples=2)}
    spectra = tnlib.spectra(kernel, metric=metric)
    assert all(np.all(np.isfinite(s.singular_values)) and np.isfinite(s.entropy()) for s in spectra.values())
    t = tnlib.tucker(kernel, ranks=(3, 2), modes=(0, 1), metric=metric)
    assert all(np.all(np.isfinite(f)) for f in (t.core, *t.factors))


# ---------------------------------------------------------------- spectra in the metric


def test_spectra_with_a_metric_are_the_spectra_of_t_prime(backend, rng, kernel):
    metric = moments(rng, ["i", "hw"])
    roots = {g: np.real(scipy.linalg.sqrtm(m)) for g, m in metric.items()}
    prime = np.einsum("oihw,ij->ojhw", kernel, roots["i"])
    prime = np.einsum("oix,xy->oiy", prime.reshape(8, 4, 9), roots["hw"]).reshape(SHAPE)
    got = tnlib.spectra(backend.asarray(kernel), metric=metric)
    expected = tnlib.spectra(prime)
    assert list(got) == ["o|ihw", "i|ohw", "oi|hw"]  # the cuts that keep "i" and "hw" whole
    for key, value in got.items():
        np.testing.assert_allclose(value.singular_values, expected[key].singular_values, rtol=1e-10)
        assert value.entropy() == pytest.approx(expected[key].entropy(), rel=1e-10)
    single = tnlib.spectrum(backend.asarray(kernel), "i|ohw", metric=metric)
    np.testing.assert_allclose(single.singular_values, expected["i|ohw"].singular_values, rtol=1e-10)


def test_spectrum_values_square_to_the_metric_norm(rng, kernel):
    metric = moments(rng, ["ihw"])
    sp = tnlib.spectrum(kernel, "o|ihw", metric=metric)
    norm_sq = np.linalg.norm(kernel.reshape(8, 36) @ psd_sqrt(metric["ihw"])) ** 2
    assert np.sum(sp.singular_values**2) == pytest.approx(norm_sq, rel=1e-12)


def test_float32_tensors_with_a_metric_stay_float32(backend, rng, kernel):
    metric = moments(rng, ["ihw"])
    result, info = tnlib.truncate(backend.asarray(kernel.astype(np.float32)), "o|ihw", max_rank=3, metric=metric)
    result = host(backend, result)
    assert result.dtype == np.float32
    assert info.rel_error == pytest.approx(metric_rel_error(kernel, result, metric, "oihw"), rel=1e-5)


def test_a_metric_on_the_tensors_backend_is_accepted(backend, rng, kernel):
    metric = moments(rng, ["ihw"])
    on_backend = {g: backend.asarray(m) for g, m in metric.items()}
    a, _ = tnlib.truncate(backend.asarray(kernel), "o|ihw", max_rank=3, metric=metric)
    b, _ = tnlib.truncate(backend.asarray(kernel), "o|ihw", max_rank=3, metric=on_backend)
    np.testing.assert_array_equal(host(backend, a), host(backend, b))


# ---------------------------------------------------------------- bad input

ASYMMETRIC = np.eye(4) + np.triu(np.ones((4, 4)), 1)
INDEFINITE = np.diag([1.0, 1.0, 1.0, -0.5])


@pytest.mark.parametrize(
    ("metric", "error", "words"),
    [
        ({"i": np.eye(5)}, ValueError, ["metric['i']", "shape (4, 4)"]),
        ({"ihw": np.eye(4)}, ValueError, ["metric['ihw']", "shape (36, 36)"]),
        ({"i": ASYMMETRIC}, ValueError, ["metric['i']", "symmetric"]),
        ({"i": INDEFINITE}, ValueError, ["metric['i']", "positive semi-definite"]),
        ({"i": np.full((4, 4), np.nan)}, ValueError, ["metric['i']", "NaN"]),
        ({"i": np.zeros((4, 4))}, ValueError, ["metric['i']", "zero"]),
        ({"x": np.eye(4)}, ValueError, ["metric", "'x'", "unknown"]),
        ({"ii": np.eye(16)}, ValueError, ["metric", "'ii'", "repeats"]),
        ({"i": np.eye(4), "ih": np.eye(12)}, ValueError, ["metric", "'i'", "two groups"]),
        ({"i": np.eye(4) * 1j}, TypeError, ["metric['i']", "real"]),
        ({"i": "eye"}, TypeError, ["metric['i']"]),
        ({3: np.eye(4)}, TypeError, ["metric", "keys"]),
        ({}, ValueError, ["metric", "at least one"]),
        ([np.eye(4)], TypeError, ["metric", "mapping"]),
    ],
)
def test_bad_metrics_are_refused_naming_metric_and_the_group(kernel, metric, error, words):
    with pytest.raises(error) as caught:
        tnlib.truncate(kernel, "o|ihw", max_rank=2, metric=metric)
    assert all(w in str(caught.value) for w in words), str(caught.value)


def test_a_group_split_by_the_cut_is_refused_by_truncate(kernel):
    with pytest.raises(ValueError, match=r"metric: the cut 'oi\|hw' splits the group 'ihw'"):
        tnlib.truncate(kernel, ["o|ihw", "oi|hw"], max_rank=2, metric={"ihw": np.eye(36)})


def test_a_group_split_by_an_explicit_cut_is_refused_by_spectra(kernel):
    with pytest.raises(ValueError, match=r"metric: the cut 'h\|oiw' splits the group 'ihw'"):
        tnlib.spectra(kernel, cuts=["o|ihw", "h|oiw"], metric={"ihw": np.eye(36)})
    with pytest.raises(ValueError, match="every cut splits"):
        tnlib.spectra(kernel, metric={"oihw": np.eye(288)})


def test_structures_that_split_a_group_ask_for_one_metric_per_label(kernel):
    with pytest.raises(ValueError, match=r"cp .*splits the group 'ihw'; give one metric per label: \{'i': ..., 'h'"):
        tnlib.cp(kernel, 2, metric={"ihw": np.eye(36)})
    with pytest.raises(ValueError, match=r"tucker .*splits the group 'ihw'"):
        tnlib.tucker(kernel, ranks=(2, 2), modes=(0, 1), metric={"ihw": np.eye(36)})
    with pytest.raises(ValueError, match=r"mps .*splits the group 'hw'"):
        tnlib.mps(kernel, max_bond=2, metric={"hw": np.eye(9)})
    with pytest.raises(ValueError, match=r"metric: split spreads the label 'o' over 3 sites"):
        tnlib.mps(kernel, max_bond=2, split="binary", metric={"o": np.eye(8)})


def test_truncated_svd_refuses_a_metric_of_the_wrong_size(rng):
    with pytest.raises(ValueError, match=r"metric must have shape \(5, 5\)"):
        tnlib.truncated_svd(rng.standard_normal((3, 5)), max_rank=2, metric=np.eye(3))
    with pytest.raises(TypeError, match="metric must be a square matrix"):
        tnlib.truncated_svd(rng.standard_normal((3, 5)), max_rank=2, metric={"i": np.eye(5)})


def test_the_tolerances_are_documented_constants():
    assert METRIC_TOLERANCE == 1e-5
    nearly = np.eye(4) + 1e-7 * np.triu(np.ones((4, 4)), 1)  # float32-accumulation asymmetry passes
    tnlib.truncate(np.ones(SHAPE), "o|ihw", max_rank=1, metric={"i": nearly})


@pytest.mark.parametrize("scale", [1e300, 1e-300])
def test_a_metric_at_any_finite_scale_weights_alike(rng, kernel, scale):
    """A metric and its multiple give the same norm up to a factor: the same result, the same relative error."""
    metric = moments(rng, ["ihw"])
    plain, info = tnlib.truncate(kernel, "o|ihw", max_rank=2, metric=metric)
    scaled, scaled_info = tnlib.truncate(kernel, "o|ihw", max_rank=2, metric={"ihw": scale * metric["ihw"]})
    np.testing.assert_allclose(scaled, plain, atol=1e-12)
    assert scaled_info.rel_error == pytest.approx(info.rel_error, rel=1e-12)


def test_an_integer_metric_is_read_as_float64(kernel):
    counts = np.diag(np.arange(1, 5))  # e.g. how often each input channel fired
    result, _ = tnlib.truncate(kernel, "o|ihw", max_rank=2, metric={"i": counts})
    expected, _ = tnlib.truncate(kernel, "o|ihw", max_rank=2, metric={"i": counts.astype(np.float64)})
    np.testing.assert_array_equal(result, expected)


def test_kronecker_factors_recover_a_kronecker_moment_and_serve_structures_that_split_it(rng, kernel):
    m_i, m_h, m_w = second_moment(rng, 4), second_moment(rng, 3), second_moment(rng, 3)
    full = np.kron(m_i, np.kron(m_h, m_w))  # inputs whose channel and positions are independent
    parts = kronecker_factors(full, "ihw", (4, 3, 3), ["i", "h", "w"])
    np.testing.assert_allclose(np.kron(parts["i"], np.kron(parts["h"], parts["w"])), full, rtol=1e-12, atol=1e-12)
    pair = kronecker_factors(full, "ihw", (4, 3, 3), ["i", "hw"])
    t = tnlib.tucker(kernel, rel_error=0.5, modes=(0, 1), metric=pair)
    measured = metric_rel_error(kernel, t.to_dense(), {"ihw": full}, "oihw")
    assert measured <= 0.5 + 1e-12 and t.info.rel_error == pytest.approx(measured, rel=1e-8)
    model = tnlib.cp(kernel, 4, seed=0, max_iter=30, metric=parts)
    assert model.info.rel_error == pytest.approx(metric_rel_error(kernel, model.to_dense(), {"ihw": full}, "oihw"),
                                                 rel=1e-6)


def test_kronecker_factors_refuse_parts_that_do_not_split_the_group():
    with pytest.raises(ValueError, match="parts must split the labels of 'ihw'"):
        kronecker_factors(np.eye(36), "ihw", (4, 3, 3), ["i", "h"])
    with pytest.raises(ValueError, match=r"matrix must have shape \(36, 36\)"):
        kronecker_factors(np.eye(12), "ihw", (4, 3, 3), ["i", "hw"])


def test_the_structure_is_checked_before_any_matrix_is_decomposed(kernel):
    """A split group is refused first, even when its matrix (here of the wrong size) would be refused too."""
    with pytest.raises(ValueError, match="splits the group 'ihw'"):
        tnlib.cp(kernel, 2, metric={"ihw": np.eye(3)})
