"""Compressing a model's layers (see docs/torch_compress.md and docs/torch_surgery.md).

- :mod:`~tnlib_torch.compression.surgery`: kernels truncated in place along cuts, layer selection;
- :mod:`~tnlib_torch.compression.accounting`: parameters and MACs (the latter on the meta device);
- :mod:`~tnlib_torch.compression.costs`: exact costs of a factorized structure at every rank;
- :mod:`~tnlib_torch.compression.structures`: one structure per method, its fits and candidates;
- :mod:`~tnlib_torch.compression.allocation`: choosing one option per layer under a global budget;
- :mod:`~tnlib_torch.compression.request`: the checked arguments of one ``compress`` call;
- :mod:`~tnlib_torch.compression.policies`: the fixed, budget and accuracy policies behind one protocol;
- :mod:`~tnlib_torch.compression.compress`: :func:`compress` and :func:`compress_`;
- :mod:`~tnlib_torch.compression.calibration`: :func:`input_moments` (the data metric of each
  layer) and :func:`recalibrate_batchnorm`;
- :mod:`~tnlib_torch.compression.sensitivity`: :func:`layer_sensitivities`, the weight of each
  layer's output error in the loss; :mod:`~tnlib_torch.compression.calibrated`: what a calibrated
  ``compress`` collects before it changes the model;
- :mod:`~tnlib_torch.compression.refine`: :func:`refine_`, sequential error correction;
- :mod:`~tnlib_torch.compression.report`: :class:`CompressionReport` and :class:`LayerCompression`
  (also :data:`LayerReport`), the one record of a compressed layer.

It builds on :mod:`tnlib_torch.layers`; nothing here imports the study or the zoo.
"""

from tnlib_torch.compression.accounting import MAC_RULES, LayerCost, count_macs, count_params, layer_costs
from tnlib_torch.compression.calibration import DEFAULT_MAX_FULL, LayerMoments, input_moments, recalibrate_batchnorm
from tnlib_torch.compression.compress import BUDGET_ON, METHODS, SIZE_KEYWORDS, compress, compress_
from tnlib_torch.compression.refine import LayerRefinement, refine_
from tnlib_torch.compression.report import CompressionReport, LayerCompression
from tnlib_torch.compression.sensitivity import layer_sensitivities
from tnlib_torch.compression.surgery import (
    SUPPORTED_MODULES,
    LayerReport,
    select_convs,
    truncate_conv_,
    truncate_model_,
)

__all__ = [
    "BUDGET_ON",
    "DEFAULT_MAX_FULL",
    "MAC_RULES",
    "METHODS",
    "SIZE_KEYWORDS",
    "SUPPORTED_MODULES",
    "CompressionReport",
    "LayerCompression",
    "LayerCost",
    "LayerMoments",
    "LayerRefinement",
    "LayerReport",
    "compress",
    "compress_",
    "count_macs",
    "count_params",
    "input_moments",
    "layer_costs",
    "layer_sensitivities",
    "recalibrate_batchnorm",
    "refine_",
    "select_convs",
    "truncate_conv_",
    "truncate_model_",
]
