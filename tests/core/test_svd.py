"""truncated_svd and singular_values against planted spectra, on every backend and method."""

import numpy as np
import pytest

import tnlib
from tests.oracles import planted_matrix
from tnlib import _backend
from tnlib.svd import SVD_METHODS, VALUE_METHODS, _auto_method
from tnlib.truncation import TruncationSpec

TOL = {np.float64: 1e-10, np.float32: 2e-5, np.complex128: 1e-10}
SPECTRUM = 2.0 ** -np.arange(12)  # exact rank 12, geometric decay


def optimal_error(s, rank):
    return np.sqrt(np.sum(s[rank:] ** 2) / np.sum(s**2))


def check_factors(backend, a, u, s, vh, tol):
    """Orthonormal factors whose product reproduces the reported truncation."""
    u, s, vh = backend.to_numpy(u), backend.to_numpy(s), backend.to_numpy(vh)
    r = len(s)
    np.testing.assert_allclose(u.conj().T @ u, np.eye(r), atol=tol * 10)
    np.testing.assert_allclose(vh @ vh.conj().T, np.eye(r), atol=tol * 10)
    assert np.all(np.diff(s) <= 0) and np.all(s >= 0)
    return (u * s) @ vh


@pytest.mark.parametrize("method", list(SVD_METHODS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.complex128])
def test_planted_spectrum_exact_rank_and_eckart_young_error(backend, rng, method, dtype):
    a = planted_matrix(rng, 60, 40, SPECTRUM, dtype)
    x = backend.asarray(a)
    u, s, vh, info = tnlib.truncated_svd(x, max_rank=5, method=method, seed=0)
    tol = TOL[dtype]
    assert info.rank == 5 and s.shape == (5,) and u.shape == (60, 5) and vh.shape == (5, 40)
    assert type(u) is type(x) and _backend.dtype_name(u) == _backend.dtype_name(x)
    assert _backend.dtype_name(s) == _backend.real_dtype_name(x)
    np.testing.assert_allclose(backend.to_numpy(s), SPECTRUM[:5], rtol=tol * 10)
    approx = check_factors(backend, a, u, s, vh, tol)
    measured = np.linalg.norm(a - approx) / np.linalg.norm(a)
    expected = optimal_error(SPECTRUM, 5)
    assert info.rel_error == pytest.approx(expected, rel=tol * 100)
    assert measured == pytest.approx(expected, rel=tol * 100)
    assert info.discarded_weight == pytest.approx(expected**2, rel=tol * 100)
    assert info.norm_loss == pytest.approx(1 - np.sqrt(1 - expected**2), rel=tol * 100)


@pytest.mark.parametrize("method", ["full", "gram"])
def test_rel_error_target_is_met_with_the_smallest_rank(backend, rng, method):
    a = planted_matrix(rng, 50, 30, SPECTRUM)
    for target in (0.5, 0.1, 0.01, 1e-3):
        _, s, _, info = tnlib.truncated_svd(backend.asarray(a), rel_error=target, method=method)
        r = info.rank
        assert info.rel_error <= target
        assert optimal_error(SPECTRUM, r - 1) > target  # one fewer would miss it
        assert len(s) == r


@pytest.mark.parametrize("method", list(SVD_METHODS))
def test_cutoff_counts_exactly(backend, rng, method):
    a = planted_matrix(rng, 70, 70, SPECTRUM)
    _, s, _, info = tnlib.truncated_svd(backend.asarray(a), max_rank=11, cutoff=0.1, method=method, seed=1)
    assert info.rank == 4  # 1, 1/2, 1/4, 1/8 >= 0.1; 1/16 < 0.1


@pytest.mark.parametrize("method", ["full", "gram"])
def test_no_truncation_reproduces_the_matrix(backend, rng, method):
    a = rng.standard_normal((9, 23))
    u, s, vh, info = tnlib.truncated_svd(backend.asarray(a), method=method)
    assert info.rank == 9 and info.rel_error == 0.0
    np.testing.assert_allclose(check_factors(backend, a, u, s, vh, 1e-12), a, atol=1e-12)


def test_gram_on_rank_deficient_matrix_still_gives_orthonormal_factors(backend, rng):
    a = planted_matrix(rng, 30, 20, [3.0, 2.0, 1.0])  # 17 zero singular values
    u, s, vh, info = tnlib.truncated_svd(backend.asarray(a), method="gram")
    assert info.rank == 20
    np.testing.assert_allclose(check_factors(backend, a, u, s, vh, 1e-12), a, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64])
