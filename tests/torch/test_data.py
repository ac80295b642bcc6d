"""Data sets: CIFAR read without running code, downloads checked, image folders, digits, augmentation, loaders."""

from __future__ import annotations

import builtins
import dataclasses
import hashlib
import io
import os
import pickle
import re
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
Image = pytest.importorskip("PIL.Image")

import tnlib_torch.zoo.data as data  # noqa: E402
from tests.core.test_api import plain_signature  # noqa: E402
from tests.shared_data import SHARED_DATA  # noqa: E402
from tnlib_torch.zoo import cifar  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SHARED_CIFAR_TEST = SHARED_DATA / "cifar10-jpeg" / "test"
CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
RECONSTRUCT = np.zeros(1).__reduce_ex__(2)[0]


# -- writing CIFAR folders as the official files are --------------------------------------------

def write_pickle(path: Path, obj: object, protocol: int = pickle.DEFAULT_PROTOCOL) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=protocol))


def random_batch(rng: np.random.Generator, n: int, n_classes: int) -> tuple[np.ndarray, list[int]]:
    return rng.integers(0, 256, (n, 3072), dtype=np.uint8), rng.integers(0, n_classes, n).tolist()


def make_cifar10(root: Path, protocol: int = pickle.DEFAULT_PROTOCOL) -> dict[str, tuple[np.ndarray, list[int]]]:
    """A tiny cifar-10-batches-py: batches of 2, 1, 1, 1, 1 training images and 3 test images."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    batches = {f"data_batch_{i}": random_batch(rng, 2 if i == 1 else 1, 10) for i in range(1, 6)}
    batches["test_batch"] = random_batch(rng, 3, 10)
    for name, (pixels, labels) in batches.items():
        write_pickle(folder / name, {b"batch_label": name.encode(), b"labels": labels, b"data": pixels,
                                     b"filenames": [b"x.png"] * len(labels)}, protocol)
    write_pickle(folder / "batches.meta", {b"label_names": [n.encode() for n in CIFAR10_NAMES],
                                           b"num_cases_per_batch": 10000, b"num_vis": 3072}, protocol)
    return batches


def make_cifar100(root: Path) -> dict[str, dict[bytes, object]]:
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    files = {}
    for name, n in (("train", 4), ("test", 2)):
        pixels, fine = random_batch(rng, n, 100)
        files[name] = {b"data": pixels, b"fine_labels": fine, b"coarse_labels": [f // 5 for f in fine]}
        write_pickle(folder / name, files[name])
    write_pickle(folder / "meta", {b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
                                   b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]})
    return files


def joined(batches: dict, names: list[str]) -> tuple[np.ndarray, list[int]]:
    return np.concatenate([batches[n][0] for n in names]), sum((batches[n][1] for n in names), [])


class Py2Pickler(pickle._Pickler):  # the pure-Python pickler, whose opcodes can be chosen
    """Protocol 2 as Python 2's cPickle wrote the official files: strings as Python 2 strings, numpy 1's names."""

    dispatch = dict(pickle._Pickler.dispatch)

    def save_py2_string(self, obj: str | bytes) -> None:
        raw = obj.encode("latin1") if isinstance(obj, str) else obj
        head = pickle.SHORT_BINSTRING + bytes([len(raw)]) if len(raw) < 256 else pickle.BINSTRING + struct.pack(
            "<i", len(raw))
        self.write(head + raw)
        self.memoize(obj)

    dispatch[str] = save_py2_string
    dispatch[bytes] = save_py2_string

    def save_global(self, obj: object, name: str | None = None) -> None:
        if obj is not RECONSTRUCT:
            return super().save_global(obj, name)
        self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
        self.memoize(obj)


# -- CIFAR ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_reads_the_exact_pixels_and_labels(tmp_path, protocol):
    batches = make_cifar10(tmp_path, protocol)
    train = data.cifar10(tmp_path, normalize=None)
    pixels, labels = joined(batches, [f"data_batch_{i}" for i in range(1, 6)])
    assert train.classes == CIFAR10_NAMES and train.class_to_idx["cat"] == 3
    assert train.images.dtype == torch.uint8 and train.images.shape == (6, 3, 32, 32)
    assert np.array_equal(train.images.numpy(), pixels.reshape(6, 3, 32, 32)) and train.targets == labels
    image, label = train[1]
    assert image.dtype == torch.float32 and label == labels[1] and isinstance(label, int)
    assert torch.equal(image, torch.from_numpy(pixels[1].reshape(3, 32, 32)).float() / 255)
    assert torch.equal(image[0, 0], torch.from_numpy(pixels[1, :32]).float() / 255)  # CHW: the first row of red
    test = data.cifar10(tmp_path, train=False, normalize=None)
    assert len(test) == 3 and test.targets == batches["test_batch"][1]


def test_cifar10_reads_a_batch_as_python2_wrote_it(tmp_path):
    batches = make_cifar10(tmp_path)
    pixels, labels = batches["test_batch"]
    with open(tmp_path / "cifar-10-batches-py" / "test_batch", "wb") as file:
        Py2Pickler(file, protocol=2).dump({"batch_label": "testing batch 1 of 1", "labels": labels, "data": pixels})
    text = (tmp_path / "cifar-10-batches-py" / "test_batch").read_bytes()
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in text and b"_codecs" not in text
    test = data.cifar10(tmp_path, train=False, normalize=None)
    assert np.array_equal(test.images.numpy(), pixels.reshape(-1, 3, 32, 32)) and test.targets == labels


def test_cifar10_normalizes_with_the_preset_by_default(tmp_path):
    batches = make_cifar10(tmp_path)
    image, _ = data.cifar10(tmp_path)[0]
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in data.NORMALIZATIONS["cifar10"])
    expected = (torch.from_numpy(batches["data_batch_1"][0][0].reshape(3, 32, 32)).float() / 255 - mean) / std
    assert torch.allclose(image, expected, atol=1e-6)


@pytest.mark.parametrize("labels, names, count", [("fine", "fine", 100), ("coarse", "coarse", 20)])
def test_cifar100_reads_fine_or_coarse_labels(tmp_path, labels, names, count):
    files = make_cifar100(tmp_path)
    train = data.cifar100(tmp_path, labels=labels, normalize=None)
    assert len(train.classes) == count and train.classes[3] == f"{names}3"
    assert train.targets == files["train"][f"{labels}_labels".encode()]
    assert np.array_equal(train.images.numpy(), files["train"][b"data"].reshape(4, 3, 32, 32))
    assert len(data.cifar100(tmp_path, train=False, labels=labels)) == 2


class Poison:
    """Unpickling this calls ``call(*args)``."""

    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


@pytest.mark.parametrize("make_poison, refused", [
    (lambda marker: Poison(os.system, f"touch {marker}"), f"{os.system.__module__}.system"),
    (lambda marker: Poison(builtins.exec, f"open({str(marker)!r}, 'w').close()"), "builtins.exec"),
    (lambda marker: [np.zeros(2), Poison(Path.touch, Path(marker))], "pathlib"),
], ids=["os.system", "exec", "after-an-array"])
def test_a_poisoned_batch_is_refused_and_runs_nothing(tmp_path, make_poison, refused):
    make_cifar10(tmp_path)
    marker = tmp_path / "marker"
    write_pickle(tmp_path / "cifar-10-batches-py" / "data_batch_1", {b"data": make_poison(marker), b"labels": [0]})
    message = rf"refusing to load 'data_batch_1': it references {re.escape(refused)}.*which a CIFAR-10 file never does"
    with pytest.raises(data.UnsafePickleError, match=message):
        data.cifar10(tmp_path)
    assert not marker.exists()


@pytest.mark.parametrize("content, message", [
    ({b"labels": [0]}, r"'data_batch_1' has no 'data' entry"),
    ({b"data": np.zeros((1, 3072), np.float32), b"labels": [0]}, r"'data' must be a uint8 array of shape \(N, 3072\)"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, r"'labels' must hold one integer label per image"),
    ({b"data": np.zeros((1, 3072), np.uint8), b"labels": [10]}, r"'data_batch_1': 'labels' must lie in \[0, 10\)"),
    ([1, 2], r"holds a list, not the dict"),
])
def test_a_file_that_is_not_a_batch_is_refused(tmp_path, content, message):
    make_cifar10(tmp_path)
    write_pickle(tmp_path / "cifar-10-batches-py" / "data_batch_1", content)
    with pytest.raises(ValueError, match=message):
        data.cifar10(tmp_path)


def test_padding_up_to_the_image_side_is_accepted():
    image = torch.arange(1.0, 26.0).reshape(1, 5, 5)
    crops = [data.random_crop_flip(image, padding=5, generator=torch.Generator().manual_seed(s)) for s in range(20)]
    assert all(crop.shape == image.shape for crop in crops) and any(crop.sum() == 0 for crop in crops)


class ArrayWithState:
    """Pickles as numpy does (``_reconstruct(ndarray, shape, typecode)`` then the state), with any shape and bytes."""

    def __init__(self, placeholder: tuple, shape: tuple, raw: bytes) -> None:
        self.placeholder, self.shape, self.raw = placeholder, shape, raw

    def __reduce__(self):
        return RECONSTRUCT, (np.ndarray, self.placeholder, b"B"), (1, self.shape, np.dtype(np.uint8), False, self.raw)


class CallsNdarray:
    """Pickles as a call ``numpy.ndarray(shape, dtype, buffer, offset, strides)``: an array of any size."""

    def __init__(self, *args) -> None:
        self.args = args

    def __reduce__(self):
        return np.ndarray, self.args


class FromBuffer:
    """Pickles as numpy's protocol-5 ``_frombuffer(buffer, dtype, shape, order)``, with any buffer and shape."""

    def __init__(self, raw: bytes, shape: tuple) -> None:
        self.raw, self.shape = raw, shape

    def __reduce__(self):
        return np.zeros(1).__reduce_ex__(5)[0], (self.raw, np.dtype(np.uint8), self.shape, "C")


