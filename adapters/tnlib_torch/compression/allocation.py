"""Rank allocation across the layers of a model under a global budget.

Each layer offers options: a structure at some rank(s), with a cost (parameters
or MACs) and an error, the squared relative error of its kernel
``e = ||K - K~||_F^2 / ||K||_F^2``.  :func:`allocate` picks one option per layer
to minimize the total ``sum_layers e`` subject to ``sum_layers cost <= budget``,
greedily: every layer starts at its most accurate option, and while the budget
is exceeded the move with the smallest error increase per unit of cost saved
is made (the next option on that layer's efficient frontier); what the last
move saved beyond the budget is then spent on the upgrades that fit, largest
error reduction first.  When each layer's error is a
convex, decreasing function of its cost (as the tails of a singular spectrum
are), this greedy choice is optimal up to the granularity of one rank step.

Relative errors make layers of different norms comparable; minimizing their
sum treats every layer as equally important, and weighting them (errors scaled
by a layer's sensitivity before the allocation) does not.
:func:`select_by_score` assumes neither: it allocates from a measured score of
the whole model (such as its accuracy) with each layer compressed alone.

Two guards keep a greedy allocation from starving a layer: ``floor`` (no layer
below that fraction of its own dense cost, when the budget allows it), and
:func:`allocate_uniformly`, the allocation it generalizes (every layer at the
same fraction of its cost), against which a budget policy checks its choice on
the same objective.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Option:
    """One way to compress one layer.

    Attributes
    ----------
    ranks
        What the structure is given (an int, or a tuple such as Tucker-2's
        ``(r_out, r_in)``); ``None`` for the layer left dense.
    cost
        Parameters or MACs of the layer in this form.
    error
        Squared relative error of the kernel, ``||K - K~||^2 / ||K||^2``.
    """

    ranks: Any
    cost: float
    error: float


def efficient_frontier(layer_options: Sequence[Option]) -> list[Option]:
    """The options on the lower convex hull of (cost, error), cost decreasing and error increasing.

    An option above the hull is never the greedy choice: a mix of its two hull
    neighbours would be cheaper for the same error.
    """
    points = sorted(layer_options, key=lambda o: (o.cost, o.error))
    hull: list[Option] = []
    for point in points:
        if hull and point.error >= hull[-1].error:
            continue  # costs more and is no more accurate
        while len(hull) >= 2:
            a, b = hull[-2], hull[-1]  # drop b when it lies on or above the segment a -> point
            if (b.error - a.error) * (point.cost - a.cost) >= (point.error - a.error) * (b.cost - a.cost):
                hull.pop()
            else:
                break
        hull.append(point)
    return hull[::-1]


def total_error(chosen: Mapping[str, Option]) -> float:
    """The objective of an allocation: the sum of its options' errors."""
    return sum(option.error for option in chosen.values())


def allocate(options: Mapping[str, Sequence[Option]], budget: float, floor: float = 0.0) -> dict[str, Option]:
    """One option per layer with total cost at most ``budget`` and a small total error (see module docs).

    The greedy walk uses the options on each layer's :func:`efficient_frontier`; what it leaves of
    the budget is spent on upgrades to any more accurate option that fits.  With ``floor`` in
    ``[0, 1)``, a layer's options cheaper than ``floor`` times its costliest option (its dense
    form) are left out, unless that leaves the layer no option or the budget unreachable (then
    the floor is dropped for every layer).

    Raises
    ------
    ValueError
        When even the cheapest option of every layer exceeds ``budget``, or a
        layer has no option.
    """
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0 <= budget < math.inf:
        raise ValueError(f"budget must be a finite number >= 0, got {budget!r}")
    if isinstance(floor, bool) or not isinstance(floor, (int, float)) or not 0 <= floor < 1:
        raise ValueError(f"floor must be a fraction in [0, 1), got {floor!r}")
    frontiers = {}
    for name, layer_options in options.items():
        if not layer_options:
            raise ValueError(f"options: layer {name!r} has no option")
        frontiers[name] = efficient_frontier(layer_options)
    if floor > 0:
        floored = {name: [o for o in frontier if o.cost >= floor * frontier[0].cost] or frontier
                   for name, frontier in frontiers.items()}
        if sum(frontier[-1].cost for frontier in floored.values()) <= budget:
            frontiers = floored
    cheapest = sum(frontier[-1].cost for frontier in frontiers.values())
    if cheapest > budget:
        raise ValueError(f"budget {budget:g} is below the cheapest allocation ({cheapest:g}): even the smallest "
                         "ranks of every selected layer exceed it; select fewer layers or raise the budget")
    position = dict.fromkeys(frontiers, 0)
    total = sum(frontier[0].cost for frontier in frontiers.values())

    def push(heap: list, name: str) -> None:
        frontier, k = frontiers[name], position[name]
        if k + 1 < len(frontier):
            here, there = frontier[k], frontier[k + 1]
            heapq.heappush(heap, ((there.error - here.error) / (here.cost - there.cost), name))

    heap: list = []
    for name in frontiers:
        push(heap, name)
    while total > budget:
        _, name = heapq.heappop(heap)
        frontier, k = frontiers[name], position[name]
        total -= frontier[k].cost - frontier[k + 1].cost
        position[name] = k + 1
        push(heap, name)
    chosen = {name: frontiers[name][k] for name, k in position.items()}
    return _spend_leftover(options, chosen, budget - total)


