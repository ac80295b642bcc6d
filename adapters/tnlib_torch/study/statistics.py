"""The uncertainty of a study's findings: accuracies, paired comparisons of two models, rank correlations.

A study evaluates every model on the same test samples in the same order, so what it measures is a
count of hits out of ``n`` samples, and two models compare sample by sample (their ``hits``, see
:mod:`tnlib_torch.study.hits`).  Three pieces, each with a confidence interval at ``confidence``
(0.95 unless told):

- :func:`accuracy_interval`: the Wilson score interval of an accuracy ``k / n``
  (``scipy.stats.binomtest(k, n).proportion_ci(method="wilson")``);
- :func:`paired_comparison`: the difference of two accuracies on the same samples, from the
  discordant pairs (the samples one model got right and the other wrong), with the Agresti-Min
  interval, the exact McNemar test of "different" and the non-inferiority test of "within
  ``tolerance`` of the baseline";
- :func:`spearman` and :func:`spearman_difference`: Spearman's rank correlation with the Fisher-z
  interval of Bonett and Wright's variance, and the seeded paired bootstrap of the difference of two
  rank correlations that share a variable (which of two predictors ranks a target better).

Nothing here needs torch.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from typing import Any

import numpy as np
from scipy import special, stats

from tnlib._validation import check_int

__all__ = [
    "NOT_WITHIN",
    "UNDECIDED",
    "WITHIN",
    "Correlation",
    "PairedComparison",
    "accuracy_interval",
    "paired_comparison",
    "spearman",
    "spearman_difference",
]

#: The verdicts of :meth:`PairedComparison.verdict`.
WITHIN, NOT_WITHIN, UNDECIDED = "within", "not within", "undecided"


def _check_confidence(confidence: object) -> float:
    """A confidence level in (0, 1)."""
    if isinstance(confidence, bool) or not isinstance(confidence, numbers.Real):
        raise TypeError(f"confidence must be a real number in (0, 1), got {type(confidence).__name__}")
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1) (0.95: a 95% interval), got {confidence!r}")
    return float(confidence)


def _normal_quantile(confidence: float) -> float:
    """``z`` with ``P(|Z| <= z) = confidence`` for a standard normal ``Z``."""
    return float(special.ndtri(0.5 + confidence / 2))


def accuracy_interval(hits: int, count: int, confidence: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of the accuracy ``hits / count``.

    The set of proportions ``p`` whose score test ``|k - n p| / sqrt(n p (1 - p)) <= z`` accepts the
    observed count: centred at ``(k + z^2/2) / (n + z^2)``, inside [0, 1] and never of zero width,
    also at ``k = 0`` or ``k = n`` (where the Wald interval ``p +- z sqrt(p (1 - p) / n)`` collapses).

    Raises
    ------
    TypeError, ValueError
        ``count`` is not a positive int, ``hits`` not an int in ``[0, count]``, ``confidence`` not in (0, 1).

    Examples
    --------
    >>> [round(end, 4) for end in accuracy_interval(8, 10)]
    [0.4902, 0.9433]
    """
    count = check_int(count, "count", 1)
    hits = check_int(hits, "hits", 0, count)
    confidence = _check_confidence(confidence)
    interval = stats.binomtest(hits, count).proportion_ci(confidence_level=confidence, method="wilson")
    return float(interval.low), float(interval.high)


def _hit_array(hits: Any, name: str) -> np.ndarray:
    """``hits`` as a one-dimensional boolean array."""
    array = np.asarray(hits)
    if array.dtype != np.bool_ or array.ndim != 1 or not array.size:
        raise TypeError(f"{name} must be a non-empty one-dimensional boolean array (a model's hit per sample), got "
                        f"{type(hits).__name__} of dtype {array.dtype} and shape {array.shape}")
    return array


@dataclasses.dataclass(frozen=True)
class PairedComparison:
    """A model against a baseline on the same ``count`` samples (:func:`paired_comparison`).

    Attributes
    ----------
    count : int
        The samples.
    gained, lost : int
        The discordant pairs: samples the model gets right and the baseline wrong, and the reverse.
    difference : float
        The model's accuracy less the baseline's, ``(gained - lost) / count``.
    low, high : float
        The Agresti-Min interval of the difference at ``confidence``.
    p_value : float
        The exact McNemar test that the two accuracies are equal (two-sided): ``lost`` out of
        ``gained + lost`` discordant pairs against a fair coin; 1 without discordant pairs.
    tolerance : float
        The drop of accuracy "within" allows.
    confidence : float
        Of the interval.
    """

    count: int
    gained: int
    lost: int
    difference: float
    low: float
    high: float
    p_value: float
    tolerance: float
    confidence: float

    @property
    def verdict(self) -> str:
        """Whether the model is within ``tolerance`` of the baseline: a non-inferiority test.

        ``"within"`` if the interval's lower end is above ``-tolerance`` (the drop is smaller than the
        tolerance at a one-sided level ``(1 - confidence) / 2``), ``"not within"`` if its upper end is
        below ``-tolerance`` (the drop is larger), else ``"undecided"``: the samples cannot tell.
        """
        if self.low > -self.tolerance:
            return WITHIN
        if self.high < -self.tolerance:
            return NOT_WITHIN
        return UNDECIDED


