"""Results at the edges of float64 (and float32): right at any finite scale.

Squared norms, Gram matrices and tails of squared singular values overflow
above about 1e154 and underflow below about 1e-154 in double precision.  Every
entry point rescales by an exact power of two where needed, so ranks and
relative errors are those of the unscaled math and values scale exactly.
"""

import numpy as np
import pytest

import tnlib
from tests.oracles import planted_matrix, planted_tucker, safe_rel_error
from tnlib import Spectrum
from tnlib import _backend as B
from tnlib.svd import SVD_METHODS, VALUE_METHODS

SCALES = [1e-300, 1e-200, 1e-160, 1.0, 1e155, 1e200, 1e300]

#: A gapped spectrum: rel_error=0.05 keeps 6 values, far from any tie.
VALUES = [8.0, 6.0, 4.0, 3.0, 2.0, 1.0, 0.1, 0.05, 0.02, 0.01, 0.005, 0.001]


@pytest.fixture
def matrix():
    return planted_matrix(np.random.default_rng(0), 12, 20, VALUES)


@pytest.fixture
def kernel():
    """Multilinear ranks (3, 2, 2, 2) plus noise of relative norm 1e-6."""
    return planted_tucker(np.random.default_rng(1), (6, 5, 3, 3), (3, 2, 2, 2), noise=1e-6)


def dense(u, s, vh):
    return (u * s[None, :]) @ vh


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("method", list(SVD_METHODS))
def test_truncated_svd_at_any_scale(backend, matrix, method, scale):
    kwargs = {"max_rank": 8, "seed": 0} if method == "randomized" else {}
    _, s1, _, info1 = tnlib.truncated_svd(backend.asarray(matrix), rel_error=0.05, method=method, **kwargs)
    u, s, vh, info = tnlib.truncated_svd(backend.asarray(matrix * scale), rel_error=0.05, method=method, **kwargs)
    u, s, vh = (backend.to_numpy(a) for a in (u, s, vh))
    assert info.rank == info1.rank == 6
    np.testing.assert_allclose(s / scale, backend.to_numpy(s1), rtol=1e-10)
    real = safe_rel_error(matrix * scale, dense(u, s, vh))
    assert info.rel_error == pytest.approx(real, rel=1e-6)
    assert info.rel_error == pytest.approx(info1.rel_error, rel=1e-6)


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("method", ["full", "gram"])
def test_rel_error_zero_keeps_every_value_at_any_scale(backend, matrix, method, scale):
    _, s, _, info = tnlib.truncated_svd(backend.asarray(matrix * scale), rel_error=0.0, method=method)
    assert info.rank == 12 and info.rel_error == 0.0
    np.testing.assert_allclose(backend.to_numpy(s) / scale, VALUES, rtol=1e-6)


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("method", list(VALUE_METHODS))
def test_singular_values_at_any_scale(backend, matrix, method, scale):
    s = backend.to_numpy(tnlib.singular_values(backend.asarray(matrix * scale), method=method))
    np.testing.assert_allclose(s / scale, VALUES, rtol=1e-6)


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("method", list(VALUE_METHODS))
def test_spectra_at_any_scale(backend, kernel, method, scale):
    reference = tnlib.spectra(kernel, method=method)
    scaled = tnlib.spectra(backend.asarray(kernel * scale), method=method)
    assert list(scaled) == list(reference)
    for cut, sp in scaled.items():
        # the Gram route resolves values to about sqrt(eps) s_max in absolute terms (see tnlib.svd)
        np.testing.assert_allclose(sp.singular_values / scale, reference[cut].singular_values, rtol=1e-8, atol=1e-7)
        assert sp.norm / scale == pytest.approx(np.linalg.norm(kernel), rel=1e-12)
        assert sp.rank_for(1e-3) == reference[cut].rank_for(1e-3)
        assert sp.entropy() == pytest.approx(reference[cut].entropy(), rel=1e-9)


@pytest.mark.parametrize("scale", SCALES)
def test_truncate_across_several_cuts_at_any_scale(backend, kernel, scale):
    cuts = ["o|ihw", "i|ohw", "oi|hw"]
    _, info1 = tnlib.truncate(kernel, cuts, rel_error=1e-3)
    out, info = tnlib.truncate(backend.asarray(kernel * scale), cuts, rel_error=1e-3)
    assert info.ranks == info1.ranks == (3, 2, 4)
    real = safe_rel_error(kernel * scale, backend.to_numpy(out))
    assert info.rel_error == pytest.approx(real, rel=1e-6)
    assert info.rel_error == pytest.approx(info1.rel_error, rel=1e-6)