@pytest.mark.parametrize("method", list(SVD_METHODS))
def test_zero_matrix_gives_finite_factors(backend, method, dtype):
    u, s, vh, info = tnlib.truncated_svd(backend.asarray(np.zeros((30, 40), dtype)), max_rank=3, method=method, seed=0)
    assert info.rel_error == 0.0 and np.all(np.isfinite(backend.to_numpy(vh)))
    assert np.all(backend.to_numpy(s) == 0)
    _, _, vh, _ = tnlib.truncated_svd(backend.asarray(np.zeros((3, 4), dtype)), method=method, max_rank=1)
    assert np.all(np.isfinite(backend.to_numpy(vh)))


def test_randomized_is_near_optimal_on_a_full_rank_decaying_spectrum(rng):
    s_true = 1.0 / np.arange(1, 201)
    a = planted_matrix(rng, 300, 200, s_true)
    _, _, _, info = tnlib.truncated_svd(a, max_rank=20, method="randomized", seed=3)
    assert optimal_error(s_true, 20) <= info.rel_error <= 1.01 * optimal_error(s_true, 20)


def test_randomized_is_deterministic_for_a_seed(backend, rng):
    a = backend.asarray(rng.standard_normal((80, 60)))
    first = tnlib.truncated_svd(a, max_rank=6, method="randomized", seed=7)
    again = tnlib.truncated_svd(a, max_rank=6, method="randomized", seed=np.random.default_rng(7))
    for x, y in zip(first[:3], again[:3], strict=True):
        np.testing.assert_array_equal(backend.to_numpy(x), backend.to_numpy(y))


def test_randomized_requires_max_rank(rng):
    with pytest.raises(ValueError, match="max_rank"):
        tnlib.truncated_svd(rng.standard_normal((10, 10)), rel_error=0.1, method="randomized")


@pytest.mark.parametrize("method", list(SVD_METHODS))
def test_signs_are_deterministic(backend, rng, method):
    a = planted_matrix(rng, 40, 25, [5.0, 4.0, 3.0, 2.0, 1.0, 0.5], np.complex128)
    u, _, vh, _ = tnlib.truncated_svd(backend.asarray(a), max_rank=4, method=method, seed=0)
    u = backend.to_numpy(u)
    pivots = u[np.argmax(np.abs(u), axis=0), np.arange(4)]
    np.testing.assert_allclose(pivots.imag, 0, atol=1e-12)
    assert np.all(pivots.real > 0)
    ref_u, _, ref_vh, _ = tnlib.truncated_svd(a, max_rank=4, method="full")
    np.testing.assert_allclose(u, ref_u, atol=1e-8)
    np.testing.assert_allclose(backend.to_numpy(vh), ref_vh, atol=1e-8)


def test_full_falls_back_to_gesvd_when_gesdd_fails(monkeypatch, rng):
    drivers = []
    real_svd = _backend.scipy.linalg.svd

    def flaky_svd(a, **kwargs):
        drivers.append(kwargs["lapack_driver"])
        if kwargs["lapack_driver"] == "gesdd":
            raise np.linalg.LinAlgError("SVD did not converge")
        return real_svd(a, **kwargs)

    monkeypatch.setattr(_backend.scipy.linalg, "svd", flaky_svd)
    a = planted_matrix(rng, 20, 30, SPECTRUM)
    _, s, _, info = tnlib.truncated_svd(a, max_rank=3, method="full")
    assert drivers == ["gesdd", "gesvd"]
    np.testing.assert_allclose(s, SPECTRUM[:3], rtol=1e-12)


@pytest.mark.parametrize("transpose", [False, True])
def test_auto_method_choice(transpose):
    def chosen(shape, dtype=np.float64, **kwargs):
        shape = shape[::-1] if transpose else shape
        return _auto_method(np.zeros(shape, dtype), TruncationSpec(**kwargs), 10, 4)

    assert chosen((2048, 8192), max_rank=32) == "randomized"  # 10 thin products are far cheaper
    assert chosen((512, 4608), max_rank=64) == "gram"  # comparable costs: the exact route
    assert chosen((2048, 8192), max_rank=1500) == "gram"  # the sketch would be most of the matrix
    assert chosen((512, 4608), np.float32, rel_error=0.1) == "gram"  # exact: Gram in double precision
    assert chosen((512, 4608), rel_error=0.1) == "full"  # exact: LAPACK for double precision


@pytest.mark.parametrize("method", ["auto", *VALUE_METHODS])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex128])
def test_singular_values_match_lapack(backend, rng, method, dtype):
    a = planted_matrix(rng, 30, 50, np.linspace(4.0, 0.5, 30), dtype)
    s = tnlib.singular_values(backend.asarray(a), method=method)
    assert _backend.dtype_name(s) == ("float32" if dtype == np.float32 else "float64")
    np.testing.assert_allclose(backend.to_numpy(s), np.linspace(4.0, 0.5, 30), rtol=TOL[dtype] * 10)
