"""CP decompositions: planted recovery by ALS and LM, monotone histories, MTTKRP identities, memory, tensorly."""

import json
import tracemalloc

import numpy as np
import pytest

import tnlib
from tnlib.decompositions.cp import CP_METHODS
from tnlib.decompositions.cp_mttkrp import DimensionTree
from tnlib.decompositions.cp_tensor import CPFit, khatri_rao
from tnlib.decompositions.tucker import unfold


def planted_cp(rng, shape, rank, noise=0.0):
    """A sum of ``rank`` random rank-one terms plus Gaussian noise of relative size ``noise``."""
    factors = [rng.standard_normal((d, rank)) for d in shape]
    t = tnlib.CPTensor(np.ones(rank), factors).to_dense()
    return t + noise * np.linalg.norm(t) / np.sqrt(t.size) * rng.standard_normal(shape)


def dense_by_einsum(weights, factors):
    letters = "abcdefg"[: len(factors)]
    return np.einsum(",".join(["z"] + [c + "z" for c in letters]) + "->" + letters, weights, *factors)


@pytest.mark.parametrize("shape", [(5, 4), (4, 3, 5), (3, 4, 2, 5), (2, 3, 2, 2, 3)])
def test_to_dense_and_mttkrp_follow_their_definitions(rng, shape):
    rank = 3
    weights, factors = rng.standard_normal(rank), [rng.standard_normal((d, rank)) for d in shape]
    np.testing.assert_allclose(tnlib.CPTensor(weights, factors).to_dense(), dense_by_einsum(weights, factors),
                               atol=1e-12)
    t = rng.standard_normal(shape)
    mttkrps = DimensionTree(shape).all(t, factors)
    for n in range(len(shape)):
        naive = unfold(t, n) @ khatri_rao([f for k, f in enumerate(factors) if k != n])
        np.testing.assert_allclose(mttkrps[n], naive, atol=1e-12)
    projections = DimensionTree(shape).projections(t, factors)
    expected = [np.sum(t * dense_by_einsum(np.eye(rank)[r], factors)) for r in range(rank)]
    np.testing.assert_allclose(projections, expected, atol=1e-12)


@pytest.mark.parametrize("method", list(CP_METHODS))
@pytest.mark.parametrize("shape", [(10, 9, 8), (8, 7, 3, 3)])
def test_planted_cp_is_recovered(backend, rng, method, shape):
    t = planted_cp(rng, shape, 4, noise=1e-9)
    model = tnlib.cp(backend.asarray(t), 4, method=method, max_iter=500, seed=0)
    assert model.converged
    assert model.rel_error(backend.asarray(t)) < 1e-6
    assert model.history[-1] < 1e-6
    weights = backend.to_numpy(model.weights)
    assert np.all(np.diff(weights) <= 0) and np.all(weights >= 0)
    for factor in model.factors:
        np.testing.assert_allclose(np.linalg.norm(backend.to_numpy(factor), axis=0), 1.0, rtol=1e-12)


@pytest.mark.parametrize("method,options", [("als", {"line_search": False}), ("als", {"line_search": True}),
                                            ("lm", {})])
def test_error_history_never_increases(rng, method, options):
    t = rng.standard_normal((9, 8, 7))  # no exact low-rank structure: the error stays far above rounding
    model = tnlib.cp(t, 6, method=method, max_iter=60, tol=0, seed=1, **options)
    history = np.array(model.history)
    assert len(history) == 60 and not model.converged
    assert np.all(np.diff(history) <= 1e-12 * history[:-1])
    assert history[-1] == pytest.approx(model.rel_error(t), rel=1e-8)


def swamp(rng):
    """Two nearly collinear components: the classic swamp where ALS crawls."""
    a, b, c = (rng.standard_normal((d, 3)) for d in (12, 11, 10))
    for f in (a, b, c):
        f[:, 1] = f[:, 0] + 0.1 * f[:, 1]
    return tnlib.CPTensor(np.ones(3), [a, b, c]).to_dense()


def test_line_search_moves_further_through_a_swamp(rng):
    t = swamp(rng)
    plain = tnlib.cp(t, 3, max_iter=200, tol=0, seed=0, line_search=False)
    searched = tnlib.cp(t, 3, max_iter=200, tol=0, seed=0)
    assert searched.rel_error(t) < 0.8 * plain.rel_error(t)


