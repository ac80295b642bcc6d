"""Matrix product states: exact recovery, the error guarantee, canonical forms, bond spectra."""

from pathlib import Path

import numpy as np
import pytest

import tnlib
from tnlib import MPS

PRETRAINED = Path(__file__).resolve().parents[3] / "shared" / "data" / "pretrained" / "resnet56-4bfd9763.th"


def planted_train(rng, site_dims, bond_dims, dtype=np.float64):
    bonds = (1, *bond_dims, 1)
    cores = [rng.standard_normal((bonds[k], d, bonds[k + 1])) for k, d in enumerate(site_dims)]
    if np.issubdtype(dtype, np.complexfloating):
        cores = [c + 1j * rng.standard_normal(c.shape) for c in cores]
    return MPS.from_cores([c.astype(dtype) for c in cores])


def assert_left_orthonormal(core):
    left, dim, right = core.shape
    m = core.reshape(left * dim, right)
    np.testing.assert_allclose(m.conj().T @ m, np.eye(right), atol=1e-12)


def assert_right_orthonormal(core):
    left, dim, right = core.shape
    m = core.reshape(left, dim * right)
    np.testing.assert_allclose(m @ m.conj().T, np.eye(left), atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float64, np.complex128])
def test_planted_tensor_train_is_recovered_with_its_bond_dims(backend, rng, dtype):
    planted = planted_train(rng, (6, 5, 4, 3), (3, 5, 2), dtype)
    dense = planted.to_dense()
    m = tnlib.mps(backend.asarray(dense), labels="abcd", rel_error=1e-12)
    assert m.bond_dims == (3, 5, 2) == m.info.ranks
    assert m.info.rel_error < 1e-12
    assert type(m.cores[0]) is type(backend.asarray(dense))
    np.testing.assert_allclose(backend.to_numpy(m.to_dense()), dense, atol=1e-12 * np.abs(dense).max())


@pytest.mark.parametrize("order", ["oihw", "iohw", "hwoi", "ohiw"])
@pytest.mark.parametrize("target", [0.05, 0.3, 0.6])
def test_rel_error_is_guaranteed_for_every_order(rng, order, target):
    k = rng.standard_normal((12, 10, 3, 3))
    m = tnlib.mps(k, order=order, rel_error=target)
    measured = m.rel_error(k)
    assert measured <= target * (1 + 1e-12)
    assert m.info.rel_error == pytest.approx(measured, rel=1e-9)
    assert all(r <= full for r, full in zip(m.bond_dims, tnlib.mps(k, order=order).bond_dims))


def test_rel_error_is_guaranteed_on_real_kernels():
    if not PRETRAINED.exists():
        pytest.skip("the pretrained ResNet-56 of ../shared/data is not here")
    torch = pytest.importorskip("torch")
    state = torch.load(PRETRAINED, weights_only=True, map_location="cpu")["state_dict"]
    kernels = [v.numpy() for v in state.values() if v.ndim == 4][::6]
    for kernel in kernels:
        for order in ("oihw", "iohw"):
            m = tnlib.mps(kernel, order=order, rel_error=0.2)
            assert m.rel_error(kernel) <= 0.2 * (1 + 1e-5)


def test_max_bond_bounds_every_bond_and_per_bond(rng):
    k = rng.standard_normal((8, 8, 3, 3))
    assert max(tnlib.mps(k, max_bond=5).bond_dims) == 5
    assert tnlib.mps(k, max_bond=[2, 7, 3]).bond_dims == (2, 7, 3)
    full = tnlib.mps(k)
    assert full.bond_dims == (8, 9, 3) and full.rel_error(k) < 1e-13


def test_split_factorizes_indices_into_sites(rng):
    k = rng.standard_normal((8, 6, 3, 3))
    m = tnlib.mps(k, split={"o": (2, 4)})
    assert m.site_dims == (2, 4, 6, 3, 3) and m.factors[0] == (2, 4)
    np.testing.assert_allclose(m.to_dense(), k, atol=1e-12)
    assert m.bond_cut(0) is None and m.bond_cut(1) == "o|ihw"
    assert tnlib.mps(k, split="binary").site_dims == (2, 2, 2, 2, 3, 3, 3)
    assert tnlib.mps(k, split="prime", order="hoiw").site_dims == (3, 2, 2, 2, 2, 3, 3)


def test_canonical_cores_are_isometries_and_the_tensor_is_unchanged(rng):
    m = planted_train(rng, (4, 5, 6, 3, 2), (4, 6, 5, 2))
    dense = m.to_dense()
    for center in (0, 2, 4, 1):
        m.canonicalize(center)
        assert m.center == center
        for k in range(center):
            assert_left_orthonormal(m.cores[k])
        for k in range(center + 1, m.num_sites):
            assert_right_orthonormal(m.cores[k])
        np.testing.assert_allclose(m.to_dense(), dense, atol=1e-10 * np.abs(dense).max())
    assert m.norm() == pytest.approx(np.linalg.norm(dense), rel=1e-12)


