"""Data sets for the torch adapter, read safely and without torchvision.

- :func:`cifar10`, :func:`cifar100`: the official "python version" of CIFAR-10/100, read with an
  unpickler that runs no code (:mod:`tnlib_torch.zoo.safe_pickle`), optionally downloaded and
  checked against the official md5;
- :func:`image_folder`: the ``path/<class>/<image>`` layout, decoded by Pillow;
- :func:`digits`: scikit-learn's bundled 8x8 handwritten digits, a seeded stratified split (no
  download; the project's embedded default);
- :data:`NORMALIZATIONS`, :func:`random_crop_flip` (the standard CIFAR training augmentation, in
  torch ops) and :func:`loader` (a seeded :class:`~torch.utils.data.DataLoader`).

Every data set yields ``(image, label)``: a float32 ``(C, H, W)`` tensor and an int. See
docs/torch_data.md.
"""

from __future__ import annotations

import io
import math
import numbers
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from tnlib._validation import check_choice
from tnlib_torch._checks import check_bool, check_count, check_path
from tnlib_torch.zoo.cifar import cifar10, cifar100
from tnlib_torch.zoo.datasets import (
    NORMALIZATIONS,
    ImageDataset,
    Normalize,
    PathLike,
    TensorImageDataset,
    random_crop_flip,
    resolve_normalize,
)
from tnlib_torch.zoo.safe_pickle import UnsafePickleError

__all__ = [
    "NORMALIZATIONS",
    "ImageDataset",
    "ImageFolder",
    "TensorImageDataset",
    "UnsafePickleError",
    "cifar10",
    "cifar100",
    "digits",
    "image_folder",
    "loader",
    "random_crop_flip",
]


# -- image folders --------------------------------------------------------------------------------

class ImageFolder(ImageDataset):
    """Image files decoded by Pillow when an item is read (or once, when preloaded); built by :func:`image_folder`.

    Attributes
    ----------
    samples : list of (Path, int)
        Every image file and its label, in order.
    skipped : list of Path
        The files that could not be decoded and were left out (``on_corrupt="skip"``).
    """

    def __init__(self, samples: Sequence[tuple[Path, int]], classes: Sequence[str], normalize: Normalize = None,
                 augment: bool = False, pixels: Sequence[torch.Tensor] | None = None,
                 skipped: Sequence[Path] = ()) -> None:
        super().__init__([label for _, label in samples], classes, 3, normalize, augment)
        if pixels is not None and len(pixels) != len(samples):
            raise ValueError(f"pixels must give one image per sample ({len(samples)}), got {len(pixels)}")
        self.samples = list(samples)
        self.skipped = list(skipped)
        self._preloaded = None if pixels is None else list(pixels)

    def _pixels(self, index: int) -> torch.Tensor:
        if self._preloaded is not None:
            return self._preloaded[index]
        return _decode_rgb(self.samples[index][0])


def image_folder(path: PathLike, normalize: Normalize = None, augment: bool = False,
                 extensions: Sequence[str] = (".png", ".jpg", ".jpeg"), on_corrupt: str = "raise",
                 preload: bool = False) -> ImageFolder:
    """The images of ``path/<class>/<image>`` as a data set, classes sorted by name.

    The files are listed at once; each is decoded by Pillow when its item is read, converted to
    RGB, divided by 255 and normalized.

    Parameters
    ----------
    path : str or os.PathLike
        The folder holding one subfolder per class (hidden ones, starting with ".", are ignored).
    normalize : str, (mean, std) or None
        A key of :data:`NORMALIZATIONS`, or three means and three stds; None keeps [0, 1].
    augment : bool
        Augment each item with :func:`random_crop_flip`.
    extensions : sequence of str
        The file suffixes read (case-insensitive); other files are ignored.
    on_corrupt : {"raise", "skip"}
        What a file Pillow cannot decode does: ``"raise"`` an OSError naming it when it is read,
        or ``"skip"``: every file is decoded once now, and those that fail are left out and
        listed in ``skipped``.
    preload : bool
        Decode every image now and keep the pixels (uint8) in memory; reading is then fast.

    Returns
    -------
    ImageFolder

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist, is empty, has no class subfolders, or a class folder holds
        no image with one of ``extensions``.
    NotADirectoryError
        If ``path`` is a file.
    OSError
        For a file Pillow cannot decode, with ``on_corrupt="raise"`` and ``preload=True``.
    """
    root = check_path(path, "path")
    stats = resolve_normalize(normalize, 3)
    augment = check_bool(augment, "augment")
    suffixes = _check_extensions(extensions)
    skip = check_choice(on_corrupt, "on_corrupt", ("raise", "skip")) == "skip"
    preload = check_bool(preload, "preload")
    classes = _list_classes(root)
    samples = _list_images(root, classes, suffixes)
    pixels: list[torch.Tensor] | None = None
    skipped: list[Path] = []
    if preload or skip:
        samples, pixels, skipped = _decode_all(samples, skip=skip, keep=preload)
    return ImageFolder(samples, classes, stats, augment, pixels, skipped)


