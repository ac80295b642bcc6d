"""CP in swamps: the stopping rule (a window, tol=0 runs max_iter), LM's dense residual, truthful ``converged``.

The tensors are :func:`benchmarks.bench_cp.swamp_tensor`: exactly rank 3, ``30x30x9``, the first two components at
cosine ``c`` in every mode.  The thresholds are what ALS and LM reach here (noted beside each), with margin.
"""

import numpy as np
import pytest

import tnlib
from benchmarks.bench_cp import swamp_tensor
from tnlib.decompositions import cp_lm
from tnlib.decompositions.cp_fit import STOP_WINDOW, stalled
from tnlib.decompositions.cp_mttkrp import DimensionTree


@pytest.fixture(scope="module")
def swamps():
    return {c: swamp_tensor(c) for c in (0.9, 0.95, 0.99)}


def test_the_window_rule_follows_its_formula():
    flat = [0.5] * (STOP_WINDOW + 1)
    assert stalled(flat, 1e-8) and not stalled(flat[:-1], 1e-8)  # needs W + 1 errors
    assert not stalled(flat, 0.0)  # tol = 0 never stops
    falling = [0.5 * (1 - 1e-9) ** k for k in range(STOP_WINDOW + 1)]  # 3e-8 relative over the window
    assert stalled(falling, 1e-7) and not stalled(falling, 1e-8)
    assert stalled([0.5] * STOP_WINDOW + [0.6], 1e-8)  # an increase is no decrease
    assert not stalled([0.5] * 10 + [0.1] * STOP_WINDOW, 1e-8)  # a fall inside the window keeps it going


@pytest.mark.parametrize("method", ["als", "lm"])
def test_tol_zero_runs_every_iteration(swamps, method):
    # the SVD start sits on a plateau (0.065 for ALS, 0.080 for LM) that the old rule took for convergence
    model = tnlib.cp(swamps[0.9], 3, method=method, max_iter=60, tol=0, seed=0)
    assert len(model.history) == 60 and not model.converged


@pytest.mark.parametrize("cosine, init, max_iter", [
    (0.9, "svd", 1500),     # reaches 1.6e-8 in 442 sweeps (the old rule stopped after 3 at 0.065)
    (0.9, "random", 1500),  # 9.5e-9 in 421
    (0.95, "svd", 4000),    # 3.5e-8 in 1402 (old: 2 sweeps, 0.032)
    (0.95, "random", 4000),  # 2.3e-8 in 1411 (old: not converged after 1000)
])
def test_als_crosses_the_swamp_and_then_reports_convergence(swamps, cosine, init, max_iter):
    t = swamps[cosine]
    model = tnlib.cp(t, 3, init=init, max_iter=max_iter, seed=0)
    assert model.converged and len(model.history) > 100
    assert model.rel_error(t) < 1e-6


def test_als_reports_a_swamp_it_has_not_left(swamps):
    t = swamps[0.99]
    model = tnlib.cp(t, 3, max_iter=600, seed=0)  # 4.9e-4 after 600 sweeps, still falling
    assert not model.converged and len(model.history) == 600
    continued = tnlib.cp(t, 3, init=model, max_iter=300, tol=0)  # 4.0e-4: the error was still falling
    assert continued.rel_error(t) < 0.9 * model.rel_error(t)


@pytest.mark.parametrize("cosine, max_iter, reached", [
    (0.9, 200, 1e-14),   # 3.7e-16 in 56 steps (old LM: 2.9e-12, its error estimate's noise)
    (0.95, 200, 1e-14),  # 4.5e-16 in 80 (old: 1.5e-9)
    (0.99, 800, 1e-12),  # 2.6e-14 in 324
])
def test_lm_measures_its_steps_densely_and_reaches_round_off(swamps, cosine, max_iter, reached):
    t = swamps[cosine]
    model = tnlib.cp(t, 3, method="lm", init="random", max_iter=max_iter, seed=0)
    assert model.converged and len(model.history) < max_iter
    assert model.rel_error(t) < reached
    assert model.history[-1] == pytest.approx(model.rel_error(t), rel=1e-3, abs=1e-15)  # the history is dense


@pytest.mark.parametrize("method, init, cosine", [
    ("lm", "svd", 0.9),       # stops at once at 0.080: the SVD start is a stationary point for LM
    ("lm", "svd", 0.99),      # 0.0078
    ("als", "random", 0.99),  # 0.0078 after 35 sweeps
    ("als", "svd", 0.9),      # 1.6e-8: below that the error estimate is rounding noise
])
def test_reported_convergence_is_where_further_iterations_gain_nothing(swamps, method, init, cosine):
    t = swamps[cosine]
    model = tnlib.cp(t, 3, method=method, init=init, max_iter=2000, seed=0)
    assert model.converged
    continued = tnlib.cp(t, 3, method=method, init=model, max_iter=300, tol=0)
    error = model.rel_error(t)
    assert continued.rel_error(t) >= error * (1 - 1e-6) - 1e-7


def test_the_dense_residual_is_summed_block_by_block(rng, monkeypatch):
    shape = (7, 6, 5, 4)
    t = rng.standard_normal(shape)
    factors = [rng.standard_normal((d, 3)) for d in shape]
    expected = np.sum((t - tnlib.CPTensor(np.ones(3), factors).to_dense()) ** 2)
    tree = DimensionTree(shape)
    for block in (1, 25, 10**6):  # one row at a time (rows of 20 entries), a few rows, everything at once
        monkeypatch.setattr(cp_lm, "RESIDUAL_BLOCK", block)
        assert cp_lm.residual_sq(tree, t, factors) == pytest.approx(expected, rel=1e-12)
