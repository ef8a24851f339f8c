"""Image datasets held in memory as normalised tensors: CIFAR-10/100 and MNIST, and sklearn's digits.

CIFAR and MNIST are read straight from the files torchvision downloads (pickled CIFAR batches,
uncompressed MNIST idx files), so a folder copied from another machine loads without its MD5
checksums matching. torchvision is used only to download. No augmentation is applied: every image
is scaled to [0, 1] and normalised with its dataset's per-channel mean and std.
"""

from __future__ import annotations

import codecs
import logging
import pickle
import struct
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torchvision
from torch import Tensor

try:
    from numpy._core import multiarray as _np_multiarray
    from numpy._core import numeric as _np_numeric
except ImportError:  # numpy < 2 has no numpy._core
    from numpy.core import multiarray as _np_multiarray
    from numpy.core import numeric as _np_numeric

logger = logging.getLogger(__name__)

#: Per-channel (mean, std) of the training images after scaling pixels to [0, 1]. The CIFAR and MNIST
#: values are the widely used published figures, not recomputed by this code. The digits values were
#: computed from the 1,437-image training split that ``load_dataset("digits", ...)`` returns.
NORMALIZATION: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "mnist": ((0.1307,), (0.3081,)),
    "digits": ((0.3054,), (0.3761,)),
}

#: Exceptions that a damaged pickle or idx file can raise while it is parsed.
_PARSE_ERRORS = (
    pickle.UnpicklingError,
    EOFError,
    OSError,
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    AttributeError,
    OverflowError,
    struct.error,
)

#: Exceptions a failed torchvision download can raise (URLError is an OSError).
_DOWNLOAD_ERRORS = (OSError, RuntimeError, ValueError, EOFError, tarfile.TarError)


class DatasetError(RuntimeError):
    """A dataset is missing, failed to download or has an unreadable file. The message gives the fix."""


