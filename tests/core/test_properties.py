"""Property tests: the truncation guarantees hold on arbitrary inputs."""

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

import tnlib

shapes = st.tuples(st.integers(1, 12), st.integers(1, 12))
seeds = st.integers(0, 2**32 - 1)
targets = st.floats(0.0, 1.0)


def random_matrix(seed, shape, decay):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(shape) * (decay ** np.arange(shape[1]))[None, :]


@settings(max_examples=60, deadline=None)
@given(seed=seeds, shape=shapes, target=targets, decay=st.floats(0.05, 1.0), method=st.sampled_from(["full", "gram"]))
@example(seed=0, shape=(8, 8), target=0.0, decay=0.05078125, method="gram")  # a value at 3e-10 of the norm
def test_rel_error_is_met_by_the_smallest_rank(seed, shape, target, decay, method):
    a = random_matrix(seed, shape, decay)
    u, s, vh, info = tnlib.truncated_svd(a, rel_error=target, method=method)
    measured = np.linalg.norm(a - (u * s) @ vh) / np.linalg.norm(a)
    # "gram" takes the discarded weight from squared values: errors below ~1e-8 are rounding (concepts §9)
    resolution = {"full": 1e-12, "gram": 1e-8}[method]
    assert measured <= target + resolution
    assert abs(measured - info.rel_error) <= resolution
    if info.rank > 0:  # minimal: one triplet fewer misses the target
        optimal = np.linalg.svd(a, compute_uv=False)
        assert np.sqrt(np.sum(optimal[info.rank - 1 :] ** 2) / np.sum(optimal**2)) > target - 1e-12


@settings(max_examples=40, deadline=None)
@given(seed=seeds, dims=st.tuples(*[st.integers(1, 5)] * 4), target=targets, count=st.integers(1, 7))
def test_multi_cut_truncation_meets_the_target_as_a_whole(seed, dims, target, count):
    k = np.random.default_rng(seed).standard_normal(dims)
    cuts = tnlib.all_cuts("oihw")[:count]
    kt, info = tnlib.truncate(k, cuts, rel_error=target)
    assert np.linalg.norm(k - kt) <= target * np.linalg.norm(k) * (1 + 1e-12) + 1e-12
    assert 0.0 <= info.norm_loss <= info.rel_error + 1e-12


@settings(max_examples=40, deadline=None)
@given(seed=seeds, dims=st.tuples(*[st.integers(1, 6)] * 4))
def test_spectra_match_svd_and_mirror(seed, dims):
    k = np.random.default_rng(seed).standard_normal(dims).astype(np.float32)
    result = tnlib.spectra(k)
    for cut in tnlib.all_cuts("oihw"):
        expected = np.linalg.svd(tnlib.matricize(k.astype(np.float64), cut), compute_uv=False)
        np.testing.assert_allclose(result[str(cut)].weights, expected**2 / np.sum(expected**2), atol=1e-6)
        assert 0.0 <= result[str(cut)].entropy() <= np.log2(len(expected)) + 1e-9
