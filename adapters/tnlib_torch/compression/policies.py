"""The three policies of :func:`tnlib_torch.compress_` that choose each selected layer's replacement.

A :class:`Policy` is chosen once from the checked request (:func:`policy_for`)
and maps the selected layers to their :class:`Replacement`:

* :class:`FixedPolicy`: every layer fitted with the same criteria (its method's
  size limit, ``rel_error``, ``cutoff``), kept dense where that is not smaller;
  for ``"truncate"``, every kernel truncated in place with them
  (:class:`TruncationPolicy`);
* :class:`BudgetPolicy`: the candidates of every layer, costed exactly, with
  error estimates from the spectra (in the data metric and weighted by each
  layer's sensitivity when calibrated), allocated under the budget
  (:func:`tnlib_torch.compression.allocation.allocate`, with a floor), and
  checked against the uniform allocation on the same objective;
* :class:`AccuracyPolicy`: the candidates scored one layer at a time by the
  caller's ``evaluate``, then :func:`tnlib_torch.compression.allocation.select_by_score`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

from tnlib import TruncationInfo
from tnlib_torch.compression.accounting import count_params, macs_of, run_with_hooks
from tnlib_torch.compression.allocation import (
    Option,
    allocate,
    allocate_uniformly,
    efficient_frontier,
    select_by_score,
    total_error,
)
from tnlib_torch.compression.calibrated import LayerData
from tnlib_torch.compression.costs import ChainCosts
from tnlib_torch.compression.request import CompressRequest
from tnlib_torch.compression.structures import (
    LayerStructure,
    LinearStructure,
    SVDStructure,
    structure_of,
)
from tnlib_torch.compression.surgery import truncated_kernel

#: A budget keeps every layer at this share of the budget's fraction of its own cost, at least, when it can:
#: at budget 0.25 no layer falls below 12.5% of its parameters (:func:`allocate`'s ``floor``).
FLOOR_SHARE = 0.5

__all__ = ["FLOOR_SHARE", "AccuracyPolicy", "BudgetPolicy", "FixedPolicy", "Policy", "Replacement", "TruncationPolicy",
           "install", "naming", "policy_for"]


@dataclass(frozen=True)
class Replacement:
    """What a selected layer becomes: ``module`` (the original for a layer kept dense or truncated in place), its
    ranks, a note (why it was kept dense), and the report of a truncation in place."""

    module: nn.Module
    ranks: tuple[int, ...]
    note: str = ""
    truncation: TruncationInfo | None = None


class Policy(Protocol):
    """Chooses the replacement of every selected layer; ``scores`` records what it evaluated."""

    scores: dict[str, Any]

    def choose(self, model: nn.Module, selected: dict[str, nn.Module]) -> dict[str, Replacement]:
        """The replacement of each selected layer of ``model``, by name; ``model`` is left as it was."""


def policy_for(request: CompressRequest, costs_before: dict | None, data: LayerData | None = None) -> Policy:
    """The policy of a checked request; ``costs_before`` are the model's layer costs (for MACs), or None;
    ``data`` the calibration of the selected layers, or None."""
    if request.method == "truncate":
        return TruncationPolicy(request)
    kinds = {"fixed": FixedPolicy, "budget": BudgetPolicy, "accuracy": AccuracyPolicy}
    return kinds[request.policy](request, costs_before, data)


@contextmanager
def naming(name: str) -> Iterator[None]:
    """Errors raised inside name the layer they are about."""
    try:
        yield
    except (TypeError, ValueError) as error:
        raise type(error)(f"layer {name!r}: {error}") from error


def install(model: nn.Module, name: str, module: nn.Module, original: nn.Module) -> None:
    """Put ``module`` at ``name``, with the training mode and ``requires_grad`` of ``original``."""
    if module is not original:
        module.train(original.training)
        module.requires_grad_(original.weight.requires_grad)
    parent, _, attribute = name.rpartition(".")
    setattr(model.get_submodule(parent), attribute, module)


def module_ranks(module: nn.Module) -> tuple[int, ...]:
    """The ranks of a factorized layer: Tucker-2's ``ranks``, an MPS's ``bond_dims``, or ``(rank,)``."""
    for attribute in ("ranks", "bond_dims"):
        if hasattr(module, attribute):
            return tuple(getattr(module, attribute))
    return (module.rank,)


@dataclass
class TruncationPolicy:
    """Method ``"truncate"``: every selected kernel truncated in place (all computed before any is written)."""

    request: CompressRequest
    scores: dict[str, Any] = field(default_factory=dict)

    def choose(self, model: nn.Module, selected: dict[str, nn.Module]) -> dict[str, Replacement]:
        r = self.request
        kernels = {name: truncated_kernel(conv, f"model.{name}", r.cut, max_rank=r.size, rel_error=r.rel_error,
                                          cutoff=r.cutoff, **r.fit)
                   for name, conv in selected.items()}
        for name, (kernel, _) in kernels.items():
            with torch.no_grad():
                selected[name].weight.copy_(kernel)
        return {name: Replacement(selected[name], info.ranks, truncation=info) for name, (_, info) in kernels.items()}


@dataclass
class _StructuredPolicy:
    """A policy over the method's structure of each selected layer."""

    request: CompressRequest
    costs_before: dict | None = None
    data: LayerData | None = None
    scores: dict[str, Any] = field(default_factory=dict)

    def choose(self, model: nn.Module, selected: dict[str, nn.Module]) -> dict[str, Replacement]:
        r = self.request
        structures = {}
        for name, layer in selected.items():
            moments = None if self.data is None else self.data.moments[name]
            with naming(name):
                structures[name] = structure_of(layer, r.method, r.fit, r.cut, r.order, moments)
        return self.replacements(model, structures)

    def replacements(self, model: nn.Module, structures: dict[str, LayerStructure]) -> dict[str, Replacement]:
        raise NotImplementedError

    def options(self, model: nn.Module, structures: dict[str, LayerStructure]) -> dict[str, list[Option]]:
        """Each layer's candidates cheaper than the dense layer, costed exactly, and the dense layer (error 0)."""
        r = self.request
        shapes = ({} if r.input_size is None
                  else _input_shapes(model, {n: s.layer for n, s in structures.items()}, r.input_size))
        options = {}
        for name, structure in structures.items():
            dense = macs_of(self.costs_before, name) if r.budget_on == "macs" else count_params(structure.layer)
            options[name] = []
            for key, part in structure.variants().items():
                with naming(name):
                    candidates = part.candidates()
                chain = ChainCosts.of(part.meta(), shapes.get(name))
                costs = chain.macs(candidates.widths) if r.budget_on == "macs" else chain.params(candidates.widths)
                options[name] += [Option(ranks if key is None else (key, *ranks), float(cost), float(error))
                                  for ranks, cost, error in zip(candidates.ranks, costs, candidates.errors)
                                  if cost < dense]
            options[name].append(Option(None, float(dense), 0.0))
        return options


