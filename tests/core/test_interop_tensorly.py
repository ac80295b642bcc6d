"""CPTensor and TuckerTensor to and from TensorLy's (skipped without tensorly)."""

import subprocess
import sys

import numpy as np
import pytest

import tnlib
from tnlib.decompositions.cp_tensor import CPTensor
from tnlib.interop.tensorly import from_tensorly, to_tensorly

#: TensorLy's backend name for each backend of the ``backend`` fixture.
TENSORLY_BACKENDS = {"numpy": "numpy", "torch": "pytorch", "cupy": "cupy"}


@pytest.fixture
def tl():
    tensorly = pytest.importorskip("tensorly")
    pytest.importorskip("tensorly.decomposition")
    before = tensorly.get_backend()
    yield tensorly
    assert tensorly.get_backend() == before, "a test left tensorly's backend changed"


def _tensor(rng, shape=(6, 5, 4, 3)) -> np.ndarray:
    """A float64 tensor with a decaying spectrum along its first mode."""
    x = rng.standard_normal(shape)
    return x * np.exp(-0.3 * np.arange(shape[0])).reshape(-1, *([1] * (len(shape) - 1)))


def _planted_tucker(rng, shape=(6, 5, 4, 3), ranks=(3, 3, 2, 2), noise=0.05) -> np.ndarray:
    """Multilinear ranks ``ranks`` plus a little noise: one clear optimum for HOOI."""
    x = rng.standard_normal(ranks)
    for mode, (d, r) in enumerate(zip(shape, ranks)):
        u = np.linalg.qr(rng.standard_normal((d, r)))[0]
        x = np.moveaxis(np.tensordot(u, x, axes=(1, mode)), 0, mode)
    return x + noise * np.linalg.norm(x) / np.sqrt(x.size) * rng.standard_normal(shape)


def _cp(rng, shape=(6, 5, 4), rank=3) -> CPTensor:
    return CPTensor(rng.uniform(0.5, 2.0, rank), [rng.standard_normal((d, rank)) for d in shape])


def _close(a, b, scale) -> None:
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-12 * scale)


def _assert_orthonormal(factors) -> None:
    for u in factors:
        u = np.asarray(u)
        np.testing.assert_allclose(u.conj().T @ u, np.eye(u.shape[1]), rtol=0, atol=1e-12)


# --------------------------------------------------------------------------------------------- CP


def test_cp_to_tensorly_shares_the_arrays(tl, rng):
    cp = _cp(rng)
    t = to_tensorly(cp)
    assert isinstance(t, tl.cp_tensor.CPTensor) and t.shape == cp.shape and t.rank == cp.rank
    assert t.weights is cp.weights and all(a is b for a, b in zip(t.factors, cp.factors))
    dense = np.asarray(cp.to_dense())
    _close(tl.cp_to_tensor(t), dense, np.abs(dense).max())


def test_cp_round_trips(tl, rng):
    cp = _cp(rng, shape=(7, 3, 4, 2), rank=5)
    back = from_tensorly(to_tensorly(cp))
    assert isinstance(back, CPTensor) and back.shape == cp.shape and back.rank == cp.rank
    assert back.weights is cp.weights and all(a is b for a, b in zip(back.factors, cp.factors))
    x = _tensor(rng, (6, 5, 4))
    theirs = tl.decomposition.parafac(x, rank=3, init="svd", n_iter_max=20)
    ours = from_tensorly(theirs)
    dense = tl.cp_to_tensor(theirs)
    _close(ours.to_dense(), dense, np.abs(dense).max())
    _close(tl.cp_to_tensor(to_tensorly(ours)), dense, np.abs(dense).max())


def test_cp_from_plain_pairs(tl, rng):
    cp = _cp(rng)
    dense = np.asarray(cp.to_dense())
    _close(from_tensorly((cp.weights, cp.factors)).to_dense(), dense, np.abs(dense).max())
    unit = from_tensorly((None, cp.factors))  # tensorly's "no weights": all ones
    np.testing.assert_array_equal(unit.weights, np.ones(cp.rank))
    _close(unit.to_dense(), tl.cp_to_tensor((None, cp.factors)), np.abs(dense).max())
    vectors = [rng.standard_normal(d) for d in (3, 4, 2)]  # rank 1 with 1-D factors
    rank_one = from_tensorly((np.array([2.0]), vectors))
    assert rank_one.rank == 1 and all(f.shape == (d, 1) for f, d in zip(rank_one.factors, (3, 4, 2)))
    _close(rank_one.to_dense(), 2.0 * np.einsum("i,j,k->ijk", *vectors), 10.0)


# ----------------------------------------------------------------------------------------- Tucker


