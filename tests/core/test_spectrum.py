"""Spectra and entropies across cuts, against hand computation and LAPACK."""

import json
import math

import numpy as np
import pytest

import tnlib
from tests.oracles import planted_kernel
from tnlib import Spectrum, all_cuts
from tnlib.spectrum import _DirectSpectra, _GramSpectra


def test_entropies_by_hand():
    sp = Spectrum([2.0, 1.0, 1.0])  # weights 4/6, 1/6, 1/6
    p = np.array([4, 1, 1]) / 6
    assert sp.entropy() == pytest.approx(-np.sum(p * np.log2(p)), rel=1e-14)
    assert sp.entropy(base=math.e) == pytest.approx(-np.sum(p * np.log(p)), rel=1e-14)
    assert sp.entropy(alpha=2) == pytest.approx(-np.log2(np.sum(p**2)), rel=1e-14)
    assert sp.entropy(alpha=0.5) == pytest.approx(2 * np.log2(np.sum(np.sqrt(p))), rel=1e-14)
    assert sp.entropy(alpha=0) == pytest.approx(np.log2(3), rel=1e-14)
    assert sp.entropy(alpha=math.inf) == pytest.approx(-np.log2(4 / 6), rel=1e-14)
    assert sp.effective_rank(2) == pytest.approx(1 / np.sum(p**2), rel=1e-14)
    assert sp.effective_rank(math.inf) == pytest.approx(6 / 4, rel=1e-14)  # stable rank


def test_renyi_entropies_decrease_with_alpha_and_are_bounded_by_log_rank(rng):
    sp = Spectrum(np.sort(rng.random(9))[::-1])
    values = [sp.entropy(alpha=a) for a in (0, 0.5, 1, 2, 5, math.inf)]
    assert all(x >= y - 1e-12 for x, y in zip(values, values[1:]))
    assert values[0] == pytest.approx(math.log2(9))
    flat = Spectrum(np.ones(8))
    assert all(flat.entropy(alpha=a) == pytest.approx(3.0) for a in (0, 0.5, 1, 2, math.inf))


def test_zero_tensor_has_zero_entropy_and_rank(backend):
    for sp in tnlib.spectra(backend.asarray(np.zeros((3, 2, 2, 2)))).values():
        assert sp.rank == 0 and sp.entropy() == 0.0 and sp.entropy(alpha=2) == 0.0
        assert sp.rank_for(0.0) == 0 and sp.effective_rank() == 0.0 and not np.isnan(sp.weights).any()
        assert sp.rel_error(0) == 0.0


def test_truncation_curves_by_hand():
    sp = Spectrum([3.0, 2.0, 1.0, 0.0])  # total 14
    np.testing.assert_allclose(sp.rel_error(), np.sqrt(np.array([14, 5, 1, 0, 0]) / 14), rtol=1e-15)
    np.testing.assert_allclose(sp.norm_loss([0, 1, 2]), 1 - np.sqrt(np.array([0, 9, 13]) / 14), rtol=1e-14)
    assert sp.rel_error(2) == pytest.approx(math.sqrt(1 / 14), rel=1e-15)
    assert sp.rel_error(10) == 0.0
    assert [sp.rank_for(e) for e in (1.0, 0.6, math.sqrt(5 / 14), 0.2, 0.0)] == [0, 1, 1, 3, 3]
    assert sp.rank == 3 and len(sp) == 4 and sp.norm == pytest.approx(math.sqrt(14))


def test_spectrum_validates_its_values():
    with pytest.raises(ValueError, match="descending"):
        Spectrum([1.0, 2.0])
    with pytest.raises(ValueError, match="non-negative"):
        Spectrum([1.0, -1.0])
    with pytest.raises(ValueError, match="alpha"):
        Spectrum([1.0]).entropy(alpha=-1)
    with pytest.raises(ValueError, match="base"):
        Spectrum([1.0]).entropy(base=1)
    with pytest.raises(ValueError, match="base"):
        Spectrum([1.0]).entropy(base=float("inf"))
    with pytest.raises(TypeError, match="alpha"):
        Spectrum([1.0]).entropy(alpha="2")
    with pytest.raises(ValueError, match="rank"):
        Spectrum([1.0]).rel_error(-1)


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex64, np.complex128])
def test_spectra_of_every_cut_match_lapack(backend, rng, dtype):
    k = rng.standard_normal((7, 5, 3, 2))
    if np.issubdtype(dtype, np.complexfloating):
        k = k + 1j * rng.standard_normal(k.shape)
    k = k.astype(dtype)
    result = tnlib.spectra(backend.asarray(k))
    assert list(result) == [str(c) for c in all_cuts("oihw")]
    tol = 1e-5 if dtype in (np.float32, np.complex64) else 1e-12
    for cut, sp in result.items():
        m = tnlib.matricize(k.astype(np.complex128 if np.iscomplexobj(k) else np.float64), cut)
        expected = np.linalg.svd(m, compute_uv=False)
        assert sp.matrix_shape == m.shape and sp.cut == cut
        np.testing.assert_allclose(sp.singular_values, expected, atol=tol * expected[0])
        assert sp.entropy() == pytest.approx(Spectrum(expected).entropy(), abs=tol * 10)