@pytest.mark.parametrize("scale", SCALES)
def test_mps_and_its_rounding_at_any_scale(backend, kernel, scale):
    reference = tnlib.mps(kernel, rel_error=1e-3)
    m = tnlib.mps(backend.asarray(kernel * scale), rel_error=1e-3)
    assert m.bond_dims == reference.bond_dims == (3, 4, 2)
    real = safe_rel_error(kernel * scale, backend.to_numpy(m.to_dense()))
    assert m.info.rel_error == pytest.approx(real, rel=1e-3, abs=1e-12)
    assert real < 1e-3
    np.testing.assert_allclose(
        m.bond_spectrum(1).singular_values / scale, reference.bond_spectrum(1).singular_values, rtol=1e-8, atol=1e-12
    )
    full = tnlib.mps(backend.asarray(kernel * scale))
    rounded = full.round(rel_error=1e-3)
    assert rounded.bond_dims == (3, 4, 2)
    assert safe_rel_error(kernel * scale, backend.to_numpy(rounded.to_dense())) < 1e-3
    assert full.norm() / scale == pytest.approx(np.linalg.norm(kernel), rel=1e-12)


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("method", ["hosvd", "sthosvd", "hooi"])
def test_tucker_at_any_scale(backend, kernel, method, scale):
    t = tnlib.tucker(backend.asarray(kernel * scale), rel_error=1e-3, method=method)
    assert t.ranks == (3, 2, 2, 2)
    real = safe_rel_error(kernel * scale, backend.to_numpy(t.to_dense()))
    assert t.info.rel_error == pytest.approx(real, rel=1e-6)
    assert t.rel_error(backend.asarray(kernel * scale)) == pytest.approx(real, rel=1e-6)
    assert real == pytest.approx(tnlib.tucker(kernel, rel_error=1e-3, method=method).info.rel_error, rel=1e-6)


@pytest.mark.parametrize("scale", SCALES)
def test_tucker_ranks_at_any_scale(kernel, scale):
    assert tnlib.tucker_ranks(kernel * scale, rel_error=1e-3, rule="error") == (3, 2, 2, 2)
    assert tnlib.tucker_ranks(kernel * scale, modes=(0, 1)) == tnlib.tucker_ranks(kernel, modes=(0, 1))
    noise = 0.01 * np.random.default_rng(3).standard_normal((30, 40))
    noisy = planted_matrix(np.random.default_rng(2), 30, 40, [5.0, 4.0, 3.0]) + noise
    assert tnlib.evbmf_rank(noisy * scale) == tnlib.evbmf_rank(noisy) == 3


@pytest.mark.parametrize("scale", [1e-300, 1e-200, 1e200, 1e300])
def test_spectrum_of_huge_or_tiny_values(scale):
    reference = Spectrum([3.0, 2.0, 1.0])
    sp = Spectrum([3 * scale, 2 * scale, 1 * scale])
    np.testing.assert_allclose(sp.rel_error(), reference.rel_error(), rtol=1e-12)
    assert sp.rel_error(1) == pytest.approx(np.sqrt(5 / 14), rel=1e-12)
    np.testing.assert_allclose(sp.weights, [9 / 14, 4 / 14, 1 / 14], rtol=1e-12)
    assert sp.norm == pytest.approx(np.sqrt(14) * scale, rel=1e-12)
    assert sp.rank_for(0.3) == reference.rank_for(0.3) == 2
    assert sp.entropy(2) == pytest.approx(reference.entropy(2), rel=1e-12)


@pytest.mark.parametrize("scale", [1e-20, 1e20])
def test_float32_randomized_at_large_and_small_magnitudes(backend, matrix, scale):
    a = backend.asarray((matrix * scale).astype(np.float32))
    _, s, _, info = tnlib.truncated_svd(a, max_rank=6, method="randomized", seed=0)
    assert info.rank == 6
    np.testing.assert_allclose(backend.to_numpy(s) / np.float32(scale), VALUES[:6], rtol=1e-4)
    assert info.rel_error == pytest.approx(np.sqrt(sum(v**2 for v in VALUES[6:]) / sum(v**2 for v in VALUES)), rel=1e-3)


def test_unit_scaled_is_exact_and_copies_nothing_in_the_normal_range():
    x = np.array([3.0, -1.5, 0.25])
    scaled, exponent = B.unit_scaled(x)
    assert scaled is x and exponent == 0
    for tiny_or_huge in (np.array([5e-324, 1e-310]), np.array([1.7e308, -1e5])):
        scaled, exponent = B.unit_scaled(tiny_or_huge)
        assert 0.5 <= np.abs(scaled).max() < 1.0
        np.testing.assert_array_equal(np.ldexp(scaled, exponent), tiny_or_huge)


def test_frobenius_norm_at_any_scale(backend):
    for value in (1e-300, 5e-324, 1e300):
        assert B.frobenius_norm(backend.asarray(np.full(4, value))) == pytest.approx(2 * value, rel=1e-12)
    assert B.frobenius_norm(np.full(4, 1.5e308)) == np.inf  # the norm itself exceeds the largest double
    assert B.frobenius_norm(np.zeros(3)) == 0.0


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("method", ["als", "lm"])
def test_cp_at_any_scale(backend, scale, method):
    rng = np.random.default_rng(2)
    planted = np.einsum("ir,jr,kr->ijk", *(rng.standard_normal((d, 3)) for d in (6, 5, 4)))
    reference = tnlib.cp(planted, 3, method=method, seed=0, max_iter=40)
    model = tnlib.cp(backend.asarray(planted * scale), 3, method=method, seed=0, max_iter=40)
    # the same path while the error is far above round-off (the last steps may differ in number)
    assert model.history[:10] == pytest.approx(reference.history[:10], rel=1e-6)
    assert model.history[-1] < 1e-6 and reference.history[-1] < 1e-6
    assert backend.to_numpy(model.weights) / scale == pytest.approx(reference.weights, rel=1e-6)
    assert safe_rel_error(planted * scale, backend.to_numpy(model.to_dense())) < 1e-6