def test_lm_leaves_the_swamp_where_als_stalls(rng):
    t = swamp(rng)
    als = tnlib.cp(t, 3, max_iter=400, tol=0, seed=0)
    lm = tnlib.cp(t, 3, method="lm", max_iter=400, seed=0)
    assert lm.converged and lm.rel_error(t) < 1e-6
    assert als.rel_error(t) > 1e-4


@pytest.mark.parametrize("method", list(CP_METHODS))
@pytest.mark.parametrize("init", ["svd", "random"])
def test_the_same_seed_gives_the_same_result(rng, method, init):
    t = rng.standard_normal((6, 5, 4))
    first, second = (tnlib.cp(t, 8, method=method, init=init, max_iter=15, seed=7) for _ in range(2))
    assert first.history == second.history
    np.testing.assert_array_equal(first.weights, second.weights)
    for f, g in zip(first.factors, second.factors):
        np.testing.assert_array_equal(f, g)
    other = tnlib.cp(t, 8, method=method, init=init, max_iter=15, seed=8)
    assert other.history != first.history  # rank 8 > every mode: the seed fills random columns


def test_svd_init_uses_the_leading_singular_vectors_and_fits_the_weights(rng):
    t = rng.standard_normal((6, 5, 4))
    model = tnlib.cp(t, 3, max_iter=0)
    assert model.history == [] and not model.converged
    for n, factor in enumerate(model.factors):
        u = np.linalg.svd(unfold(t, n), full_matrices=False)[0][:, :3]
        overlap = np.abs(u.T @ factor)  # a permutation matrix: the same columns up to sign and order
        np.testing.assert_allclose(np.sort(overlap, axis=1), np.tile([0.0, 0.0, 1.0], (3, 1)), atol=1e-10)
    # the weights are least-squares optimal for these factors: the residual is orthogonal to every term
    residual = t - model.to_dense()
    terms = [dense_by_einsum(np.eye(3)[r], model.factors) for r in range(3)]
    np.testing.assert_allclose([np.sum(residual * term) for term in terms], 0, atol=1e-10)


def test_warm_start_continues_from_the_model(rng):
    t = rng.standard_normal((7, 6, 5))
    start = tnlib.cp(t, 4, max_iter=5, tol=0, seed=0, line_search=False)
    resumed = tnlib.cp(t, 4, init=start, max_iter=5, tol=0, line_search=False)
    straight = tnlib.cp(t, 4, max_iter=10, tol=0, seed=0, line_search=False)
    np.testing.assert_allclose(resumed.history, straight.history[5:], rtol=1e-9)


def test_single_precision_is_computed_in_double_and_returned_in_single(rng):
    t = planted_cp(rng, (8, 7, 6), 3).astype(np.float32)
    model = tnlib.cp(t, 3, method="lm", max_iter=200, seed=0)
    assert model.weights.dtype == np.float32 and all(f.dtype == np.float32 for f in model.factors)
    assert model.rel_error(t) < 1e-6


def test_ridge_shrinks_the_factors(rng):
    t = rng.standard_normal((6, 5, 4))
    plain = tnlib.cp(t, 5, max_iter=30, tol=0, seed=0, line_search=False)
    ridged = tnlib.cp(t, 5, max_iter=30, tol=0, seed=0, line_search=False, ridge=10.0)
    assert np.sum(ridged.weights**2) < np.sum(plain.weights**2)
    assert ridged.rel_error(t) > plain.rel_error(t)