@pytest.mark.parametrize("method", ["hosvd", "sthosvd", "hooi"])
def test_tucker_round_trips(tl, rng, method):
    x = _tensor(rng)
    t = tnlib.tucker(x, ranks=(3, 3, 2, 2), method=method)
    theirs = to_tensorly(t)
    assert isinstance(theirs, tl.tucker_tensor.TuckerTensor)
    assert theirs.rank == t.ranks and theirs.shape == t.shape and theirs.core is t.core
    dense = np.asarray(t.to_dense())
    _close(tl.tucker_to_tensor(theirs), dense, np.abs(dense).max())
    back = from_tensorly(theirs)
    assert back.modes == t.modes and back.core is t.core  # orthonormal already: nothing touched
    assert all(a is b for a, b in zip(back.factors, t.factors))


def test_factors_follow_the_core_modes_in_any_mode_order(tl, rng):
    x = _tensor(rng)
    t = tnlib.tucker(x, ranks=(2, 4, 3), modes=(2, 0, 1))
    theirs = to_tensorly(t)
    assert theirs.rank == (4, 3, 2, 3) and [f.shape for f in theirs.factors][:3] == [(6, 4), (5, 3), (4, 2)]
    dense = np.asarray(t.to_dense())
    _close(tl.tucker_to_tensor(theirs), dense, np.abs(dense).max())


def test_partial_tucker_gets_identity_factors(tl, rng):
    x = _tensor(rng)
    t = tnlib.tucker(x, ranks=(3, 2), modes=(0, 1))  # Tucker-2: modes 2 and 3 at full size in the core
    theirs = to_tensorly(t)
    assert theirs.rank == (3, 2, 4, 3) and theirs.core is t.core
    for mode in (2, 3):
        np.testing.assert_array_equal(theirs.factors[mode], np.eye(x.shape[mode]))
        assert theirs.factors[mode].dtype == t.core.dtype
    dense = np.asarray(t.to_dense())
    _close(tl.tucker_to_tensor(theirs), dense, np.abs(dense).max())
    back = from_tensorly(theirs)  # a full Tucker tensor now, representing the same tensor
    assert back.modes == (0, 1, 2, 3) and back.ranks == (3, 2, 4, 3)
    _close(back.to_dense(), dense, np.abs(dense).max())


def test_partial_tucker_of_tensorly_reads_with_modes(tl, rng):
    x = _tensor(rng)
    (core, factors), _ = tl.decomposition.partial_tucker(x, rank=[3, 2], modes=[0, 1], n_iter_max=0)
    ours = from_tensorly((core, factors), modes=[0, 1])
    assert ours.modes == (0, 1) and ours.ranks == (3, 2) and ours.core.shape == (3, 2, 4, 3)
    hosvd = tnlib.tucker(x, ranks=(3, 2), modes=(0, 1), method="hosvd")
    _close(ours.to_dense(), hosvd.to_dense(), np.abs(x).max())
    with pytest.raises(ValueError, match="modes="):
        from_tensorly((core, factors))


def test_non_orthonormal_factors_are_orthonormalized_exactly(tl, rng):
    core = rng.standard_normal((3, 2, 4))
    factors = [rng.uniform(0, 1, (5, 3)), rng.standard_normal((6, 2)), rng.standard_normal((3, 4))]  # 4 > 3 rows
    theirs = tl.tucker_tensor.TuckerTensor((core, factors))
    dense = tl.tucker_to_tensor(theirs)
    ours = from_tensorly(theirs)
    assert ours.modes == (0, 1, 2) and ours.ranks == (3, 2, 3)  # the wide factor leaves rank 3 on its mode
    _assert_orthonormal(ours.factors)
    _close(ours.to_dense(), dense, np.abs(dense).max())
    assert np.linalg.norm(ours.core) == pytest.approx(np.linalg.norm(dense), rel=1e-12)  # ||T~|| = ||core||
    kept = from_tensorly(theirs, orthonormalize=False)
    assert kept.core is core and all(a is b for a, b in zip(kept.factors, factors))
    _close(kept.to_dense(), dense, np.abs(dense).max())


def test_nearly_orthonormal_factors_keep_their_signs(tl, rng):
    u = np.linalg.qr(rng.standard_normal((6, 3)))[0] * np.array([1.0, -1.0, 1.0])
    v = np.linalg.qr(rng.standard_normal((5, 2)))[0]
    bent = u + 1e-6 * rng.standard_normal(u.shape)  # far from orthonormal to rounding, close to u
    ours = from_tensorly((rng.standard_normal((3, 2)), [bent, v]))
    assert ours.factors[1] is v
    _assert_orthonormal(ours.factors)
    np.testing.assert_allclose(ours.factors[0], u, atol=1e-5)


