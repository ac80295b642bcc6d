"""The base of the torch adapter's data sets: argument checks, normalization, augmentation, tensor data sets.

:class:`ImageDataset` is what every data set of :mod:`tnlib_torch.zoo.data` has (``(image, label)``
items, class names, normalization, augmentation) and :class:`TensorImageDataset` the one whose
images are held in one tensor (CIFAR, the digits); :data:`NORMALIZATIONS` and
:func:`resolve_normalize` give the per-channel ``(mean, std)``, :func:`random_crop_flip` the
standard CIFAR augmentation. The public names are
re-exported by :mod:`tnlib_torch.zoo.data`.
"""

from __future__ import annotations

import math
import numbers
import operator
import os
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any

import torch
from torch.utils.data import Dataset

from tnlib_torch._checks import check_bool, check_count

__all__ = [
    "NORMALIZATIONS",
    "ImageDataset",
    "Normalize",
    "PathLike",
    "TensorImageDataset",
    "random_crop_flip",
    "resolve_normalize",
]

Stats = tuple[tuple[float, ...], tuple[float, ...]]
Normalize = str | tuple[Sequence[float], Sequence[float]] | None
PathLike = str | os.PathLike[str]

NORMALIZATIONS: Mapping[str, Stats] = MappingProxyType({
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    # what the CIFAR ResNets of akamaster/pytorch_resnet_cifar10 were trained with (ImageNet's statistics)
    "cifar-resnet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
})


# -- argument checks ------------------------------------------------------------------------------

