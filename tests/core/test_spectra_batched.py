"""spectra_many: the spectra of many tensors at once equal tnlib.spectra of each, on every backend."""

import sys

import numpy as np
import pytest

import tnlib
from tests.oracles import planted_kernel

SPECTRUM_MODULE = sys.modules["tnlib.spectrum"]  # the name tnlib.spectrum is the function
BATCHED_MODULE = sys.modules["tnlib.spectra_batched"]


def assert_same_spectra(got: dict, expected: dict, tol: float = 1e-10) -> None:
    """Same cuts in the same order, same matrix shapes, values equal to ``tol * s_max``."""
    assert list(got) == list(expected)
    for cut, sp in expected.items():
        assert got[cut].cut == sp.cut and got[cut].matrix_shape == sp.matrix_shape
        assert not got[cut].singular_values.flags.writeable
        scale = max(sp.singular_values[0], np.finfo(float).tiny)
        np.testing.assert_allclose(got[cut].singular_values, sp.singular_values, rtol=0, atol=tol * scale)


def mixed_kernels(rng, dtype=np.float64) -> list[np.ndarray]:
    """Random and planted-rank kernels of three shapes, alike ones apart in the list."""
    kernels = [
        rng.standard_normal((8, 6, 3, 3)),
        planted_kernel(rng, (8, 6, 3, 3), "oh", rank=3),
        rng.standard_normal((4, 4, 1, 1)),
        planted_kernel(rng, (8, 6, 3, 3), "o", rank=2),
        rng.standard_normal((5, 3, 3, 2)),
        planted_kernel(rng, (4, 4, 1, 1), "o", rank=1),
    ]
    return [k.astype(dtype) for k in kernels]


@pytest.mark.parametrize("method", ["auto", "gram", "full"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex128])
def test_equals_spectra_of_each_tensor(rng, method, dtype):
    kernels = mixed_kernels(rng, np.float64)
    if dtype is np.complex128:
        kernels = [k + 1j * rng.standard_normal(k.shape) for k in kernels]
    kernels = [k.astype(dtype) for k in kernels]
    result = tnlib.spectra_many(kernels, method=method)
    assert len(result) == len(kernels)
    tol = 1e-5 if dtype is np.float32 and method == "full" else 1e-10  # LAPACK in single precision
    for kernel, got in zip(kernels, result):
        assert_same_spectra(got, tnlib.spectra(kernel, method=method), tol)


def test_planted_ranks_are_recovered_in_the_batch(rng):
    kernels = [planted_kernel(rng, (8, 6, 3, 3), "oh", rank=r) for r in (1, 2, 3, 5)]
    for rank, result in zip((1, 2, 3, 5), tnlib.spectra_many(kernels)):
        assert result["oh|iw"].rank_for(1e-12) == rank
        assert result["oh|iw"].singular_values[rank] < 1e-12 * result["oh|iw"].singular_values[0]


def test_every_backend_and_mixed_backends(backend, rng):
    kernels = mixed_kernels(rng, np.float32)
    on_backend = [backend.asarray(k) for k in kernels]
    result = tnlib.spectra_many(on_backend)
    for kernel, got in zip(on_backend, result):
        assert_same_spectra(got, tnlib.spectra(kernel))
    mixed = [on_backend[0], kernels[1], on_backend[3]]  # same shape, two libraries: stacked apart
    for kernel, got in zip(mixed, tnlib.spectra_many(mixed)):
        assert_same_spectra(got, tnlib.spectra(kernel))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])  # stacked Gram eigensolves, stacked SVDs
def test_torch_tensors(rng, dtype):
    torch = pytest.importorskip("torch")
    kernels = [torch.as_tensor(k) for k in mixed_kernels(rng, dtype)]
    for kernel, got in zip(kernels, tnlib.spectra_many(kernels)):
        assert_same_spectra(got, tnlib.spectra(kernel))


def test_alike_tensors_share_each_solve(monkeypatch, rng):
    solved = []
    original = SPECTRUM_MODULE._GramSpectra.squared_values

    def counting(self, side):
        solved.append((self.x.shape[0], side))
        return original(self, side)

    monkeypatch.setattr(SPECTRUM_MODULE._GramSpectra, "squared_values", counting)
    kernels = [rng.standard_normal((8, 8, 1, 1)).astype(np.float32) for _ in range(5)]
    tnlib.spectra_many(kernels)
    assert sorted(solved) == [(5, ""), (5, "o")]  # as for one tensor, once for the stack of five


