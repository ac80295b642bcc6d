"""The inputs of a study resolved from its :class:`~tnlib_torch.study.config.StudyConfig`: model, data, layers.

:func:`resolve_inputs` turns the names of a config into objects, checking them before any costly work:

- **the model**: a key of :data:`tnlib_torch.zoo.models.MODELS`, built by :func:`~tnlib_torch.zoo.models.build_model`
  with the data's number of classes and channels; or ``"package.module:factory"``, imported and called with
  ``num_classes=`` and ``in_channels=`` where its signature takes them (each one it takes), else with no
  arguments.  It must return an ``nn.Module`` that maps one image of the data to ``(1, classes)`` logits;
- **the data**: ``"digits"`` (the seeded stratified split of :func:`tnlib_torch.zoo.data.digits`, standardized);
  ``"cifar10"``, ``"cifar100"`` (read from ``data_root``, normalized by the data set's preset, training
  images augmented by random crop and flip); or the path of a folder holding ``train/`` and ``test/``, each
  ``<class>/<image>`` (:func:`tnlib_torch.zoo.data.image_folder`, decoded once and kept in memory, RGB,
  normalized by the ``"cifar10"`` preset, training images augmented).  The CIFAR ResNets (``"resnet20"``
  ... ``"resnet110"``) get the ``"cifar-resnet"`` normalization instead, the one their published
  checkpoints were trained with.  ``eval_samples`` keeps the first ``eval_samples`` test images of a
  permutation seeded by ``seed`` (in data set order, not stratified); ``train_samples`` keeps training
  images the same way.  An image folder's files are listed first and only the images kept are decoded
  (once, kept in memory).  :func:`fetch_data` downloads a missing CIFAR into ``data_root`` first;
- **the calibration data** (:meth:`StudyInputs.calibration_loader`): the first training images of a
  seeded permutation, not augmented, for the steps that look at a layer's inputs.

What :func:`~tnlib_torch.study.pipeline.run_study` checks before it opens the output folder, besides the
inputs: the device (:func:`check_device`) and the checkpoint file (:func:`check_checkpoint`, before the
data is read).

The same config gives the same inputs in every process, which is how the study's workers rebuild the model
and the data themselves.
"""

from __future__ import annotations

import copy
import functools
import importlib
import inspect
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from tnlib_torch._checks import check_count
from tnlib_torch.study.config import StudyConfig
from tnlib_torch.study.selection import select_dense_convs
from tnlib_torch.zoo.data import ImageDataset, ImageFolder, cifar10, cifar100, digits, image_folder, loader
from tnlib_torch.zoo.models import CIFAR_RESNET_DEPTHS, MODELS, build_model
from tnlib_torch.zoo.weights import _read_state_dict

__all__ = ["StudyInputs", "check_checkpoint", "check_device", "fetch_data", "resolve_inputs"]

#: The models normalized as their published checkpoints were trained (ImageNet statistics).
_CIFAR_RESNETS = frozenset(f"resnet{depth}" for depth in CIFAR_RESNET_DEPTHS)
_CIFAR = {"cifar10": cifar10, "cifar100": cifar100}


@dataclass(frozen=True)
class StudyInputs:
    """The model factory and the data of a study, as :func:`resolve_inputs` resolved them.

    Attributes
    ----------
    name : str
        The config's ``model``, for messages.
    factory : callable
        Builds a freshly initialized model, with no arguments.
    train_set, test_set : Dataset
        The training images (augmented where the data set is, capped by ``train_samples``) and the test
        images (capped by ``eval_samples``).
    classes : tuple of str
        The class names.
    in_channels : int
        The channels of the images.
    layers : tuple of str
        The layers studied: the dense convs matching the config's ``include``
        (:func:`~tnlib_torch.study.selection.select_dense_convs`).
    """

    name: str
    factory: Callable[[], Any]
    train_set: Dataset
    test_set: Dataset
    classes: tuple[str, ...]
    in_channels: int
    layers: tuple[str, ...]

    def model(self, seed: int, state: bytes | None = None) -> nn.Module:
        """A model initialized under ``torch.manual_seed(seed)``, then given ``state`` if any.

        ``state`` is a state dict as ``torch.save`` writes it, read back with ``weights_only=True``.
        """
        model = _built(self.factory, self.name, seed)
        if state is not None:
            model.load_state_dict(torch.load(io.BytesIO(state), weights_only=True, map_location="cpu"))
        return model

    def loaders(self, batch_size: int, seed: int) -> tuple[DataLoader, DataLoader]:
        """The training loader (shuffled by a generator seeded with ``seed``) and the test loader (in order)."""
        return (loader(self.train_set, batch_size, shuffle=True, seed=seed),
                loader(self.test_set, batch_size, seed=seed))

    def calibration_loader(self, samples: int, batch_size: int, seed: int) -> DataLoader:
        """The calibration batches: ``(inputs, targets)`` of the first ``samples`` images of ``train_set`` in a
        permutation seeded by ``seed`` (all of them when it holds fewer), in data set order, not augmented,
        not shuffled.

        The same arguments give the same batches in every process; the images are those the study trains on
        (``train_set``, capped by ``train_samples``), seen as they are, without the random crops and flips of
        training.

        Raises
        ------
        ValueError, TypeError
            ``samples`` or ``batch_size`` not an int >= 1, ``seed`` not an int >= 0.
        """
        check_count(samples, "samples", 1)
        return loader(_capped(_unaugmented(self.train_set), samples, seed), batch_size, seed=seed)


