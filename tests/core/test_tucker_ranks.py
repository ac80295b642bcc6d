"""Tucker rank selection: EVBMF against its theory and the VB free energy, the error rule's guarantee and minimality."""

import math

import numpy as np
import pytest
import scipy.optimize

import tnlib
from tests.oracles import planted_matrix
from tnlib.decompositions.tucker import unfold
from tnlib.decompositions.tucker_ranks import (
    RANK_RULES,
    _evbmf,
    _evbmf_ceiling,
    _free_energy,
    _noise_interval,
    _psi1,
    _squared_values,
    _threshold_tau,
)
from tnlib.demo import example_kernel
from tnlib.truncation import tail_weights


def x_bar(short, long):
    alpha = short / long
    tau = _threshold_tau(alpha)
    return (1 + tau) * (1 + alpha / tau)


def planted_plus_noise(rng, rows=200, cols=300, rank=10, sigma=1.0):
    """Rank ``rank`` with singular values 60..120 sigma, far above EVBMF's threshold (34.8 sigma at 200 x 300)
    and the noise edge sigma (sqrt(200) + sqrt(300)) = 31.5 sigma, plus i.i.d. N(0, sigma^2) noise."""
    signal = planted_matrix(rng, rows, cols, sigma * np.linspace(120, 60, rank))
    return signal + sigma * rng.standard_normal((rows, cols))


def test_threshold_root_is_the_papers_constant():
    assert _threshold_tau(1.0) == pytest.approx(2.5129, abs=1e-4)
    for alpha in (1.0, 0.5, 1 / 9, 3 / 4608):
        tau = _threshold_tau(alpha)
        assert math.log1p(tau) + alpha * math.log1p(tau / alpha) - tau == pytest.approx(0, abs=1e-12)
        assert tau > math.sqrt(alpha)  # so x_bar lies beyond the noise edge (1 + sqrt(alpha))**2
    assert math.sqrt(300 * x_bar(200, 300)) == pytest.approx(34.8, abs=0.05)


@pytest.mark.parametrize("short, long, gamma", [(4, 9, 8.0), (5, 5, 6.0), (3, 30, 8.0), (5, 5, 4.0)])
def test_one_component_free_energy_is_the_minimum_of_the_vb_free_energy(short, long, gamma):
    """M psi_1(x) against a direct minimization of the VB free energy of one component (sigma2 = 1).

    Posteriors a ~ N(a_hat, s_a I_M), b ~ N(b_hat, s_b I_L), priors N(0, c_a I_M), N(0, c_b I_L); with the
    prior variances at their optimum c_a = (a_hat^2 + M s_a) / M (likewise c_b) the free energy, less that of
    the empty model, is 2F = M log(c_a / s_a) + L log(c_b / s_b) - 2 a_hat b_hat gamma + (M c_a)(L c_b).
    """
    def vb_free_energy(p):
        a, b, log_sa, log_sb = p
        ma, lb = a * a + long * math.exp(log_sa), b * b + short * math.exp(log_sb)
        return long * math.log(ma / (long * math.exp(log_sa))) + short * math.log(lb / (short * math.exp(log_sb))) \
            - 2 * a * b * gamma + ma * lb

    direct = min(scipy.optimize.minimize(vb_free_energy, [math.sqrt(gamma)] * 2 + [-2.0] * 2, method="BFGS").fun, 0.0)
    x = gamma**2 / long
    analytic = long * _psi1(np.array([x]), short / long)[0] if x > x_bar(short, long) else 0.0
    assert direct == pytest.approx(analytic, abs=1e-7)


@pytest.mark.parametrize("seed", range(3))
def test_planted_rank_is_recovered_with_the_noise_estimated_or_given(seed):
    m = planted_plus_noise(np.random.default_rng(seed))
    assert tnlib.evbmf_rank(m) == tnlib.evbmf_rank(m, sigma2=1.0) == tnlib.evbmf_rank(m.T) == 10
    rank, sigma2, threshold = _evbmf(_squared_values(m), *m.shape, None)
    assert sigma2 == pytest.approx(1.0, rel=0.03)
    assert threshold == pytest.approx(34.8, rel=0.03)


