"""Tucker rank selection: by an error target, or by EVBMF on the mode unfoldings.

Two rules (a registry, ``RANK_RULES``), each giving one rank per decomposed mode
from the singular values ``s_k`` of the mode unfoldings ``T_(m)`` of ``T``:

``"error"``
    The smallest ``r_m`` whose discarded weight ``sum_{k >= r_m} s_k(T_(m))**2``
    is at most ``rel_error**2 ||T||**2 / #modes``.  HOSVD's squared error is at
    most the sum of these tails, and so is ST-HOSVD's (each of its steps
    truncates an unfolding whose singular values are at most those of
    ``T_(m)``, Vannieuwenhoven et al. 2012), so ``tucker(T, ranks=...,
    method="hosvd" | "sthosvd" | "hooi")`` meets ``rel_error``.
``"evbmf"``
    The rank that empirical variational Bayesian matrix factorization retains
    on each unfolding (:func:`evbmf_rank`), the rule Kim et al. (2015) used for
    the Tucker-2 compression of conv kernels.

EVBMF models a matrix as low rank plus i.i.d. Gaussian noise, and its theory is
asymptotic in both dimensions.  On small or very rectangular matrices it is
brittle: with the noise variance estimated it never keeps more than
``H = ceil(LM / (L + M)) - 1`` components (2 of a ``3 x 4608`` spatial
unfolding, 14 of a ``16 x 144`` channel unfolding), keeps none of a vector, and
may keep none of a matrix whose spectrum has no clear noise floor (the 3 RGB
input channels of a first conv layer).  Its free energy is not unimodal in the
noise variance either, so a single bounded 1-D search (as in the widely copied
implementations) can stop at a local minimum and a different rank.  The policy:

* :func:`evbmf_rank` reports EVBMF's rank as it is, 0 and ``H`` included, with
  the noise variance at the global minimum of the free energy;
* :func:`tucker_ranks` keeps a mode whole where EVBMF's ceiling binds (a rank
  of ``H`` is censored: the data may support more, so the mode gets the full
  rank ``min(d_m, prod of the other sizes)`` of its unfolding), and raises a
  rank of 0 to 1 (a mode never vanishes).  On a 3 x 3 kernel this leaves the
  spatial modes whole almost always, as Tucker-2 does; Kim et al. applied EVBMF
  to the two channel modes only (``modes=(0, 1)``), which is what we recommend.

docs/concepts.md §12 records what EVBMF gives on trained ResNet kernels.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import scipy.optimize

from tnlib import _backend as B
from tnlib._validation import check_array, check_choice, check_fraction
from tnlib.decompositions.tucker import _check_modes, unfold
from tnlib.svd import squared_singular_values
from tnlib.truncation import TruncationSpec

Array = Any


def _squared_values(matrix: Array) -> np.ndarray:
    """``s_k**2`` of a validated matrix, descending, as host float64."""
    return B.to_host(squared_singular_values(matrix)).astype(np.float64)


def _threshold_tau(alpha: float) -> float:
    """``tau_bar(alpha)``: the positive root of ``log(1 + t) + alpha log(1 + t / alpha) - t``.

    The function is 0 at ``t = 0``, concave, positive on ``(0, tau_bar)`` and
    negative after; ``tau_bar(1) = 2.5129...``.  It is positive at ``alpha / 2``
    and negative at 10 for every ``alpha`` in ``(0, 1]``.
    """
    return scipy.optimize.brentq(lambda t: math.log1p(t) + alpha * math.log1p(t / alpha) - t,
                                 alpha / 2, 10.0, xtol=1e-14, rtol=4 * np.finfo(float).eps)


def _psi1(x: np.ndarray, alpha: float) -> np.ndarray:
    """``psi_1(x) = log(1 + tau) + alpha log(1 + tau / alpha) - tau`` with ``tau = tau(x)``, for ``x >= x_bar``."""
    z = x - 1.0 - alpha
    tau = 0.5 * (z + np.sqrt(np.maximum(z * z - 4.0 * alpha, 0.0)))
    return np.log1p(tau) + alpha * np.log1p(tau / alpha) - tau


def _evbmf_ceiling(short: int, long: int) -> int:
    """``H = ceil(L / (1 + alpha)) - 1 = ceil(LM / (L + M)) - 1``: the most EVBMF keeps with ``sigma2`` estimated."""
    return -(-short * long // (short + long)) - 1


def _noise_interval(sq: np.ndarray, short: int, long: int, x_bar: float) -> tuple[float, float]:
    """Where the estimated noise variance lies: ``[max(gamma_{H+1}**2 / (M x_bar), mean tail / M), ||V||**2 / LM]``."""
    upper = float(sq.sum()) / (short * long)
    most = _evbmf_ceiling(short, long)
    lower = max(sq[most] / (long * x_bar), float(sq[most:].sum()) / (long * (short - most)),
                np.finfo(float).eps * upper)
    return lower, upper


def _free_energy(log_sigma2: float, kept: np.ndarray, total: float, short: int, long: int) -> float:
    """EVBMF's ``2F / (LM)`` up to a constant, at ``sigma2`` and with the squared singular values ``kept`` retained."""
    sigma2 = math.exp(log_sigma2)
    retained = float(_psi1(kept / (long * sigma2), short / long).sum())
    return log_sigma2 + total / (short * long * sigma2) + retained / short


