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
  and :func:`tnlib_torch.compression.allocation.allocate` minimizes the sum of the layers'
  squared relative errors under the budget, greedily: the smallest error
  increase per unit of cost saved.
* **accuracy** (``budget`` and ``evaluate``): the candidates of each layer at
  ``eval_points`` cost fractions are scored by ``evaluate`` on the model with
  that one layer compressed, and :func:`tnlib_torch.compression.allocation.select_by_score`
  keeps the lowest score as high as the budget allows (AIMET's greedy
  compression-ratio selection), then spends what is left on upgrades.

With ``calibration`` data the compression sees what the network feels: the
second moments of every selected layer's inputs are collected in one pass
(:func:`tnlib_torch.input_moments`), every fit and every error estimate is in
that layer's data metric (the error of its outputs on the data, not of its
kernel), a budget weighs each layer's output error by the loss's sensitivity to
it (a classifier's Fisher estimate by default, :mod:`tnlib_torch.compression.sensitivity`), ``refine`` corrects the
factorized layers one after the other against the original network's outputs
(:func:`tnlib_torch.compression.refine.refine_`), and the BatchNorm statistics
are corrected at the end by the change the compression made to them on the data, measured
against the original network on the same samples
(:func:`tnlib_torch.recalibrate_batchnorm` with ``reference``).
See docs/torch_compress.md.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from tnlib_torch._checks import check_module
from tnlib_torch.compression.accounting import count_params, layer_costs, macs_of
from tnlib_torch.compression.calibrated import LayerData, collect, output_error
from tnlib_torch.compression.calibration import recalibrate_batchnorm
from tnlib_torch.compression.policies import Replacement, install, policy_for
from tnlib_torch.compression.refine import refine_
from tnlib_torch.compression.report import CompressionReport, LayerCompression
from tnlib_torch.compression.request import BUDGET_ON, METHODS, SIZE_KEYWORDS, Calibration, check_request
from tnlib_torch.compression.surgery import factored_params, select_modules
from tnlib_torch.layers.chain import FactorizedModule
from tnlib_torch.layers.reports import norm_loss, relative_error
from tnlib_torch.layers.svd import SVDConv2d

__all__ = ["BUDGET_ON", "METHODS", "REFINE_SAMPLES", "SIZE_KEYWORDS", "compress", "compress_"]

#: ``refine="stage"`` refits on at most this many calibration samples (each layer's pass reads them again;
#: a least-squares refit of ``r`` unknowns per output channel is determined long before: 256 CIFAR images
#: give 65,536 positions to a 32x32 layer).  ``refine="kernel"`` reads all of them (``calibration_samples``):
#: it estimates full ``C kh kw``-square moments, which a quarter of the data fitted worse (docs/torch_compress.md).
REFINE_SAMPLES = 256


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
    seed: int | np.random.Generator | None = None,
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
    calibration: Any = None,
    calibration_samples: int | None = None,
    refine: bool | str = False,
    sensitivity: str = "auto",
    recalibrate: bool = True,
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
        Fixed policy, for ``"tucker2"``, ``"mps"``, ``"svd"`` and ``"truncate"``:
        drop singular values below ``cutoff`` times the largest (for Tucker-2,
        of each mode's unfolding, as :func:`tnlib.tucker` does).
    cut
        For ``"svd"``, the cut of :class:`SVDConv2d`: ``"o|ihw"`` (the default of the fixed
        policy), ``"i|ohw"``, ``"oh|iw"``, ``"ow|ih"``, or with a budget ``"auto"`` (its default):
        each kxk conv's cut chosen by the allocation with its rank, from the union of every cut's
        candidates (the report's ``cut`` names it); for ``"truncate"``, a cut or a sequence of cuts
        applied in turn (default ``"o|ihw"``).
    order
        For ``"mps"``, the site order of :class:`MPSConv2d` (default ``"ihwo"``).
    fit
        Keywords for the fit of every kxk conv (and, for ``"svd"``, of every
        layer), passed to the layer's ``from_conv``: ``{"method": "lm",
        "max_iter": 200, "seed": 0}`` for CP, ``{"method": "hooi"}`` for
        Tucker-2, ``{"method": "randomized", "seed": 0}`` for an SVD.  CP (ALS) fits
        get ``"ridge": CP_RIDGE`` (0.01) unless ``fit`` gives one, so that the layers
        can be fine-tuned (:data:`tnlib_torch.compression.structures.CP_RIDGE`).
    seed
        The seed of every fit that draws random numbers (CP's initialization and
        :func:`tnlib.cp_rank`, a randomized SVD of an MPS, an SVD split or a
        truncation) and of the sensitivities' draws, the same for every layer: an int makes the call repeat
        exactly, ``None`` (the default, as in the core) draws fresh entropy.
        The same as ``fit={"seed": ...}``; giving both is refused.  Tucker-2
        draws nothing and ignores it.
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
    calibration
        Data the model is calibrated on: a tensor of inputs, a ``DataLoader`` or any iterable of
        input batches or ``(input, target, ...)`` pairs (floating-point, finite, on the model's
        device or on the CPU).  Every fit and estimate is then in each layer's data metric,
        and the BatchNorm statistics are re-estimated on it at the end (see the module docs).
        Not for ``"truncate"``.
    calibration_samples
        Read at most this many samples of ``calibration`` per pass (default: all of it).
    refine
        With ``calibration``: correct the factorized layers in the order they run, each against
        the original network's outputs of that layer from the compressed network's own inputs
        (``"stage"``: on at most :data:`REFINE_SAMPLES` samples): ``"kernel"`` re-decomposes each layer's best
        dense kernel for its compressed inputs in their metric, ``"stage"`` refits the last
        pointwise stage by least squares (:func:`tnlib_torch.compression.refine.refine_`'s
        ``refit``); ``True`` is :data:`tnlib_torch.compression.request.REFINE_DEFAULT`.
    sensitivity
        With ``calibration`` and ``budget``: how each layer's output error is weighed,
        ``"auto"`` (default: ``"fisher"`` when the model is a classifier, its output
        ``(batch, classes)`` logits, which kept the most accuracy on ResNet-20 for every method,
        see docs/torch_compress.md; else ``"none"``), ``"fisher"``, ``"measured"``
        (:func:`tnlib_torch.compression.sensitivity.layer_sensitivities`) or ``"none"`` (every
        layer alike).  The report's ``calibration["sensitivity"]`` says which was used.
    recalibrate
        With ``calibration``: correct the BatchNorm statistics at the end (default) by the
        change the compression made to them on the calibration data, paired against the
        original network on the same samples (:func:`tnlib_torch.recalibrate_batchnorm` with
        ``reference``, which keeps what the model's own statistics learned from far more data);
        ``False`` keeps the model's own unchanged.

    Returns
    -------
    CompressionReport
        Per layer: structure, ranks, parameters and MACs before and after,
        relative error and norm loss of the kernel (with calibration, also of the outputs on
        the data); and the model's totals.

    Raises
    ------
    TypeError, ValueError
        Naming the argument: an unknown method, a size limit that is not the
        method's (``rank`` for Tucker-2), a rank of 0 or above what a layer
        allows (naming the layer), a budget outside (0, 1] or below what the
        smallest ranks reach, both a budget and fixed criteria, no criterion at
        all, no layer selected; calibration data of the wrong shape or channel count, empty,
        not finite, or on another accelerator than the model.  A failure leaves ``model`` unchanged.
    """
    request = check_request(method, rel_error=rel_error, sizes=dict(ranks=ranks, rank=rank, max_bond=max_bond,
                                                                    max_rank=max_rank),
                            options=dict(cutoff=cutoff, cut=cut, order=order), fit=fit, seed=seed, linear=linear,
                            budget=budget, budget_on=budget_on, evaluate=evaluate, eval_points=eval_points,
                            input_size=input_size,
                            calibration=dict(data=calibration, samples=calibration_samples, refine=refine,
                                             sensitivity=sensitivity, recalibrate=recalibrate))
    check_module(model)
    selected = _selected(model, request.linear, include, exclude, layers, where)
    calibrated = request.calibration
    data = None if calibrated is None else collect(model, selected, calibrated, weigh=request.policy == "budget",
                                                   seed=request.fit.get("seed"))
    costs_before = None if input_size is None else layer_costs(model, input_size)
    originals = {name: (layer, count_params(layer), layer.weight.detach().clone()) for name, layer in selected.items()}
    params_before = count_params(model)
    original_model = (copy.deepcopy(model) if calibrated is not None and (calibrated.refine or calibrated.recalibrate)
                      else None)
    policy = policy_for(request, costs_before, data)
    replacements = policy.choose(model, selected)
    for name, replacement in replacements.items():
        install(model, name, replacement.module, selected[name])
    refined = {}
    if data is not None:
        try:
            refined = _calibrate(model, original_model, replacements, calibrated, data, request.fit)
        except BaseException:
            for name, layer in selected.items():
                install(model, name, layer, layer)
            raise
    costs_after = None if input_size is None else layer_costs(model, input_size)
    reports = {name: _layer_report(name, *originals[name], replacement, costs_before, costs_after, data,
                                   refined.get(name))
               for name, replacement in replacements.items()}
    return CompressionReport(
        method=request.method, policy=request.policy, layers=reports, params_before=params_before,
        params_after=count_params(model), macs_before=_total(costs_before), macs_after=_total(costs_after),
        input_size=request.input_size, budget=request.budget,
        budget_on=None if request.budget is None else request.budget_on, scores=policy.scores,
        calibration=None if data is None else {
            "samples": next(iter(data.moments.values())).samples, "sensitivity": data.sensitivity,
            "refine": calibrated.refine, "recalibrate": calibrated.recalibrate, "seconds": data.seconds},
    )


def _calibrate(model: nn.Module, original: nn.Module | None, replacements: dict[str, Replacement],
               calibration: Calibration, data: LayerData, fit: Mapping[str, Any]) -> dict[str, float]:
    """The steps after the layers are installed: the refinement (if asked) and the BatchNorm statistics.

    Returns each refined layer's relative output error in the compressed network; ``data.seconds``
    gains the time of each step.
    """
    refined = {}
    if calibration.refine:
        start = time.perf_counter()
        factorized = [name for name, r in replacements.items() if isinstance(r.module, FactorizedModule)]
        samples = (calibration.samples if calibration.refine == "kernel"
                   else min(calibration.samples or REFINE_SAMPLES, REFINE_SAMPLES))
        results = refine_(original, model, factorized, calibration.data, samples=samples, refit=calibration.refine,
                          fit=fit)
        refined = {name: result.error_after for name, result in results.items() if result.method != "skipped"}
        data.seconds["refine"] = time.perf_counter() - start
    if calibration.recalibrate:
        start = time.perf_counter()
        recalibrate_batchnorm(model, calibration.data, samples=calibration.samples, reference=original)
        data.seconds["batchnorm"] = time.perf_counter() - start
    return refined


def _selected(model: nn.Module, linear: bool, include: Any, exclude: Any, layers: Any,
              where: Any) -> dict[str, nn.Module]:
    """The selected layers, none inside a factorized layer, each with a finite weight of the right order."""
    types = (nn.Conv2d, nn.Linear) if linear else (nn.Conv2d,)
    inside = [name + "." for name, module in model.named_modules() if isinstance(module, FactorizedModule)]
    selected = {name: layer for name, layer in select_modules(model, types, include, exclude, layers, where)
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


def _layer_report(name: str, layer: nn.Module, params: int, weight: torch.Tensor, replacement: Replacement,
                  costs_before: dict | None, costs_after: dict | None, data: LayerData | None,
                  refined_error: float | None) -> LayerCompression:
    """One layer's report: ``layer``, ``params`` and ``weight`` are the original's, ``replacement`` the new one."""
    module = replacement.module
    with torch.no_grad():
        approx = module.folded_weight() if hasattr(module, "folded_weight") else module.weight.detach()
    truncation = replacement.truncation
    return LayerCompression(
        name=name, kind=type(layer).__name__, structure=type(module).__name__ if truncation is None else "truncated",
        ranks=tuple(replacement.ranks), params_before=params, params_after=count_params(module),
        rel_error=relative_error(weight, approx), norm_loss=norm_loss(weight, approx), shape=tuple(weight.shape),
        groups=getattr(layer, "groups", 1),
        macs_before=None if costs_before is None else macs_of(costs_before, name),
        macs_after=None if costs_after is None else macs_of(costs_after, name), note=replacement.note,
        factored_params=None if truncation is None else factored_params(layer, truncation), info=truncation,
        output_error=None if data is None else output_error(data.moments[name], weight, approx),
        refined_error=refined_error, cut=module.cut if isinstance(module, SVDConv2d) else None,
    )


def _total(costs: dict | None) -> int | None:
    return None if costs is None else sum(cost.macs for cost in costs.values())
