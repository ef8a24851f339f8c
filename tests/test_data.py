"""Tests of efmom.data: loading from generated files, worker splits and stacked minibatches.

CIFAR and MNIST files are generated in tmp_path in the exact on-disk format torchvision downloads.
Download tests replace ``urllib.request.urlopen`` and ``socket.connect`` with functions that raise,
so no test ever opens a network connection.
"""

from __future__ import annotations

import math
import pickle
import socket
import struct
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import torch

from efmom.data import (
    NORMALIZATION,
    DatasetError,
    WorkerBatches,
    WorkerSplit,
    iterate_batches,
    load_dataset,
    split_workers,
)

# --- generated dataset files ------------------------------------------------------------------


def write_cifar_batch(path: Path, images: np.ndarray, labels: np.ndarray, label_key: str) -> None:
    """Write one CIFAR batch as torchvision expects it: a pickled dict with uint8 data [N, 3072]."""
    batch = {"batch_label": "generated", label_key: labels.tolist(), "data": images.reshape(len(images), -1)}
    if label_key == "fine_labels":
        batch["coarse_labels"] = (labels // 5).tolist()
    with path.open("wb") as file:
        pickle.dump(batch, file, protocol=2)


def write_cifar10(root: Path, per_batch: int = 4, test_size: int = 6, seed: int = 0) -> dict[str, np.ndarray]:
    """Write a tiny cifar-10-batches-py folder under ``root``; return the raw images and labels written."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)

    train_images, train_labels = [], []
    for index in range(1, 6):
        images = rng.integers(0, 256, size=(per_batch, 3, 32, 32), dtype=np.uint8)
        labels = rng.integers(0, 10, size=per_batch)
        write_cifar_batch(folder / f"data_batch_{index}", images, labels, "labels")
        train_images.append(images)
        train_labels.append(labels)

    test_images = rng.integers(0, 256, size=(test_size, 3, 32, 32), dtype=np.uint8)
    test_labels = rng.integers(0, 10, size=test_size)
    write_cifar_batch(folder / "test_batch", test_images, test_labels, "labels")
    with (folder / "batches.meta").open("wb") as file:
        pickle.dump({"label_names": [f"class{i}" for i in range(10)], "num_vis": 3072}, file, protocol=2)

    return {
        "train_images": np.concatenate(train_images),
        "train_labels": np.concatenate(train_labels),
        "test_images": test_images,
        "test_labels": test_labels,
    }


def write_cifar100(root: Path, train_size: int = 12, test_size: int = 5, seed: int = 1) -> dict[str, np.ndarray]:
    """Write a tiny cifar-100-python folder under ``root``; return the raw images and labels written."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)

    arrays = {}
    for part, size in (("train", train_size), ("test", test_size)):
        images = rng.integers(0, 256, size=(size, 3, 32, 32), dtype=np.uint8)
        labels = rng.integers(0, 100, size=size)
        labels[0] = 99  # the highest fine label must load
        write_cifar_batch(folder / part, images, labels, "fine_labels")
        arrays[f"{part}_images"], arrays[f"{part}_labels"] = images, labels

    meta = {
        "fine_label_names": [f"fine{i}" for i in range(100)],
        "coarse_label_names": [f"coarse{i}" for i in range(20)],
    }
    with (folder / "meta").open("wb") as file:
        pickle.dump(meta, file, protocol=2)
    return arrays


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write a uint8 array as an idx file: magic 0x0000 0x08 ndim, big-endian sizes, then the bytes."""
    header = bytes([0, 0, 0x08, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    path.write_bytes(header + array.astype(np.uint8).tobytes())


def write_mnist(root: Path, train_size: int = 7, test_size: int = 3, seed: int = 2) -> dict[str, np.ndarray]:
    """Write the four uncompressed MNIST idx files under ``root/MNIST/raw``; return the arrays written."""
    rng = np.random.default_rng(seed)
    folder = root / "MNIST" / "raw"
    folder.mkdir(parents=True)

    arrays = {}
    for prefix, part, size in (("train", "train", train_size), ("t10k", "test", test_size)):
        images = rng.integers(0, 256, size=(size, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=size).astype(np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte", images)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte", labels)
        arrays[f"{part}_images"], arrays[f"{part}_labels"] = images, labels
    return arrays


def expected_inputs(images: np.ndarray, name: str) -> torch.Tensor:
    """Normalise raw uint8 images [N, C, H, W] the way the loader should, in float64 for reference."""
    mean, std = (torch.tensor(values, dtype=torch.float64).view(1, -1, 1, 1) for values in NORMALIZATION[name])
    return (torch.from_numpy(images).double() / 255.0 - mean) / std


# --- loading ----------------------------------------------------------------------------------


def test_cifar10_loads_generated_files(tmp_path):
    raw = write_cifar10(tmp_path)

    splits = load_dataset("cifar10", tmp_path)

    assert splits.name == "cifar10"
    assert splits.num_classes == 10
    assert splits.input_shape == (3, 32, 32)
    assert splits.train_inputs.shape == (20, 3, 32, 32)
    assert splits.test_inputs.shape == (6, 3, 32, 32)
    assert splits.train_inputs.dtype == torch.float32
    assert splits.train_targets.dtype == torch.int64
    assert splits.train_targets.tolist() == raw["train_labels"].tolist()
    assert splits.test_targets.tolist() == raw["test_labels"].tolist()
    torch.testing.assert_close(splits.train_inputs, expected_inputs(raw["train_images"], "cifar10").float())
    torch.testing.assert_close(splits.test_inputs, expected_inputs(raw["test_images"], "cifar10").float())


def test_cifar100_loads_fine_labels(tmp_path):
    raw = write_cifar100(tmp_path)

    splits = load_dataset("cifar100", str(tmp_path))

    assert splits.num_classes == 100
    assert splits.train_inputs.shape == (12, 3, 32, 32)
    assert splits.test_inputs.shape == (5, 3, 32, 32)
    assert splits.train_targets.tolist() == raw["train_labels"].tolist()
    assert int(splits.train_targets.max()) == 99
    torch.testing.assert_close(splits.test_inputs, expected_inputs(raw["test_images"], "cifar100").float())


def test_mnist_loads_idx_files(tmp_path):
    raw = write_mnist(tmp_path)

    splits = load_dataset("mnist", tmp_path)

    assert splits.num_classes == 10
    assert splits.input_shape == (1, 28, 28)
    assert splits.train_inputs.shape == (7, 1, 28, 28)
    assert splits.test_inputs.shape == (3, 1, 28, 28)
    assert splits.test_targets.dtype == torch.int64
    assert splits.train_targets.tolist() == raw["train_labels"].tolist()
    torch.testing.assert_close(splits.train_inputs, expected_inputs(raw["train_images"][:, None], "mnist").float())


def test_digits_split_sizes_and_classes():
    splits = load_dataset("digits", "unused")

    assert splits.num_classes == 10
    assert splits.input_shape == (1, 8, 8)
    assert len(splits.train_targets) == 1437
    assert len(splits.test_targets) == 360
    assert sorted(splits.test_targets.unique().tolist()) == list(range(10))


def test_digits_split_is_fixed():
    first = load_dataset("digits", "unused")
    second = load_dataset("digits", "unused")

    assert torch.equal(first.train_targets, second.train_targets)
    assert torch.equal(first.test_inputs, second.test_inputs)


def test_digits_constants_match_training_split():
    splits = load_dataset("digits", "unused")

    # Normalised with its own mean and std, the training split has mean 0 and std 1.
    assert abs(float(splits.train_inputs.mean())) < 1e-3
    assert abs(float(splits.train_inputs.std()) - 1.0) < 1e-3


def test_unknown_dataset_lists_choices(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'") as info:
        load_dataset("imagenet", tmp_path)

    for name in ("cifar10", "cifar100", "mnist", "digits"):
        assert name in str(info.value)


# --- missing, corrupt and undownloadable files -----------------------------------------------


@pytest.mark.parametrize(
    ("name", "folder"),
    [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python"), ("mnist", "MNIST/raw")],
)
def test_missing_folder_names_absolute_path(tmp_path, monkeypatch, name, folder):
    monkeypatch.chdir(tmp_path)

    with pytest.raises(DatasetError) as info:
        load_dataset(name, "data")

    message = str(info.value)
    assert str(tmp_path / "data" / folder) in message
    assert "dataset.download=true" in message
    assert "dataset.root" in message


def test_missing_file_is_listed(tmp_path):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()

    with pytest.raises(DatasetError, match="missing data_batch_4"):
        load_dataset("cifar10", tmp_path)


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.mark.parametrize(
    ("name", "write", "damaged"),
    [
        ("cifar10", write_cifar10, "cifar-10-batches-py/data_batch_3"),
        ("cifar10", write_cifar10, "cifar-10-batches-py/batches.meta"),
        ("cifar100", write_cifar100, "cifar-100-python/test"),
        ("mnist", write_mnist, "MNIST/raw/train-images-idx3-ubyte"),
        ("mnist", write_mnist, "MNIST/raw/t10k-labels-idx1-ubyte"),
    ],
)
def test_truncated_file_names_its_path(tmp_path, name, write, damaged):
    write(tmp_path)
    truncate(tmp_path / damaged)

    with pytest.raises(DatasetError) as info:
        load_dataset(name, tmp_path)

    assert str(tmp_path / damaged) in str(info.value)
    assert "corrupt or truncated" in str(info.value)
    assert info.value.__cause__ is not None


@pytest.mark.parametrize("content", [b"", b"not a pickle at all", pickle.dumps([1, 2, 3])])
def test_garbage_cifar_batch_raises_dataset_error(tmp_path, content):
    write_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(content)

    with pytest.raises(DatasetError, match="test_batch"):
        load_dataset("cifar10", tmp_path)


def test_mismatched_mnist_label_count_raises(tmp_path):
    write_mnist(tmp_path)
    write_idx(tmp_path / "MNIST" / "raw" / "train-labels-idx1-ubyte", np.zeros(5, dtype=np.uint8))

    with pytest.raises(DatasetError, match="5 labels for 7 images"):
        load_dataset("mnist", tmp_path)


class _CreatesFile:
    """Pickles to a call of ``open(path, "w")``, which an unrestricted unpickler would execute."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_pickle_with_foreign_global_is_not_executed(tmp_path):
    write_cifar10(tmp_path)
    marker = tmp_path / "marker"
    with (tmp_path / "cifar-10-batches-py" / "data_batch_1").open("wb") as file:
        pickle.dump({"data": _CreatesFile(marker), "labels": []}, file, protocol=2)

    with pytest.raises(DatasetError, match="data_batch_1"):
        load_dataset("cifar10", tmp_path)
    assert not marker.exists()


@pytest.fixture
def offline(monkeypatch):
    """Make every URL open and socket connect raise; return the list of URLs torchvision requested."""
    requested: list[str] = []

    def fail_urlopen(request, *args, **kwargs):
        requested.append(getattr(request, "full_url", str(request)))
        raise urllib.error.URLError("network disabled in tests")

    def fail_connect(self, address):
        raise OSError(f"network disabled in tests, connect to {address} refused")

    monkeypatch.setattr(urllib.request, "urlopen", fail_urlopen)
    monkeypatch.setattr(socket.socket, "connect", fail_connect)
    return requested


@pytest.mark.parametrize(
    ("name", "folder"),
    [("cifar10", "cifar-10-batches-py"), ("cifar100", "cifar-100-python"), ("mnist", "MNIST/raw")],
)
def test_download_without_network_raises_dataset_error(tmp_path, offline, name, folder):
    root = tmp_path / "data"

    with pytest.raises(DatasetError) as info:
        load_dataset(name, root, download=True)

    message = str(info.value)
    assert message.startswith("Downloading ")
    assert str(root) in message
    assert folder in message
    assert "dataset.root" in message
    assert info.value.__cause__ is not None
    assert offline, "the download never reached urllib, so the failure path was not exercised"


def test_download_skipped_when_files_present(tmp_path, offline):
    write_cifar10(tmp_path)

    splits = load_dataset("cifar10", tmp_path, download=True)

    assert len(splits.train_targets) == 20
    assert offline == []


# --- worker splits ----------------------------------------------------------------------------


def balanced_labels(size: int, num_classes: int = 10, seed: int = 0) -> torch.Tensor:
    """Labels with equal class counts (up to one), in a seeded random order."""
    labels = torch.arange(size) % num_classes
    return labels[torch.randperm(size, generator=torch.Generator().manual_seed(seed))]


def check_disjoint(split: WorkerSplit, size: int) -> None:
    everything = torch.cat([split.val_indices, *split.worker_indices])
    assert len(everything.unique()) == len(everything), "an index appears twice"
    assert int(everything.min()) >= 0
    assert int(everything.max()) < size


def check_paper_split(split: WorkerSplit, targets: torch.Tensor, n_workers: int) -> int:
    """Check the hold-out size, disjointness, equal lengths, class parts and cut length; return the length."""
    size = len(targets)
    check_disjoint(split, size)
    assert len(split.val_indices) == round(0.1 * size)

    lengths = {len(shard) for shard in split.worker_indices}
    assert len(lengths) == 1, f"shard lengths differ: {lengths}"
    length = lengths.pop()

    iid_size = (size - len(split.val_indices)) // (2 * n_workers)
    assert length >= iid_size
    for worker, shard in enumerate(split.worker_indices):
        class_part = targets[shard[iid_size:]]
        assert bool((class_part % n_workers == worker).all()), f"worker {worker} holds another worker's class"

    # Every training index outside the i.i.d. parts belongs to the class pool, and the cut keeps
    # exactly the smallest pool share.
    iid_indices = torch.cat([shard[:iid_size] for shard in split.worker_indices])
    outside_pool = torch.zeros(size, dtype=torch.bool)
    outside_pool[split.val_indices] = True
    outside_pool[iid_indices] = True
    pool_owners = targets[~outside_pool] % n_workers
    pool_counts = torch.bincount(pool_owners, minlength=n_workers)
    assert length == iid_size + int(pool_counts.min())
    return length


@pytest.mark.parametrize("n_workers", [10, 3, 7, 20])
def test_paper_split_structure(n_workers):
    targets = balanced_labels(5000)

    split = split_workers(targets, n_workers, scheme="paper", seed=42)

    assert len(split.worker_indices) == n_workers
    check_paper_split(split, targets, n_workers)


def test_paper_split_halves_for_ten_workers():
    targets = balanced_labels(50_000)

    split = split_workers(targets, 10, scheme="paper", seed=42)
    length = check_paper_split(split, targets, 10)

    # a = 2,250 i.i.d. indices, then close to 2,250 of the worker's own class.
    assert 2250 + 2100 <= length <= 2250 + 2250
    iid_labels = targets[split.worker_indices[0][:2250]]
    assert len(iid_labels.unique()) == 10


def test_paper_split_twenty_workers_iid_only():
    targets = balanced_labels(1000)

    split = split_workers(targets, 20, scheme="paper", seed=0)

    # Workers 10..19 own no class, so every shard is cut to a = (1000 - 100) // 40 = 22.
    assert [len(shard) for shard in split.worker_indices] == [22] * 20


def test_paper_split_hand_computed_lengths():
    # m = 5 training indices, n = 3: a = ⌊5/6⌋ = 0, owners by label mod 3 hold 2, 2 and 1.
    targets = torch.tensor([0, 1, 2, 3, 4])
    split = split_workers(targets, 3, scheme="paper", seed=5, val_fraction=0.0)
    assert [len(shard) for shard in split.worker_indices] == [1, 1, 1]
    assert [int(targets[shard[0]]) % 3 for shard in split.worker_indices] == [0, 1, 2]

    # 50 labels in {0, 2}, n = 2: 5 held out, m = 45, a = ⌊45/4⌋ = 11, worker 1 owns no class.
    targets = torch.tensor([0, 2] * 25)
    split = split_workers(targets, 2, scheme="paper", seed=5)
    assert len(split.val_indices) == 5
    assert [len(shard) for shard in split.worker_indices] == [11, 11]


def test_paper_split_without_indices_for_a_worker_raises():
    with pytest.raises(ValueError, match="without training indices"):
        split_workers(torch.tensor([0, 0, 0]), 2, scheme="paper", val_fraction=0.0)


def test_iid_split_equal_shards():
    targets = balanced_labels(1003)

    split = split_workers(targets, 7, scheme="iid", seed=3)

    check_disjoint(split, 1003)
    assert len(split.val_indices) == 100
    assert [len(shard) for shard in split.worker_indices] == [(1003 - 100) // 7] * 7


def test_dirichlet_split_covers_training_indices():
    targets = balanced_labels(2000)

    split = split_workers(targets, 8, scheme="dirichlet", seed=4, alpha=0.5)

    check_disjoint(split, 2000)
    assert sum(len(shard) for shard in split.worker_indices) == 1800
    assert all(len(shard) >= 1 for shard in split.worker_indices)


def majority_share(split: WorkerSplit, targets: torch.Tensor) -> float:
    """Mean over workers of the share of the most common label in the worker's shard."""
    shares = [torch.bincount(targets[shard]).max().item() / len(shard) for shard in split.worker_indices]
    return sum(shares) / len(shares)


def test_dirichlet_alpha_controls_label_skew():
    targets = balanced_labels(10_000)

    skewed = split_workers(targets, 10, scheme="dirichlet", seed=0, alpha=0.05)
    uniform = split_workers(targets, 10, scheme="dirichlet", seed=0, alpha=1000.0)

    assert majority_share(skewed, targets) > 0.6
    assert majority_share(uniform, targets) < 0.2


def test_dirichlet_small_alpha_gives_every_worker_an_index():
    targets = balanced_labels(60, num_classes=3)

    split = split_workers(targets, 50, scheme="dirichlet", seed=1, alpha=0.01, val_fraction=0.0)

    assert all(len(shard) >= 1 for shard in split.worker_indices)
    check_disjoint(split, 60)
    assert sum(len(shard) for shard in split.worker_indices) == 60


def test_dirichlet_too_few_indices_raises():
    with pytest.raises(ValueError, match="fewer than n_workers=10"):
        split_workers(balanced_labels(5), 10, scheme="dirichlet")


@pytest.mark.parametrize("scheme", ["paper", "iid", "dirichlet"])
def test_split_same_seed_same_result(scheme):
    targets = balanced_labels(500)

    first = split_workers(targets, 5, scheme=scheme, seed=11)
    second = split_workers(targets, 5, scheme=scheme, seed=11)
    other = split_workers(targets, 5, scheme=scheme, seed=12)

    assert torch.equal(first.val_indices, second.val_indices)
    assert all(torch.equal(a, b) for a, b in zip(first.worker_indices, second.worker_indices))
    assert not torch.equal(first.val_indices, other.val_indices)
    assert not torch.equal(first.worker_indices[0], other.worker_indices[0])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"n_workers": 0}, "n_workers"),
        ({"n_workers": 2.5}, "n_workers"),
        ({"val_fraction": 1.0}, r"dataset.val_fraction must be in \[0, 1\), got 1.0"),
        ({"val_fraction": -0.1}, "val_fraction"),
        ({"alpha": 0.0}, r"dataset.alpha \(the Dirichlet concentration\) must be > 0, got 0.0"),
        ({"scheme": "shards"}, "dataset.split"),
    ],
)
def test_split_rejects_invalid_arguments(kwargs, match):
    arguments = {"targets": balanced_labels(100), "n_workers": 4, **kwargs}

    with pytest.raises(ValueError, match=match):
        split_workers(**arguments)