def _estimate_noise(sq: np.ndarray, short: int, long: int, x_bar: float) -> float:
    """The noise variance minimizing EVBMF's free energy over its admissible interval (0 for a zero matrix).

    Component ``h`` is kept while ``sigma2 < sq_h / (M x_bar)``: between these
    breakpoints the kept set is fixed and the free energy smooth, but across
    them it need not be unimodal, so each piece is minimized on its own.
    """
    total = float(sq.sum())
    lower, upper = _noise_interval(sq, short, long, x_bar)
    if not lower < upper:  # a zero matrix, or a vector (nothing can be kept)
        return upper
    breaks = sq / (long * x_bar)
    edges = [upper, *breaks[(breaks > lower) & (breaks < upper)], lower]
    best, best_value = upper, math.inf
    for high, low in zip(edges[:-1], edges[1:]):
        kept = sq[breaks >= high]
        piece = scipy.optimize.minimize_scalar(_free_energy, bounds=(math.log(low), math.log(high)),
                                               args=(kept, total, short, long), method="bounded",
                                               options={"xatol": 1e-9})
        if piece.fun < best_value:
            best, best_value = math.exp(piece.x), piece.fun
    return best


def _evbmf(sq: np.ndarray, rows: int, cols: int, sigma2: float | None) -> tuple[int, float, float]:
    """EVBMF on the squared singular values of a ``rows x cols`` matrix: ``(rank, sigma2, threshold)``."""
    short, long = sorted((rows, cols))
    alpha = short / long
    tau_bar = _threshold_tau(alpha)
    x_bar = (1.0 + tau_bar) * (1.0 + alpha / tau_bar)
    if sigma2 is None:
        sigma2 = _estimate_noise(sq, short, long, x_bar)
    threshold = math.sqrt(long * sigma2 * x_bar)
    rank = int(np.count_nonzero(sq > threshold**2)) if sigma2 > 0 else 0
    return rank, sigma2, threshold


def _check_sigma2(sigma2: Any) -> float | None:
    if sigma2 is None:
        return None
    if isinstance(sigma2, bool) or not isinstance(sigma2, numbers.Real):
        raise TypeError(f"sigma2 must be None or a positive real number, got {sigma2!r}")
    if not 0.0 < float(sigma2) < math.inf:  # also refuses NaN
        raise ValueError(f"sigma2 must be a positive finite real number (the noise variance), got {sigma2!r}")
    return float(sigma2)


def _check_real(x: Array, name: str) -> None:
    if B.is_complex(x):
        raise TypeError(f"{name} must be real for EVBMF (a model of real Gaussian noise), got {B.dtype_name(x)}")


def evbmf_rank(matrix: Array, sigma2: float | None = None) -> int:
    """The rank that empirical variational Bayesian matrix factorization retains.

    The global analytic solution of Nakajima, Sugiyama, Babacan and Tomioka
    (2013, JMLR 14), computed from the singular values ``gamma_h`` of the
    ``L x M`` matrix (``L <= M``, transposed if needed), in float64 on the host.
    With ``alpha = L / M``, let ``tau_bar`` be the positive root of
    ``log(1 + t) + alpha log(1 + t / alpha) - t = 0`` (``2.5129`` at
    ``alpha = 1``) and ``x_bar = (1 + tau_bar)(1 + alpha / tau_bar)``.  EVBMF
    keeps exactly the components above the threshold

        gamma_h > gamma_EVB = sigma * sqrt(M x_bar)
                            = sigma * sqrt(L + M + sqrt(LM) (kappa + 1 / kappa)),   kappa = tau_bar / sqrt(alpha).

    Unknown ``sigma2`` is estimated (Nakajima, Tomioka, Sugiyama and Babacan
    2015, JMLR 16) by minimizing the free energy, which with
    ``x_h = gamma_h**2 / (M sigma2)`` is, per entry and up to a constant,

        2F / (LM) = log(sigma2) + sum_h gamma_h**2 / (LM sigma2) + (1 / L) sum_{h: x_h > x_bar} psi_1(x_h),
        psi_1(x) = log(1 + tau) + alpha log(1 + tau / alpha) - tau,
        tau(x) = (x - 1 - alpha + sqrt((x - 1 - alpha)**2 - 4 alpha)) / 2,

    over ``sigma2`` in ``[max(gamma_{H+1}**2 / (M x_bar), sum_{h>H} gamma_h**2 /
    (M (L - H))), ||V||**2 / (LM)]`` with ``H = ceil(L / (1 + alpha)) - 1``, so
    that at most ``H`` components survive.  Component ``h`` counts while
    ``sigma2 < gamma_h**2 / (M x_bar)``; between these breakpoints the free
    energy is smooth, across them it need not be unimodal, so each piece is
    minimized by ``scipy.optimize.minimize_scalar`` (bounded) and the lowest
    kept (on the 592 unfoldings of four trained ResNets it never lay above a
    20,000-point grid search).  The lower end is at least ``eps ||V||**2 / (LM)``,
    so a noiseless low-rank matrix gets its numerical rank.

    Parameters
    ----------
    matrix
        A real matrix of any backend.
    sigma2
        The noise variance per entry, if known (a positive real); estimated when ``None``.

    Returns
    -------
    int
        The number of retained components, in ``[0, min(L, M)]``: 0 when nothing
        rises above the noise, and at most ``H`` with ``sigma2`` estimated (so 0
        for a vector).  See the module notes on how brittle this is on small or
        very rectangular matrices, and :func:`tucker_ranks` for the policy.

    Examples
    --------
    >>> import numpy as np, tnlib
    >>> rng = np.random.default_rng(0)
    >>> low_rank = rng.standard_normal((60, 5)) @ rng.standard_normal((5, 80))
    >>> tnlib.evbmf_rank(low_rank + 0.1 * rng.standard_normal((60, 80)))
    5
    """
    a = check_array(matrix, "matrix", ndim=2)
    _check_real(a, "matrix")
    sigma2 = _check_sigma2(sigma2)
    a, exponent = B.unit_scaled(a)  # exact; a known noise variance scales with the square
    sigma2 = None if sigma2 is None else math.ldexp(sigma2, -2 * exponent)
    return _evbmf(_squared_values(a), a.shape[0], a.shape[1], sigma2)[0]