def test_high_rank_cp_of_a_large_kernel_stays_within_a_few_kernels_of_memory(rng):
    kernel = rng.standard_normal((512, 512, 3, 3))
    tracemalloc.start()
    try:
        tnlib.cp(kernel, 64, max_iter=1, tol=0, seed=0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 * kernel.nbytes  # the mode unfoldings for the SVD init are the largest arrays


def test_agrees_with_tensorly_parafac(rng):
    tensorly = pytest.importorskip("tensorly")
    from tensorly.decomposition import parafac

    t = rng.standard_normal((8, 7, 6))
    ours = tnlib.cp(t, 4, max_iter=10, tol=0, line_search=False)
    weights, factors = parafac(t, 4, n_iter_max=10, init="svd", tol=0, linesearch=False)
    theirs = tensorly.cp_to_tensor((weights, factors))
    np.testing.assert_allclose(ours.to_dense(), theirs, atol=1e-9 * np.abs(theirs).max())


def test_rank_search_finds_the_planted_rank_and_returns_the_curve(rng):
    t = planted_cp(rng, (7, 6, 5), 3)
    search = tnlib.cp_rank(t, 1e-6, method="lm", seed=0)
    assert search.reached and search.rank == 3
    assert search.model.rank == 3 and search.model.rel_error(t) <= 1e-6
    assert search.curve[3] <= 1e-6 < min(search.curve[1], search.curve[2])
    assert list(search.curve) == sorted(search.curve)


def test_rank_search_reports_an_unreached_target(rng):
    t = rng.standard_normal((6, 5, 4))
    search = tnlib.cp_rank(t, 1e-3, max_rank=3, seed=0)
    assert not search.reached
    assert sorted(search.curve) == [1, 2, 3]
    assert search.curve[search.rank] == min(search.curve.values())


def test_significance_of_orthogonal_terms_is_the_share_of_slice_energy(rng):
    u, s, vh = np.linalg.svd(rng.standard_normal((6, 4)), full_matrices=False)
    matrix = (u * s) @ vh
    sig = tnlib.cp_significance(tnlib.CPTensor(s, [u, vh.T]), labels="ab")
    np.testing.assert_allclose(sig.scores, s)
    np.testing.assert_allclose(sig.importance("a"), np.sum(matrix**2, axis=1) / np.sum(matrix**2))
    np.testing.assert_allclose(sig.importance("b"), np.sum(matrix**2, axis=0) / np.sum(matrix**2))


def test_significance_of_a_kernel_ranks_channels_and_positions(rng):
    # one strong term lives on output channel 2, input channel 0 and the centre of the 3x3 window
    e = np.eye(4)
    strong = [e[:, [2]], e[:, [0]], np.eye(3)[:, [1]], np.eye(3)[:, [1]]]
    weak = [rng.standard_normal((d, 2)) for d in (4, 4, 3, 3)]
    model = tnlib.CPTensor(np.array([10.0, 0.1, 0.1]), [np.hstack([a, b]) for a, b in zip(strong, weak)])
    sig = tnlib.cp_significance(model)
    norms = np.prod([np.linalg.norm(f, axis=0) for f in model.factors], axis=0)
    np.testing.assert_allclose(sig.scores, model.weights * norms)
    assert np.argmax(sig.importance("o")) == 2 and np.argmax(sig.importance("i")) == 0
    positions = sig.importance("hw")
    assert positions.shape == (3, 3) and np.unravel_index(np.argmax(positions), (3, 3)) == (1, 1)
    assert positions.sum() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="labels"):
        sig.importance("ox")


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"rank": 0}, ValueError, "rank must be a positive integer"),
        ({"rank": -2}, ValueError, "rank must be a positive integer"),
        ({"rank": True}, TypeError, "rank must be a positive integer"),
        ({"rank": 2.0}, TypeError, "rank must be a positive integer"),
        ({"rank": 13}, ValueError, r"rank = 13 exceeds 12, the largest useful CP rank of a tensor of shape \(3, 4"),
        ({"method": "hals"}, ValueError, "method must be one of 'als', 'lm'"),
        ({"init": "nvecs"}, ValueError, "init must be one of 'svd', 'random'"),
        ({"init": 3}, TypeError, "init must be one of"),
        ({"max_iter": -1}, ValueError, "max_iter must be a non-negative integer"),
        ({"tol": -1e-3}, ValueError, "tol must be a finite real number >= 0"),
        ({"tol": float("nan")}, ValueError, "tol must be a finite real number >= 0"),
        ({"ridge": -1.0}, ValueError, "ridge must be a finite real number >= 0"),
        ({"method": "lm", "ridge": 0.1}, ValueError, "ridge applies to method='als' only"),
        ({"line_search": "yes"}, TypeError, "line_search must be True or False"),
        ({"seed": "zero"}, TypeError, "seed must be None"),
    ],
)
def test_bad_arguments_are_refused(kwargs, error, message):
    kwargs = {"rank": 2, **kwargs}
    with pytest.raises(error, match=message):
        tnlib.cp(np.ones((3, 4, 5)), **kwargs)


