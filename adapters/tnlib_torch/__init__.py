"""tnlib_torch: the PyTorch adapter of tnlib (conv layers, models, studies).

Factorized conv and linear layers (CP, Tucker-2, MPS, SVD along a cut;
:mod:`tnlib_torch.layers`, docs/torch_layers.md), in-place truncation of conv
kernels along cuts (:mod:`tnlib_torch.surgery`), parameter and MAC accounting
(:mod:`tnlib_torch.accounting`, docs/torch_surgery.md), budget allocation
across layers (:mod:`tnlib_torch.policy`), model-wide compression
(:func:`compress`, docs/torch_compress.md), and what a study needs around the
math: the networks (:mod:`tnlib_torch.models`, docs/torch_models.md), data sets
read safely (:mod:`tnlib_torch.data`, docs/torch_data.md), evaluation and
(re)training (:mod:`tnlib_torch.train`, docs/torch_train.md), and the
compressibility study with its command line (:mod:`tnlib_torch.study`,
``tnlib study``, docs/study.md).  It imports :mod:`tnlib`; the core never
imports it.
"""

import tnlib
from tnlib_torch.accounting import MAC_RULES, LayerCost, count_macs, count_params, layer_costs
from tnlib_torch.compress import BUDGET_ON, METHODS, SIZE_KEYWORDS, compress, compress_
from tnlib_torch.compression_report import CompressionReport, LayerCompression
from tnlib_torch.data import NORMALIZATIONS, cifar10, cifar100, digits, image_folder, loader
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
from tnlib_torch.models import (
    CIFAR_RESNET_NORMALIZATION,
    MODELS,
    VanillaCNN,
    build_model,
    cifar_resnet,
    load_checkpoint,
    resnet18_cifar,
    resnet50_cifar,
    vanilla_cnn,
)
from tnlib_torch.surgery import SUPPORTED_MODULES, LayerReport, select_convs, truncate_conv_, truncate_model_
from tnlib_torch.train import EpochRecord, History, TrainingDiverged, evaluate, fine_tune

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