class FixedPolicy(_StructuredPolicy):
    """Each layer fitted with the request's criteria; kept dense where that is not smaller."""

    def replacements(self, model: nn.Module, structures: dict[str, LayerStructure]) -> dict[str, Replacement]:
        r = self.request
        replacements = {}
        for name, structure in structures.items():
            size = _matrix_size(r) if isinstance(structure, (SVDStructure, LinearStructure)) else r.size
            with naming(name):
                module = structure.fixed(size, r.rel_error, r.cutoff)
            dense, params = count_params(structure.layer), count_params(module)
            if params < dense:
                replacements[name] = Replacement(module, module_ranks(module))
            else:
                note = f"kept dense: the factorized layer would have {params:,} >= {dense:,} parameters"
                replacements[name] = Replacement(structure.layer, (), note)
        return replacements


class BudgetPolicy(_StructuredPolicy):
    """The candidates allocated under the budget from their exact costs and estimated errors.

    The objective is ``sum_l w_l e_l**2``: ``e_l`` each layer's relative error (of its outputs on
    the calibration data when calibrated, else of its kernel) and ``w_l`` its sensitivity (1
    without one).  The greedy allocation, with every layer kept at :data:`FLOOR_SHARE` of the
    budget's fraction at least, is compared with the uniform one (every layer at the budget's
    fraction of its own cost) on that objective, and the better is built; ``scores["allocation"]``
    records both objectives, the choice and the weights.

    Layers with several variants (``cut="auto"``: :class:`SVDCutChoice`) offer the union of their
    variants' candidates, keyed ``(cut, r)``.  The greedy allocation of the union is also compared
    with the greedy allocation restricted to each single cut (every such layer along that cut), so
    the objective of the allocation built is at most that of every single cut at the same budget;
    ``scores["allocation"]["cuts"]`` records those objectives (``None`` for a cut the budget cannot
    reach), and ``"chosen"`` names the winner (``"greedy"``, ``"uniform"`` or ``"cut o|ihw"``).
    """

    def replacements(self, model: nn.Module, structures: dict[str, LayerStructure]) -> dict[str, Replacement]:
        weights = None if self.data is None else self.data.weights
        options = {name: layer_options if weights is None else
                   [Option(o.ranks, o.cost, o.error * weights[name]) for o in layer_options]
                   for name, layer_options in self.options(model, structures).items()}
        fraction = self.request.budget
        allocations = {"greedy": self._greedy(options), "uniform": allocate_uniformly(options, fraction)}
        keys = dict.fromkeys(key for s in structures.values() for key in s.variants() if key is not None)
        choosing = {name for name, structure in structures.items() if None not in structure.variants()}
        for key in keys:
            allocations[f"cut {key}"] = self._greedy(
                {name: [o for o in layer_options if name not in choosing or o.ranks is None or o.ranks[0] == key]
                 for name, layer_options in options.items()}, required=False)
        objectives = {label: None if chosen is None else total_error(chosen) for label, chosen in allocations.items()}
        best = min((label for label, value in objectives.items() if value is not None), key=objectives.__getitem__)
        self.scores["allocation"] = {
            "chosen": best, "greedy": objectives["greedy"], "uniform": objectives["uniform"], "weights": weights,
            **({"cuts": {key: objectives[f"cut {key}"] for key in keys}} if keys else {})}
        return _built(structures, allocations[best])

    def _greedy(self, options: dict[str, list[Option]], required: bool = True) -> dict[str, Option] | None:
        """:func:`allocate` at the budget with the floor; not ``required``: ``None`` if the budget is out of reach."""
        fraction = self.request.budget
        try:
            return allocate(options, fraction * _dense_cost(options), floor=FLOOR_SHARE * fraction)
        except ValueError:
            if required:
                raise
            return None