@dataclass
class DatasetSplits:
    """A dataset's training and test images and labels, all on the CPU."""

    train_inputs: Tensor  # float32 [N, C, H, W], normalised
    train_targets: Tensor  # int64 [N]
    test_inputs: Tensor  # float32 [N_test, C, H, W], normalised
    test_targets: Tensor  # int64 [N_test]
    num_classes: int
    name: str

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one image, (C, H, W)."""
        return tuple(self.train_inputs.shape[1:])


@dataclass(frozen=True)
class _CifarLayout:
    """File names and dict keys of one CIFAR variant."""

    train_files: tuple[str, ...]
    test_file: str
    meta_file: str
    label_key: str  # key of the labels list in a batch
    names_key: str  # key of the class names list in the meta file
    num_classes: int

    @property
    def files(self) -> tuple[str, ...]:
        """Every file the loader reads."""
        return (*self.train_files, self.test_file, self.meta_file)


_CIFAR_LAYOUTS = {
    "cifar10": _CifarLayout(
        train_files=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test_file="test_batch",
        meta_file="batches.meta",
        label_key="labels",
        names_key="label_names",
        num_classes=10,
    ),
    "cifar100": _CifarLayout(
        train_files=("train",),
        test_file="test",
        meta_file="meta",
        label_key="fine_labels",
        names_key="fine_label_names",
        num_classes=100,
    ),
}


@dataclass(frozen=True)
class _Source:
    """Location of a downloadable dataset under ``root`` and the function that downloads it."""

    title: str  # as people write it, e.g. "CIFAR-10"
    folder: str  # folder under root that contains the files
    files: tuple[str, ...]  # every file the loader reads, relative to ``folder``
    copy_hint: str  # what to copy where when there is no network, with {root} for the root
    download: Callable[[Path], object]  # fetches the files into root


_SOURCES = {
    "cifar10": _Source(
        title="CIFAR-10",
        folder="cifar-10-batches-py",
        files=_CIFAR_LAYOUTS["cifar10"].files,
        copy_hint="copy the extracted cifar-10-batches-py folder into {root}",
        download=lambda root: torchvision.datasets.CIFAR10(root=str(root), train=False, download=True),
    ),
    "cifar100": _Source(
        title="CIFAR-100",
        folder="cifar-100-python",
        files=_CIFAR_LAYOUTS["cifar100"].files,
        copy_hint="copy the extracted cifar-100-python folder into {root}",
        download=lambda root: torchvision.datasets.CIFAR100(root=str(root), train=False, download=True),
    ),
    "mnist": _Source(
        title="MNIST",
        folder="MNIST/raw",
        files=(
            "train-images-idx3-ubyte",
            "train-labels-idx1-ubyte",
            "t10k-images-idx3-ubyte",
            "t10k-labels-idx1-ubyte",
        ),
        copy_hint="copy the four uncompressed idx files (train-images-idx3-ubyte, ...) into {root}/MNIST/raw",
        download=lambda root: torchvision.datasets.MNIST(root=str(root), train=False, download=True),
    ),
}


def load_dataset(name: str, root: str | Path, download: bool = False) -> DatasetSplits:
    """Load dataset ``name`` from ``root`` into memory, downloading it first when ``download`` is set.

    Names: ``cifar10``, ``cifar100``, ``mnist`` (files under ``root``) and ``digits`` (sklearn's
    8×8 digits, bundled with scikit-learn, so ``root`` and ``download`` are ignored).

    Raises:
        ValueError: ``name`` is not a known dataset.
        DatasetError: the files are missing, the download failed or a file cannot be parsed.
    """
    loaders = {
        "cifar10": lambda root: _load_cifar("cifar10", root),
        "cifar100": lambda root: _load_cifar("cifar100", root),
        "mnist": _load_mnist,
        "digits": _load_digits,
    }
    if name not in loaders:
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(loaders)}")

    root = Path(root).expanduser().resolve()
    if name in _SOURCES:
        _ensure_files(name, root, download)

    splits = loaders[name](root)
    logger.info(
        "Loaded %s: %d training and %d test images of shape %s, %d classes",
        name,
        len(splits.train_targets),
        len(splits.test_targets),
        splits.input_shape,
        splits.num_classes,
    )
    return splits


def _ensure_files(name: str, root: Path, download: bool) -> None:
    """Download dataset ``name`` when requested and files are missing, then check every file exists."""
    source = _SOURCES[name]
    folder = root / source.folder
    hint = source.copy_hint.format(root=root)

    if download and _missing_files(folder, source.files):
        logger.info("Downloading %s into %s", source.title, root)
        try:
            source.download(root)
        except _DOWNLOAD_ERRORS as error:
            raise DatasetError(
                f"Downloading {source.title} into {root} failed ({type(error).__name__}: {error}). "
                f"Check the network connection, or on a machine without one {hint}, "
                f"or set dataset.root to a folder that already contains {source.folder}."
            ) from error

    missing = _missing_files(folder, source.files)
    if missing:
        raise DatasetError(
            f"{source.title} not found: {folder} is missing {', '.join(missing)}. "
            f"Set dataset.download=true on a machine with internet access, {hint}, "
            f"or set dataset.root to the folder that contains {source.folder}."
        )


def _missing_files(folder: Path, files: tuple[str, ...]) -> list[str]:
    return [file for file in files if not (folder / file).is_file()]


def _corrupt_file_error(name: str, path: Path, root: Path, error: Exception) -> DatasetError:
    source = _SOURCES[name]
    if isinstance(error, OSError):
        return DatasetError(
            f"{source.title} file {path} cannot be opened ({type(error).__name__}: {error}). "
            f"Check that it is a readable file, or set dataset.root to another copy of {source.folder}."
        )
    return DatasetError(
        f"{source.title} file {path} cannot be read ({type(error).__name__}: {error}); it is corrupt or "
        f"truncated. Delete it and set dataset.download=true to fetch a fresh copy, or "
        f"{source.copy_hint.format(root=root)} from an intact download."
    )


def _normalise(images: np.ndarray, name: str, max_value: float = 255.0) -> Tensor:
    """Scale images [N, C, H, W] from [0, max_value] to [0, 1] and normalise each channel with its constants."""
    mean, std = NORMALIZATION[name]
    inputs = torch.from_numpy(np.ascontiguousarray(images)).to(torch.float32).div_(max_value)
    channels = len(mean)
    inputs.sub_(torch.tensor(mean).view(1, channels, 1, 1)).div_(torch.tensor(std).view(1, channels, 1, 1))
    return inputs


# CIFAR: python pickles of dicts with a uint8 "data" array [N, 3072] (channel-major 32×32 images).


def _array_globals() -> dict[tuple[str, str], object]:
    """Return the globals a pickled numpy array refers to, under both numpy 1 and numpy 2 module names."""
    allowed: dict[tuple[str, str], object] = {
        ("numpy", "ndarray"): np.ndarray,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): codecs.encode,
    }
    for package in ("numpy.core", "numpy._core"):
        allowed[(f"{package}.multiarray", "_reconstruct")] = _np_multiarray._reconstruct
        allowed[(f"{package}.multiarray", "scalar")] = _np_multiarray.scalar
        if hasattr(_np_numeric, "_frombuffer"):
            allowed[(f"{package}.numeric", "_frombuffer")] = _np_numeric._frombuffer
    return allowed


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that rebuilds numpy arrays but rejects every other global, so a pickle cannot run code."""

    allowed_globals = _array_globals()

    def find_class(self, module: str, name: str):
        if (module, name) not in self.allowed_globals:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed in a dataset file")
        return self.allowed_globals[(module, name)]


def _read_pickle(path: Path) -> dict:
    with path.open("rb") as file:
        content = _ArrayUnpickler(file, encoding="latin1").load()
    if not isinstance(content, dict):
        raise ValueError(f"expected a pickled dict, found {type(content).__name__}")
    return content