def test_non_negative_tucker_of_tensorly(tl, rng):
    x = np.abs(_tensor(rng))
    theirs = tl.decomposition.non_negative_tucker(x, rank=[3, 3, 2, 2], n_iter_max=10)
    dense = tl.tucker_to_tensor(theirs)
    ours = from_tensorly(theirs)
    _assert_orthonormal(ours.factors)
    _close(ours.to_dense(), dense, np.abs(dense).max())
    assert ours.rel_error(x) == pytest.approx(np.linalg.norm(x - dense) / np.linalg.norm(x), rel=1e-10)


@pytest.mark.parametrize("ranks", [(3, 3, 2, 2), (6, 5, 4, 3), (2, 4, 3, 1)])
def test_hosvd_equals_tensorly_tucker_without_iterations(tl, rng, ranks):
    # tensorly's tucker starts from the leading left singular vectors of each unfolding of the
    # tensor (init="svd") and projects the tensor on them: with n_iter_max=0 that is the HOSVD.
    x = _tensor(rng)
    ours = tnlib.tucker(x, ranks=ranks, method="hosvd")
    theirs = tl.decomposition.tucker(x, rank=list(ranks), init="svd", n_iter_max=0)
    assert theirs.rank == ours.ranks
    _close(tl.tucker_to_tensor(theirs), ours.to_dense(), np.abs(x).max())
    for u, v in zip(ours.factors, theirs.factors):  # the same vectors, up to each one's sign
        np.testing.assert_allclose(np.abs(u.T @ v), np.eye(u.shape[1]), rtol=0, atol=1e-10)
    _close(from_tensorly(theirs).to_dense(), ours.to_dense(), np.abs(x).max())


def test_hooi_reaches_the_error_of_tensorly_tucker(tl, rng):
    # ST-HOSVD has no tensorly counterpart and HOOI starts elsewhere (ST-HOSVD here, HOSVD in
    # tensorly): with one clear optimum both reach the same approximation.
    x = _planted_tucker(rng)
    ours = tnlib.tucker(x, ranks=(3, 3, 2, 2), method="hooi", tol=1e-14, max_iter=200)
    theirs = tl.decomposition.tucker(x, rank=[3, 3, 2, 2], init="svd", n_iter_max=200, tol=1e-14)
    theirs_error = np.linalg.norm(x - tl.tucker_to_tensor(theirs)) / np.linalg.norm(x)
    assert ours.rel_error(x) == pytest.approx(theirs_error, rel=1e-8)
    _close(tl.tucker_to_tensor(theirs), ours.to_dense(), 1e3 * np.abs(x).max())  # within 1e-9 of each other
    sthosvd = tnlib.tucker(x, ranks=(3, 3, 2, 2), method="sthosvd")
    assert theirs_error <= sthosvd.rel_error(x) <= 1.01 * theirs_error


# ---------------------------------------------------------------------------------------- backends


def test_arrays_stay_in_their_backend(tl, backend, rng):
    name = TENSORLY_BACKENDS[backend.name.split("-")[0]]
    x = backend.asarray(_tensor(rng))
    with tl.backend_context(name):
        t = tnlib.tucker(x, ranks=(3, 2), modes=(0, 1))
        theirs = to_tensorly(t)
        assert all(type(f) is type(x) for f in theirs.factors)
        assert all(f.device == x.device for f in theirs.factors if hasattr(x, "device"))
        dense = backend.to_numpy(t.to_dense())
        _close(backend.to_numpy(tl.tucker_to_tensor(theirs)), dense, np.abs(dense).max())
        back = from_tensorly(tl.tucker_tensor.TuckerTensor((theirs.core, [2.0 * f for f in theirs.factors])))
        assert type(back.core) is type(x) and all(type(f) is type(x) for f in back.factors)
        _assert_orthonormal([backend.to_numpy(f) for f in back.factors])
        _close(backend.to_numpy(back.to_dense()), 16 * dense, 16 * np.abs(dense).max())

        factors = [backend.asarray(rng.standard_normal((d, 2))) for d in (4, 3)]
        cp = CPTensor(backend.asarray(np.array([2.0, 1.0])), factors)
        theirs_cp = to_tensorly(cp)
        dense = backend.to_numpy(cp.to_dense())
        _close(backend.to_numpy(tl.cp_to_tensor(theirs_cp)), dense, np.abs(dense).max())
        back_cp = from_tensorly((None, theirs_cp.factors))
        assert type(back_cp.weights) is type(x)
        np.testing.assert_array_equal(backend.to_numpy(back_cp.weights), np.ones(2))