def test_the_rank_follows_the_given_noise_variance(rng):
    m = planted_plus_noise(rng)
    values = np.linalg.svd(m, compute_uv=False)
    for sigma2 in (0.5, 2.0, 8.0):  # the threshold sigma sqrt(M x_bar) slides along the spectrum
        expected = int(np.count_nonzero(values > math.sqrt(sigma2 * 300 * x_bar(200, 300))))
        assert tnlib.evbmf_rank(m, sigma2=sigma2) == expected
    assert tnlib.evbmf_rank(m, sigma2=1e-9) == 200


def test_pure_noise_keeps_nothing_and_tucker_ranks_keeps_one(rng):
    assert tnlib.evbmf_rank(rng.standard_normal((200, 300))) == 0
    assert tnlib.tucker_ranks(rng.standard_normal((30, 40, 50))) == (1, 1, 1)
    assert tnlib.evbmf_rank(np.zeros((5, 7))) == 0 and tnlib.tucker_ranks(np.zeros((5, 7, 3))) == (1, 1, 1)


def test_a_noiseless_low_rank_matrix_gets_its_rank(rng):
    assert tnlib.evbmf_rank(rng.standard_normal((50, 7)) @ rng.standard_normal((7, 60))) == 7


def test_the_ceiling_binds_and_tucker_ranks_then_keeps_the_mode_whole(rng):
    assert _evbmf_ceiling(3, 4608) == 2 and _evbmf_ceiling(16, 144) == 14 and _evbmf_ceiling(1, 50) == 0
    wide = planted_matrix(rng, 3, 4608, [10.0, 5.0, 1.0])  # full rank, no noise floor
    assert tnlib.evbmf_rank(wide) == 2 and tnlib.tucker_ranks(wide) == (3, 3)
    assert tnlib.evbmf_rank(rng.standard_normal((1, 50))) == 0


def test_the_noise_variance_is_the_global_minimum_of_the_free_energy():
    """The output-channel unfolding of the trained kernel has two local minima (keeping 5 or 4)."""
    m = unfold(example_kernel().astype(np.float64), 0)
    sq, (short, long) = _squared_values(m), m.shape
    xb = x_bar(short, long)
    lower, upper = _noise_interval(sq, short, long, xb)

    def energy(log_sigma2):
        return _free_energy(log_sigma2, sq[sq / (long * math.exp(log_sigma2)) > xb], float(sq.sum()), short, long)

    grid = np.linspace(math.log(lower), math.log(upper), 2000)
    values = np.array([energy(g) for g in grid])
    local_minima = np.flatnonzero((values[1:-1] < values[:-2]) & (values[1:-1] < values[2:]))
    assert len(local_minima) >= 2
    rank, sigma2, _ = _evbmf(sq, short, long, None)
    assert lower <= sigma2 <= upper and energy(math.log(sigma2)) <= values.min() + 1e-12
    assert rank == 5


def test_real_kernel_ranks_are_those_documented():
    k = example_kernel()
    assert tnlib.tucker_ranks(k) == (5, 4, 3, 3) == tnlib.tucker_ranks(k.astype(np.float64))
    assert [tnlib.evbmf_rank(unfold(k, m)) for m in range(4)] == [5, 4, 2, 2]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("target", [0.05, 0.3, 0.6])