def _read_cifar_batch(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the images [N, 3, 32, 32] and labels [N] of one pickled CIFAR batch file."""
    batch = _read_pickle(path)
    data = np.asarray(batch["data"])
    labels = np.asarray(batch[label_key], dtype=np.int64)

    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"'data' must be a uint8 array [N, 3072], found {data.dtype} {list(data.shape)}")
    if labels.shape != (data.shape[0],):
        raise ValueError(f"{len(labels)} labels for {data.shape[0]} images")
    if labels.size and not (labels.min() >= 0 and labels.max() < num_classes):
        raise ValueError(f"labels outside [0, {num_classes})")
    return data.reshape(-1, 3, 32, 32), labels


def _load_cifar(name: str, root: Path) -> DatasetSplits:
    layout = _CIFAR_LAYOUTS[name]
    folder = root / _SOURCES[name].folder

    # ``path`` always names the file being parsed, so the error below can report it.
    path = folder / layout.meta_file
    try:
        class_names = _read_pickle(path)[layout.names_key]
        if len(class_names) != layout.num_classes:
            raise ValueError(f"{len(class_names)} class names, expected {layout.num_classes}")

        parts = []
        for file in layout.train_files:
            path = folder / file
            parts.append(_read_cifar_batch(path, layout.label_key, layout.num_classes))
        path = folder / layout.test_file
        test_images, test_labels = _read_cifar_batch(path, layout.label_key, layout.num_classes)
    except _PARSE_ERRORS as error:
        raise _corrupt_file_error(name, path, root, error) from error

    return DatasetSplits(
        train_inputs=_normalise(np.concatenate([images for images, _ in parts]), name),
        train_targets=torch.from_numpy(np.concatenate([labels for _, labels in parts])),
        test_inputs=_normalise(test_images, name),
        test_targets=torch.from_numpy(test_labels),
        num_classes=layout.num_classes,
        name=name,
    )


# MNIST: idx files, a big-endian header (two zero bytes, type code 0x08 = uint8, number of
# dimensions, one uint32 per dimension) followed by the raw bytes.


def _read_idx(path: Path, ndim: int) -> np.ndarray:
    """Return the uint8 array stored in an idx file with ``ndim`` dimensions."""
    data = path.read_bytes()
    header_size = 4 + 4 * ndim
    if len(data) < header_size:
        raise ValueError(f"file has {len(data)} bytes, shorter than its {header_size}-byte header")
    if data[:2] != b"\x00\x00" or data[2] != 0x08 or data[3] != ndim:
        raise ValueError(f"invalid idx header {data[:4].hex()}, expected 000008{ndim:02x}")

    shape = struct.unpack(f">{ndim}I", data[4:header_size])
    expected = int(np.prod(shape))
    if len(data) - header_size != expected:
        body_size = len(data) - header_size
        raise ValueError(f"header declares shape {list(shape)} ({expected} bytes), file contains {body_size}")
    return np.frombuffer(bytearray(data), dtype=np.uint8, offset=header_size).reshape(shape)


def _read_mnist_part(root: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    folder = root / _SOURCES["mnist"].folder
    path = folder / f"{prefix}-images-idx3-ubyte"
    try:
        images = _read_idx(path, ndim=3)
        path = folder / f"{prefix}-labels-idx1-ubyte"
        labels = _read_idx(path, ndim=1).astype(np.int64)
        if len(labels) != len(images):
            raise ValueError(f"{len(labels)} labels for {len(images)} images")
        if labels.size and labels.max() > 9:
            raise ValueError("labels outside [0, 10)")
    except _PARSE_ERRORS as error:
        raise _corrupt_file_error("mnist", path, root, error) from error
    return images[:, None, :, :], labels


def _load_mnist(root: Path) -> DatasetSplits:
    train_images, train_labels = _read_mnist_part(root, "train")
    test_images, test_labels = _read_mnist_part(root, "t10k")
    return DatasetSplits(
        train_inputs=_normalise(train_images, "mnist"),
        train_targets=torch.from_numpy(train_labels),
        test_inputs=_normalise(test_images, "mnist"),
        test_targets=torch.from_numpy(test_labels),
        num_classes=10,
        name="mnist",
    )


#: Size and seed of the digits test split; fixed so every run evaluates on the same 360 images.
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0


def _load_digits(root: Path) -> DatasetSplits:
    """Split sklearn's 1,797 digits (pixel values 0..16) 80/20, stratified by class, with a fixed seed."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = digits.images[:, None, :, :]
    labels = digits.target.astype(np.int64)
    train_images, test_images, train_labels, test_labels = train_test_split(
        images, labels, test_size=DIGITS_TEST_FRACTION, random_state=DIGITS_SPLIT_SEED, stratify=labels
    )
    return DatasetSplits(
        train_inputs=_normalise(train_images, "digits", max_value=16.0),
        train_targets=torch.from_numpy(train_labels),
        test_inputs=_normalise(test_images, "digits", max_value=16.0),
        test_targets=torch.from_numpy(test_labels),
        num_classes=10,
        name="digits",
    )
