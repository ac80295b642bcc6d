"""Model-wide compression: the selected layers of a model replaced by factorized ones.

Every selected ``nn.Conv2d`` with a kernel larger than 1x1 becomes the layer of
the method (``"tucker2"``: :class:`Tucker2Conv2d`, ``"cp"``: :class:`CPConv2d`,
``"mps"``: :class:`MPSConv2d`, ``"svd"``: :class:`SVDConv2d`); a 1x1 conv,
and with ``linear=True`` an ``nn.Linear``, is a matrix and becomes its SVD split
into two thin layers (:class:`SVDConv2d`, :class:`SVDLinear`), which is what
every method reduces to on a matrix: the best approximation of a matrix by
Tucker-2 ranks ``(r_o, r_i)``, CP rank ``R`` or MPS bonds is its truncated SVD
at rank ``min(r_o, r_i)``, ``R`` or the smallest bond.  ``"truncate"`` keeps the
dense convs and truncates their kernels in place along cuts
(:func:`truncate_conv_`), the operation of the compressibility study.

Three policies choose the ranks:

* **fixed**: every layer is fitted with the same criteria, the method's size
  limit (``ranks``, ``rank``, ``max_bond`` or ``max_rank``), ``rel_error``
  (a guarantee per layer for the exact structures) and ``cutoff``.  A layer whose
  factorized form would not have fewer parameters than the dense one stays
  dense.
* **budget**: the selected layers may keep a fraction ``budget`` of their
  parameters or MACs.  Each layer offers candidate ranks with their exact cost
  and an error estimate from its spectra (see :mod:`tnlib_torch.compression.structures`),
  and :func:`tnlib_torch.compression.policy.allocate` minimizes the sum of the layers'
  squared relative errors under the budget, greedily: the smallest error
  increase per unit of cost saved.
* **accuracy** (``budget`` and ``evaluate``): the candidates of each layer at
  ``eval_points`` cost fractions are scored by ``evaluate`` on the model with
  that one layer compressed, and :func:`tnlib_torch.compression.policy.select_by_score`
  keeps the lowest score as high as the budget allows (AIMET's greedy
  compression-ratio selection), then spends what is left on upgrades.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from tnlib_torch._checks import check_module
from tnlib_torch.compression.accounting import count_params, layer_costs, run_with_hooks
from tnlib_torch.compression.costs import ChainCosts
from tnlib_torch.compression.policy import Option, allocate, efficient_frontier, select_by_score
from tnlib_torch.compression.report import CompressionReport, LayerCompression
from tnlib_torch.compression.request import BUDGET_ON, METHODS, SIZE_KEYWORDS, CompressRequest, check_request
from tnlib_torch.compression.structures import LinearStructure, Structure, SVDStructure
from tnlib_torch.compression.surgery import select_layers, truncated_kernel
from tnlib_torch.layers.chain import FactorizedModule
from tnlib_torch.layers.reports import norm_loss, relative_error

__all__ = ["BUDGET_ON", "METHODS", "SIZE_KEYWORDS", "compress", "compress_"]

#: A replacement: the new module (the original for a layer kept dense), its ranks, and a note.
Replacement = tuple[nn.Module, tuple[int, ...], str]


def compress(model: nn.Module, method: str = "tucker2", **options: Any) -> tuple[nn.Module, CompressionReport]:
    """A compressed copy of ``model`` and its report; ``model`` itself is left as it is.

    Takes the arguments of :func:`compress_`, which it runs on a deep copy.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> model = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.ReLU(), nn.Conv2d(64, 64, 3, padding=1))
    >>> small, report = compress(model, "tucker2", ranks=16, input_size=(3, 32, 32))
    >>> type(small[2]).__name__, report.layers["2"].ranks, round(report.param_ratio, 2)
    ('Tucker2Conv2d', (16, 16), 6.51)
    >>> type(model[2]).__name__
    'Conv2d'
    """
    check_module(model)
    compressed = copy.deepcopy(model)
    return compressed, compress_(compressed, method, **options)


def compress_(
    model: nn.Module,
    method: str = "tucker2",
    *,
    rel_error: float | None = None,
    ranks: int | Sequence[int] | None = None,
    rank: int | None = None,
    max_bond: int | Sequence[int] | None = None,
    max_rank: int | Sequence[int] | None = None,
    cutoff: float | None = None,
    cut: str | Sequence[str] | None = None,
    order: str | None = None,
    fit: Mapping[str, Any] | None = None,
    budget: float | None = None,
    budget_on: str = "params",
    evaluate: Callable[[nn.Module], float] | None = None,
    eval_points: int = 9,
    input_size: Sequence[int] | None = None,
    include: str | Sequence[str] | None = None,
    exclude: str | Sequence[str] | None = None,
    layers: int | Sequence[int] | slice | None = None,
    where: Callable[[str, nn.Module], bool] | None = None,
    linear: bool = False,
) -> CompressionReport:
    """Compress the selected layers of ``model`` in place (see the module docs for the policies).

    Parameters
    ----------
    model
        Any ``nn.Module``.  Layers inside factorized layers are never selected.
    method
        ``"tucker2"``, ``"cp"``, ``"mps"``, ``"svd"`` or ``"truncate"``.
    rel_error
        Fixed policy: the target ``||K - K~|| / ||K||`` of every layer's kernel
        (for CP, the rank is the largest :func:`tnlib.cp_rank` finds for a group).
    ranks, rank, max_bond, max_rank
        Fixed policy: the size limit of the method, ``ranks`` for ``"tucker2"``,
        ``rank`` for ``"cp"``, ``max_bond`` for ``"mps"``, ``max_rank`` for
        ``"svd"`` and ``"truncate"``; on a 1x1 conv or a linear layer it is the
        SVD rank (the smallest entry of a sequence).
    cutoff
        Fixed policy, for ``"mps"``, ``"svd"`` and ``"truncate"``: drop singular
        values below ``cutoff`` times the largest.
    cut
        For ``"svd"``, the cut of :class:`SVDConv2d` (default ``"o|ihw"``); for
        ``"truncate"``, a cut or a sequence of cuts applied in turn (default ``"o|ihw"``).
    order
        For ``"mps"``, the site order of :class:`MPSConv2d` (default ``"ihwo"``).
    fit
        Keywords for the fit of every kxk conv (and, for ``"svd"``, of every
        layer), passed to the layer's ``from_conv``: ``{"method": "lm",
        "max_iter": 200, "seed": 0}`` for CP, ``{"method": "hooi"}`` for
        Tucker-2, ``{"method": "randomized", "seed": 0}`` for an SVD.
    budget
        Budget policy: the fraction in (0, 1] of the selected layers' cost to keep.
    budget_on
        ``"params"`` or ``"macs"`` (needs ``input_size``).
    evaluate
        Accuracy policy (with ``budget``): ``evaluate(model) -> float``, a score
        of the whole model, higher is better (e.g. top-1 accuracy on a held-out batch).
    eval_points
        Accuracy policy: candidates scored per layer, at cost fractions evenly
        spread over ``[0.1, 0.9]`` of the dense layer.
    input_size
        The shape of one input sample, without the batch dimension, e.g.
        ``(3, 32, 32)``: the MACs of the report are counted at it.
    include, exclude, layers, where
        The layer selection of :func:`select_convs` (``layers`` indexes the
        model's convs, and linear layers too with ``linear=True``).
    linear
        Also compress the ``nn.Linear`` layers (by their SVD).

    Returns
    -------
    CompressionReport
        Per layer: structure, ranks, parameters and MACs before and after,
        relative error and norm loss of the kernel; and the model's totals.

    Raises
    ------
    TypeError, ValueError
        Naming the argument: an unknown method, a size limit that is not the
        method's (``rank`` for Tucker-2), a rank of 0 or above what a layer
        allows (naming the layer), a budget outside (0, 1] or below what the
        smallest ranks reach, both a budget and fixed criteria, no criterion at
        all, no layer selected.  A failure leaves ``model`` unchanged.
    """
    request = check_request(method, rel_error=rel_error, sizes=dict(ranks=ranks, rank=rank, max_bond=max_bond,
                                                                    max_rank=max_rank),
                            options=dict(cutoff=cutoff, cut=cut, order=order), fit=fit, linear=linear, budget=budget,
                            budget_on=budget_on, evaluate=evaluate, eval_points=eval_points, input_size=input_size)
    check_module(model)
    selected = _selected(model, request.linear, include, exclude, layers, where)
    costs_before = None if input_size is None else layer_costs(model, input_size)
    before = {name: (count_params(layer), layer.weight.detach().clone()) for name, layer in selected.items()}
    params_before, scores = count_params(model), {}
    if request.method == "truncate":
        replacements = _truncations(selected, request)
    else:
        structures = {}
        for name, layer in selected.items():
            with _naming(name):
                structures[name] = request.structure(layer)
        if request.policy == "fixed":
            replacements = _fixed(structures, request)
        else:
            options = _options(model, structures, request, costs_before)
            if request.policy == "budget":
                chosen = allocate(options, request.budget * _dense_cost(options))
            else:
                chosen, scores = _scored(model, structures, options, request)
            replacements = _built(structures, chosen)
    for name, (module, _, _) in replacements.items():
        _install(model, name, module, selected[name])
    costs_after = None if input_size is None else layer_costs(model, input_size)
    reports = {name: _layer_report(name, selected[name], *before[name], *replacement, request.method,
                                   costs_before, costs_after) for name, replacement in replacements.items()}
    return CompressionReport(
        method=request.method, policy=request.policy, layers=reports, params_before=params_before,
        params_after=count_params(model), macs_before=_total(costs_before), macs_after=_total(costs_after),
        input_size=request.input_size, budget=request.budget,
        budget_on=None if request.budget is None else request.budget_on, scores=scores,
    )


@contextmanager
def _naming(name: str) -> Iterator[None]:
    """Errors raised inside name the layer they are about."""
    try:
        yield
    except (TypeError, ValueError) as error:
        raise type(error)(f"layer {name!r}: {error}") from error


def _selected(model: nn.Module, linear: bool, include: Any, exclude: Any, layers: Any,
              where: Any) -> dict[str, nn.Module]:
    """The selected layers, none inside a factorized layer, each with a finite weight of the right order."""
    types = (nn.Conv2d, nn.Linear) if linear else (nn.Conv2d,)
    inside = [name + "." for name, module in model.named_modules() if isinstance(module, FactorizedModule)]
    selected = {name: layer for name, layer in select_layers(model, types, include, exclude, layers, where)
                if not any(name.startswith(prefix) for prefix in inside)}
    if not selected:
        kinds = " or ".join(f"nn.{kind.__name__}" for kind in types)
        raise ValueError(f"no {kinds} layer of the model passes the selection (include, exclude, layers, where)")
    for name, layer in selected.items():
        expected = "4 dimensions (out, in/groups, kh, kw)" if isinstance(layer, nn.Conv2d) else "2 dimensions"
        if layer.weight.ndim != (4 if isinstance(layer, nn.Conv2d) else 2):
            raise ValueError(f"layer {name!r}: its weight has shape {tuple(layer.weight.shape)}, expected {expected}")
        if not bool(torch.isfinite(layer.weight).all()):
            raise ValueError(f"layer {name!r}: its weight contains NaN or Inf entries; expected finite values")
    return selected


def _truncations(selected: dict[str, nn.Module], request: CompressRequest) -> dict[str, Replacement]:
    """Every selected conv with its kernel truncated in place (all computed before any is written)."""
    kernels = {name: truncated_kernel(conv, f"model.{name}", request.cut, max_rank=request.size,
                                       rel_error=request.rel_error, cutoff=request.cutoff, **request.fit)
               for name, conv in selected.items()}
    for name, (kernel, _) in kernels.items():
        with torch.no_grad():
            selected[name].weight.copy_(kernel)
    return {name: (selected[name], info.ranks, "") for name, (_, info) in kernels.items()}


def _fixed(structures: dict[str, Structure], request: CompressRequest) -> dict[str, Replacement]:
    """Each layer fitted with the request's criteria; kept dense where that is not smaller."""
    replacements = {}
    for name, structure in structures.items():
        size = request.matrix_size() if isinstance(structure, (SVDStructure, LinearStructure)) else request.size
        with _naming(name):
            module = structure.fixed(size, request.rel_error, request.cutoff)
        dense = count_params(structure.layer)
        if count_params(module) < dense:
            replacements[name] = (module, _ranks(module), "")
        else:
            note = f"kept dense: the factorized layer would have {count_params(module):,} >= {dense:,} parameters"
            replacements[name] = (structure.layer, (), note)
    return replacements


def _ranks(module: nn.Module) -> tuple[int, ...]:
    for attribute in ("ranks", "bond_dims"):
        if hasattr(module, attribute):
            return tuple(getattr(module, attribute))
    return (module.rank,)


def _input_shapes(model: nn.Module, layers: dict[str, nn.Module], input_size: Sequence[int]) -> dict[str, tuple]:
    """The shape (without the batch) of each layer's input in one forward pass at ``input_size``."""
    names = {layer: name for name, layer in layers.items()}
    shapes = {}

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        shapes.setdefault(names[module], tuple(inputs[0].shape[1:]))

    run_with_hooks(model, input_size, names, hook)
    return shapes


def _options(model: nn.Module, structures: dict[str, Structure], request: CompressRequest,
             costs_before: dict | None) -> dict[str, list[Option]]:
    """Each layer's candidates cheaper than the dense layer, costed exactly, and the dense layer (error 0)."""
    shapes = ({} if request.input_size is None
              else _input_shapes(model, {n: s.layer for n, s in structures.items()}, request.input_size))
    options = {}
    for name, structure in structures.items():
        with _naming(name):
            candidates = structure.candidates()
        chain = ChainCosts.of(structure.meta(), shapes.get(name))
        if request.budget_on == "macs":
            costs, dense = chain.macs(candidates.widths), _macs(costs_before, name)
        else:
            costs, dense = chain.params(candidates.widths), count_params(structure.layer)
        options[name] = [Option(ranks, float(cost), float(error))
                         for ranks, cost, error in zip(candidates.ranks, costs, candidates.errors) if cost < dense]
        options[name].append(Option(None, float(dense), 0.0))
    return options


def _dense_cost(options: dict[str, list[Option]]) -> float:
    return sum(next(o.cost for o in layer_options if o.ranks is None) for layer_options in options.values())


def _scored(model: nn.Module, structures: dict[str, Structure], options: dict[str, list[Option]],
            request: CompressRequest) -> tuple[dict[str, Option], dict[str, Any]]:
    """The accuracy policy: score candidates one layer at a time, then :func:`select_by_score`; and the scores."""
    scores: dict[str, Any] = {"baseline": _score(request.evaluate, model, "the uncompressed model")}
    scored = {}
    for name, structure in structures.items():
        frontier = efficient_frontier(options[name])
        dense = frontier[0]
        picks = {}
        for fraction in request.fractions:
            affordable = [o for o in frontier if o.cost <= fraction * dense.cost]
            if affordable:
                picks.setdefault(affordable[0].ranks, affordable[0])
        scored[name], scores[name] = [(dense, math.inf)], []
        for option in picks.values():
            with _naming(name):
                module = structure.at(option.ranks)
            _install(model, name, module, structure.layer)
            try:
                score = _score(request.evaluate, model, f"the model with layer {name!r} at ranks {option.ranks}")
            finally:
                _install(model, name, structure.layer, structure.layer)
            scored[name].append((option, score))
            scores[name].append((list(option.ranks), option.cost, score))
    return select_by_score(scored, request.budget * _dense_cost(options)), scores


def _score(evaluate: Callable[[nn.Module], float], model: nn.Module, what: str) -> float:
    with torch.no_grad():
        score = evaluate(model)
    if isinstance(score, torch.Tensor) and score.numel() == 1:
        score = score.item()
    if isinstance(score, bool) or not isinstance(score, (int, float)) or math.isnan(score):
        raise ValueError(f"evaluate must return a number (higher is better), got {score!r} for {what}")
    return float(score)


def _built(structures: dict[str, Structure], chosen: dict[str, Option]) -> dict[str, Replacement]:
    replacements = {}
    for name, option in chosen.items():
        if option.ranks is None:
            replacements[name] = (structures[name].layer, (), "kept dense by the allocation")
        else:
            with _naming(name):
                module = structures[name].at(option.ranks)
            replacements[name] = (module, _ranks(module), "")
    return replacements


def _install(model: nn.Module, name: str, module: nn.Module, original: nn.Module) -> None:
    """Put ``module`` at ``name``, with the training mode and ``requires_grad`` of ``original``."""
    if module is not original:
        module.train(original.training)
        module.requires_grad_(original.weight.requires_grad)
    parent, _, attribute = name.rpartition(".")
    setattr(model.get_submodule(parent), attribute, module)


def _layer_report(name: str, layer: nn.Module, params: int, weight: torch.Tensor, module: nn.Module,
                  ranks: tuple[int, ...], note: str, method: str, costs_before: dict | None,
                  costs_after: dict | None) -> LayerCompression:
    """One layer's report; ``params`` and ``weight`` are the original layer's, ``module`` the new one."""
    with torch.no_grad():
        approx = module.folded_weight() if hasattr(module, "folded_weight") else module.weight.detach()
    return LayerCompression(
        name=name, kind=type(layer).__name__, structure="truncated" if method == "truncate" else type(module).__name__,
        ranks=tuple(ranks), params_before=params, params_after=count_params(module),
        macs_before=None if costs_before is None else _macs(costs_before, name),
        macs_after=None if costs_after is None else _macs(costs_after, name),
        rel_error=relative_error(weight, approx), norm_loss=norm_loss(weight, approx), note=note,
    )


def _macs(costs: dict, name: str) -> int:
    """The MACs of the layer ``name`` and of its sub-layers."""
    return sum(cost.macs for leaf, cost in costs.items() if leaf == name or leaf.startswith(name + "."))


def _total(costs: dict | None) -> int | None:
    return None if costs is None else sum(cost.macs for cost in costs.values())