def _check_extensions(extensions: Any) -> tuple[str, ...]:
    if isinstance(extensions, str) or not isinstance(extensions, Sequence):
        raise TypeError(f"extensions must be a sequence of suffixes such as ('.png',), got {extensions!r}")
    if not extensions or not all(isinstance(e, str) and e.startswith(".") and len(e) > 1 for e in extensions):
        raise ValueError(f"extensions must be suffixes starting with '.', such as ('.png',), got {extensions!r}")
    return tuple(e.lower() for e in extensions)


def _visible(folder: Path) -> list[os.DirEntry[str]]:
    with os.scandir(folder) as entries:
        return sorted((e for e in entries if not e.name.startswith(".")), key=lambda e: e.name)


def _list_classes(root: Path) -> list[str]:
    if not root.exists():
        raise FileNotFoundError(f"image folder {root} does not exist")
    if not root.is_dir():
        raise NotADirectoryError(f"image folder {root} is a file; expected a folder of class subfolders")
    entries = _visible(root)
    if not entries:
        raise FileNotFoundError(f"image folder {root} is empty; expected one subfolder per class, path/<class>/<image>")
    classes = [e.name for e in entries if e.is_dir()]
    if not classes:
        raise FileNotFoundError(f"image folder {root} has no class subfolders (it holds files such as "
                                f"{entries[0].name!r}); expected path/<class>/<image>")
    return classes


def _list_images(root: Path, classes: Sequence[str], suffixes: tuple[str, ...]) -> list[tuple[Path, int]]:
    samples = []
    for label, name in enumerate(classes):
        files = [Path(e.path) for e in _visible(root / name) if e.is_file() and Path(e.name).suffix.lower() in suffixes]
        if not files:
            raise FileNotFoundError(f"class folder {root / name} holds no image ending in {', '.join(suffixes)}")
        samples.extend((file, label) for file in files)
    return samples


def _decode_rgb(path: Path) -> torch.Tensor:
    """The image in ``path`` as uint8 ``(3, H, W)``; an OSError naming the file if Pillow cannot decode it."""
    try:
        from PIL import Image
    except ImportError as exc:
        raise ImportError("image_folder needs Pillow: pip install pillow") from exc
    content = path.read_bytes()  # errors reading the file are not corruption: they propagate as they are
    try:
        with Image.open(io.BytesIO(content)) as image:
            rgb = np.array(image.convert("RGB"))
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise OSError(f"cannot decode image {path}: {exc}") from exc
    return torch.from_numpy(rgb).permute(2, 0, 1).contiguous()


def _decode_all(samples: Sequence[tuple[Path, int]], skip: bool, keep: bool
                ) -> tuple[list[tuple[Path, int]], list[torch.Tensor] | None, list[Path]]:
    """Every sample decoded: the samples kept, their pixels (when ``keep``), the files skipped (when ``skip``)."""
    kept, pixels, skipped = [], [], []
    for path, label in samples:
        try:
            image = _decode_rgb(path)
        except OSError:
            if not skip:
                raise
            skipped.append(path)
            continue
        kept.append((path, label))
        if keep:
            pixels.append(image)
    return kept, pixels if keep else None, skipped