def test_split_rejects_float_targets():
    with pytest.raises(ValueError, match="integer tensor"):
        split_workers(torch.zeros(10), 2)


# --- worker minibatches -----------------------------------------------------------------------


def indexed_data(size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs [size, 1, 2, 2] and targets [size] that both hold each sample's own index."""
    targets = torch.arange(size)
    inputs = targets.double().view(size, 1, 1, 1).expand(size, 1, 2, 2).float().clone()
    return inputs, targets


def equal_split(n_workers: int, shard_size: int, seed: int = 0) -> WorkerSplit:
    order = torch.randperm(n_workers * shard_size + 10, generator=torch.Generator().manual_seed(seed))
    shards = list(order[: n_workers * shard_size].view(n_workers, shard_size))
    return WorkerSplit(worker_indices=shards, val_indices=order[n_workers * shard_size :])


def test_batches_paper_sized_epoch():
    inputs, targets = indexed_data(3 * 4447 + 10)
    batches = WorkerBatches(inputs, targets, equal_split(3, 4447), batch_size=64, seed=42)

    steps = list(batches.epoch(0))

    assert len(batches) == 70
    assert len(steps) == 70
    assert steps[0][0].shape == (3, 64, 1, 2, 2)
    assert steps[0][1].shape == (3, 64)
    assert steps[-1][0].shape == (3, 31, 1, 2, 2)
    assert steps[-1][1].shape == (3, 31)


def test_batches_visit_every_index_once():
    inputs, targets = indexed_data(4 * 50 + 10)
    split = equal_split(4, 50)
    batches = WorkerBatches(inputs, targets, split, batch_size=16, seed=0)

    for epoch in range(2):
        seen = torch.cat([batch_targets for _, batch_targets in batches.epoch(epoch)], dim=1)
        for worker, shard in enumerate(split.worker_indices):
            assert seen[worker].sort().values.tolist() == shard.sort().values.tolist()


def test_batches_inputs_match_targets():
    inputs, targets = indexed_data(2 * 20 + 10)
    batches = WorkerBatches(inputs, targets, equal_split(2, 20), batch_size=8, seed=0)

    for batch_inputs, batch_targets in batches.epoch(0):
        assert torch.equal(batch_inputs[:, :, 0, 0, 0].long(), batch_targets)


def epoch_targets(batches: WorkerBatches, epoch: int) -> list[torch.Tensor]:
    return [batch_targets for _, batch_targets in batches.epoch(epoch)]


def test_batches_deterministic_per_seed_and_epoch():
    inputs, targets = indexed_data(3 * 40 + 10)
    split = equal_split(3, 40)
    first = WorkerBatches(inputs, targets, split, batch_size=16, seed=7)
    resumed = WorkerBatches(inputs, targets, split, batch_size=16, seed=7)
    other_seed = WorkerBatches(inputs, targets, split, batch_size=16, seed=8)

    for epoch in range(3):
        epoch_targets(first, epoch)
    after_resume = epoch_targets(resumed, 3)

    assert all(torch.equal(a, b) for a, b in zip(epoch_targets(first, 3), after_resume))
    assert not torch.equal(epoch_targets(first, 0)[0], epoch_targets(first, 1)[0])
    assert not torch.equal(epoch_targets(first, 0)[0], epoch_targets(other_seed, 0)[0])


def test_batches_workers_shuffle_independently():
    inputs, targets = indexed_data(2 * 30)
    shard = torch.arange(30)
    split = WorkerSplit(worker_indices=[shard, shard + 30], val_indices=torch.empty(0, dtype=torch.long))
    batches = WorkerBatches(inputs, targets, split, batch_size=30, seed=0)

    (_, batch_targets), = batches.epoch(0)

    assert not torch.equal(batch_targets[0], batch_targets[1] - 30)


def test_batches_unequal_shards_draw_full_batches():
    inputs, targets = indexed_data(200)
    shards = [torch.arange(0, 5), torch.arange(5, 60), torch.arange(60, 200)]
    split = WorkerSplit(worker_indices=shards, val_indices=torch.empty(0, dtype=torch.long))
    batches = WorkerBatches(inputs, targets, split, batch_size=8, seed=0)

    steps = list(batches.epoch(0))

    assert len(batches) == math.ceil(200 / 3 / 8)
    assert len(steps) == len(batches)
    assert all(batch_targets.shape == (3, 8) for _, batch_targets in steps)
    seen = torch.cat([batch_targets for _, batch_targets in steps], dim=1)
    for worker, shard in enumerate(shards):
        assert bool(torch.isin(seen[worker], shard).all()), f"worker {worker} drew outside its shard"
    # The 5-index shard is used in full passes: every index appears in the first five draws.
    assert sorted(seen[0][:5].tolist()) == shards[0].tolist()
    assert torch.equal(seen, torch.cat(epoch_targets(batches, 0), dim=1))


def test_full_shards_yields_every_shard_in_order():
    inputs, targets = indexed_data(3 * 25 + 10)
    split = equal_split(3, 25)
    batches = WorkerBatches(inputs, targets, split, batch_size=10, seed=0)

    chunks = list(batches.full_shards())

    assert [len(chunk_targets) for _, chunk_targets in chunks] == [10, 10, 5] * 3
    assert chunks[0][0].shape == (10, 1, 2, 2)
    assert torch.equal(torch.cat([chunk_targets for _, chunk_targets in chunks]), torch.cat(split.worker_indices))


def test_batches_reject_invalid_batch_size():
    inputs, targets = indexed_data(30)
    with pytest.raises(ValueError, match="batch_size"):
        WorkerBatches(inputs, targets, equal_split(2, 10), batch_size=0, seed=0)


def test_batches_reject_empty_shard():
    inputs, targets = indexed_data(30)
    shards = [torch.arange(10), torch.empty(0, dtype=torch.long)]
    split = WorkerSplit(worker_indices=shards, val_indices=torch.arange(10, 30))

    with pytest.raises(ValueError, match=r"workers \[1\] have none"):
        WorkerBatches(inputs, targets, split, batch_size=4, seed=0)


def test_iterate_batches_in_order():
    inputs, targets = indexed_data(25)

    chunks = list(iterate_batches(inputs, targets, 10, "cpu"))

    assert [len(chunk_targets) for _, chunk_targets in chunks] == [10, 10, 5]
    assert torch.equal(torch.cat([chunk_targets for _, chunk_targets in chunks]), targets)
    assert torch.equal(torch.cat([chunk_inputs for chunk_inputs, _ in chunks]), inputs)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_batches_move_to_cuda():
    inputs, targets = indexed_data(2 * 20 + 10)
    batches = WorkerBatches(inputs, targets, equal_split(2, 20), batch_size=8, seed=0, device="cuda")

    batch_inputs, batch_targets = next(iter(batches.epoch(0)))

    assert batch_inputs.device.type == "cuda"
    assert batch_targets.device.type == "cuda"
    assert batches.inputs.device.type == "cpu"