MILLION_IMAGES = (10**6, 3072)  # 3 GB of pixels, from a file of a few hundred bytes


@pytest.mark.parametrize("array, message", [
    (CallsNdarray(MILLION_IMAGES, np.dtype(np.uint8)), r"numpy\.ndarray is admitted only as the type"),
    (CallsNdarray(MILLION_IMAGES, np.dtype(np.uint8), b"x" * 3072, 0, (0, 1)), r"numpy\.ndarray is admitted only"),
    (ArrayWithState(MILLION_IMAGES, MILLION_IMAGES, b"x" * 3072), r"_reconstruct is admitted for .*\(0,\)"),
    (ArrayWithState((0,), MILLION_IMAGES, b"x" * 3072), r"buffer size does not match array size"),
    (FromBuffer(b"x" * 3072, MILLION_IMAGES),
     r"an array of shape \(1000000, 3072\) and dtype uint8 needs 3072000000 bytes, its buffer holds 3072"),
    (FromBuffer(b"x" * 3072, (-1, 3072)), r"an array.s shape must be a tuple of ints >= 0"),
], ids=["ndarray-call", "ndarray-zero-strides", "reconstruct-huge", "state-short", "frombuffer-short",
        "frombuffer-negative"])
def test_an_array_larger_than_its_bytes_is_refused_before_it_is_built(tmp_path, array, message):
    """Regression: a small file could build a million uninitialized images through the admitted reconstructors."""
    make_cifar10(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    write_pickle(path, {b"data": array, b"labels": [0]}, protocol=5 if isinstance(array, FromBuffer) else 2)
    assert path.stat().st_size < 4000
    with pytest.raises(pickle.UnpicklingError, match=rf"cannot read 'data_batch_1' as a CIFAR-10 file: {message}"):
        data.cifar10(tmp_path)


def test_an_array_whose_bytes_match_its_shape_still_loads(tmp_path):
    make_cifar10(tmp_path)
    pixels = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    for protocol, array in ((2, ArrayWithState((0,), (2, 3072), pixels.tobytes())),
                            (5, FromBuffer(pixels.tobytes(), (2, 3072)))):
        write_pickle(tmp_path / "cifar-10-batches-py" / "data_batch_1", {b"data": array, b"labels": [0, 1]}, protocol)
        assert np.array_equal(data.cifar10(tmp_path, normalize=None).images[:2].numpy().reshape(2, 3072), pixels)


@pytest.mark.parametrize("name, images, n_classes", [("data_batch_3", 10_001, 10), ("test_batch", 10_001, 10)])
def test_a_batch_with_more_images_than_an_official_file_is_refused(tmp_path, name, images, n_classes):
    make_cifar10(tmp_path)
    write_pickle(tmp_path / "cifar-10-batches-py" / name,
                 {b"data": np.zeros((images, 3072), np.uint8), b"labels": [0] * images})
    with pytest.raises(ValueError, match=rf"'{name}': 'data' holds {images} images, more than the 10000 that a "
                                         r"CIFAR-10 file of this kind holds"):
        data.cifar10(tmp_path, train=name != "test_batch")


def test_cifar100_allows_50000_training_images_per_file_and_10000_test_images():
    assert (cifar._SOURCES["cifar100"].train_file_images, cifar._SOURCES["cifar100"].test_file_images) == (
        50_000, 10_000)
    assert (cifar._SOURCES["cifar10"].train_file_images, cifar._SOURCES["cifar10"].test_file_images) == (
        10_000, 10_000)


def test_a_missing_folder_asks_for_download(tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"{re.escape(str(tmp_path / 'cifar-100-python'))}.*download=True"):
        data.cifar100(tmp_path)


# -- downloads ------------------------------------------------------------------------------------

def serve(monkeypatch, archive: Path, md5: str | None = None) -> None:
    """Point cifar10's download at ``archive`` (a file:// URL) with its md5, or the one given."""
    md5 = md5 or hashlib.md5(archive.read_bytes()).hexdigest()
    source = dataclasses.replace(cifar._SOURCES["cifar10"], url=archive.as_uri(), md5=md5)
    monkeypatch.setitem(cifar._SOURCES, "cifar10", source)


def tiny_archive(tmp_path: Path, extra: tarfile.TarInfo | None = None) -> Path:
    make_cifar10(tmp_path / "source")
    archive = tmp_path / "server" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(tmp_path / "source" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
        if extra is not None:
            tar.addfile(extra, io.BytesIO(b"x" * extra.size))
    return archive


def test_download_checks_the_md5_and_extracts(tmp_path, monkeypatch):
    serve(monkeypatch, tiny_archive(tmp_path))
    root = tmp_path / "root"
    assert len(data.cifar10(root, download=True)) == 6
    assert sorted(os.listdir(root)) == ["cifar-10-batches-py", "cifar-10-python.tar.gz"]  # no partial files
    gone = tmp_path / "gone" / "cifar-10-python.tar.gz"
    serve(monkeypatch, gone, md5=cifar._SOURCES["cifar10"].md5)  # offline from now on
    assert len(data.cifar10(root, download=True)) == 6  # the folder is there: nothing fetched
    (root / "cifar-10-batches-py" / "test_batch").unlink()
    os.rename(root / "cifar-10-batches-py", tmp_path / "elsewhere")
    assert len(data.cifar10(root, train=False, download=True)) == 3  # extracted again from the checked archive


def test_download_with_a_wrong_md5_is_deleted(tmp_path, monkeypatch):
    serve(monkeypatch, tiny_archive(tmp_path), md5="0" * 32)
    root = tmp_path / "root"
    with pytest.raises(RuntimeError, match=r"has md5 [0-9a-f]{32}, not the official 0{32}; it was deleted"):
        data.cifar10(root, download=True)
    assert os.listdir(root) == []


def test_download_offline_names_the_url_and_where_to_put_the_files(tmp_path, monkeypatch):
    serve(monkeypatch, tmp_path / "missing.tar.gz", md5="0" * 32)
    root = tmp_path / "root"
    url = (tmp_path / "missing.tar.gz").as_uri()
    with pytest.raises(ConnectionError, match=rf"from {re.escape(url)}.*put it at .*{re.escape(str(root))}"):
        data.cifar10(root, download=True)
    assert os.listdir(root) == []


def tar_member(name: str, kind: bytes = tarfile.REGTYPE, target: str = "") -> tarfile.TarInfo:
    member = tarfile.TarInfo(name)
    member.type, member.linkname, member.size = kind, target, 1 if kind == tarfile.REGTYPE else 0
    return member


@pytest.mark.parametrize("member, message", [
    (tar_member("../evil.txt"), "would land outside"),
    (tar_member("/tmp/evil.txt"), "would land outside"),
    (tar_member("cifar-10-batches-py/evil", tarfile.SYMTYPE, "/etc/passwd"), "is not a plain file"),
], ids=["dotdot", "absolute", "symlink"])
def test_an_archive_escaping_its_folder_is_refused(tmp_path, monkeypatch, member, message):
    serve(monkeypatch, tiny_archive(tmp_path, member))
    root = tmp_path / "root"
    with pytest.raises(RuntimeError, match=rf"refusing to extract cifar-10-python.tar.gz: .*{message}"):
        data.cifar10(root, download=True)
    assert os.listdir(root) == ["cifar-10-python.tar.gz"] and not (tmp_path / "evil.txt").exists()


# -- image folders --------------------------------------------------------------------------------

def save_image(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


@pytest.fixture
def folder(tmp_path) -> tuple[Path, dict[str, np.ndarray]]:
    """b_cat/ (two RGB PNGs, a note), a_dog/ (a grayscale PNG), a hidden folder and a stray file."""
    rng = np.random.default_rng(2)
    images = {"b_cat/1.png": rng.integers(0, 256, (4, 5, 3), dtype=np.uint8),
              "b_cat/0.PNG": rng.integers(0, 256, (4, 5, 3), dtype=np.uint8),
              "a_dog/x.png": rng.integers(0, 256, (4, 5), dtype=np.uint8)}
    for name, pixels in images.items():
        save_image(tmp_path / name, pixels)
    save_image(tmp_path / ".hidden" / "y.png", images["a_dog/x.png"])
    (tmp_path / "b_cat" / "notes.txt").write_text("not an image")
    (tmp_path / "LICENSE").write_text("a file beside the classes")
    return tmp_path, images


def test_image_folder_reads_exact_pixels_with_sorted_classes(folder):
    root, images = folder
    ds = data.image_folder(root)
    assert ds.classes == ["a_dog", "b_cat"] and ds.class_to_idx == {"a_dog": 0, "b_cat": 1}
    assert [p.relative_to(root).as_posix() for p, _ in ds.samples] == ["a_dog/x.png", "b_cat/0.PNG", "b_cat/1.png"]
    assert ds.targets == [0, 1, 1] and len(ds) == 3 and ds.skipped == []
    gray = torch.from_numpy(images["a_dog/x.png"]).float() / 255
    image, label = ds[0]
    assert image.shape == (3, 4, 5) and label == 0 and torch.equal(image, gray.expand(3, 4, 5))
    expected = torch.from_numpy(images["b_cat/1.png"]).permute(2, 0, 1).float() / 255
    assert torch.equal(ds[2][0], expected) and torch.equal(ds[-1][0], expected)
    preloaded = data.image_folder(root, preload=True, normalize="cifar-resnet")
    stacked, labels = preloaded.to_tensors()
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in data.NORMALIZATIONS["cifar-resnet"])
    assert torch.allclose(stacked[2], (expected - mean) / std) and labels.tolist() == [0, 1, 1]
    assert torch.equal(preloaded[1][0], stacked[1])
    assert len(data.image_folder(root, extensions=(".PNG", ".jpg"))) == 3  # suffixes match in any case


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.image_folder(tmp_path / "missing")
    (tmp_path / "file.png").write_bytes(b"")
    with pytest.raises(NotADirectoryError, match="is a file"):
        data.image_folder(tmp_path / "file.png")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="is empty; expected one subfolder per class"):
        data.image_folder(tmp_path / "empty")
    save_image(tmp_path / "flat" / "a.png", np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(FileNotFoundError, match=r"has no class subfolders \(it holds files such as 'a.png'\)"):
        data.image_folder(tmp_path / "flat")
    (tmp_path / "flat" / "cls").mkdir()
    (tmp_path / "flat" / "cls" / "a.txt").write_text("")
    with pytest.raises(FileNotFoundError, match=r"class folder .*cls holds no image ending in .png, .jpg, .jpeg"):
        data.image_folder(tmp_path / "flat")


def test_a_corrupt_image_raises_or_is_skipped(folder):
    root, _ = folder
    corrupt = root / "a_dog" / "y.png"
    corrupt.write_bytes(b"\x89PNG but not really")
    ds = data.image_folder(root)  # listing does not decode
    with pytest.raises(OSError, match=rf"cannot decode image {re.escape(str(corrupt))}"):
        ds[1]
    with pytest.raises(OSError, match=re.escape(str(corrupt))):
        data.image_folder(root, preload=True)
    skipping = data.image_folder(root, on_corrupt="skip")
    assert skipping.skipped == [corrupt] and len(skipping) == 3 and corrupt not in [p for p, _ in skipping.samples]


def test_shared_cifar10_jpeg_test_folder():
    if not SHARED_CIFAR_TEST.is_dir():
        pytest.skip(f"{SHARED_CIFAR_TEST} is not on this machine")
    ds = data.image_folder(SHARED_CIFAR_TEST, normalize="cifar-resnet")
    assert ds.classes == CIFAR10_NAMES and np.bincount(ds.targets).tolist() == [1000] * 10
    for index in (0, 4321, 9999):
        image, label = ds[index]
        assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and label == index // 1000


# -- digits ---------------------------------------------------------------------------------------

def test_digits_split_is_stratified_disjoint_complete_and_seeded():
    from sklearn.datasets import load_digits

    full = load_digits()
    train, test = data.digits(normalize=False), data.digits(train=False, normalize=False)
    assert (len(train), len(test)) == (1347, 450) and train.classes == [str(d) for d in range(10)]
    image, label = train[0]
    assert image.shape == (1, 8, 8) and image.dtype == torch.float32 and 0 <= image.min() <= image.max() <= 1
    assert isinstance(label, int) and set(train.targets) == set(test.targets) == set(range(10))

    def rows(ds):
        return sorted(img.numpy().tobytes() + bytes([t]) for img, t in zip(ds.images, ds.targets))

    everything = sorted((img / 16).astype(np.float32).tobytes() + bytes([t]) for img, t in zip(full.images,
                                                                                                full.target))
    assert sorted(rows(train) + rows(test)) == everything  # a partition of all 1797 images
    share = np.bincount(test.targets, minlength=10) / np.bincount(full.target)
    assert np.all(np.abs(share - 0.25) < 0.01)
    again, other = data.digits(train=False, normalize=False), data.digits(train=False, normalize=False, seed=1)
    assert torch.equal(again.images, test.images) and again.targets == test.targets
    assert not torch.equal(other.images, test.images)


def test_digits_are_standardized_by_the_training_split():
    train, test = data.digits(), data.digits(train=False)
    images, labels = train.to_tensors()
    assert abs(images.mean()) < 1e-5 and abs(images.std(unbiased=False) - 1) < 1e-5
    assert test.normalize == train.normalize and labels.dtype == torch.int64
    (mean,), (std,) = train.normalize
    assert torch.allclose(test[0][0], (test.images[0] - mean) / std)


# -- normalization, augmentation, loader ----------------------------------------------------------

def test_normalization_presets_by_name_or_pair():
    assert data.NORMALIZATIONS["cifar-resnet"] == ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    assert data.NORMALIZATIONS["cifar10"][0] == (0.4914, 0.4822, 0.4465)
    assert data.NORMALIZATIONS["cifar100"][1] == (0.2673, 0.2564, 0.2762)
    images = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    named = data.TensorImageDataset(images, [0, 1], ["a", "b"], normalize="cifar100")
    paired = data.TensorImageDataset(images, [0, 1], ["a", "b"], normalize=data.NORMALIZATIONS["cifar100"])
    assert torch.equal(named[1][0], paired[1][0]) and named.normalize == data.NORMALIZATIONS["cifar100"]
    with pytest.raises(TypeError):
        data.NORMALIZATIONS["mine"] = ((0.5,), (0.5,))


def test_random_crop_flip_crops_and_flips_for_real():
    image = torch.arange(2 * 6 * 7, dtype=torch.float32).view(2, 6, 7) + 1
    padded = torch.nn.functional.pad(image, (4, 4, 4, 4))
    candidates = {(top, left, flip): padded[:, top:top + 6, left:left + 7].flip(-1) if flip else
                  padded[:, top:top + 6, left:left + 7] for top in range(9) for left in range(9) for flip in (0, 1)}
    generator = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(60):
        out = data.random_crop_flip(image, generator=generator)
        assert out.shape == image.shape
        seen |= {key for key, candidate in candidates.items() if torch.equal(out, candidate)}
    assert {flip for _, _, flip in seen} == {0, 1} and len({(t, l) for t, l, _ in seen}) > 20
    first = data.random_crop_flip(image, generator=torch.Generator().manual_seed(5))
    assert torch.equal(first, data.random_crop_flip(image, generator=torch.Generator().manual_seed(5)))
    unpadded = data.random_crop_flip(image, padding=0, generator=generator)
    assert torch.equal(unpadded, image) or torch.equal(unpadded, image.flip(-1))


def test_augmented_items_are_seeded_and_differ_from_the_plain_image():
    images = torch.randint(0, 256, (1, 3, 8, 8), dtype=torch.uint8)
    augmented = data.TensorImageDataset(images, [0], ["a"], augment=True)
    plain = data.TensorImageDataset(images, [0], ["a"])[0][0]
    torch.manual_seed(3)
    draws = [augmented[0][0] for _ in range(10)]
    torch.manual_seed(3)
    assert all(torch.equal(a, augmented[0][0]) for a in draws)
    assert all(d.shape == (3, 8, 8) for d in draws) and any(not torch.equal(d, plain) for d in draws)


def test_loader_is_reproducible_for_a_seed():
    ds = data.TensorImageDataset(torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1), list(range(10)),
                                 [str(i) for i in range(10)])

    def epochs(seed):
        batches = data.loader(ds, batch_size=4, shuffle=True, seed=seed)
        return [[labels.tolist() for _, labels in batches] for _ in range(2)]

    first = epochs(0)
    assert first == epochs(0) and first != epochs(1) and first[0] != first[1]
    assert sorted(sum(first[0], [])) == list(range(10)) and [len(b) for b in first[0]] == [4, 4, 2]
    in_order = data.loader(ds, batch_size=4)
    assert [labels.tolist() for _, labels in in_order][0] == [0, 1, 2, 3] and not in_order.pin_memory
    images, labels = next(iter(in_order))
    assert images.shape == (4, 1, 1, 1) and images.dtype == torch.float32 and labels.dtype == torch.int64


def test_loader_workers_augment_reproducibly_for_a_seed():
    images = torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    ds = data.TensorImageDataset(images, [0, 1, 0, 1], ["a", "b"], augment=True)

    def batches(seed):
        return torch.cat([x for x, _ in data.loader(ds, batch_size=2, seed=seed, num_workers=2)])

    assert torch.equal(batches(7), batches(7)) and not torch.equal(batches(7), batches(8))


# -- arguments and docs ---------------------------------------------------------------------------

@pytest.mark.parametrize("call, error, message", [
    (lambda p: data.cifar10(p, train="yes"), TypeError, r"train must be True or False, got 'yes'"),
    (lambda p: data.cifar10(p, download=1), TypeError, r"download must be True or False"),
    (lambda p: data.cifar10(42), TypeError, r"root must be a path"),
    (lambda p: data.cifar10(p, normalize="imagenet"), ValueError, r"normalize must be one of 'cifar10', 'cifar100'"),
    (lambda p: data.cifar10(p, normalize=((0.5,), (0.5,))), ValueError, r"one mean and one std per channel \(3\)"),
    (lambda p: data.cifar10(p, normalize=((0, 0, 0), (1, 0, 1))), ValueError, r"std must be > 0"),
    (lambda p: data.cifar10(p, normalize=True), TypeError, r"normalize must be a preset name"),
    (lambda p: data.cifar100(p, labels="medium"), ValueError, r"labels must be one of 'fine', 'coarse'"),
    (lambda p: data.image_folder(p, on_corrupt="ignore"), ValueError, r"on_corrupt must be one of 'raise', 'skip'"),
    (lambda p: data.image_folder(p, extensions=".png"), TypeError, r"extensions must be a sequence of suffixes"),
    (lambda p: data.image_folder(p, extensions=("png",)), ValueError, r"extensions must be suffixes starting"),
    (lambda p: data.digits(test_fraction=1.0), ValueError, r"test_fraction must leave at least one image per class"),
    (lambda p: data.digits(test_fraction=0.001), ValueError, r"test_fraction must leave"),
    (lambda p: data.digits(seed=-1), ValueError, r"seed must be a non-negative integer \(>= 0\)"),
    (lambda p: data.digits(normalize="cifar10"), TypeError, r"normalize must be True or False"),
    (lambda p: data.loader([1, 2]), TypeError, r"dataset must be a torch.utils.data.Dataset"),
    (lambda p: data.loader(data.digits(), batch_size=0), ValueError, r"batch_size must be a positive integer \(>= 1\)"),
    (lambda p: data.random_crop_flip(torch.zeros(3, 4, 4), padding=-1), ValueError,
     r"padding must be a non-negative integer"),
    (lambda p: data.random_crop_flip(torch.zeros(3, 32, 32), padding=20000), ValueError,
     r"padding = 20000 exceeds 32, the most allowed for an image of 32 x 32"),
    (lambda p: data.random_crop_flip(torch.zeros(3, 8, 5), padding=6), ValueError, r"padding = 6 exceeds 5"),
    (lambda p: data.TensorImageDataset(torch.zeros(1, 3, 2, 2), [0], ["a"], normalize=((float("nan"), 0, 0),
                                                                                       (1, 1, 1))),
     ValueError, r"normalize's mean must be finite numbers \(one per channel\), got \(nan, 0, 0\)"),
    (lambda p: data.cifar10(p, normalize=((0, 0, 0), (1, float("inf"), 1))), ValueError,
     r"normalize's std must be finite numbers"),
    (lambda p: data.TensorImageDataset(torch.tensor([[[[0.5, float("nan")]]]]), [0], ["a"]), ValueError,
     r"images must be finite: the floating images hold NaN or infinite values"),
    (lambda p: data.TensorImageDataset(torch.full((1, 1, 1, 2), float("inf"), dtype=torch.float64), [0], ["a"]),
     ValueError, r"images must be finite"),
    (lambda p: data.TensorImageDataset(torch.zeros(2, 1, 2, 2, dtype=torch.int32), [0, 0], ["a"]), TypeError,
     r"images must be uint8"),
    (lambda p: data.TensorImageDataset(torch.zeros(2, 1, 2, 2), [0], ["a"]), ValueError, r"targets must give one"),
], ids=lambda v: v if isinstance(v, str) else "")
def test_bad_arguments_are_refused_naming_the_argument(tmp_path, call, error, message):
    with pytest.raises(error, match=message):
        call(tmp_path)


def test_index_out_of_range():
    ds = data.TensorImageDataset(torch.zeros(2, 1, 2, 2), [0, 0], ["a"])
    with pytest.raises(IndexError, match="index 2 is out of range for a data set of 2 images"):
        ds[2]


DOCUMENTED = [data.cifar10, data.cifar100, data.image_folder, data.digits, data.loader, data.random_crop_flip,
              data.TensorImageDataset, data.ImageFolder]


@pytest.mark.parametrize("obj", DOCUMENTED, ids=lambda o: o.__qualname__)
def test_documented_signatures_match_the_code(obj):
    page = (ROOT / "docs" / "torch_data.md").read_text()
    documented = re.findall(rf"^tnlib_torch\.zoo\.data\.{re.escape(obj.__qualname__)}\((.*)\)\s*$", page, re.M)
    assert documented == [plain_signature(obj)]
