"""What a study needs around the math: networks, checkpoints, data, evaluation and fine-tuning.

- :mod:`~tnlib_torch.zoo.models`: the four-layer CNN, the CIFAR ResNets, the registry
  (docs/torch_models.md); :mod:`~tnlib_torch.zoo.weights`: checkpoints loaded with
  ``weights_only=True``;
- :mod:`~tnlib_torch.zoo.data`, :mod:`~tnlib_torch.zoo.datasets`, :mod:`~tnlib_torch.zoo.cifar`,
  :mod:`~tnlib_torch.zoo.safe_pickle`: data sets read without executing code (docs/torch_data.md);
- :mod:`~tnlib_torch.zoo.train`, :mod:`~tnlib_torch.zoo.train_setup`,
  :mod:`~tnlib_torch.zoo.checkpoint`: evaluation and resumable fine-tuning (docs/torch_train.md).

Nothing here uses tnlib's decompositions or the other subpackages of :mod:`tnlib_torch`.
"""

from tnlib_torch.zoo.data import NORMALIZATIONS, cifar10, cifar100, digits, image_folder, loader
from tnlib_torch.zoo.models import (
    CIFAR_RESNET_NORMALIZATION,
    MODELS,
    VanillaCNN,
    build_model,
    cifar_resnet,
    resnet18_cifar,
    resnet50_cifar,
    vanilla_cnn,
)
from tnlib_torch.zoo.train import EpochRecord, History, TrainingDiverged, evaluate, fine_tune
from tnlib_torch.zoo.weights import load_checkpoint

__all__ = [
    "CIFAR_RESNET_NORMALIZATION",
    "MODELS",
    "NORMALIZATIONS",
    "EpochRecord",
    "History",
    "TrainingDiverged",
    "VanillaCNN",
    "build_model",
    "cifar10",
    "cifar100",
    "cifar_resnet",
    "digits",
    "evaluate",
    "fine_tune",
    "image_folder",
    "load_checkpoint",
    "loader",
    "resnet18_cifar",
    "resnet50_cifar",
    "vanilla_cnn",
]
