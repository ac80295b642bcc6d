"""The statistics of the study's report against values computed by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tnlib_torch.study.hits import pack_hits, unpack_hits
from tnlib_torch.study.statistics import (
    accuracy_interval,
    paired_comparison,
    spearman,
    spearman_difference,
)

Z95 = 1.959963984540054


def wilson(k: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson interval as the textbooks write it."""
    p = k / n
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half / (1 + z * z / n), centre + half / (1 + z * z / n)


def pair(gained: int, lost: int, both: int, neither: int) -> tuple[np.ndarray, np.ndarray]:
    """A model's and a baseline's hits with those cells of the 2 x 2 table."""
    model = np.array([True] * gained + [False] * lost + [True] * both + [False] * neither)
    baseline = np.array([False] * gained + [True] * lost + [True] * both + [False] * neither)
    return model, baseline


# -- Wilson ---------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("k, n, expected", [(8, 10, (0.4902, 0.9433)), (0, 10, (0.0, 0.2775)), (10, 10, (0.7225, 1.0)),
                                            (450, 500, (0.8706, 0.9233))])
def test_wilson_interval_matches_the_textbook(k, n, expected):
    low, high = accuracy_interval(k, n)
    assert (low, high) == pytest.approx(expected, abs=5e-5)
    assert (low, high) == pytest.approx(wilson(k, n), abs=1e-12)


def test_wilson_interval_narrows_with_confidence_and_samples():
    wide, narrow = accuracy_interval(45, 50, 0.99), accuracy_interval(45, 50, 0.8)
    assert wide[0] < narrow[0] < 0.9 < narrow[1] < wide[1]
    assert np.diff(accuracy_interval(900, 1000)) < np.diff(accuracy_interval(90, 100))


@pytest.mark.parametrize("k, n, confidence, error", [(11, 10, 0.95, ValueError), (1, 0, 0.95, ValueError),
                                                     (1.5, 10, 0.95, TypeError), (1, 10, 1.0, ValueError),
                                                     (1, 10, "0.9", TypeError)])
def test_wilson_interval_refuses_bad_counts(k, n, confidence, error):
    with pytest.raises(error):
        accuracy_interval(k, n, confidence)


# -- paired comparison ----------------------------------------------------------------------------------------------

def test_paired_comparison_by_hand():
    # 10 samples gained, 2 lost out of 100: difference +8 points; Agresti-Min adds 1/2 to each cell
    model, baseline = pair(10, 2, 70, 18)
    comparison = paired_comparison(model, baseline)
    assert (comparison.count, comparison.gained, comparison.lost) == (100, 10, 2)
    assert comparison.difference == pytest.approx(0.08)
    b, c, n = 10.5, 2.5, 102
    half = Z95 * math.sqrt((b + c) - (b - c) ** 2 / n) / n
    assert (comparison.low, comparison.high) == pytest.approx((8 / 102 - half, 8 / 102 + half))
    assert (comparison.low, comparison.high) == pytest.approx((0.01084, 0.14602), abs=1e-5)
    # exact McNemar: 2 of 12 discordant pairs against a fair coin, two-sided: 2 (1 + 12 + 66) / 2^12
    assert comparison.p_value == pytest.approx(158 / 4096)


def test_only_discordant_pairs_matter():
    one = paired_comparison(*pair(3, 7, 80, 10))
    other = paired_comparison(*pair(3, 7, 10, 80))
    assert (one.difference, one.low, one.high, one.p_value) == (other.difference, other.low, other.high, other.p_value)


def test_identical_models_are_within_with_enough_samples_not_with_few():
    hits = np.arange(2000) % 10 != 0
    many = paired_comparison(hits, hits)
    assert (many.difference, many.p_value, many.verdict) == (0.0, 1.0, "within")
    assert many.low < 0 < many.high  # the interval does not collapse without discordant pairs
    few = paired_comparison(hits[:100], hits[:100])
    assert few.verdict == "undecided" and few.low < -0.01