@pytest.mark.parametrize("modes", [None, (0, 1)])
def test_error_rule_meets_the_target_and_is_minimal(seed, target, modes):
    rng = np.random.default_rng(seed)
    k = rng.standard_normal((12, 10, 6, 4)) * np.linspace(3, 0.1, 12)[:, None, None, None]
    ranks = tnlib.tucker_ranks(k, modes=modes, rel_error=target, rule="error")
    for method in ("hosvd", "sthosvd", "hooi"):
        assert tnlib.tucker(k, ranks=ranks, modes=modes, method=method).rel_error(k) <= target * (1 + 1e-12)
    used = tuple(range(k.ndim)) if modes is None else modes
    assert tnlib.tucker(k, rel_error=target, modes=modes, method="hosvd").ranks == ranks  # the same per-mode share
    share = target**2 * float(np.sum(k**2)) / len(used)
    for mode, rank in zip(used, ranks):
        tails = tail_weights(np.linalg.svd(unfold(k, mode), compute_uv=False) ** 2)
        assert tails[rank] <= share * (1 + 1e-12)
        assert rank == 1 or tails[rank - 1] > share  # one less breaks this mode's share


def test_error_rule_keeps_a_mode_even_at_rel_error_one(rng):
    assert tnlib.tucker_ranks(rng.standard_normal((4, 5, 6)), modes=(1,), rel_error=1.0, rule="error") == (1,)


@pytest.mark.parametrize("rule", list(RANK_RULES))
def test_backends_agree_with_numpy(backend, rng, rule):
    spike = np.einsum("o,i,h,w->oihw", *(rng.standard_normal(d) for d in (16, 12, 3, 3)))
    k = rng.standard_normal((16, 12, 3, 3)) + spike
    rel_error = 0.4 if rule == "error" else None
    ours = tnlib.tucker_ranks(backend.asarray(k), rel_error=rel_error, rule=rule)
    assert ours == tnlib.tucker_ranks(k, rel_error=rel_error, rule=rule)
    assert rule == "error" or ours == (1, 1, 1, 1)  # EVBMF finds the planted rank-1 spike in every mode
    assert all(isinstance(r, int) for r in ours)
    assert tnlib.evbmf_rank(backend.asarray(unfold(k, 0))) == tnlib.evbmf_rank(unfold(k, 0))


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"rule": "vbmf"}, ValueError, "rule must be one of 'evbmf', 'error'"),
        ({"rule": "error"}, ValueError, "rel_error is required with rule='error'"),
        ({"rel_error": 0.3}, ValueError, "rel_error must be None with rule='evbmf'"),
        ({"rule": "error", "rel_error": 1.5}, ValueError, "rel_error must lie in"),
        ({"rule": "error", "rel_error": "0.3"}, TypeError, "rel_error must be a real number"),
        ({"modes": (0, 4)}, ValueError, "modes must be distinct integers in"),
        ({"modes": (1, 1)}, ValueError, "modes must be distinct"),
    ],
)
def test_bad_arguments_of_tucker_ranks(kwargs, error, message):
    with pytest.raises(error, match=message):
        tnlib.tucker_ranks(np.ones((8, 4, 3, 3)), **kwargs)


@pytest.mark.parametrize(
    "sigma2, error",
    [(0.0, ValueError), (-1.0, ValueError), (float("nan"), ValueError), (math.inf, ValueError),
     (True, TypeError), ("1", TypeError)],
)
def test_bad_sigma2(sigma2, error):
    with pytest.raises(error, match="sigma2"):
        tnlib.evbmf_rank(np.ones((4, 5)), sigma2=sigma2)


def test_bad_tensors():
    with pytest.raises(ValueError, match="matrix must have 2 dimensions"):
        tnlib.evbmf_rank(np.ones((2, 3, 4)))
    with pytest.raises(ValueError, match="NaN"):
        tnlib.evbmf_rank(np.full((3, 4), np.nan))
    with pytest.raises(TypeError, match="matrix must be real"):
        tnlib.evbmf_rank(np.ones((3, 4), dtype=complex))
    with pytest.raises(TypeError, match="tensor must be real"):
        tnlib.tucker_ranks(np.ones((3, 4, 2), dtype=complex))
    assert tnlib.tucker_ranks(np.ones((3, 4, 2), dtype=complex), rel_error=0.1, rule="error") == (1, 1, 1)