def resolve_inputs(config: StudyConfig) -> StudyInputs:
    """The model factory, the data and the layers of ``config``, checked.

    Raises
    ------
    ValueError
        CIFAR without ``data_root``; an image folder without ``train/`` and ``test/`` subfolders of the
        same classes; a model that does not take the data's images or returns logits of the wrong shape;
        ``include`` patterns of which one selects no dense conv.
    FileNotFoundError
        CIFAR missing from ``data_root``, or an image folder that does not exist.
    ImportError
        A ``"package.module:factory"`` that cannot be imported.
    TypeError
        A factory that is not callable, or that does not return an ``nn.Module``.
    """
    train_set, test_set, classes = _datasets(config)
    image = test_set[0][0]
    factory = _factory(config.model, len(classes), int(image.shape[0]))
    model = _built(factory, config.model, config.seed)
    _check_fits(model, image, len(classes), config)
    train_set = _decoded(_capped(train_set, config.train_samples, config.seed))
    test_set = _decoded(_capped(test_set, config.eval_samples, config.seed))
    return StudyInputs(config.model, factory, train_set, test_set, tuple(classes), int(image.shape[0]),
                       tuple(select_dense_convs(model, config.include or None)))


def check_device(device: str, name: str = "device") -> None:
    """Refuse a ``device`` this machine does not have (``"cuda"`` without CUDA, ``"cuda:3"`` with two GPUs).

    Raises
    ------
    ValueError
        Naming ``name``, when torch cannot put a tensor on ``device``.
    """
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as error:  # AssertionError: a torch built without CUDA
        raise ValueError(f"{name} {device!r} is not available on this machine ({' '.join(str(error).split())}); "
                         "choose one it has, e.g. cpu") from None


def check_checkpoint(path: str) -> None:
    """Refuse a checkpoint file that is missing, or that ``torch.load(..., weights_only=True)`` does not read
    as a state dict (an empty or foreign file, a pickle that would run code); whether it fits the model is
    checked once the model is built (:func:`tnlib_torch.load_checkpoint`).

    Raises
    ------
    FileNotFoundError, ValueError
        Naming the file.
    """
    with warnings.catch_warnings():  # torch's note on a pickle protocol: the load of a good file repeats it
        warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
        _read_state_dict(Path(path).expanduser())


def fetch_data(config: StudyConfig) -> None:
    """Download ``config``'s CIFAR into its ``data_root`` if it is missing there (md5-checked); other data
    sets need no download.

    Raises
    ------
    ValueError
        CIFAR without ``data_root``.
    ConnectionError, RuntimeError
        The download failed, or the archive failed its checks (see :func:`tnlib_torch.cifar10`).
    """
    if config.dataset in _CIFAR:
        _CIFAR[config.dataset](_data_root(config.dataset, config.data_root), train=False, download=True)


# -- the model -------------------------------------------------------------------------------------------------------

def _factory(spec: str, num_classes: int, in_channels: int) -> Callable[[], Any]:
    """A no-argument factory of the model ``spec`` names."""
    if spec in MODELS:
        return functools.partial(build_model, spec, num_classes=num_classes, in_channels=in_channels)
    module_name, _, qualname = spec.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError) as error:
        raise ImportError(f"model {spec!r}: cannot import {qualname!r} from {module_name!r} ({error})") from error
    if not callable(target):
        raise TypeError(f"model {spec!r} names a {type(target).__name__}, not a factory (a callable)")
    return functools.partial(target, **_accepted(target, num_classes=num_classes, in_channels=in_channels))


def _built(factory: Callable[[], Any], name: str, seed: int) -> nn.Module:
    """The model ``factory`` builds under ``torch.manual_seed(seed)``, checked to be an ``nn.Module``."""
    torch.manual_seed(seed)
    model = factory()
    if not isinstance(model, nn.Module):
        raise TypeError(f"the factory of model {name!r} returned a {type(model).__name__}, "
                        "not a torch.nn.Module")
    return model


def _accepted(factory: Callable[..., Any], **values: Any) -> dict[str, Any]:
    """Those of ``values`` that ``factory`` takes as keywords (none if its signature is unknown)."""
    try:
        parameters = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return {}
    if any(p.kind is p.VAR_KEYWORD for p in parameters):
        return values
    names = {p.name for p in parameters if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}
    return {name: value for name, value in values.items() if name in names}