def test_round_at_full_rank_changes_nothing_and_compresses_with_a_guarantee(rng):
    m = planted_train(rng, (4, 5, 6, 3), (4, 6, 3))
    dense = m.to_dense()
    same = m.round()
    assert same.bond_dims == m.bond_dims and same.center == 0
    np.testing.assert_allclose(same.to_dense(), dense, atol=1e-10 * np.abs(dense).max())
    smaller = m.round(rel_error=0.1)
    measured = np.linalg.norm(smaller.to_dense() - dense) / np.linalg.norm(dense)
    assert measured <= 0.1 * (1 + 1e-12) and smaller.info.rel_error == pytest.approx(measured, rel=1e-8)
    assert smaller.num_params < m.num_params
    assert m.round(max_bond=2).bond_dims == (2, 2, 2)


def test_sum_of_an_mps_with_itself_rounds_back_to_its_bond_dims(backend, rng):
    dense = planted_train(rng, (3, 4, 5, 2), (3, 4, 2)).to_dense()
    a = tnlib.mps(backend.asarray(dense), labels="abcd", rel_error=1e-13)
    doubled = a + a
    assert doubled.bond_dims == (6, 8, 4)
    halved = 0.5 * doubled.round(rel_error=1e-12)
    assert halved.bond_dims == a.bond_dims
    np.testing.assert_allclose(backend.to_numpy(halved.to_dense()), backend.to_numpy(a.to_dense()), atol=1e-10)


def test_inner_product_and_norm_match_the_dense_tensors(rng):
    a = planted_train(rng, (3, 4, 2), (2, 3), np.complex128)
    b = planted_train(rng, (3, 4, 2), (3, 2), np.complex128)
    assert a.inner(b) == pytest.approx(np.vdot(a.to_dense(), b.to_dense()), rel=1e-12)
    assert a.norm() == pytest.approx(np.linalg.norm(a.to_dense()), rel=1e-12)


@pytest.mark.parametrize("order", ["oihw", "iohw", "whoi"])
def test_bond_spectra_equal_the_dense_cut_spectra(backend, rng, order):
    k = rng.standard_normal((6, 5, 3, 4))
    m = tnlib.mps(backend.asarray(k), order=order)
    dense = tnlib.spectra(k)
    for bond, sp in enumerate(m.bond_spectra()):
        cut = m.bond_cut(bond)
        assert cut == tnlib.Cut(f"{order[: bond + 1]}|{order[bond + 1:]}")
        reference = dense[str(next(c for c in tnlib.all_cuts("oihw") if c == cut))]
        np.testing.assert_allclose(sp.singular_values, reference.singular_values[: len(sp)], atol=1e-12)
        assert sp.entropy() == pytest.approx(reference.entropy(), abs=1e-10)
    assert m.entropies(alpha=2) == pytest.approx([sp.entropy(alpha=2) for sp in m.bond_spectra()])


def test_zero_tensor_gives_a_zero_mps_with_unit_bonds():
    m = tnlib.mps(np.zeros((2, 3, 2, 2)), rel_error=0.5)
    assert m.bond_dims == (1, 1, 1) and m.info.rel_error == 0.0 and not m.to_dense().any()


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"max_bond": 0}, ValueError, "max_bond must be a positive integer"),
        ({"max_bond": [2, 2]}, ValueError, "one int per bond"),
        ({"rel_error": -0.1}, ValueError, "rel_error"),
        ({"order": "oihx"}, ValueError, "order must be a permutation"),
        ({"order": "oih"}, ValueError, "order must give one label per index"),
        ({"split": {"o": (3, 2)}}, ValueError, r"split\['o'\] = \(3, 2\) must multiply to the dimension 8"),
        ({"split": {"x": (2,)}}, ValueError, "split names label 'x'"),
        ({"split": "ternary"}, ValueError, "split must be one of"),
        ({"split": 3}, TypeError, "split must be None"),
        ({"method": "qr"}, ValueError, "method must be one of"),
    ],
)
def test_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        tnlib.mps(np.ones((8, 4, 3, 3)), **kwargs)


def test_bad_cores_and_operands(rng):
    with pytest.raises(ValueError, match="outer bonds must be 1"):
        MPS.from_cores([np.ones((2, 3, 1))])
    with pytest.raises(ValueError, match="bond 0 does not match"):
        MPS.from_cores([np.ones((1, 3, 2)), np.ones((3, 3, 1))])
    with pytest.raises(ValueError, match="NaN"):
        tnlib.mps(np.full((2, 2), np.nan))
    a = planted_train(rng, (3, 4), (2,))
    with pytest.raises(ValueError, match="same sites"):
        a + planted_train(rng, (4, 3), (2,))
    with pytest.raises(TypeError, match="other must be an MPS"):
        a.inner(np.ones((3, 4)))
    with pytest.raises(ValueError, match="bond must be an integer in"):
        a.bond_spectrum(1)
    with pytest.raises(ValueError, match="center must be an integer"):
        a.canonicalize(-1)