@pytest.mark.parametrize("rank", [15000, 10**5, 10**30])
def test_a_rank_beyond_the_exact_bound_is_refused_before_anything_is_allocated(rank):
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=f"rank = {rank} exceeds 12"):
            tnlib.cp(np.ones((3, 4, 5)), rank)  # used to grow past 5 GB (15000) or ask for 74 GiB (1e5)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 2**20


def test_the_exact_bound_itself_is_a_valid_rank(rng):
    t = rng.standard_normal((3, 4, 5))  # every 3x4x5 tensor has an exact CP decomposition of rank 3 * 4 = 12
    model = tnlib.cp(t, 12, max_iter=5, seed=0)
    assert model.rank == 12
    with pytest.raises(ValueError, match="max_rank = 13 exceeds 12"):
        tnlib.cp_rank(t, 0.1, max_rank=13)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_a_cp_tensor_with_non_finite_values_is_refused(bad):
    weights, factors = np.ones(2), [np.ones((3, 2)), np.ones((4, 2))]
    with pytest.raises(ValueError, match="weights contains NaN or Inf"):
        tnlib.CPTensor(np.array([1.0, bad]), factors)
    factors[1][2, 0] = bad
    with pytest.raises(ValueError, match=r"factors\[1\] contains NaN or Inf"):
        tnlib.CPTensor(weights, factors)


def test_bad_tensors_and_warm_starts_are_refused(rng):
    with pytest.raises(ValueError, match="tensor must have at least 2 dimension"):
        tnlib.cp(np.ones(5), 1)
    with pytest.raises(TypeError, match="tensor must be real"):
        tnlib.cp(np.ones((3, 4), dtype=complex), 1)
    model = tnlib.cp(rng.standard_normal((3, 4, 5)), 2, max_iter=1)
    with pytest.raises(ValueError, match="init: a CPTensor warm start must have shape"):
        tnlib.cp(np.ones((3, 4, 5)), 3, init=model)
    with pytest.raises(ValueError, match="init: a CPTensor warm start must have shape"):
        tnlib.cp(np.ones((3, 4, 6)), 2, init=model)
    with pytest.raises(ValueError, match="factors\\[1\\] must have shape"):
        tnlib.CPTensor(np.ones(2), [np.ones((3, 2)), np.ones((4, 3))])
    with pytest.raises(ValueError, match="weights must have 1 dimensions"):
        tnlib.CPTensor(np.ones((2, 1)), [np.ones((3, 2))])
    with pytest.raises(ValueError, match="rel_error must lie in"):
        tnlib.cp_rank(np.ones((3, 4)), 1.5)
    with pytest.raises(ValueError, match="max_rank must be a positive integer"):
        tnlib.cp_rank(np.ones((3, 4)), 0.1, max_rank=0)
    with pytest.raises(TypeError, match="model must be a CPTensor"):
        tnlib.cp_significance(np.ones((3, 4)))


def test_solve_gram_falls_back_to_the_pseudo_inverse_on_singular_grams(backend, rng):
    from tnlib import _backend as B

    a = rng.standard_normal((6, 2)) @ rng.standard_normal((2, 4))  # rank 2: a 4x4 Gram of rank 2
    gram, rhs = a.T @ a, rng.standard_normal((3, 4))
    for g in (gram, np.zeros((4, 4))):
        out = backend.to_numpy(B.solve_gram(backend.asarray(rhs), backend.asarray(g)))
        np.testing.assert_allclose(out, rhs @ np.linalg.pinv(g, rcond=1e-10, hermitian=True), atol=1e-8)
    regular = gram + np.eye(4)
    out = backend.to_numpy(B.solve_gram(backend.asarray(rhs), backend.asarray(regular)))
    np.testing.assert_allclose(out, rhs @ np.linalg.inv(regular), atol=1e-12)


# ---------------------------------------------------------------- the fit's report, CPTensor.info