def _check_fits(model: nn.Module, image: torch.Tensor, num_classes: int, config: StudyConfig) -> None:
    """Refuse a model that does not map one image of the data to one logit per class."""
    model.eval()
    try:
        with torch.no_grad():
            logits = model(image[None])
    except RuntimeError as error:
        raise ValueError(f"model {config.model!r} does not take the images of dataset {config.dataset!r} "
                         f"(a batch of shape {tuple(image[None].shape)}): {error}") from None
    finally:
        model.train()
    shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
    if shape != (1, num_classes):
        raise ValueError(f"model {config.model!r} must return logits (batch, classes); for one image of dataset "
                         f"{config.dataset!r} ({num_classes} classes) it returns {shape}")


# -- the data --------------------------------------------------------------------------------------------------------

def _datasets(config: StudyConfig) -> tuple[Dataset, Dataset, list[str]]:
    """The training set, the whole test set and the class names of ``config.dataset``."""
    if config.dataset == "digits":
        train_set = digits(train=True, seed=config.seed)
        return train_set, digits(train=False, seed=config.seed), train_set.classes
    normalize = "cifar-resnet" if config.model in _CIFAR_RESNETS else None
    if config.dataset in _CIFAR:
        return _cifar(config.dataset, config.data_root, normalize or config.dataset)
    return _image_folders(Path(config.dataset).expanduser(), normalize or "cifar10")


def _data_root(name: str, root: str | None) -> str:
    if root is None:
        raise ValueError(f"dataset {name!r} needs data_root (--data-root): the folder holding the extracted CIFAR "
                         "archive, or where download (--download) puts it")
    return root


def _cifar(name: str, root: str | None, normalize: str) -> tuple[Dataset, Dataset, list[str]]:
    read = _CIFAR[name]
    try:
        train_set = read(_data_root(name, root), train=True, normalize=normalize, augment=True)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"{error}. In a study: run_study(..., download=True), or tnlib study --download, "
                                "fetches it; or point data_root (--data-root) at the folder holding it") from None
    return train_set, read(root, train=False, normalize=normalize), train_set.classes


def _image_folders(root: Path, normalize: str) -> tuple[Dataset, Dataset, list[str]]:
    """``root/train`` and ``root/test``, which must hold the same classes."""
    if not root.is_dir():
        raise FileNotFoundError(f"dataset {str(root)!r} is not one of digits, cifar10, cifar100, nor an existing "
                                "folder (an image folder study expects train/ and test/ in it)")
    missing = [name for name in ("train", "test") if not (root / name).is_dir()]
    if missing:
        raise ValueError(f"image folder {root} has no {' and no '.join(f'{name}/' for name in missing)} subfolder; "
                         "it must hold train/<class>/<image> and test/<class>/<image>")
    train_set = image_folder(root / "train", normalize=normalize, augment=True)
    test_set = image_folder(root / "test", normalize=normalize)
    if test_set.classes != train_set.classes:
        raise ValueError(f"image folder {root}: train/ holds the classes {train_set.classes}, "
                         f"test/ holds {test_set.classes}; they must be the same")
    return train_set, test_set, train_set.classes


def _capped(dataset: Dataset, samples: int | None, seed: int) -> Dataset:
    """The first ``samples`` images of a permutation seeded by ``seed``, in data set order; all for ``None``."""
    if samples is None or samples >= len(dataset):
        return dataset
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed))
    return Subset(dataset, sorted(order[:samples].tolist()))


def _decoded(dataset: Dataset) -> Dataset:
    """An image folder, or a :class:`Subset` of one, as an :class:`ImageFolder` of its images decoded now and
    kept in memory (in the same order, so with the same items); any other data set as it is.

    Only the images a study uses are decoded: 11,000 of CIFAR-10's 60,000 for 10,000 training and 1,000 test
    samples.
    """
    folder, indices = (dataset.dataset, dataset.indices) if isinstance(dataset, Subset) else (dataset, None)
    if not isinstance(folder, ImageFolder):
        return dataset
    indices = range(len(folder)) if indices is None else indices
    return ImageFolder([folder.samples[i] for i in indices], folder.classes, folder.normalize, folder.augment,
                       pixels=[folder._pixels(i) for i in indices])  # the decoding hook of ImageDataset


def _unaugmented(dataset: Dataset) -> Dataset:
    """``dataset`` seen without augmentation: a shallow copy with ``augment = False`` (sharing its images)."""
    if isinstance(dataset, Subset):
        return Subset(_unaugmented(dataset.dataset), dataset.indices)
    if isinstance(dataset, ImageDataset) and dataset.augment:
        plain = copy.copy(dataset)
        plain.augment = False
        return plain
    return dataset