# -- digits ---------------------------------------------------------------------------------------

def digits(train: bool = True, normalize: bool = True, test_fraction: float = 0.25, seed: int = 0
           ) -> TensorImageDataset:
    """scikit-learn's handwritten digits (1,797 images, 8x8, grayscale), a seeded stratified split.

    Parameters
    ----------
    train : bool
        The training split or the test split; the two are disjoint and together hold every image.
    normalize : bool
        Standardize by the training split's pixel mean and std (both splits alike); else [0, 1].
    test_fraction : float
        The share of the images in the test split (rounded up), stratified by class.
    seed : int
        The split's seed; the same seed gives the same split.

    Returns
    -------
    TensorImageDataset
        float32 ``images`` ``(N, 1, 8, 8)`` (the values 0..16 divided by 16); ``classes`` "0" to "9".
    """
    check_bool(train, "train")
    check_bool(normalize, "normalize")
    seed = check_count(seed, "seed", minimum=0)
    try:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split
    except ImportError as exc:
        raise ImportError("digits needs scikit-learn: pip install scikit-learn") from exc
    bunch = load_digits()
    images, labels = (bunch.images / 16).astype(np.float32), bunch.target
    _check_test_fraction(test_fraction, len(labels), len(bunch.target_names))
    train_rows, test_rows = train_test_split(np.arange(len(labels)), test_size=test_fraction, random_state=seed,
                                             stratify=labels)
    stats = ((float(images[train_rows].mean()),), (float(images[train_rows].std()),)) if normalize else None
    rows = np.sort(train_rows if train else test_rows)
    classes = [str(name) for name in bunch.target_names]
    return TensorImageDataset(torch.from_numpy(images[rows, None]), labels[rows].tolist(), classes, stats)


def _check_test_fraction(test_fraction: Any, n: int, n_classes: int) -> None:
    """Each split must hold one image per class at least (scikit-learn rounds the test share up)."""
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, numbers.Real):
        raise TypeError(f"test_fraction must be a number in (0, 1), got {test_fraction!r}")
    if not 0 < test_fraction < 1 or not n_classes <= math.ceil(test_fraction * n) <= n - n_classes:
        raise ValueError(f"test_fraction must leave at least one image per class ({n_classes}) in each of the "
                         f"two splits of {n} images, got {test_fraction}")


# -- loader ---------------------------------------------------------------------------------------

def loader(dataset: Dataset, batch_size: int = 128, shuffle: bool = False, seed: int = 0,
           num_workers: int = 0) -> DataLoader:
    """A DataLoader with CPU-friendly defaults and a seeded generator.

    Parameters
    ----------
    dataset : Dataset
        Any map-style torch data set.
    batch_size : int
        Images per batch; the last batch may be smaller.
    shuffle : bool
        Draw a new order each epoch from the loader's generator.
    seed : int
        Seeds the loader's generator: the orders of successive epochs, and with workers the
        seeds of the workers (hence their augmentation draws), are the same for the same seed.
    num_workers : int
        Worker processes; 0 decodes in the calling process.

    Returns
    -------
    DataLoader
        With ``pin_memory`` only when CUDA is available; its ``generator`` is the seeded one.
    """
    if not isinstance(dataset, Dataset):
        raise TypeError(f"dataset must be a torch.utils.data.Dataset, got {type(dataset).__name__}")
    return DataLoader(
        dataset,
        batch_size=check_count(batch_size, "batch_size", minimum=1),
        shuffle=check_bool(shuffle, "shuffle"),
        num_workers=check_count(num_workers, "num_workers", minimum=0),
        pin_memory=torch.cuda.is_available(),
        generator=torch.Generator().manual_seed(check_count(seed, "seed", minimum=0)),
    )
