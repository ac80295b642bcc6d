"""tnlib.MPS to and from quimb's MatrixProductState (skipped without quimb)."""

import math
import subprocess
import sys

import numpy as np
import pytest

import tnlib
from tnlib.interop.quimb import from_quimb, to_quimb


@pytest.fixture
def qtn():
    pytest.importorskip("quimb")
    import quimb.tensor as qtn

    return qtn


def _kernel(rng, shape=(6, 5, 3, 3)) -> np.ndarray:
    """A float64 oihw kernel with a decaying spectrum across every cut."""
    k = rng.standard_normal(shape)
    return k * np.exp(-0.3 * np.arange(shape[0]))[:, None, None, None]


def _chain_dense(qmps, site_dims) -> np.ndarray:
    """quimb's dense vector (a ``(prod, 1)`` ket) as a tensor with one index per site, in site order."""
    return np.asarray(qmps.to_dense()).reshape(site_dims)


def test_to_quimb_keeps_sites_bonds_and_order(qtn, rng):
    m = tnlib.mps(_kernel(rng), order="iohw", max_bond=4)
    q = to_quimb(m)
    assert isinstance(q, qtn.MatrixProductState) and not q.cyclic and q.L == m.num_sites == 4
    assert tuple(q.ind_size(q.site_ind(k)) for k in range(q.L)) == m.site_dims == (5, 6, 3, 3)
    assert tuple(q.bond_size(k, k + 1) for k in range(q.L - 1)) == m.bond_dims
    assert q.site_ind(0) == "k0" and q.site_tag(3) == "I3"


@pytest.mark.parametrize("order", ["oihw", "iohw", "whoi"])
def test_round_trip_preserves_the_dense_tensor(qtn, rng, order):
    k = _kernel(rng)
    m = tnlib.mps(k, order=order)
    back = from_quimb(to_quimb(m), labels=m.order)
    assert back.site_dims == m.site_dims and back.bond_dims == m.bond_dims and back.order == order
    for a, b in zip(back.cores, m.cores):
        np.testing.assert_array_equal(a, b)  # reshapes only: the very same numbers
    # back's labels are m's order, so its dense tensor is m's in chain order
    dense = np.asarray(back.to_dense()).transpose([order.index(c) for c in m.labels])
    np.testing.assert_allclose(dense, k, rtol=0, atol=1e-12 * np.abs(k).max())
    np.testing.assert_allclose(dense, np.asarray(m.to_dense()), rtol=0, atol=1e-12 * np.abs(k).max())


def test_from_quimb_defaults_to_abc_labels(qtn, rng):
    back = from_quimb(to_quimb(tnlib.mps(_kernel(rng), order="iohw")))
    assert back.labels == back.order == "abcd" and back.site_dims == (5, 6, 3, 3)


def test_quimb_dense_equals_ours_for_a_kernel_in_iohw_order(qtn, rng):
    k = _kernel(rng)
    m = tnlib.mps(k, order="iohw", max_bond=5)  # truncated: both sides must agree on the approximation
    assert m.info.rel_error > 1e-3
    q = to_quimb(m)
    ours = np.asarray(m.to_dense())
    theirs = _chain_dense(q, m.site_dims).transpose([m.order.index(c) for c in m.labels])  # iohw -> oihw
    assert theirs.shape == ours.shape == k.shape
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-12 * np.abs(ours).max())


def test_quimb_bond_entropies_equal_ours_across_the_cuts(qtn, rng):
    k = _kernel(rng)
    k /= np.linalg.norm(k)  # quimb's Schmidt values are the squared singular values, unnormalized
    order = "oihw"
    q = to_quimb(tnlib.mps(k, order=order))  # exact: no bond truncated
    for bond in range(len(order) - 1):
        cut = f"{order[: bond + 1]}|{order[bond + 1 :]}"
        sp = tnlib.spectrum(k, cut)
        theirs = float(q.entropy(bond + 1))  # quimb: the number of sites left of the bond
        assert theirs == pytest.approx(sp.entropy(), rel=1e-10, abs=1e-12)  # both in bits (log2)
        assert theirs != pytest.approx(sp.entropy(base=math.e), rel=1e-3)
        s2 = np.sort(np.asarray(q.schmidt_values(bond + 1)))[::-1]
        np.testing.assert_allclose(s2[: len(sp)], sp.weights[: len(s2)], rtol=0, atol=1e-12)


def test_quimb_canonicalizing_leaves_our_cores_alone(qtn, rng):
    m = tnlib.mps(_kernel(rng), order="iohw")
    before = [np.array(c, copy=True) for c in m.cores]
    q = to_quimb(m)
    q.canonize(0)
    q.entropy(2)
    for a, b in zip(m.cores, before):
        np.testing.assert_array_equal(a, b)