def test_large_groups_are_stacked_in_chunks_within_the_memory_bound(monkeypatch, rng):
    stacks, original = [], BATCHED_MODULE.stacked_spectra

    def recording(stack, exponents, job):
        stacks.append(stack.shape[0])
        return original(stack, exponents, job)

    monkeypatch.setattr(BATCHED_MODULE, "stacked_spectra", recording)
    kernels = [rng.standard_normal((6, 4, 3, 3)) for _ in range(7)]
    per_tensor = 8 * (2 * 6 * 4 * 3 * 3 + 2 * 12**2)  # largest Gram: 12 x 12 (oh|iw, 18 x 12)
    monkeypatch.setattr(BATCHED_MODULE, "STACK_BYTES", 3 * per_tensor)
    result = tnlib.spectra_many(kernels)
    assert stacks == [3, 3, 1]
    for kernel, got in zip(kernels, result):
        assert_same_spectra(got, tnlib.spectra(kernel))


def test_each_tensor_keeps_its_own_scale(rng):
    base = rng.standard_normal((6, 4, 3, 3))
    kernels = [base * 2.0**-1070, base, base * 2.0**1000, base.astype(np.float32) * np.float32(2.0**-140)]
    for kernel, got in zip(kernels, tnlib.spectra_many(kernels)):
        assert_same_spectra(got, tnlib.spectra(kernel))
        assert all(np.all(sp.singular_values > 0) for sp in got.values())


def test_labels_cuts_and_other_orders(rng):
    tensors = [rng.standard_normal((3, 4, 5)), rng.standard_normal((3, 4, 5)), rng.standard_normal((2, 3, 4))]
    result = tnlib.spectra_many(tensors, labels="xyz", cuts=iter(["x|yz", "zx|y"]))
    for tensor, got in zip(tensors, result):
        assert_same_spectra(got, tnlib.spectra(tensor, labels="xyz", cuts=["x|yz", "zx|y"]))
    orders = [rng.standard_normal((2, 3)), rng.standard_normal((2, 2, 2, 2, 2)), rng.standard_normal((4, 3, 2, 2))]
    for tensor, got in zip(orders, tnlib.spectra_many(orders)):  # default labels by order
        assert_same_spectra(got, tnlib.spectra(tensor))


def test_one_metric_per_tensor(rng):
    kernels = [rng.standard_normal((6, 4, 3, 3)) for _ in range(3)]
    a = rng.standard_normal((36, 36))
    metrics = [{"ihw": a @ a.T}, None, {"o": np.diag(rng.uniform(0.5, 2.0, 6))}]
    result = tnlib.spectra_many(kernels, metric=metrics)
    for kernel, metric, got in zip(kernels, metrics, result):
        assert_same_spectra(got, tnlib.spectra(kernel, metric=metric))
    assert list(result[0]) == ["o|ihw"] and len(result[1]) == 7


def test_a_batched_svd_that_fails_falls_back_to_one_by_one(monkeypatch, rng):
    def not_converging(*args, **kwargs):
        raise np.linalg.LinAlgError("SVD did not converge")

    kernels = [rng.standard_normal((5, 4, 3, 2)) for _ in range(3)]
    expected = [tnlib.spectra(k) for k in kernels]
    monkeypatch.setattr(np.linalg, "svd", not_converging)
    for want, got in zip(expected, tnlib.spectra_many(kernels, method="full")):
        assert_same_spectra(got, want)


def test_bad_input_names_the_argument(rng):
    good = rng.standard_normal((4, 3, 2, 2))
    with pytest.raises(ValueError, match="tensors must hold at least one array"):
        tnlib.spectra_many([])
    with pytest.raises(TypeError, match="tensors must be a list or tuple"):
        tnlib.spectra_many(good)
    with pytest.raises(TypeError, match="tensors must be an ordered sequence"):
        tnlib.spectra_many({1, 2})
    with pytest.raises(TypeError, match="tensors must be a list or tuple"):
        tnlib.spectra_many(x for x in [good])
    with pytest.raises(ValueError, match=r"tensors\[1\]: labels must give one label per index"):
        tnlib.spectra_many([good, rng.standard_normal((4, 3, 2))], labels="oihw")
    nan = good.copy()
    nan[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match=r"tensors\[2\] contains NaN"):
        tnlib.spectra_many([good, good, nan])
    with pytest.raises(TypeError, match=r"tensors\[1\] must have a floating dtype"):
        tnlib.spectra_many([good, np.ones((2, 2), dtype=int)])
    with pytest.raises(ValueError, match=r"tensors\[1\]: cut 'oi\|hw' must split all of the labels 'abc'"):
        tnlib.spectra_many([good, rng.standard_normal((2, 2, 2))], cuts=["oi|hw"])
    with pytest.raises(ValueError, match="method must be one of"):
        tnlib.spectra_many([good], method="jacobi")
    with pytest.raises(TypeError, match="metric must be None or a list with one entry per tensor"):
        tnlib.spectra_many([good], metric={"o": np.eye(4)})
    with pytest.raises(ValueError, match="metric must have one entry per tensor: 2 tensors, 1 entries"):
        tnlib.spectra_many([good, good], metric=[None])
    with pytest.raises(ValueError, match=r"tensors\[0\]: metric: the cut 'i\|ohw' splits the group 'oi'"):
        tnlib.spectra_many([good], cuts=["i|ohw"], metric=[{"oi": np.eye(12)}])
