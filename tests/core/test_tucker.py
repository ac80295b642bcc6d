"""Tucker decompositions: exact recovery, the error guarantee, HOOI's monotonicity, tensorly agreement."""

from pathlib import Path

import numpy as np
import pytest

import tnlib
from tests.oracles import random_orthonormal
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
        ({"ranks": (2, 9), "modes": (0, 1)}, ValueError, "rank 9 of mode 1 exceeds its size 4"),
        ({"ranks": (2, 2)}, ValueError, "one int per mode"),
        ({"modes": (0, 4)}, ValueError, "modes must be distinct integers in"),
        ({"modes": (1, 1)}, ValueError, "modes must be distinct"),
        ({"method": "cp"}, ValueError, "method must be one of 'hosvd', 'sthosvd', 'hooi'"),
        ({"rel_error": 2.0}, ValueError, "rel_error"),
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
