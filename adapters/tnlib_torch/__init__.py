"""tnlib_torch: the PyTorch adapter of tnlib, in four subpackages whose imports point one way.

- :mod:`tnlib_torch.layers`: factorized conv and linear layers (CP, Tucker-2, MPS, SVD along a
  cut) that keep every conv semantic (docs/torch_layers.md);
- :mod:`tnlib_torch.compression`: in-place truncation of kernels along cuts, parameter and MAC
  accounting, budget allocation across layers and model-wide :func:`compress`
  (docs/torch_surgery.md, docs/torch_compress.md), calibration on data (docs/torch_calibration.md);
  it builds on ``layers``;
- :mod:`tnlib_torch.zoo`: the study's networks, checkpoints, data sets read safely, evaluation
  and fine-tuning (docs/torch_models.md, docs/torch_data.md, docs/torch_train.md); it needs
  none of tnlib's math;
- :mod:`tnlib_torch.study`: the compressibility study and its command, ``tnlib study``
  (docs/study.md); it builds on the other three.

Every public name is importable from ``tnlib_torch`` itself.  The adapter imports :mod:`tnlib`;
the core never imports it.
"""

import sys

import tnlib
from tnlib_torch.compression import (
    BUDGET_ON,
    DEFAULT_MAX_FULL,
    MAC_RULES,
    METHODS,
    SIZE_KEYWORDS,
    SUPPORTED_MODULES,
    CompressionReport,
    LayerCompression,
    LayerCost,
    LayerMoments,
    LayerRefinement,
    LayerReport,
    allocation,
    compress,
    compress_,
    count_macs,
    count_params,
    input_moments,
    layer_costs,
    layer_sensitivities,
    recalibrate_batchnorm,
    refine_,
    select_convs,
    surgery,
    truncate_conv_,
    truncate_model_,
)
from tnlib_torch.layers import (
    CPConv2d,
    CPFitInfo,
    FactorizedConv2d,
    FactorizedModule,
    MPSConv2d,
    SVDConv2d,
    SVDLinear,
    Tucker2Conv2d,
)
from tnlib_torch.zoo import (
    CIFAR_RESNET_NORMALIZATION,
    MODELS,
    NORMALIZATIONS,
    EpochRecord,
    History,
    TrainingDiverged,
    VanillaCNN,
    build_model,
    cifar10,
    cifar100,
    cifar_resnet,
    data,
    digits,
    evaluate,
    fine_tune,
    image_folder,
    load_checkpoint,
    loader,
    models,
    resnet18_cifar,
    resnet50_cifar,
    train,
    vanilla_cnn,
)

# The module paths of tnlib_torch 0.1, from before the subpackages, import the same modules.
for _old, _module in {"data": data, "models": models, "train": train, "policy": allocation, "surgery": surgery}.items():
    sys.modules[f"{__name__}.{_old}"] = _module

__version__ = tnlib.__version__

__all__ = [
    # layers
    "CPConv2d",
    "CPFitInfo",
    "FactorizedConv2d",
    "FactorizedModule",
    "MPSConv2d",
    "SVDConv2d",
    "SVDLinear",
    "Tucker2Conv2d",
    # accounting
    "MAC_RULES",
    "LayerCost",
    "count_macs",
    "count_params",
    "layer_costs",
    # compression
    "BUDGET_ON",
    "METHODS",
    "SIZE_KEYWORDS",
    "CompressionReport",
    "LayerCompression",
    "compress",
    "compress_",
    # calibration
    "DEFAULT_MAX_FULL",
    "LayerMoments",
    "LayerRefinement",
    "input_moments",
    "layer_sensitivities",
    "recalibrate_batchnorm",
    "refine_",
    # models
    "CIFAR_RESNET_NORMALIZATION",
    "MODELS",
    "VanillaCNN",
    "build_model",
    "cifar_resnet",
    "load_checkpoint",
    "resnet18_cifar",
    "resnet50_cifar",
    "vanilla_cnn",
    # data
    "NORMALIZATIONS",
    "cifar10",
    "cifar100",
    "digits",
    "image_folder",
    "loader",
    # evaluation and training
    "EpochRecord",
    "History",
    "TrainingDiverged",
    "evaluate",
    "fine_tune",
    # surgery
    "SUPPORTED_MODULES",
    "LayerReport",
    "select_convs",
    "truncate_conv_",
    "truncate_model_",
]