def test_verdicts_of_non_inferiority():
    assert paired_comparison(*pair(0, 60, 900, 40)).verdict == "not within"  # 6 points lost of 1000
    assert paired_comparison(*pair(0, 5, 90, 5)).verdict == "undecided"
    assert paired_comparison(*pair(0, 5, 90, 5), tolerance=0.2).verdict == "within"


def test_paired_comparison_reads_packed_hits():
    model, baseline = pair(4, 9, 30, 7)
    unpacked = unpack_hits(pack_hits(model), model.size), unpack_hits(pack_hits(baseline), baseline.size)
    assert paired_comparison(*unpacked) == paired_comparison(model, baseline)


@pytest.mark.parametrize("hits, baseline, kwargs, error, message", [
    ([1, 0], [True, False], {}, TypeError, "hits must be a non-empty one-dimensional boolean array"),
    (np.ones(3, bool), np.ones(4, bool), {}, ValueError, "same samples"),
    (np.ones(3, bool), np.ones(3, bool), {"tolerance": 1.0}, ValueError, "tolerance"),
    (np.ones(3, bool), np.ones(3, bool), {"confidence": 0.0}, ValueError, "confidence"),
])
def test_paired_comparison_refuses_bad_input(hits, baseline, kwargs, error, message):
    with pytest.raises(error, match=message):
        paired_comparison(hits, baseline, **kwargs)


# -- Spearman -------------------------------------------------------------------------------------------------------

def test_spearman_by_hand():
    # ranks differ by swaps of neighbours: sum d^2 = 6, rho = 1 - 6 * 6 / (6 * 35)
    correlation = spearman([1, 2, 3, 4, 5, 6], [2, 1, 4, 3, 6, 5])
    assert correlation.rho == pytest.approx(1 - 36 / 210)
    half = Z95 * math.sqrt((1 + correlation.rho ** 2 / 2) / 3)
    assert correlation.low == pytest.approx(math.tanh(math.atanh(correlation.rho) - half))
    assert correlation.high == pytest.approx(math.tanh(math.atanh(correlation.rho) + half))
    assert correlation.count == 6 and "Bonett-Wright" in correlation.method


def test_spearman_of_a_monotone_map_and_of_ties():
    x = np.linspace(0.1, 2.0, 20)
    assert spearman(x, np.exp(3 * x)).rho == pytest.approx(1.0)
    assert spearman(x, -x ** 3).rho == pytest.approx(-1.0)
    # average ranks (1, 2.5, 2.5, 4, 5) and (1, 2.5, 2.5, 5, 4): their Pearson correlation is 8.5 / 9.5
    assert spearman([1, 2, 2, 3, 4], [10, 20, 20, 30, 25]).rho == pytest.approx(8.5 / 9.5)


@pytest.mark.parametrize("x, y, message", [([1, 2, 3], [1, 2, 3], "at least 4 pairs"),
                                           ([1, 2, 3, 4], [1, 2, 3], "of one length"),
                                           ([1, 1, 1, 1], [1, 2, 3, 4], "x is constant"),
                                           ([1, 2, 3, math.nan], [1, 2, 3, 4], "finite")])
def test_spearman_refuses_bad_input(x, y, message):
    with pytest.raises(ValueError, match=message):
        spearman(x, y)


def test_spearman_difference_is_seeded_and_tells_the_better_predictor():
    rng = np.random.default_rng(3)
    target = rng.normal(size=200)
    good, poor = target + 0.3 * rng.normal(size=200), target + 3 * rng.normal(size=200)
    difference = spearman_difference(target, good, poor, resamples=500, seed=1)
    assert difference == spearman_difference(target, good, poor, resamples=500, seed=1)
    assert difference.rho == pytest.approx(spearman(target, good).rho - spearman(target, poor).rho)
    assert 0 < difference.low < difference.rho < difference.high and difference.p_value is None
    same = spearman_difference(target, good, good, resamples=200)
    assert (same.rho, same.low, same.high) == (0.0, 0.0, 0.0)
    with pytest.raises(ValueError, match="resamples"):
        spearman_difference(target, good, poor, resamples=10)