def paired_comparison(hits: Any, baseline_hits: Any, tolerance: float = 0.01,
                      confidence: float = 0.95) -> PairedComparison:
    """Compare a model with a baseline evaluated on the same samples, from their hits sample by sample.

    Only the discordant pairs inform the difference: with ``b`` samples the model gets right and the
    baseline wrong and ``c`` the reverse, out of ``n``, the difference of accuracies is ``(b - c) / n``.
    Its interval is Agresti and Min's (2005): the Wald interval of the paired difference after adding
    one half to each of the four cells of the 2 x 2 table, ``d' +- z sqrt((b' + c') - (b' - c')^2 / n') / n'``
    with ``b' = b + 1/2``, ``c' = c + 1/2``, ``n' = n + 2``, clipped to [-1, 1]; unlike the plain Wald
    interval it does not collapse to a point when there are no discordant pairs.  The exact McNemar
    p-value is the two-sided binomial test of ``c`` out of ``b + c`` at one half.

    Parameters
    ----------
    hits, baseline_hits
        Boolean arrays of the same length: whether each model classified each sample right
        (:func:`tnlib_torch.study.hits.unpack_hits`).
    tolerance
        The drop of accuracy in [0, 1) that :attr:`PairedComparison.verdict` calls within.
    confidence
        Of the interval, in (0, 1).

    Raises
    ------
    TypeError, ValueError
        Arrays that are not one-dimensional, boolean and of the same length; a bad ``tolerance`` or
        ``confidence``.

    Examples
    --------
    >>> import numpy as np
    >>> base = np.array([True] * 90 + [False] * 10)
    >>> model = base.copy(); model[:5] = False          # 5 samples lost, none gained
    >>> comparison = paired_comparison(model, base)
    >>> comparison.difference, comparison.lost, round(comparison.p_value, 4), comparison.verdict
    (-0.05, 5, 0.0625, 'undecided')
    """
    hits, baseline_hits = _hit_array(hits, "hits"), _hit_array(baseline_hits, "baseline_hits")
    if hits.shape != baseline_hits.shape:
        raise ValueError(f"hits and baseline_hits must be of the same samples, got {hits.size} and "
                         f"{baseline_hits.size} samples")
    if isinstance(tolerance, bool) or not isinstance(tolerance, numbers.Real) or not 0 <= tolerance < 1:
        raise ValueError(f"tolerance must be a real number in [0, 1) (0.01: one point), got {tolerance!r}")
    confidence = _check_confidence(confidence)
    count = int(hits.size)
    gained, lost = int(np.sum(hits & ~baseline_hits)), int(np.sum(~hits & baseline_hits))
    b, c, n = gained + 0.5, lost + 0.5, count + 2
    half = _normal_quantile(confidence) * math.sqrt((b + c) - (b - c) ** 2 / n) / n
    p_value = float(stats.binomtest(lost, gained + lost).pvalue) if gained + lost else 1.0
    return PairedComparison(count=count, gained=gained, lost=lost, difference=(gained - lost) / count,
                            low=max(-1.0, (b - c) / n - half), high=min(1.0, (b - c) / n + half),
                            p_value=p_value, tolerance=float(tolerance), confidence=confidence)


@dataclasses.dataclass(frozen=True)
class Correlation:
    """A rank correlation and its interval (:func:`spearman`, :func:`spearman_difference`).

    Attributes
    ----------
    rho : float
        Spearman's rank correlation (or a difference of two).
    low, high : float
        Its interval at ``confidence``.
    count : int
        The pairs it is computed from.
    p_value : float or None
        Of the test that the correlation is zero (:func:`scipy.stats.spearmanr`); ``None`` for a difference.
    confidence : float
        Of the interval.
    method : str
        How the interval was made, in words.
    """

    rho: float
    low: float
    high: float
    count: int
    p_value: float | None
    confidence: float
    method: str