def _check_floats(values: Any, name: str) -> tuple[float, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise TypeError(f"{name} must be a sequence of numbers (one per channel), got {values!r}")
    if not all(isinstance(v, numbers.Real) and not isinstance(v, bool) for v in values):
        raise TypeError(f"{name} must be a sequence of numbers (one per channel), got {values!r}")
    floats = tuple(float(v) for v in values)
    if not all(math.isfinite(v) for v in floats):
        raise ValueError(f"{name} must be finite numbers (one per channel), got {values!r}")
    return floats


# -- normalization and augmentation ---------------------------------------------------------------

def resolve_normalize(normalize: Any, channels: int) -> Stats | None:
    """``normalize`` (a preset's name, a ``(mean, std)`` pair or None) as per-channel tuples."""
    if normalize is None:
        return None
    if isinstance(normalize, str):
        if normalize not in NORMALIZATIONS:
            raise ValueError(f"normalize must be one of {', '.join(map(repr, NORMALIZATIONS))}, a (mean, std) "
                             f"pair or None, got {normalize!r}")
        mean, std = NORMALIZATIONS[normalize]
    elif isinstance(normalize, Sequence) and len(normalize) == 2:
        mean, std = _check_floats(normalize[0], "normalize's mean"), _check_floats(normalize[1], "normalize's std")
    else:
        raise TypeError(f"normalize must be a preset name, a (mean, std) pair or None, got {normalize!r}")
    if len(mean) != channels or len(std) != channels:
        raise ValueError(f"normalize must give one mean and one std per channel ({channels}), "
                         f"got {len(mean)} and {len(std)}")
    if not all(s > 0 for s in std):
        raise ValueError(f"normalize's std must be > 0 in every channel, got {std}")
    return mean, std


def random_crop_flip(image: torch.Tensor, padding: int = 4, generator: torch.Generator | None = None) -> torch.Tensor:
    """The standard CIFAR training augmentation: a random crop of the zero-padded image, then a random flip.

    The image is padded with ``padding`` zeros on each side and cropped back to its size at an
    offset drawn uniformly from ``0..2*padding`` along each axis; then it is mirrored left to right
    with probability 1/2 (as torchvision's ``RandomCrop(size, padding)`` then
    ``RandomHorizontalFlip()``, on the tensor).

    Parameters
    ----------
    image : Tensor
        ``(..., H, W)``; one crop offset and one flip for the whole tensor.
    padding : int
        Zeros added on each side before cropping (4 for CIFAR), at most ``min(H, W)``.
    generator : torch.Generator, optional
        Where the three draws come from; torch's default generator when None.

    Returns
    -------
    Tensor
        Same shape and dtype as ``image``.

    Raises
    ------
    ValueError
        ``padding`` is negative or above ``min(H, W)`` (checked before the padded copy is allocated).
    """
    if not isinstance(image, torch.Tensor) or image.dim() < 2:
        raise TypeError(f"image must be a tensor of shape (..., H, W), got {type(image).__name__}")
    height, width = image.shape[-2:]
    padding = check_count(padding, "padding", 0, min(height, width),
                          f"allowed for an image of {height} x {width} (the image's smaller side)")
    padded = torch.nn.functional.pad(image, (padding, padding, padding, padding))
    top, left = torch.randint(0, 2 * padding + 1, (2,), generator=generator).tolist()
    crop = padded[..., top:top + height, left:left + width]
    return crop.flip(-1) if torch.rand((), generator=generator).item() < 0.5 else crop


def _unit_float(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels divided by 255, or float pixels (already in [0, 1]), as a new float32 tensor."""
    return pixels.float().div_(255) if pixels.dtype == torch.uint8 else pixels.to(torch.float32, copy=True)


# -- data sets ------------------------------------------------------------------------------------

class ImageDataset(Dataset):
    """What every data set here has: ``(image, label)`` items, class names, normalization, augmentation.

    ``dataset[i]`` is the float32 ``(C, H, W)`` image ``i`` in [0, 1], augmented by
    :func:`random_crop_flip` when ``augment`` is True, then normalized ``(x - mean) / std`` per
    channel, and its label, an int. Subclasses give the pixels of one item (``_pixels``).

    Attributes
    ----------
    classes : list of str
        The class names; label ``k`` is ``classes[k]``.
    class_to_idx : dict
        Class name to label.
    targets : list of int
        The label of every item.
    normalize : tuple or None
        The ``(mean, std)`` per channel, or None.
    augment : bool
        Whether items are augmented.
    """

    def __init__(self, targets: Sequence[int], classes: Sequence[str], channels: int,
                 normalize: Normalize = None, augment: bool = False) -> None:
        self.classes = [str(name) for name in classes]
        self.class_to_idx = {name: label for label, name in enumerate(self.classes)}
        self.targets = _check_targets(targets, len(self.classes))
        self.normalize = resolve_normalize(normalize, channels)
        self.augment = check_bool(augment, "augment")
        stats = () if self.normalize is None else self.normalize
        self._stats = [torch.tensor(v).float().view(-1, 1, 1) for v in stats] or None

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        index = self._position(index)
        image = _unit_float(self._pixels(index))
        if self.augment:
            image = random_crop_flip(image)
        return self._normalized(image), self.targets[index]

    def to_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every image, normalized but not augmented, and every label: ``(N, C, H, W)`` float32, ``(N,)`` int64.

        For evaluation in one go; the images must all have one size.
        """
        return self._normalized(_unit_float(self._all_pixels())), torch.tensor(self.targets, dtype=torch.int64)

    def _pixels(self, index: int) -> torch.Tensor:
        """Image ``index`` as stored: uint8 (0..255) or float ([0, 1]), ``(C, H, W)``."""
        raise NotImplementedError

    def _all_pixels(self) -> torch.Tensor:
        images = [self._pixels(i) for i in range(len(self))]
        sizes = sorted({tuple(image.shape) for image in images})
        if len(sizes) > 1:
            raise ValueError(f"to_tensors needs images of one size, found {sizes[0]} and {sizes[-1]}")
        return torch.stack(images)

    def _normalized(self, images: torch.Tensor) -> torch.Tensor:
        if self._stats is None:
            return images
        mean, std = self._stats
        return (images - mean) / std

    def _position(self, index: Any) -> int:
        position = operator.index(index)
        if not -len(self) <= position < len(self):
            raise IndexError(f"index {position} is out of range for a data set of {len(self)} images")
        return position % len(self)


def _check_targets(targets: Sequence[int], n_classes: int) -> list[int]:
    bad = [t for t in targets if isinstance(t, bool) or not isinstance(t, numbers.Integral) or not 0 <= t < n_classes]
    if bad:
        raise ValueError(f"targets must be integers in [0, {n_classes}) (one per class), got {bad[0]!r}")
    return [int(label) for label in targets]


class TensorImageDataset(ImageDataset):
    """Images held in one tensor: CIFAR and the digits.

    Parameters
    ----------
    images : Tensor
        ``(N, C, H, W)``, uint8 (0..255) or floating ([0, 1], finite: NaN and infinities are refused).
    targets : sequence of int
        ``N`` labels in ``[0, len(classes))``.
    classes : sequence of str
        The class names.
    normalize : str, (mean, std) or None
        A key of :data:`NORMALIZATIONS`, or ``C`` finite means and ``C`` finite stds > 0.
    augment : bool
        Augment each item with :func:`random_crop_flip`.

    Attributes
    ----------
    images : Tensor
        The stored pixels, as given.
    """

    def __init__(self, images: torch.Tensor, targets: Sequence[int], classes: Sequence[str],
                 normalize: Normalize = None, augment: bool = False) -> None:
        if not isinstance(images, torch.Tensor) or images.dim() != 4:
            raise TypeError(f"images must be a (N, C, H, W) tensor, got {getattr(images, 'shape', type(images))}")
        if images.dtype != torch.uint8 and not images.is_floating_point():
            raise TypeError(f"images must be uint8 (0..255) or floating ([0, 1]), got {images.dtype}")
        if images.is_floating_point() and not bool(torch.isfinite(images).all()):
            raise ValueError("images must be finite: the floating images hold NaN or infinite values")
        if len(targets) != len(images):
            raise ValueError(f"targets must give one label per image ({len(images)}), got {len(targets)}")
        super().__init__(targets, classes, images.shape[1], normalize, augment)
        self.images = images

    def _pixels(self, index: int) -> torch.Tensor:
        return self.images[index]

    def _all_pixels(self) -> torch.Tensor:
        return self.images
