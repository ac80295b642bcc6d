"""CIFAR-10 and CIFAR-100 from their official "python version" files: reading, downloading, safe extraction.

:func:`cifar10` and :func:`cifar100` read the batch and meta files with the unpickler of
:mod:`tnlib_torch.zoo.safe_pickle` (which runs no code) and check every entry; with
``download=True`` a missing folder is fetched from the official URL into a temporary file,
checked against the official md5, and extracted member by member checked (no absolute paths,
``..``, links or devices) through a staging folder. Re-exported by :mod:`tnlib_torch.zoo.data`.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import torch

from tnlib._validation import check_choice
from tnlib_torch._checks import check_bool, check_path
from tnlib_torch.zoo import safe_pickle as _safe_pickle
from tnlib_torch.zoo.datasets import (
    Normalize,
    PathLike,
    TensorImageDataset,
    resolve_normalize,
)

__all__ = ["cifar10", "cifar100"]


@dataclass(frozen=True)
class _CifarSource:
    """Where a CIFAR archive is, what it holds, and how to check it."""

    name: str
    folder: str
    train_files: tuple[str, ...]
    test_files: tuple[str, ...]
    meta_file: str
    url: str
    md5: str
    train_file_images: int
    test_file_images: int


_SOURCES = {
    "cifar10": _CifarSource("CIFAR-10", "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)),
                            ("test_batch",), "batches.meta", "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
                            "c58f30108f718f92721af3b95e74349a", 10_000, 10_000),
    "cifar100": _CifarSource("CIFAR-100", "cifar-100-python", ("train",), ("test",), "meta",
                             "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz",
                             "eb9058c3a382ffc7106e288f3e7f9b09", 50_000, 10_000),
}
_CIFAR_PIXELS = 3 * 32 * 32


def cifar10(root: PathLike, train: bool = True, download: bool = False, normalize: Normalize = "cifar10",
            augment: bool = False) -> TensorImageDataset:
    """CIFAR-10 from its official "python version" folder ``root/cifar-10-batches-py``.

    Parameters
    ----------
    root : str or os.PathLike
        The folder holding ``cifar-10-batches-py`` (``data_batch_1`` ... ``data_batch_5``,
        ``test_batch``, ``batches.meta``).
    train : bool
        The 50,000 training images (the five batches in order), or the 10,000 test images.
    download : bool
        When the folder is missing, fetch the official archive into ``root``, check its md5 and
        extract it.
    normalize : str, (mean, std) or None
        A key of :data:`NORMALIZATIONS`, or three means and three stds; None keeps [0, 1].
    augment : bool
        Augment each item with :func:`random_crop_flip`.

    Returns
    -------
    TensorImageDataset
        uint8 ``images`` ``(N, 3, 32, 32)``; ``classes`` from ``batches.meta``.

    Raises
    ------
    FileNotFoundError
        If the folder is missing and ``download`` is False.
    UnsafePickleError
        If a file names a global that a CIFAR file never needs (nothing is run).
    ValueError
        If a file is not a CIFAR batch (entries missing or of the wrong shape).
    ConnectionError, RuntimeError
        If the download fails, or the archive fails its md5 or holds unsafe members.
    """
    return _read_cifar(_SOURCES["cifar10"], root, train, download, normalize, augment, "labels", "label_names")


def cifar100(root: PathLike, train: bool = True, download: bool = False, normalize: Normalize = "cifar100",
             augment: bool = False, labels: str = "fine") -> TensorImageDataset:
    """CIFAR-100 from its official "python version" folder ``root/cifar-100-python``.

    As :func:`cifar10`, from the files ``train`` (50,000 images), ``test`` (10,000) and ``meta``.

    Parameters
    ----------
    root, train, download, normalize, augment
        As in :func:`cifar10`; ``normalize`` defaults to CIFAR-100's statistics.
    labels : {"fine", "coarse"}
        The 100 classes (``fine_labels``, ``fine_label_names``) or the 20 superclasses
        (``coarse_labels``, ``coarse_label_names``).

    Returns
    -------
    TensorImageDataset
    """
    kind = check_choice(labels, "labels", ("fine", "coarse"))
    return _read_cifar(_SOURCES["cifar100"], root, train, download, normalize, augment, f"{kind}_labels",
                       f"{kind}_label_names")


def _read_cifar(source: _CifarSource, root: Any, train: Any, download: Any, normalize: Any, augment: Any,
                label_key: str, names_key: str) -> TensorImageDataset:
    """The data set of one CIFAR source, read with one label key (the reader cifar10 and cifar100 share)."""
    root = check_path(root, "root")
    train = check_bool(train, "train")
    files, per_file = ((source.train_files, source.train_file_images) if train
                       else (source.test_files, source.test_file_images))
    download, augment = check_bool(download, "download"), check_bool(augment, "augment")
    stats = resolve_normalize(normalize, 3)
    folder = root / source.folder
    if not folder.is_dir():
        if not download:
            raise FileNotFoundError(f"{source.name} is not in {root}: expected the folder {folder} (the archive "
                                    f"{source.url} extracted there); pass download=True to fetch it")
        _fetch_cifar(source, root)
    what = f"a {source.name} file"
    meta = _read_dict(folder / source.meta_file, what, (names_key,))
    classes = [_text(name) for name in meta[names_key]]
    batches = [_read_batch(folder / name, what, label_key, len(classes), per_file) for name in files]
    images = np.concatenate([data for data, _ in batches]).reshape(-1, 3, 32, 32)
    targets = np.concatenate([labels for _, labels in batches])
    return TensorImageDataset(torch.from_numpy(images), targets.tolist(), classes, stats, augment)


def _text(value: str | bytes) -> str:
    return value.decode("latin1") if isinstance(value, bytes) else str(value)


def _read_dict(path: Path, what: str, keys: Sequence[str]) -> dict[str, Any]:
    """The dict pickled in ``path`` (read safely), with str keys; a ValueError if one of ``keys`` is missing."""
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; the folder does not hold the official files")
    content = _safe_pickle.load(path, what)
    if not isinstance(content, dict):
        raise ValueError(f"{path.name!r} holds a {type(content).__name__}, not the dict of {what}")
    entries = {_text(key): value for key, value in content.items()}
    missing = [key for key in keys if key not in entries]
    if missing:
        raise ValueError(f"{path.name!r} has no {missing[0]!r} entry, which {what} has")
    return entries


def _read_batch(path: Path, what: str, label_key: str, n_classes: int,
                max_images: int) -> tuple[np.ndarray, np.ndarray]:
    """The pixels ``(N, 3072)`` uint8 and labels ``(N,)`` (in ``[0, n_classes)``) of one batch file, checked.

    ``N`` is at most ``max_images``, what an official file of that kind holds (10,000 for a
    CIFAR-10 batch and for CIFAR-100's test file, 50,000 for CIFAR-100's train file).
    """
    batch = _read_dict(path, what, ("data", label_key))
    data, labels = batch["data"], np.asarray(batch[label_key])
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2
            and data.shape[1] == _CIFAR_PIXELS):
        raise ValueError(f"{path.name!r}: 'data' must be a uint8 array of shape (N, {_CIFAR_PIXELS}), got "
                         f"{getattr(data, 'dtype', type(data).__name__)} {getattr(data, 'shape', '')}")
    if len(data) > max_images:
        raise ValueError(f"{path.name!r}: 'data' holds {len(data)} images, more than the {max_images} that "
                         f"{what} of this kind holds")
    if labels.shape != (len(data),) or (labels.size and not np.issubdtype(labels.dtype, np.integer)):
        raise ValueError(f"{path.name!r}: {label_key!r} must hold one integer label per image ({len(data)}), "
                         f"got {labels.dtype} {labels.shape}")
    outside = labels[(labels < 0) | (labels >= n_classes)]
    if outside.size:
        raise ValueError(f"{path.name!r}: {label_key!r} must lie in [0, {n_classes}) (the classes of the meta file), "
                         f"got {outside[0]}")
    return data, labels.astype(np.int64)


# -- downloads ------------------------------------------------------------------------------------

def _fetch_cifar(source: _CifarSource, root: Path) -> None:
    """Download (unless a checked archive is already in ``root``), check and extract ``source``."""
    root.mkdir(parents=True, exist_ok=True)
    archive = root / source.url.rsplit("/", 1)[-1]
    if not (archive.is_file() and _md5(archive) == source.md5):
        _download(source, archive)
    _extract(archive, root, source.folder)


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def _download(source: _CifarSource, archive: Path) -> None:
    """``source.url`` into ``archive``: a temporary file beside it, checked, then renamed (atomic)."""
    handle, partial = tempfile.mkstemp(dir=archive.parent, prefix=f".{archive.name}.", suffix=".part")
    try:
        with os.fdopen(handle, "wb") as file:
            _copy_url(source, archive, file)
        digest = _md5(Path(partial))
        if digest != source.md5:
            raise RuntimeError(f"the download of {source.url} has md5 {digest}, not the official {source.md5}; "
                               "it was deleted")
        os.replace(partial, archive)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


def _copy_url(source: _CifarSource, archive: Path, file: Any) -> None:
    try:
        with urllib.request.urlopen(source.url, timeout=60) as response:
            shutil.copyfileobj(response, file, 1 << 20)
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, ConnectionError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ConnectionError(
            f"could not download {source.name} from {source.url} ({reason}). Without network access, fetch that "
            f"file elsewhere and put it at {archive} (download=True then checks and extracts it), or extract it "
            f"into {archive.parent} so that {archive.parent / source.folder} exists"
        ) from exc


def _extract(archive: Path, root: Path, folder: str) -> None:
    """Extract ``folder`` from ``archive`` into ``root``, through a staging folder renamed into place."""
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        for member in members:
            _check_member(member, archive)
        staging = Path(tempfile.mkdtemp(dir=root, prefix=".extract-"))
        try:
            tar.extractall(staging, members=members, **_TAR_FILTER)
            if not (staging / folder).is_dir():
                raise RuntimeError(f"{archive.name} does not hold the folder {folder}")
            os.replace(staging / folder, root / folder)
        finally:
            shutil.rmtree(staging, ignore_errors=True)


# tarfile's "data" filter (Python >= 3.12, and 3.8.17+ to 3.11.4+) refuses links out, devices and odd modes.
_TAR_FILTER = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}


def _check_member(member: tarfile.TarInfo, archive: Path) -> None:
    """Refuse a member that is not a plain file or folder, or whose path leaves the extraction folder."""
    name = PurePosixPath(member.name)
    if name.is_absolute() or ".." in name.parts:
        raise RuntimeError(f"refusing to extract {archive.name}: its member {member.name!r} would land outside "
                           "the folder")
    if not (member.isfile() or member.isdir()):
        raise RuntimeError(f"refusing to extract {archive.name}: its member {member.name!r} is not a plain file "
                           "or folder")