@pytest.mark.parametrize("method,options", [("als", {"line_search": False}), ("als", {}), ("lm", {})])
def test_cp_reports_its_fit_consistently_with_the_model(backend, rng, method, options):
    t = planted_cp(rng, (8, 7, 6), 3, noise=0.05)
    model = tnlib.cp(backend.asarray(t), 3, method=method, max_iter=200, seed=0, **options)
    info = model.info
    assert isinstance(info, CPFit) and info.ranks == (3,) and info.rank == 3 == model.rank
    assert info.method == method
    assert info.history == tuple(model.history) and info.iterations == len(model.history) > 0
    assert info.converged is model.converged
    dense = backend.to_numpy(model.to_dense())
    assert info.rel_error == pytest.approx(np.linalg.norm(t - dense) / np.linalg.norm(t), rel=1e-9)
    assert info.norm_loss == pytest.approx(1 - np.linalg.norm(dense) / np.linalg.norm(t), rel=1e-6)
    assert info.discarded_weight == pytest.approx(1 - (np.linalg.norm(dense) / np.linalg.norm(t)) ** 2, rel=1e-6)
    if not options:
        return
    # ALS without extrapolation ends at a least-squares update: the residual is orthogonal to the model
    assert info.discarded_weight == pytest.approx(info.rel_error**2, rel=1e-8)


def test_cp_report_is_exact_below_the_history_resolution(rng):
    t = planted_cp(rng, (8, 7, 6), 3, noise=1e-11)
    info = tnlib.cp(t, 3, method="lm", max_iter=300, seed=0).info
    assert info.rel_error == pytest.approx(1e-11, rel=0.2)  # the ALS history resolves only about 1e-8


def test_cp_report_may_show_a_model_heavier_than_the_tensor():
    """A warm start returned as is (max_iter=0) at twice the tensor: rel_error 1, norm_loss -1, weight -3."""
    factors = [np.eye(3)[:, :2], np.eye(4)[:, :2]]
    t = tnlib.CPTensor(np.array([2.0, 1.0]), factors).to_dense()
    model = tnlib.cp(t, 2, init=tnlib.CPTensor(np.array([4.0, 2.0]), factors), max_iter=0)
    assert (model.info.rel_error, model.info.norm_loss, model.info.discarded_weight) == pytest.approx((1, -1, -3))
    assert model.info.iterations == 0 and not model.info.converged and model.history == []


def test_cp_report_of_a_zero_tensor_is_zero():
    info = tnlib.cp(np.zeros((3, 4, 5)), 2, seed=0).info
    assert (info.rel_error, info.norm_loss, info.discarded_weight) == (0.0, 0.0, 0.0)


def test_cp_report_is_measured_in_double_and_at_any_scale(rng):
    t = planted_cp(rng, (6, 5, 4), 2, noise=1e-3)
    reference = tnlib.cp(t, 2, seed=0).info
    huge = tnlib.cp(t * 2.0**900, 2, seed=0).info  # squared norms would overflow without the exact rescaling
    assert huge.iterations == reference.iterations
    measures = ("rel_error", "norm_loss", "discarded_weight")
    assert [getattr(huge, m) for m in measures] == pytest.approx([getattr(reference, m) for m in measures], rel=1e-6)
    single = tnlib.cp(t.astype(np.float32), 2, seed=0)
    assert single.weights.dtype == np.float32 and isinstance(single.info.rel_error, float)
    assert single.info.rel_error == pytest.approx(reference.rel_error, rel=1e-3)


def test_cp_report_is_a_plain_dict(rng):
    info = tnlib.cp(planted_cp(rng, (5, 4, 3), 2), 2, max_iter=3, seed=0).info
    data = json.loads(json.dumps(info.to_dict()))
    assert data["ranks"] == [2] and data["method"] == "als" and data["iterations"] == 3
    assert data["history"] == list(info.history) and data["rel_error"] == info.rel_error


def test_a_hand_built_cp_tensor_has_no_report():
    model = tnlib.CPTensor(np.ones(2), [np.ones((3, 2)), np.ones((4, 2))])
    assert model.info is None and model.history == [] and model.converged is False


def test_a_cp_tensor_refuses_a_report_that_is_not_its_own(rng):
    info = tnlib.cp(rng.standard_normal((3, 4, 5)), 2, max_iter=1).info
    factors = [np.ones((3, 3)), np.ones((4, 3))]
    with pytest.raises(TypeError, match="info must be None or a CPFit, got dict"):
        tnlib.CPTensor(np.ones(3), factors, info.to_dict())
    with pytest.raises(ValueError, match=r"info must report the rank 3 of the weights, got ranks \(2,\)"):
        tnlib.CPTensor(np.ones(3), factors, info)