def _pairs(x: Any, y: Any, names: tuple[str, str], minimum: int) -> tuple[np.ndarray, np.ndarray]:
    """``x`` and ``y`` as finite float vectors of one length >= ``minimum``, neither constant."""
    arrays = []
    for value, name in zip((x, y), names):
        try:
            array = np.asarray(value, dtype=float)
        except (TypeError, ValueError):
            raise TypeError(f"{name} must be a sequence of real numbers, got {type(value).__name__}") from None
        if array.ndim != 1 or not np.all(np.isfinite(array)):
            raise ValueError(f"{name} must be a one-dimensional sequence of finite numbers, got shape {array.shape}")
        arrays.append(array)
    if arrays[0].size != arrays[1].size:
        raise ValueError(f"{names[0]} and {names[1]} must be paired, of one length; got {arrays[0].size} and "
                         f"{arrays[1].size}")
    if arrays[0].size < minimum:
        raise ValueError(f"a rank correlation with an interval needs at least {minimum} pairs, got {arrays[0].size}")
    for array, name in zip(arrays, names):
        if np.ptp(array) == 0:
            raise ValueError(f"{name} is constant: its rank correlation with anything is undefined")
    return arrays[0], arrays[1]


def spearman(x: Any, y: Any, confidence: float = 0.95) -> Correlation:
    """Spearman's rank correlation of ``x`` and ``y`` (ties get their average rank) with its interval.

    The interval is Fisher's ``z = atanh(rho)`` plus and minus ``z_q sqrt((1 + rho^2 / 2) / (n - 3))``,
    the variance of Bonett and Wright (2000) for Spearman's rho, mapped back by ``tanh``; the p-value is
    :func:`scipy.stats.spearmanr`'s.  The interval is a normal approximation, trustworthy from about 10
    pairs; at ``|rho| = 1`` it shrinks to the point.  It assumes independent pairs.

    Raises
    ------
    ValueError
        Fewer than 4 pairs, non-finite values, sequences of different lengths, a constant sequence
        (the correlation is undefined).

    Examples
    --------
    >>> correlation = spearman([1, 2, 3, 4, 5, 6], [2, 1, 4, 3, 6, 5])
    >>> round(correlation.rho, 4), [round(end, 3) for end in (correlation.low, correlation.high)]
    (0.8286, [-0.127, 0.986])
    """
    x, y = _pairs(x, y, ("x", "y"), 4)
    confidence = _check_confidence(confidence)
    result = stats.spearmanr(x, y)
    rho = float(result.statistic)
    half = _normal_quantile(confidence) * math.sqrt((1 + rho ** 2 / 2) / (x.size - 3))
    centre = math.atanh(min(max(rho, -1.0), 1.0)) if abs(rho) < 1 else math.copysign(math.inf, rho)
    return Correlation(rho=rho, low=math.tanh(centre - half), high=math.tanh(centre + half), count=int(x.size),
                       p_value=float(result.pvalue), confidence=confidence,
                       method="Fisher z with the Bonett-Wright variance")


def _rank_correlation(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman's rho along the last axis: the Pearson correlation of the average ranks."""
    a, b = stats.rankdata(a, axis=-1), stats.rankdata(b, axis=-1)
    a, b = a - a.mean(axis=-1, keepdims=True), b - b.mean(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):  # a constant resample: nan, dropped by the bootstrap
        return (a * b).sum(axis=-1) / np.sqrt((a * a).sum(axis=-1) * (b * b).sum(axis=-1))


def spearman_difference(target: Any, first: Any, second: Any, confidence: float = 0.95, resamples: int = 2000,
                        seed: int = 0) -> Correlation:
    """``rho(target, first) - rho(target, second)`` with a seeded paired bootstrap interval.

    Which of two predictors ranks ``target`` better: the two correlations share ``target`` and are
    computed on the same items, so they are dependent, and their intervals overlapping says little.
    The items (triples) are resampled together ``resamples`` times (:func:`scipy.stats.bootstrap`,
    ``paired=True``, percentile interval, ``numpy.random.default_rng(seed)``), so the same inputs give
    the same interval.  Resamples in which a variable is constant are dropped.

    Raises
    ------
    ValueError
        As :func:`spearman`, for each pair; ``resamples`` below 100.
    """
    target, first = _pairs(target, first, ("target", "first"), 4)
    target, second = _pairs(target, second, ("target", "second"), 4)
    confidence = _check_confidence(confidence)
    resamples, seed = check_int(resamples, "resamples", 100), check_int(seed, "seed", 0)

    def statistic(t: np.ndarray, a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
        return _rank_correlation(t, a) - _rank_correlation(t, b)

    result = stats.bootstrap((target, first, second), statistic, paired=True, vectorized=True,
                             n_resamples=resamples, confidence_level=confidence, method="percentile",
                             rng=np.random.default_rng(seed))
    return Correlation(rho=float(statistic(target, first, second)), low=float(result.confidence_interval.low),
                       high=float(result.confidence_interval.high), count=int(target.size), p_value=None,
                       confidence=confidence, method=f"paired percentile bootstrap, {resamples} resamples, seed {seed}")
