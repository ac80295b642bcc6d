"""Tucker decompositions: exact recovery, the error guarantee, HOOI's monotonicity, tensorly agreement."""

from pathlib import Path

import numpy as np
import pytest

import tnlib
from tests.oracles import planted_matrix, random_orthonormal
from tnlib.decompositions.tucker import TUCKER_METHODS, mode_product, unfold

PRETRAINED = Path(__file__).resolve().parents[3] / "shared" / "data" / "pretrained" / "resnet56-4bfd9763.th"


def planted_tucker(rng, shape, ranks, modes=None):
    modes = tuple(range(len(shape))) if modes is None else modes
    core_shape = list(shape)
    for mode, rank in zip(modes, ranks):
        core_shape[mode] = rank
    out = rng.standard_normal(core_shape)
    for mode, rank in zip(modes, ranks):
        out = mode_product(out, random_orthonormal(rng, shape[mode], rank), mode)
    return out


def test_mode_product_and_unfolding_follow_their_definitions(rng):
    t, m = rng.standard_normal((3, 4, 5)), rng.standard_normal((2, 4))
    np.testing.assert_allclose(mode_product(t, m, 1), np.einsum("aib,ji->ajb", t, m))
    np.testing.assert_array_equal(unfold(t, 1), t.transpose(1, 0, 2).reshape(4, 15))


@pytest.mark.parametrize("method", list(TUCKER_METHODS))
def test_planted_tucker_is_recovered_with_its_ranks(backend, rng, method):
    k = planted_tucker(rng, (10, 8, 5, 4), (3, 4, 2, 3))
    t = tnlib.tucker(backend.asarray(k), rel_error=1e-12, method=method)
    assert t.ranks == (3, 4, 2, 3) == t.info.ranks
    assert t.info.rel_error < 1e-10
    np.testing.assert_allclose(backend.to_numpy(t.to_dense()), k, atol=1e-10 * np.abs(k).max())
    assert t.num_params == 3 * 4 * 2 * 3 + 10 * 3 + 8 * 4 + 5 * 2 + 4 * 3


@pytest.mark.parametrize("method", list(TUCKER_METHODS))
@pytest.mark.parametrize("target", [0.1, 0.4, 0.7])
def test_rel_error_is_guaranteed(rng, method, target):
    k = rng.standard_normal((12, 10, 3, 3)) * np.linspace(2, 0.1, 12)[:, None, None, None]
    t = tnlib.tucker(k, rel_error=target, method=method)
    measured = t.rel_error(k)
    assert measured <= target * (1 + 1e-12)
    assert t.info.rel_error == pytest.approx(measured, rel=1e-8, abs=1e-12)


def test_rel_error_is_guaranteed_on_real_kernels():
    if not PRETRAINED.exists():
        pytest.skip("the pretrained ResNet-56 of ../shared/data is not here")
    torch = pytest.importorskip("torch")
    state = torch.load(PRETRAINED, weights_only=True, map_location="cpu")["state_dict"]
    for kernel in [v.numpy() for v in state.values() if v.ndim == 4][::6]:
        for method in ("sthosvd", "hosvd"):
            t = tnlib.tucker(kernel, rel_error=0.3, modes=(0, 1), method=method)
            assert t.rel_error(kernel) <= 0.3 * (1 + 1e-5)


def test_tucker2_keeps_the_spatial_modes_in_the_core(rng):
    k = rng.standard_normal((16, 8, 3, 3))
    t = tnlib.tucker(k, ranks=(4, 2), modes=(0, 1))
    assert t.core.shape == (4, 2, 3, 3) and t.modes == (0, 1) and t.shape == k.shape
    for u in t.factors:
        np.testing.assert_allclose(u.T @ u, np.eye(u.shape[1]), atol=1e-12)


@pytest.mark.parametrize("seed", range(4))
def test_hooi_error_is_never_above_sthosvd(seed):
    k = np.random.default_rng(seed).standard_normal((9, 7, 5, 4))
    ranks = (3, 3, 2, 2)
    st = tnlib.tucker(k, ranks=ranks, method="sthosvd")
    hooi = tnlib.tucker(k, ranks=ranks, method="hooi")
    assert hooi.rel_error(k) <= st.rel_error(k) + 1e-12
    assert hooi.info.rel_error == pytest.approx(hooi.rel_error(k), rel=1e-9)


