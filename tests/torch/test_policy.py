"""Budget allocation: the efficient frontier, the greedy choice and the score threshold, against brute force."""

import itertools
import math

import numpy as np
import pytest

from tnlib_torch.compression.allocation import Option, allocate, efficient_frontier, select_by_score


def convex_layer(rng, steps):
    """Options at costs 0..steps with a random convex, decreasing error."""
    drops = np.sort(rng.random(steps))[::-1]  # error drops shrink as the cost grows: convex
    errors = np.concatenate([[0.0], np.cumsum(drops[::-1])])[::-1]  # errors[c] for cost c
    return [Option(c, float(c), float(errors[c])) for c in range(steps + 1)]


def test_frontier_drops_dominated_and_non_convex_options():
    options = [Option(4, 4.0, 0.0), Option(3, 3.0, 0.5), Option(2, 2.0, 0.2), Option(1, 1.0, 0.9),
               Option("worse", 3.5, 0.3), Option(0, 0.0, 1.0)]
    frontier = efficient_frontier(options)
    assert [o.ranks for o in frontier] == [4, 2, 0]  # 3 and "worse" lie above the hull, 1 above 2 -> 0


@pytest.mark.parametrize("seed", range(5))
def test_greedy_matches_brute_force_on_convex_layers(seed):
    rng = np.random.default_rng(seed)
    layers = {f"l{k}": convex_layer(rng, int(rng.integers(2, 5))) for k in range(3)}
    for budget in range(0, 12):
        if budget < 0:
            continue
        chosen = allocate(layers, budget)
        assert sum(o.cost for o in chosen.values()) <= budget
        best = min(sum(o.error for o in combo) for combo in itertools.product(*layers.values())
                   if sum(o.cost for o in combo) <= budget)
        assert sum(o.error for o in chosen.values()) == pytest.approx(best, abs=1e-12)


def test_a_budget_covering_everything_keeps_the_most_accurate_options():
    layers = {"a": [Option(None, 10.0, 0.0), Option(1, 2.0, 0.4)], "b": [Option(None, 5.0, 0.0), Option(1, 1.0, 0.1)]}
    assert {name: o.ranks for name, o in allocate(layers, 15).items()} == {"a": None, "b": None}
    assert {name: o.ranks for name, o in allocate(layers, 11).items()} == {"a": None, "b": 1}
    assert {name: o.ranks for name, o in allocate(layers, 7).items()} == {"a": 1, "b": None}


def test_the_leftover_budget_buys_an_option_between_frontier_points():
    """The greedy walk stops on the frontier; an option above the hull that fits what is left is then bought.

    Layer ``a``'s frontier is costs 10 and 2 (the option at cost 6 lies above the segment between them),
    so with a budget of 8 the walk must stop at cost 2, leaving 6: the off-frontier option costing 6 fits
    and is more accurate, and it is taken (total 7, error 0.5 instead of 0.9).
    """
    layers = {"a": [Option("dense", 10.0, 0.0), Option("mid", 6.0, 0.5), Option("small", 2.0, 0.6)],
              "b": [Option("only", 1.0, 0.3)]}
    assert [o.ranks for o in efficient_frontier(layers["a"])] == ["dense", "small"]
    chosen = allocate(layers, 8.0)
    assert chosen["a"].ranks == "mid" and chosen["b"].ranks == "only"
    assert sum(o.cost for o in chosen.values()) <= 8.0


def test_bad_budgets():
    layers = {"a": [Option(1, 2.0, 0.4)]}
    with pytest.raises(ValueError, match="below the cheapest allocation"):
        allocate(layers, 1)
    with pytest.raises(ValueError, match="budget must be a finite number"):
        allocate(layers, float("nan"))
    with pytest.raises(ValueError, match="has no option"):
        allocate({"a": []}, 1)


@pytest.mark.parametrize("seed", range(5))
def test_select_by_score_keeps_the_worst_score_as_high_as_brute_force_does(seed):
    """No allocation within the budget has a higher lowest score, and no leftover upgrade still fits."""
    rng = np.random.default_rng(seed)
    scored = {}
    for k in range(3):
        pairs = [(Option(None, 10.0, 0.0), math.inf)]
        pairs += [(Option(r, float(rng.integers(1, 10)), 0.0), float(rng.random())) for r in range(3)]
        scored[f"l{k}"] = pairs
    for budget in range(3, 31):
        best = max((min(score for _, score in combo) for combo in itertools.product(*scored.values())
                    if sum(o.cost for o, _ in combo) <= budget), default=None)
        if best is None:
            with pytest.raises(ValueError, match="below the cheapest scored allocation"):
                select_by_score(scored, budget)
            continue
        chosen = select_by_score(scored, budget)
        total = sum(o.cost for o in chosen.values())
        assert total <= budget
        scores = {name: dict((o, s) for o, s in pairs)[chosen[name]] for name, pairs in scored.items()}
        assert min(scores.values()) == best
        assert not any(s > scores[name] and 0 < o.cost - chosen[name].cost <= budget - total
                       for name, pairs in scored.items() for o, s in pairs), "a better option still fits"


def test_select_by_score_refuses_a_layer_without_options_and_bad_budgets():
    with pytest.raises(ValueError, match="layer 'a' has no option"):
        select_by_score({"a": []}, 1.0)
    with pytest.raises(ValueError, match="budget must be a finite number"):
        select_by_score({"a": [(Option(None, 1.0, 0.0), math.inf)]}, -1)
