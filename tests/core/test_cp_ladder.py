"""The CP rank ladder: planted recovery, errors that never increase, equality with warm-started ``cp``, metric."""

import numpy as np
import pytest

import tnlib
from tests.oracles import metric_rel_error, second_moment
from tnlib.decompositions.cp_ladder import _padded
from tnlib.metric import Metric

#: ``e_{k+1} <= e_k (1 + MONOTONE_RTOL)``: the ladder's guarantee, up to round-off.
MONOTONE_RTOL = 1e-10


def planted(rng, shape, rank):
    return tnlib.CPTensor(np.ones(rank), [rng.standard_normal((d, rank)) for d in shape]).to_dense()


def errors(ladder):
    return np.array([model.info.rel_error for model in ladder])


@pytest.mark.parametrize("method", list(tnlib.CP_METHODS))
def test_a_planted_rank_is_recovered_at_its_rung(backend, rng, method):
    t = planted(rng, (6, 5, 4), 3)
    ladder = tnlib.cp_ladder(backend.asarray(t), [1, 2, 3], method=method, sweeps=100, seed=0)
    assert [model.rank for model in ladder] == [1, 2, 3]
    assert ladder[-1].info.rel_error < 1e-8
    assert ladder[-1].rel_error(backend.asarray(t)) < 1e-8
    assert all(type(model.weights) is type(backend.asarray(t)) for model in ladder)
    for model in ladder:  # as cp returns them: unit-norm columns, non-negative weights in decreasing order
        weights = backend.to_numpy(model.weights)
        assert np.all(weights >= 0) and np.all(np.diff(weights) <= 0)
        np.testing.assert_allclose([np.linalg.norm(backend.to_numpy(f), axis=0) for f in model.factors], 1.0,
                                   rtol=1e-12)


@pytest.mark.parametrize("method", list(tnlib.CP_METHODS))
@pytest.mark.parametrize("sweeps", [1, 25])
def test_errors_never_increase_along_the_ladder(rng, method, sweeps):
    t = rng.standard_normal((8, 7, 3, 3))
    ladder = tnlib.cp_ladder(t, [1, 2, 3, 4, 6, 8, 12, 16, 24], method=method, sweeps=sweeps, seed=0)
    e = errors(ladder)
    assert np.all(e[1:] <= e[:-1] * (1 + MONOTONE_RTOL)), e
    np.testing.assert_allclose(e, [model.rel_error(t) for model in ladder], rtol=1e-12)
    assert all(model.info.iterations <= sweeps for model in ladder)


def test_the_padded_start_is_as_good_as_the_rung_below(rng):
    t = rng.standard_normal((8, 7, 3, 3))
    below = tnlib.cp(t, 5, max_iter=10, seed=0)
    padded = _padded(t, below, 9, np.random.default_rng(0))
    assert padded.rank == 9
    np.testing.assert_array_equal(padded.weights[:5], below.weights)  # the rung below, plus 4 new components
    for padded_factor, factor in zip(padded.factors, below.factors):
        np.testing.assert_array_equal(padded_factor[:, :5], factor)
    assert padded.rel_error(t) <= below.rel_error(t) * (1 + MONOTONE_RTOL)


def test_a_rung_is_cp_from_the_padded_warm_start(rng):
    t = rng.standard_normal((6, 5, 4))
    ladder = tnlib.cp_ladder(t, [2, 4], sweeps=10, tol=1e-6, seed=0)
    by_hand = np.random.default_rng(0)
    first = tnlib.cp(t, 2, max_iter=10, tol=1e-6, seed=by_hand)
    second = tnlib.cp(t, 4, init=_padded(t, first, 4, by_hand), max_iter=10, tol=1e-6, seed=by_hand)
    for rung, fit in zip(ladder, (first, second)):
        np.testing.assert_allclose(rung.weights, fit.weights, rtol=1e-10)
        np.testing.assert_allclose(rung.to_dense(), fit.to_dense(), atol=1e-12)
        assert rung.info.history == pytest.approx(fit.info.history, rel=1e-10)


def test_a_ridge_rung_is_ridge_cp_from_the_padded_warm_start(rng):
    t = rng.standard_normal((6, 5, 4))
    ladder = tnlib.cp_ladder(t, [2, 4], sweeps=10, tol=1e-6, seed=0, ridge=0.05)
    by_hand = np.random.default_rng(0)
    first = tnlib.cp(t, 2, max_iter=10, tol=1e-6, seed=by_hand, ridge=0.05)
    second = tnlib.cp(t, 4, init=_padded(t, first, 4, by_hand), max_iter=10, tol=1e-6, seed=by_hand, ridge=0.05)
    for rung, fit in zip(ladder, (first, second)):
        np.testing.assert_allclose(rung.to_dense(), fit.to_dense(), atol=1e-12)


def border_rank_tensor(rng):
    """``a a b + a b a + b a a``: rank 3, but the limit of rank-2 tensors, so a rank-2 fit has no minimum."""
    a, b = rng.standard_normal(4), rng.standard_normal(4)
    return sum(np.einsum("i,j,k->ijk", *legs) for legs in ((a, a, b), (a, b, a), (b, a, a)))