def _error_rule(sq: np.ndarray, rows: int, cols: int, rel_error: float | None, n_modes: int) -> int:
    return TruncationSpec(rel_error=rel_error / math.sqrt(n_modes)).kept_rank(sq)


def _evbmf_rule(sq: np.ndarray, rows: int, cols: int, rel_error: float | None, n_modes: int) -> int:
    """EVBMF's rank, or the unfolding's full rank where EVBMF's ceiling binds (the rank is censored there)."""
    short, long = sorted((rows, cols))
    rank = _evbmf(sq, rows, cols, None)[0]
    return short if rank == _evbmf_ceiling(short, long) else rank


RANK_RULES: dict[str, Callable[[np.ndarray, int, int, float | None, int], int]] = {
    "evbmf": _evbmf_rule,
    "error": _error_rule,
}


def tucker_ranks(
    tensor: Array, modes: Sequence[int] | None = None, rel_error: float | None = None, rule: str = "evbmf"
) -> tuple[int, ...]:
    """Multilinear ranks for :func:`tucker`, one per mode in ``modes`` (all by default).

    Parameters
    ----------
    tensor
        Array of any order and backend.
    modes
        The modes to be decomposed, as for :func:`tucker`; ``(0, 1)`` of a conv
        kernel is Tucker-2, where Kim et al. (2015) applied EVBMF.
    rel_error
        With ``rule="error"`` (required there): the target for
        ``||T - T~||_F / ||T||_F``.  Must be ``None`` with ``rule="evbmf"``.
    rule
        ``"evbmf"`` (default): :func:`evbmf_rank` of each mode unfolding ``T_(m)``
        (the mode's index as rows); where it reaches its ceiling ``H`` the mode
        is kept whole (the unfolding's full rank), where it is 0 it becomes 1.
        ``"error"``: per mode the smallest rank
        whose discarded weight ``sum_{k >= r} s_k(T_(m))**2`` is at most
        ``rel_error**2 ||T||**2 / len(modes)``, which guarantees ``rel_error``
        for ``tucker(tensor, ranks=..., modes=modes)`` with ``"hosvd"``,
        ``"sthosvd"`` or ``"hooi"``.

    Returns
    -------
    tuple of int
        One rank per entry of ``modes``, each in ``[1, d_m]``.

    Examples
    --------
    >>> import numpy as np, tnlib
    >>> k = np.random.default_rng(0).standard_normal((16, 8, 3, 3))
    >>> ranks = tnlib.tucker_ranks(k, modes=(0, 1), rel_error=0.5, rule="error")
    >>> tnlib.tucker(k, ranks=ranks, modes=(0, 1), method="hosvd").rel_error(k) <= 0.5
    True
    """
    x = check_array(tensor, "tensor")
    modes = _check_modes(modes, x.ndim)
    check_choice(rule, "rule", RANK_RULES)
    if rule == "error" and rel_error is None:
        raise ValueError("rel_error is required with rule='error' (the target for ||T - T~|| / ||T||), got None")
    if rule == "evbmf" and rel_error is not None:
        raise ValueError(f"rel_error must be None with rule='evbmf' (EVBMF sets no error target; use "
                         f"rule='error' for one), got {rel_error!r}")
    rel_error = None if rel_error is None else check_fraction(rel_error, "rel_error")
    if rule == "evbmf":
        _check_real(x, "tensor")
    x, _ = B.unit_scaled(x)  # exact, and both rules are scale-invariant
    ranks = []
    for mode in modes:
        matrix = unfold(x, mode)
        rank = RANK_RULES[rule](_squared_values(matrix), matrix.shape[0], matrix.shape[1], rel_error, len(modes))
        ranks.append(min(max(rank, 1), x.shape[mode]))
    return tuple(ranks)