def test_hooi_agrees_with_tensorly_on_a_nearly_low_rank_tensor(rng):
    tensorly = pytest.importorskip("tensorly")
    from tensorly.decomposition import tucker as tl_tucker

    k = planted_tucker(rng, (10, 8, 6), (3, 2, 2)) + 1e-3 * rng.standard_normal((10, 8, 6))
    ours = tnlib.tucker(k, ranks=(3, 2, 2), method="hooi", tol=1e-14)
    theirs = tensorly.tucker_to_tensor(tl_tucker(k, rank=[3, 2, 2], init="svd", tol=1e-14, n_iter_max=200))
    np.testing.assert_allclose(ours.to_dense(), theirs, atol=1e-8)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"ranks": 0}, ValueError, "ranks must be a positive integer"),
        ({"ranks": (2, -1), "modes": (0, 1)}, ValueError, "ranks must be a positive integer"),
        ({"ranks": (2, 2.5), "modes": (0, 1)}, TypeError, "ranks must be a positive integer"),
        ({"ranks": 2.5}, TypeError, "ranks must be None, a positive int or a sequence"),
        ({"ranks": (2, 2)}, ValueError, "one int per mode"),
        ({"modes": (0, 4)}, ValueError, "modes must be distinct integers in"),
        ({"modes": (1, 1)}, ValueError, "modes must be distinct"),
        ({"method": "cp"}, ValueError, "method must be one of 'hosvd', 'sthosvd', 'hooi'"),
        ({"rel_error": 2.0}, ValueError, "rel_error"),
        ({"cutoff": 1.5}, ValueError, r"cutoff must lie in \[0, 1\], got 1.5"),
        ({"cutoff": "0.1"}, TypeError, "cutoff must be a real number in"),
        ({"tol": -1.0}, ValueError, "tol"),
        ({"max_iter": 0}, ValueError, "max_iter"),
    ],
)
def test_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        tnlib.tucker(np.ones((8, 4, 3, 3)), **kwargs)


def test_bad_tensor():
    with pytest.raises(ValueError, match="NaN"):
        tnlib.tucker(np.full((2, 2), np.inf))


# ---------------------------------------------------------------- ranks are caps, as max_rank and max_bond


def assert_same_tucker(a, b):
    assert a.ranks == b.ranks and a.info == b.info
    np.testing.assert_array_equal(a.core, b.core)
    for fa, fb in zip(a.factors, b.factors):
        np.testing.assert_array_equal(fa, fb)


@pytest.mark.parametrize("method", list(TUCKER_METHODS))
@pytest.mark.parametrize(
    "modes, caps, at_size",
    [
        (None, (13, 9, 3, 8), (7, 5, 3, 4)),      # every mode above its size but one
        (None, 100, (7, 5, 3, 4)),                # one int for every mode
        ((0, 1), (9, 2), (7, 2)),                 # Tucker-2: the cap binds on mode 1 only
        ((2, 0), (50, 3), (3, 3)),                # partial, modes out of order
    ],
)
def test_a_rank_cap_above_a_mode_size_does_not_bind(method, modes, caps, at_size):
    k = np.random.default_rng(7).standard_normal((7, 5, 3, 4))
    capped = tnlib.tucker(k, ranks=caps, modes=modes, method=method)
    assert_same_tucker(capped, tnlib.tucker(k, ranks=at_size, modes=modes, method=method))
    if all(r == k.shape[m] for r, m in zip(at_size, capped.modes)):
        np.testing.assert_allclose(capped.to_dense(), k, atol=1e-12)  # nothing bound: exact


@pytest.mark.parametrize("method", list(TUCKER_METHODS))
def test_a_rank_cap_above_a_mode_size_combines_with_rel_error(method):
    k = np.random.default_rng(3).standard_normal((8, 6, 3, 3)) * np.linspace(2, 0.1, 8)[:, None, None, None]
    capped = tnlib.tucker(k, ranks=(20, 20), rel_error=0.3, modes=(0, 1), method=method)
    free = tnlib.tucker(k, rel_error=0.3, modes=(0, 1), method=method)
    assert capped.ranks == free.ranks and capped.ranks[0] < 8
    np.testing.assert_allclose(capped.to_dense(), free.to_dense(), atol=1e-10)
    assert capped.rel_error(k) <= 0.3 * (1 + 1e-12)


# ---------------------------------------------------------------- cutoff, per mode


LAMBDAS = np.array([1.0, 0.5, 0.2, 1e-3, 1e-4])


def planted_spectra(rng, shape=(9, 8, 6)):
    """``sum_r lambda_r u_r o v_r o w``: modes 0 and 1 have the singular values ``LAMBDAS``, mode 2 has one.

    Orthonormal ``u_r`` and ``v_r`` make the mode-0 and mode-1 unfoldings' singular values exactly
    ``LAMBDAS``; the single unit ``w`` makes mode 2 of rank one, with value ``||LAMBDAS||``.
    """
    u, v = random_orthonormal(rng, shape[0], 5), random_orthonormal(rng, shape[1], 5)
    w = random_orthonormal(rng, shape[2], 1)[:, 0]
    return np.einsum("r,ir,jr,k->ijk", LAMBDAS, u, v, w)