def test_a_ridge_keeps_the_terms_of_a_degenerate_fit_bounded(rng):
    t = border_rank_tensor(rng)
    norm = np.linalg.norm(t)
    plain, ridged = (tnlib.cp_ladder(t, [1, 2], sweeps=500, tol=0, seed=0, ridge=ridge)[-1] for ridge in (0.0, 0.01))
    # without the penalty the two terms grow and cancel ever more closely as the sweeps go on
    assert np.sum(plain.weights) > 5 * norm and plain.info.rel_error < 0.01
    # the penalty stays below the objective's value at zero weights, ||T||^2
    assert np.sum(ridged.weights**2) <= norm**2 / 0.01
    assert np.sum(ridged.weights) < 2.5 * norm and ridged.info.rel_error < 0.1


def test_ranks_are_fitted_in_increasing_order_once(rng):
    ladder = tnlib.cp_ladder(rng.standard_normal((6, 5, 4)), np.array([4, 2, 4, 1]), sweeps=2, seed=0)
    assert [model.rank for model in ladder] == [1, 2, 4]


def test_single_precision_is_fitted_in_double_and_returned_in_single(rng):
    t = rng.standard_normal((6, 5, 4))
    single, double = (tnlib.cp_ladder(x, [2, 3], sweeps=5, seed=0) for x in (t.astype(np.float32), t))
    assert all(model.weights.dtype == np.float32 for model in single)
    np.testing.assert_allclose(errors(single), errors(double), rtol=1e-5)


@pytest.mark.parametrize("method", list(tnlib.CP_METHODS))
def test_the_metric_ladder_is_the_ladder_of_the_metric_space_tensor(backend, rng, method):
    t = planted(rng, (6, 5, 4), 3) + 0.1 * rng.standard_normal((6, 5, 4))
    metric = {"a": second_moment(rng, 6), "c": second_moment(rng, 4)}
    ranks = [1, 2, 3, 5]
    ladder = tnlib.cp_ladder(backend.asarray(t), ranks, method=method, sweeps=20, seed=0, metric=metric)
    measured = [metric_rel_error(t, backend.to_numpy(model.to_dense()), metric, "abc") for model in ladder]
    np.testing.assert_allclose(errors(ladder), measured, rtol=1e-8)
    assert np.all(errors(ladder)[1:] <= errors(ladder)[:-1] * (1 + MONOTONE_RTOL))
    space = Metric.build(metric, "abc", t)
    plain = tnlib.cp_ladder(space.to_metric_space(t), ranks, method=method, sweeps=20, seed=0)
    for rung, fit in zip(ladder, plain):
        np.testing.assert_allclose(backend.to_numpy(rung.to_dense()), space.from_metric_space(fit.to_dense()),
                                   atol=1e-10 * np.linalg.norm(t))
        assert rung.info.rel_error == pytest.approx(fit.info.rel_error, rel=1e-10)


@pytest.mark.parametrize("kwargs, error, message", [
    ({"ranks": []}, ValueError, "ranks must hold at least one rank"),
    ({"ranks": 3}, TypeError, "ranks must be a sequence of positive integers, got 3"),
    ({"ranks": "12"}, TypeError, "ranks must be a sequence of positive integers, got .12."),
    ({"ranks": [1, 2.0]}, TypeError, r"ranks\[1\] must be a positive integer, got 2.0"),
    ({"ranks": [0, 2]}, ValueError, r"ranks\[0\] must be a positive integer"),
    ({"ranks": [2, 13]}, ValueError, r"ranks\[1\] = 13 exceeds 12, the largest useful CP rank"),
    ({"sweeps": 0}, ValueError, "sweeps must be a positive integer"),
    ({"sweeps": 2.5}, TypeError, "sweeps must be a positive integer, got 2.5"),
    ({"tol": -1.0}, ValueError, "tol"),
    ({"method": "newton"}, ValueError, "method must be one of 'als', 'lm'"),
    ({"seed": "0"}, TypeError, "seed must be None"),
    ({"ridge": -0.1}, ValueError, "ridge must be a finite real number >= 0"),
    ({"ridge": 0.1, "method": "lm"}, ValueError, "ridge applies to method='als' only"),
    ({"metric": {"ab": np.eye(12)}}, ValueError, "splits the group 'ab'; give one metric per label"),
])
def test_bad_input_is_refused_naming_the_argument(kwargs, error, message):
    arguments = {"ranks": [1, 2], **kwargs}
    with pytest.raises(error, match=message):
        tnlib.cp_ladder(np.ones((3, 4, 5)), **arguments)


def test_bad_tensors_are_refused(rng):
    with pytest.raises(TypeError, match="tensor must be real for cp_ladder"):
        tnlib.cp_ladder(rng.standard_normal((3, 4)) + 1j, [1])
    with pytest.raises(ValueError, match=r"tensor must have at least 2 dimension\(s\)"):
        tnlib.cp_ladder(np.ones(4), [1])
