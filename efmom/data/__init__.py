"""Datasets in memory, worker splits and stacked per-worker minibatches.

``load_dataset`` returns normalised CPU tensors, ``split_workers`` holds out a validation set and
gives each worker a shard of indices, and ``WorkerBatches`` yields one stacked minibatch per step
for all workers.
"""

from efmom.data.batches import WorkerBatches, iterate_batches
from efmom.data.datasets import NORMALIZATION, DatasetError, DatasetSplits, load_dataset
from efmom.data.splits import SCHEMES, WorkerSplit, split_workers

__all__ = [
    "NORMALIZATION",
    "SCHEMES",
    "DatasetError",
    "DatasetSplits",
    "WorkerBatches",
    "WorkerSplit",
    "iterate_batches",
    "load_dataset",
    "split_workers",
]