def test_from_quimb_of_a_quimb_made_mps_in_any_layout(qtn):
    q = qtn.MPS_rand_state(5, bond_dim=3, phys_dim=[2, 3, 4, 3, 2], seed=7)
    q.permute_arrays("prl")
    m = from_quimb(q)
    assert m.site_dims == (2, 3, 4, 3, 2) and m.bond_dims == tuple(q.bond_sizes()) == (3, 3, 3, 3)
    assert all(c.ndim == 3 for c in m.cores) and m.cores[0].shape[0] == m.cores[-1].shape[2] == 1
    np.testing.assert_allclose(np.asarray(m.to_dense()), _chain_dense(q, m.site_dims), rtol=0, atol=1e-12)


def test_from_quimb_reads_sites_from_the_tags(qtn, rng):
    named = qtn.MPS_rand_state(4, bond_dim=2, seed=1, site_tag_id="SITE{}", site_ind_id="p{}")
    np.testing.assert_allclose(np.asarray(from_quimb(named).to_dense()), _chain_dense(named, (2,) * 4), atol=1e-14)
    arrays = [rng.standard_normal((3, 2)), rng.standard_normal((3, 4, 2)), rng.standard_normal((4, 2))]  # 'lrp'
    offset = qtn.MatrixProductState(arrays, sites=[2, 3, 4], L=6)  # tags I2..I4, indices k2..k4
    m = from_quimb(offset)
    assert m.bond_dims == (3, 4) and m.site_dims == (2, 2, 2)
    dense = qtn.tensor_contract(*offset.tensors, output_inds=["k2", "k3", "k4"]).data
    np.testing.assert_allclose(np.asarray(m.to_dense()), dense, rtol=0, atol=1e-14)
    q = to_quimb(m, site_ind_id="p{}", site_tag_id="S{}", tags="KERNEL")
    assert q.site_ind(1) == "p1" and "S2" in q.tag_map and all("KERNEL" in t.tags for t in q)


def test_from_quimb_of_from_dense(qtn, rng):
    k = _kernel(rng)
    q = qtn.MatrixProductState.from_dense(k, k.shape, max_bond=4, cutoff=0.0)
    ours = tnlib.mps(k, max_bond=4)
    m = from_quimb(q, labels="oihw")
    assert m.bond_dims == ours.bond_dims
    np.testing.assert_allclose(np.asarray(m.to_dense()), np.asarray(ours.to_dense()), rtol=0, atol=1e-10)


def test_one_and_two_site_chains(qtn, rng):
    one = tnlib.MPS.from_cores([np.arange(1.0, 4.0).reshape(1, 3, 1)])
    q = to_quimb(one)
    assert q.L == 1 and q[0].shape == (3,)
    np.testing.assert_array_equal(from_quimb(q).cores[0], one.cores[0])
    a = rng.standard_normal((3, 4))
    two = tnlib.mps(a)
    np.testing.assert_allclose(_chain_dense(to_quimb(two), (3, 4)), a, rtol=0, atol=1e-12)
    np.testing.assert_allclose(np.asarray(from_quimb(to_quimb(two)).to_dense()), a, rtol=0, atol=1e-12)


def test_arrays_stay_in_their_backend(qtn, backend, rng):
    k = _kernel(rng)
    m = tnlib.mps(backend.asarray(k), order="iohw", max_bond=4)
    q = to_quimb(m)
    assert all(type(t.data) is type(m.cores[0]) for t in q)
    back = from_quimb(q, labels=m.order)
    assert all(type(c) is type(m.cores[0]) for c in back.cores)
    for a, b in zip(back.cores, m.cores):
        np.testing.assert_array_equal(backend.to_numpy(a), backend.to_numpy(b))


def test_bad_input(qtn):
    with pytest.raises(TypeError, match="tnlib MPS"):
        to_quimb(np.ones((1, 2, 1)))
    with pytest.raises(TypeError, match="MatrixProductState"):
        from_quimb(tnlib.MPS.from_cores([np.ones((1, 2, 1))]))
    ring = qtn.MPS_rand_state(4, bond_dim=2, cyclic=True, seed=0)
    with pytest.raises(ValueError, match="cyclic"):
        from_quimb(ring)


def test_missing_quimb_raises_an_import_error_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "quimb", None)  # makes `import quimb...` raise ImportError
    monkeypatch.setitem(sys.modules, "quimb.tensor", None)
    m = tnlib.MPS.from_cores([np.ones((1, 2, 1))])
    with pytest.raises(ImportError, match=r"pip install tnlib\[quimb\]"):
        to_quimb(m)
    with pytest.raises(ImportError, match=r"pip install tnlib\[quimb\]"):
        from_quimb(object())


def test_tnlib_imports_without_loading_quimb():
    code = "import sys, tnlib, tnlib.interop.quimb; assert 'quimb' not in sys.modules, 'quimb loaded'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