def test_complex_factors(tl, rng):
    core = rng.standard_normal((2, 3)) + 1j * rng.standard_normal((2, 3))
    factors = [rng.standard_normal((4, 2)) + 1j * rng.standard_normal((4, 2)), rng.standard_normal((5, 3)) + 0j]
    dense = tl.tucker_to_tensor((core, factors))
    ours = from_tensorly((core, factors))
    _assert_orthonormal(ours.factors)
    _close(ours.to_dense(), dense, np.abs(dense).max())


# ------------------------------------------------------------------------------------------ errors


def test_bad_input(tl, rng):
    with pytest.raises(TypeError, match="tensor must be a tnlib CPTensor or TuckerTensor, got ndarray"):
        to_tensorly(np.ones((2, 2)))
    with pytest.raises(TypeError, match="tensor must be a tnlib CPTensor or TuckerTensor, got MPS"):
        to_tensorly(tnlib.mps(np.ones((2, 2))))
    with pytest.raises(TypeError, match="obj must be a tensorly CPTensor or TuckerTensor"):
        from_tensorly(np.ones((2, 2)))
    with pytest.raises(TypeError, match="obj must be a tensorly CPTensor or TuckerTensor"):
        from_tensorly(tnlib.tucker(np.ones((2, 2)), ranks=1))
    with pytest.raises(TypeError, match="obj must be a tensorly"):
        from_tensorly((np.ones(2), np.ones((2, 2)), np.ones((2, 2))))

    x = _tensor(rng, (4, 3, 2))
    cp, errors = tl.decomposition.parafac(x, rank=2, n_iter_max=2, return_errors=True)
    with pytest.raises(TypeError, match="return_errors=True"):
        from_tensorly((cp, errors))
    with pytest.raises(TypeError, match=r"obj factors\[1\] must be an array"):
        from_tensorly((np.ones(2), [np.ones((3, 2)), [[1.0, 2.0]]]))
    with pytest.raises(TypeError, match="obj factors must be a list of arrays"):
        from_tensorly((np.ones(2), np.ones((3, 2))))

    with pytest.raises(ValueError, match=r"factors\[1\] must have shape \(d_1, 2\)"):
        from_tensorly((np.ones(2), [np.ones((3, 2)), np.ones((4, 3))]))
    with pytest.raises(ValueError, match="modes applies to Tucker tensors only"):
        from_tensorly(cp, modes=[0])
    with pytest.raises(ValueError, match=r"factors\[1\] \(mode 1\) must have shape \(d, 3\)"):
        from_tensorly((np.ones((2, 3)), [np.ones((4, 2)), np.ones((5, 2))]))
    with pytest.raises(ValueError, match="2 factors for a core of order 3"):
        from_tensorly((np.ones((2, 2, 2)), [np.ones((4, 2)), np.ones((5, 2))]))
    with pytest.raises(ValueError, match=r"modes must be distinct integers in \[0, 2\]"):
        from_tensorly((np.ones((2, 2, 2)), [np.ones((4, 2)), np.ones((5, 2))]), modes=[0, 3])
    with pytest.raises(ValueError, match=r"modes must name one mode per factor"):
        from_tensorly((np.ones((2, 2, 2)), [np.ones((4, 2)), np.ones((5, 2))]), modes=[0])
    with pytest.raises(TypeError, match="modes must be a sequence of ints"):
        from_tensorly((np.ones((2, 2, 2)), [np.ones((4, 2)), np.ones((5, 2))]), modes=0)

    broken = tnlib.tucker(x, ranks=(2, 2), modes=(0, 1))
    broken.factors[1] = np.ones((3, 3))
    with pytest.raises(ValueError, match=r"tensor: factors\[1\] \(mode 1\) must have shape \(d, 2\)"):
        to_tensorly(broken)
    with pytest.raises(ValueError, match="order 1"):
        to_tensorly(tnlib.tucker(np.arange(1.0, 5.0), ranks=2))
    bad_cp = _cp(rng)
    bad_cp.weights = np.ones(4)
    with pytest.raises(ValueError, match=r"tensor: factors\[0\] must have shape \(d_0, 4\)"):
        to_tensorly(bad_cp)


def test_missing_tensorly_raises_an_import_error_naming_the_extra(monkeypatch, rng):
    for name in ("tensorly", "tensorly.cp_tensor", "tensorly.tucker_tensor"):
        monkeypatch.setitem(sys.modules, name, None)  # makes `import tensorly...` raise ImportError
    with pytest.raises(ImportError, match=r"pip install tnlib\[tensorly\]"):
        to_tensorly(_cp(rng))
    with pytest.raises(ImportError, match=r"pip install tnlib\[tensorly\]"):
        from_tensorly(object())


def test_tnlib_imports_without_loading_tensorly():
    code = "import sys, tnlib, tnlib.interop.tensorly; assert 'tensorly' not in sys.modules, 'tensorly loaded'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