class AccuracyPolicy(_StructuredPolicy):
    """The candidates scored one layer at a time by ``evaluate``, then :func:`select_by_score`.

    ``scores`` holds ``"baseline"`` (the uncompressed model's score) and, per
    layer, ``[(ranks, cost, score), ...]`` of every candidate evaluated.
    """

    def replacements(self, model: nn.Module, structures: dict[str, LayerStructure]) -> dict[str, Replacement]:
        r = self.request
        options = self.options(model, structures)
        self.scores["baseline"] = _score(r.evaluate, model, "the uncompressed model")
        scored = {}
        for name, structure in structures.items():
            scored[name], self.scores[name] = self._scored_layer(model, name, structure, options[name])
        return _built(structures, select_by_score(scored, r.budget * _dense_cost(options)))

    def _scored_layer(self, model: nn.Module, name: str, structure: LayerStructure,
                      options: list[Option]) -> tuple[list[tuple[Option, float]], list[tuple]]:
        """The layer's picks at the request's cost fractions, each scored with that layer alone compressed."""
        frontier = efficient_frontier(options)
        dense = frontier[0]
        picks = {}
        for fraction in self.request.fractions:
            affordable = [o for o in frontier if o.cost <= fraction * dense.cost]
            if affordable:
                picks.setdefault(affordable[0].ranks, affordable[0])
        scored, scores = [(dense, math.inf)], []
        for option in picks.values():
            with naming(name):
                module = structure.at(option.ranks)
            install(model, name, module, structure.layer)
            try:
                score = _score(self.request.evaluate, model, f"the model with layer {name!r} at ranks {option.ranks}")
            finally:
                install(model, name, structure.layer, structure.layer)
            scored.append((option, score))
            scores.append((list(option.ranks), option.cost, score))
        return scored, scores


def _matrix_size(request: CompressRequest) -> int | None:
    """The size limit as the SVD rank of a 1x1 conv or a linear layer: the smallest entry of a sequence."""
    if request.method == "svd" or request.size is None:
        return request.size
    return min(request.size) if isinstance(request.size, (tuple, list)) else request.size


def _input_shapes(model: nn.Module, layers: dict[str, nn.Module], input_size: Sequence[int]) -> dict[str, tuple]:
    """The shape (without the batch) of each layer's input in one forward pass at ``input_size``."""
    names = {layer: name for name, layer in layers.items()}
    shapes = {}

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        shapes.setdefault(names[module], tuple(inputs[0].shape[1:]))

    run_with_hooks(model, input_size, names, hook)
    return shapes


def _dense_cost(options: dict[str, list[Option]]) -> float:
    return sum(next(o.cost for o in layer_options if o.ranks is None) for layer_options in options.values())


def _score(evaluate: Callable[[nn.Module], float], model: nn.Module, what: str) -> float:
    with torch.no_grad():
        score = evaluate(model)
    if isinstance(score, torch.Tensor) and score.numel() == 1:
        score = score.item()
    if isinstance(score, bool) or not isinstance(score, (int, float)) or math.isnan(score):
        raise ValueError(f"evaluate must return a number (higher is better), got {score!r} for {what}")
    return float(score)


def _built(structures: dict[str, LayerStructure], chosen: dict[str, Option]) -> dict[str, Replacement]:
    replacements = {}
    for name, option in chosen.items():
        if option.ranks is None:
            replacements[name] = Replacement(structures[name].layer, (), "kept dense by the allocation")
        else:
            with naming(name):
                module = structures[name].at(option.ranks)
            replacements[name] = Replacement(module, module_ranks(module))
    return replacements