def expected_error(kept):
    """The relative error of keeping the leading ``kept`` terms of the planted tensor."""
    return float(np.sqrt(np.sum(LAMBDAS[kept:] ** 2) / np.sum(LAMBDAS**2)))


@pytest.mark.parametrize("method", list(TUCKER_METHODS))
@pytest.mark.parametrize("cutoff, kept", [(0.1, 3), (0.3, 2), (0.6, 1), (5e-4, 4), (1e-5, 5)])
def test_cutoff_decides_the_ranks_of_planted_spectra(rng, method, cutoff, kept):
    k = planted_spectra(rng)
    t = tnlib.tucker(k, cutoff=cutoff, method=method)
    assert t.ranks == (kept, kept, 1) == t.info.ranks
    assert tuple(step.rank for step in t.info.steps) == t.ranks
    assert t.info.rel_error == pytest.approx(expected_error(kept), rel=1e-8, abs=1e-11)
    assert t.info.rel_error == pytest.approx(t.rel_error(k), rel=1e-8, abs=1e-11)
    assert t.info.discarded_weight == pytest.approx(t.info.rel_error**2, rel=1e-6, abs=1e-15)


@pytest.mark.parametrize("method", list(TUCKER_METHODS))
def test_cutoff_zero_keeps_every_value(rng, method):
    k = planted_spectra(rng)
    assert tnlib.tucker(k, cutoff=0.0, method=method).ranks == (9, 8, 6)  # the numerically zero values too


@pytest.mark.parametrize("method", list(TUCKER_METHODS))
def test_cutoff_applies_to_the_decomposed_modes_of_a_partial_tucker(rng, method):
    k = planted_spectra(rng)
    t = tnlib.tucker(k, cutoff=0.1, modes=(1,), method=method)
    assert t.ranks == (3,) and t.core.shape == (9, 3, 6)
    assert t.info.rel_error == pytest.approx(expected_error(3), rel=1e-8)


@pytest.mark.parametrize("method", list(TUCKER_METHODS))
@pytest.mark.parametrize(
    "kwargs, ranks",
    [
        ({"cutoff": 0.1, "ranks": 2}, (2, 2, 1)),              # the cap binds
        ({"cutoff": 0.1, "ranks": 4}, (3, 3, 1)),              # the cutoff binds
        ({"cutoff": 0.1, "rel_error": 0.5}, (2, 2, 1)),        # the target allows fewer
        ({"cutoff": 0.1, "rel_error": 1e-2}, (3, 3, 1)),       # both allow 3
        ({"cutoff": 0.1, "rel_error": 1e-5}, (3, 3, 1)),       # the cutoff binds first: the target is missed
    ],
)
def test_the_most_restrictive_criterion_wins(rng, method, kwargs, ranks):
    k = planted_spectra(rng)
    t = tnlib.tucker(k, method=method, **kwargs)
    assert t.ranks == ranks == t.info.ranks
    assert t.info.rel_error == pytest.approx(expected_error(ranks[0]), rel=1e-8)
    if kwargs.get("rel_error", 1.0) >= expected_error(3):
        assert t.info.rel_error <= kwargs.get("rel_error", 1.0)


@pytest.mark.parametrize("method", ["sthosvd", "hooi"])
def test_the_error_a_cutoff_discarded_is_charged_to_the_budget(rng, method):
    """A cutoff that binds at one mode leaves the next mode less of the rel_error budget, as in mps.

    ``T[i, j, k, l] = X[i, k] Y[j, l]``: mode 0 has the values of ``X``, mode 1 those of ``Y``.
    The cutoff drops 0.2 of ``X`` (relative squared error 0.04 / 1.04 = 0.0385 of the budget 0.22**2 = 0.0484),
    so ``Y`` may lose only 0.0103 and keeps all 7 values, where an equal share (0.0242) would have let it drop
    the last (0.0176) and missed the target (0.235).
    """
    x = planted_matrix(rng, 6, 4, [1.0, 0.2])
    y = planted_matrix(rng, 8, 9, [1.0, 0.99, 0.98, 0.97, 0.96, 0.95, 0.32])
    k = np.einsum("ik,jl->ijkl", x, y)
    t = tnlib.tucker(k, cutoff=0.3, rel_error=0.22, modes=(0, 1), method=method)
    assert t.ranks == (1, 7)
    assert t.info.rel_error == pytest.approx(0.2 / np.sqrt(1.04), rel=1e-8)
    assert t.rel_error(k) <= 0.22