def _spend_leftover(options: Mapping[str, Sequence[Option]], chosen: dict[str, Option],
                    left: float) -> dict[str, Option]:
    """``chosen`` with ``left`` of the budget spent on upgrades, the largest error reduction first.

    The greedy walk along the frontiers stops at the move that reaches the budget, which may save
    more than needed.  An upgrade is any option of a layer, on its frontier or not, more accurate
    than the layer's choice and costing at most ``left`` more: between two frontier points lie
    options the walk cannot stop at (coarse rank grids, CP's fitted rungs), and one of them may be
    the one that fits what is left.
    """
    chosen = dict(chosen)
    while True:
        upgrades = [(chosen[name].error - option.error, chosen[name].cost - option.cost, name, option)
                    for name, layer_options in options.items() for option in layer_options
                    if option.error < chosen[name].error and option.cost - chosen[name].cost <= left]
        if not upgrades:
            return chosen
        _, saved, name, option = max(upgrades, key=lambda upgrade: upgrade[:2])
        left += saved
        chosen[name] = option


def allocate_uniformly(options: Mapping[str, Sequence[Option]], fraction: float) -> dict[str, Option] | None:
    """Every layer at its most accurate option costing at most ``fraction`` of its dense cost.

    The dense cost is a layer's costliest option.  ``None`` when some layer has no option that
    cheap (the uniform allocation does not exist at this fraction).
    """
    chosen = {}
    for name, layer_options in options.items():
        dense = max(o.cost for o in layer_options)
        affordable = [o for o in layer_options if o.cost <= fraction * dense]
        if not affordable:
            return None
        chosen[name] = min(affordable, key=lambda o: (o.error, o.cost))
    return chosen


def select_by_score(scored: Mapping[str, Sequence[tuple[Option, float]]], budget: float) -> dict[str, Option]:
    """One option per layer within ``budget``, keeping the worst score as high as possible.

    ``scored[layer]`` lists ``(option, score)`` pairs, where the score measures
    the whole model with that one layer compressed by that option (e.g. its
    accuracy; higher is better).  For a threshold ``t`` every layer takes its
    cheapest option scoring at least ``t``; lowering ``t`` only widens the
    choice, so the total cost decreases with ``t``.  The highest threshold
    whose allocation costs at most ``budget`` is chosen (the greedy
    compression-ratio selection of AIMET).  What that leaves of the budget is
    then spent on upgrades, a layer at a time, to a costlier option of a higher
    score: the largest score gain that fits first.  Give the uncompressed layer
    the score ``inf`` so that every layer can stay as it is.

    Raises
    ------
    ValueError
        When even the cheapest scored option of every layer exceeds ``budget``,
        or a layer has no option.
    """
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0 <= budget < math.inf:
        raise ValueError(f"budget must be a finite number >= 0, got {budget!r}")
    for name, pairs in scored.items():
        if not pairs:
            raise ValueError(f"scored: layer {name!r} has no option")

    def choice(threshold: float) -> dict[str, tuple[Option, float]] | None:
        chosen = {}
        for name, pairs in scored.items():
            allowed = [pair for pair in pairs if pair[1] >= threshold]
            if not allowed:
                return None
            chosen[name] = min(allowed, key=lambda pair: (pair[0].cost, pair[0].error))
        return chosen if sum(option.cost for option, _ in chosen.values()) <= budget else None

    for threshold in sorted({score for pairs in scored.values() for _, score in pairs}, reverse=True):
        if (chosen := choice(threshold)) is not None:
            return _upgraded(scored, chosen, budget)
    cheapest = sum(min(o.cost for o, _ in pairs) for pairs in scored.values())
    raise ValueError(f"budget {budget:g} is below the cheapest scored allocation ({cheapest:g}); "
                     "select fewer layers or raise the budget")


def _upgraded(scored: Mapping[str, Sequence[tuple[Option, float]]], chosen: dict[str, tuple[Option, float]],
              budget: float) -> dict[str, Option]:
    """``chosen`` with the leftover budget spent on score gains, the largest (then the cheapest) first."""
    left = budget - sum(option.cost for option, _ in chosen.values())
    while True:
        upgrades = [(score - chosen[name][1], -(option.cost - chosen[name][0].cost), name, k)
                    for name, pairs in scored.items() for k, (option, score) in enumerate(pairs)
                    if score > chosen[name][1] and 0 < option.cost - chosen[name][0].cost <= left]
        if not upgrades:
            return {name: option for name, (option, _) in chosen.items()}
        _, extra, name, k = max(upgrades)
        left += extra
        chosen[name] = scored[name][k]
