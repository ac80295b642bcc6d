"""Cuts, matricization and truncation along cuts."""

import itertools

import numpy as np
import pytest

import tnlib
from tests.oracles import planted_kernel
from tnlib import Cut, all_cuts
from tnlib.cuts import fold


def test_cut_parses_and_equals_its_mirror_and_reorderings():
    c = Cut("oi|hw")
    assert (c.left, c.right, str(c)) == ("oi", "hw", "oi|hw")
    assert c == Cut("hw|oi") == Cut("io|wh") == "wh|io" == c.mirror()
    assert hash(c) == hash(Cut("wh|io"))
    assert c != Cut("oh|iw") and c != "not a cut"
    assert len({Cut("o|ihw"), Cut("ihw|o"), Cut("hwi|o")}) == 1


@pytest.mark.parametrize("n", range(2, 8))
def test_all_cuts_enumerates_every_bipartition_once(n):
    labels = "abcdefg"[:n]
    cuts = all_cuts(labels)
    assert len(cuts) == 2 ** (n - 1) - 1 == len(set(cuts))
    every = {
        Cut.from_sides(side, [c for c in labels if c not in side])
        for k in range(1, n)
        for side in itertools.combinations(labels, k)
    }
    assert set(cuts) == every


def test_all_cuts_of_a_kernel_in_the_documented_order():
    assert [str(c) for c in all_cuts("oihw")] == ["o|ihw", "i|ohw", "h|oiw", "w|oih", "oi|hw", "oh|iw", "ow|ih"]


def test_matricize_follows_the_row_major_convention(backend, rng):
    k = rng.standard_normal((4, 3, 2, 5))
    m = backend.to_numpy(tnlib.matricize(backend.asarray(k), "wh|oi"))
    # rows run over (w, h) with h fastest, columns over (o, i) with i fastest
    for w, h, o, i in itertools.product(range(5), range(2), range(4), range(3)):
        assert m[w * 2 + h, o * 3 + i] == k[o, i, h, w]
    mirror = backend.to_numpy(tnlib.matricize(backend.asarray(k), "oi|wh"))
    np.testing.assert_array_equal(mirror, m.T)


def test_fold_inverts_matricize(rng):
    k = rng.standard_normal((4, 3, 2, 5))
    for c in all_cuts("oihw"):
        np.testing.assert_array_equal(fold(tnlib.matricize(k, c), c, "oihw", k.shape), k)


@pytest.mark.parametrize("cut", [str(c) for c in all_cuts("oihw")])
def test_truncate_recovers_a_planted_rank_exactly(backend, rng, cut):
    left = Cut(cut).left
    k = planted_kernel(rng, (6, 5, 3, 4), left, rank=2)
    kt, info = tnlib.truncate(backend.asarray(k), cut, rel_error=1e-10)
    assert info.rank == 2 and info.cut == cut
    assert info.rel_error < 1e-12
    np.testing.assert_allclose(backend.to_numpy(kt), k, atol=1e-11 * np.abs(k).max())
    assert backend.to_numpy(kt).shape == k.shape


def test_truncate_equals_the_eckart_young_truncation_of_the_matricization(backend, rng):
    k = rng.standard_normal((6, 5, 3, 3))
    kt, info = tnlib.truncate(backend.asarray(k), "oh|iw", max_rank=4)
    m = tnlib.matricize(k, "oh|iw")
    u, s, vh = np.linalg.svd(m, full_matrices=False)
    best = fold((u[:, :4] * s[:4]) @ vh[:4], Cut("oh|iw"), "oihw", k.shape)
    np.testing.assert_allclose(backend.to_numpy(kt), best, atol=1e-12)
    assert info.rel_error == pytest.approx(np.linalg.norm(k - best) / np.linalg.norm(k), rel=1e-12)
    assert tnlib.spectrum(k, "oh|iw").rel_error(4) == pytest.approx(info.rel_error, rel=1e-12)


def test_truncate_along_several_cuts_applies_them_in_turn(rng):
    k = rng.standard_normal((8, 6, 3, 3))
    kt, info = tnlib.truncate(k, ["o|ihw", "i|ohw"], max_rank=[3, 2])
    once, _ = tnlib.truncate(k, "o|ihw", max_rank=3)
    twice, _ = tnlib.truncate(once, "i|ohw", max_rank=2)
    np.testing.assert_allclose(kt, twice, atol=1e-12)
    assert info.ranks == (3, 2) and [s.cut for s in info.steps] == ["o|ihw", "i|ohw"]
    norm = np.linalg.norm(k)
    assert info.rel_error == pytest.approx(np.linalg.norm(k - kt) / norm, rel=1e-12)
    assert info.norm_loss == pytest.approx(1 - np.linalg.norm(kt) / norm, rel=1e-12)
    assert info.discarded_weight == pytest.approx(1 - (np.linalg.norm(kt) / norm) ** 2, rel=1e-12)
    for cut, rank in (("o|ihw", 3), ("i|ohw", 2)):  # the result has at most the kept rank across each cut
        assert np.linalg.matrix_rank(tnlib.matricize(kt, cut)) == rank


@pytest.mark.parametrize("target", [0.05, 0.2, 0.5])
def test_several_cuts_meet_the_rel_error_target_as_a_whole(rng, target):
    k = rng.standard_normal((12, 10, 3, 3)).astype(np.float32)
    cuts = all_cuts("oihw")
    kt, info = tnlib.truncate(k, cuts, rel_error=target)
    measured = np.linalg.norm((k - kt).astype(np.float64)) / np.linalg.norm(k.astype(np.float64))
    assert measured <= target * (1 + 1e-5)
    assert info.rel_error == pytest.approx(measured, rel=1e-4)
    assert len(info.ranks) == 7 and any(r < s.rank for r, s in zip(info.ranks, tnlib.spectra(k).values()))


def test_truncate_keeps_dtype_backend_and_complex_values(backend, rng):
    k = rng.standard_normal((4, 4, 2, 2)) + 1j * rng.standard_normal((4, 4, 2, 2))
    kt, info = tnlib.truncate(backend.asarray(k), "oi|hw", max_rank=4)
    assert type(kt) is type(backend.asarray(k))
    np.testing.assert_allclose(backend.to_numpy(kt), k, atol=1e-12)  # rank 4 = full across oi|hw
    assert info.rel_error < 1e-13


def test_zero_tensor_truncates_to_rank_zero():
    kt, info = tnlib.truncate(np.zeros((3, 3, 2, 2)), "o|ihw", rel_error=0.1)
    assert info.rank == 0 and info.rel_error == 0.0 and not kt.any()
