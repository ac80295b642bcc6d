"""What a calibrated :func:`tnlib_torch.compress_` learns from its data before it changes the model.

:func:`collect` runs the calibration passes over the unchanged model: the input moments of every
selected layer (:func:`tnlib_torch.input_moments`, the data metric of each fit) and, for a budget,
the sensitivity of the loss to each layer's output error
(:func:`tnlib_torch.compression.sensitivity.layer_sensitivities`, the kind ``"auto"`` resolved by
:func:`tnlib_torch.compression.sensitivity.resolve_sensitivity`).  :func:`output_error` gives a
compressed layer's relative output error on that data from its moments.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from tnlib_torch.compression.calibration import LayerMoments, input_moments
from tnlib_torch.compression.request import Calibration
from tnlib_torch.compression.sensitivity import layer_sensitivities, resolve_sensitivity

__all__ = ["LayerData", "collect", "output_error"]


@dataclass(frozen=True)
class LayerData:
    """The calibration of the selected layers: ``moments`` by name, the budget's ``weights`` (or
    ``None``: every layer weighs alike), the ``sensitivity`` they are (``"fisher"``, ``"measured"`` or
    ``"none"``) and the ``seconds`` each pass took."""

    moments: dict[str, LayerMoments]
    weights: dict[str, float] | None = None
    sensitivity: str = "none"
    seconds: dict[str, float] = field(default_factory=dict)


def collect(model: nn.Module, selected: dict[str, nn.Module], calibration: Calibration, weigh: bool,
            seed: Any = None) -> LayerData:
    """The moments of the ``selected`` layers of ``model`` and, if ``weigh``, their sensitivities (drawn with ``seed``).

    The model is only read: every failure (a bad batch, a shape the model refuses, NaN inputs)
    raises before anything is compressed.
    """
    start = time.perf_counter()
    linear = any(isinstance(layer, nn.Linear) for layer in selected.values())
    found = input_moments(model, calibration.data, include=list(selected), linear=linear, samples=calibration.samples)
    moments = {name: found[name] for name in selected}
    seconds = {"moments": time.perf_counter() - start}
    kind = resolve_sensitivity(calibration.sensitivity, model, calibration.data) if weigh else "none"
    if kind == "none":
        return LayerData(moments, None, kind, seconds)
    start = time.perf_counter()
    weights = layer_sensitivities(model, selected, calibration.data, kind=kind, samples=calibration.samples, seed=seed)
    seconds["sensitivity"] = time.perf_counter() - start
    return LayerData(moments, weights, kind, seconds)


def output_error(moments: LayerMoments, weight: torch.Tensor, approx: torch.Tensor) -> float:
    """``||W - W~||_M / ||W||_M``: the relative error of the layer's outputs on the calibration data.

    ``W`` is the layer's weight (a conv's ``(out, in/G, kh, kw)``, a linear layer's ``(out, in)``),
    ``W~`` what the compressed layer computes, both without bias; the squared norm sums the groups'
    ``tr(D_g M_g D_g^T)``.  Exact for the full moment; in the norm of the Kronecker product
    ``M_i (x) M_hw`` when only its factors were collected.  0 for a layer whose outputs are zero.
    """
    def squared(difference: torch.Tensor) -> float:
        rows = difference.detach().to(torch.float64).cpu().numpy()
        rows = rows.reshape(moments.groups, rows.shape[0] // moments.groups, -1)
        total = 0.0
        for block, moment in zip(rows, moments.moments):
            if moments.full:
                total += float(np.einsum("oa,ab,ob->", block, moment[moments.labels], block))
            else:
                block = block.reshape(block.shape[0], moment["i"].shape[0], -1)
                total += float(np.einsum("oab,ac,ocd,bd->", block, moment["i"], block, moment["hw"], optimize=True))
        return max(total, 0.0)

    reference = squared(weight)
    return 0.0 if reference == 0 else float(np.sqrt(squared(weight - approx) / reference))