def test_spectrum_accepts_cuts_with_spaces_and_cut_objects(rng):
    k = rng.standard_normal((3, 2, 2, 2))
    assert tnlib.spectrum(k, "oi | hw") == tnlib.spectrum(k, tnlib.Cut("oi|hw")) == tnlib.spectra(k)["oi|hw"]


def test_spectra_are_reproducible_across_processes(tmp_path):
    import subprocess
    import sys

    code = ("import numpy as np, tnlib; k = np.random.default_rng(0).standard_normal((16, 16, 4, 4)).astype('f4');"
            "print([v.singular_values.tobytes().hex() for v in tnlib.spectra(k).values()])")
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           env={**__import__("os").environ, "PYTHONHASHSEED": str(seed)}).stdout for seed in range(4)}
    assert len(outs) == 1


def test_spectrum_of_one_cut_equals_spectra_entry_and_mirror(rng):
    k = rng.standard_normal((6, 4, 3, 3))
    all_of_them = tnlib.spectra(k)
    for cut in all_cuts("oihw"):
        one = tnlib.spectrum(k, cut)
        np.testing.assert_array_equal(one.singular_values, all_of_them[str(cut)].singular_values)
        np.testing.assert_allclose(tnlib.spectrum(k, cut.mirror()).singular_values, one.singular_values, rtol=1e-12)


def test_planted_rank_shows_in_the_spectrum_and_entropy_bound(rng):
    k = planted_kernel(rng, (8, 6, 3, 3), "oh", rank=3)
    sp = tnlib.spectrum(k, "oh|iw")
    assert sp.rank_for(1e-12) == 3
    assert sp.entropy() <= math.log2(3) + 1e-12
    assert sp.singular_values[3] < 1e-12 * sp.singular_values[0]


def test_gram_and_full_methods_agree_and_partial_traces_are_exact(rng):
    k = rng.standard_normal((6, 5, 4, 3))
    gram = tnlib.spectra(k, method="gram")
    full = tnlib.spectra(k, method="full")
    for cut in gram:
        np.testing.assert_allclose(gram[cut].singular_values, full[cut].singular_values, atol=1e-12)
    # the Gram matrix of a side equals the partial trace of the Gram matrix of a larger side
    solver = _GramSpectra(k[None], "oihw")  # the solvers work on stacks of tensors
    solver.squared_values("oh")
    traced = solver._gram("o")[0]
    direct = tnlib.matricize(k, "o|ihw") @ tnlib.matricize(k, "o|ihw").T
    np.testing.assert_allclose(traced, direct, rtol=1e-12)


def test_size_one_legs_and_one_by_one_kernels(rng):
    k = rng.standard_normal((5, 4, 1, 1))
    result = tnlib.spectra(k)
    s = np.linalg.svd(k[:, :, 0, 0], compute_uv=False)
    for cut in ("o|ihw", "i|ohw", "oh|iw", "ow|ih"):
        np.testing.assert_allclose(result[cut].singular_values, s, rtol=1e-12)
    for cut in ("h|oiw", "w|oih", "oi|hw"):
        np.testing.assert_allclose(result[cut].singular_values, [np.linalg.norm(k)], rtol=1e-12)
        assert result[cut].entropy() == 0.0 and result[cut].matrix_shape[0] * result[cut].matrix_shape[1] == 20


@pytest.mark.parametrize("solver", [_GramSpectra, _DirectSpectra])
def test_spectra_solve_each_distinct_matricization_once(monkeypatch, rng, solver):
    solved, original = [], solver.squared_values

    def counting(self, side):
        solved.append(side)
        return original(self, side)

    monkeypatch.setattr(solver, "squared_values", counting)
    method = "gram" if solver is _GramSpectra else "full"
    result = tnlib.spectra(rng.standard_normal((8, 8, 1, 1)).astype(np.float32), method=method)
    # the four cuts separating o from i share one solve; the three others are the norm
    assert sorted(solved) == ["", "o"]
    assert len({r.singular_values.tobytes() for r in result.values()}) == 2


def test_other_orders_and_labels(rng):
    t = rng.standard_normal((3, 4, 5))
    result = tnlib.spectra(t, labels="xyz", cuts=["x|yz", "zx|y"])
    assert list(result) == ["x|yz", "zx|y"]
    np.testing.assert_allclose(
        result["zx|y"].singular_values, np.linalg.svd(t.transpose(1, 0, 2).reshape(4, 15), compute_uv=False)
    )
    assert len(tnlib.spectra(rng.standard_normal((2, 2, 2, 2, 2)))) == 15  # default labels abcde


def test_to_dict_round_trips_through_json(rng):
    sp = tnlib.spectrum(rng.standard_normal((4, 3, 3, 3)), "oi|hw")
    data = json.loads(json.dumps(sp.to_dict()))
    assert Spectrum.from_dict(data) == sp
    assert data["entropy"] == pytest.approx(sp.entropy()) and data["rank"] == 9
