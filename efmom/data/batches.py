"""Minibatches for all workers at once, stacked over a leading worker dimension."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from efmom.data.splits import WorkerSplit


class WorkerBatches:
    """Per-epoch iteration over stacked worker minibatches.

    Every step yields ``(inputs [n_workers, B, C, H, W], targets [n_workers, B])`` on ``device``,
    with the same B for every worker. The dataset stays on the CPU and only each step's batch is
    moved. Each worker's order in epoch e comes from a generator seeded by ``(seed, e, worker)``,
    so a run resumed at epoch e gets the same batches as an uninterrupted one.

    - Equal shards (the ``paper`` and ``iid`` splits): each worker reshuffles its whole shard every
      epoch and walks through it, so an epoch has ⌈shard size / B⌉ steps, sees every index exactly
      once, and its last batch holds the remainder (shard 4,447 with B = 64 gives 70 steps, the
      last of 31 samples).
    - Unequal shards (the ``dirichlet`` split): an epoch has ⌈mean shard size / B⌉ steps, and every
      step takes a full batch of B from each worker's stream. A stream is a concatenation of seeded
      permutations of the shard, so a worker starts a new pass over its shard when it has used
      every index. In one epoch a small shard is therefore seen more than once, possibly twice
      within one batch when it is smaller than B, and a large shard only in part.
    """

    def __init__(
        self,
        inputs: Tensor,
        targets: Tensor,
        split: WorkerSplit,
        batch_size: int,
        seed: int,
        device: str | torch.device = "cpu",
    ):
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
        if len(inputs) != len(targets):
            raise ValueError(f"{len(inputs)} inputs but {len(targets)} targets")
        if not split.worker_indices:
            raise ValueError("the split has no workers")
        empty = [worker for worker, shard in enumerate(split.worker_indices) if len(shard) == 0]
        if empty:
            raise ValueError(f"every worker needs a non-empty shard, but workers {empty} have none")

        self.inputs = inputs
        self.targets = targets
        self.shards = [shard.long() for shard in split.worker_indices]
        self.batch_size = batch_size
        self.seed = seed
        self.device = torch.device(device)
        self.n_workers = len(self.shards)
        self.equal_shards = len({len(shard) for shard in self.shards}) == 1

    def __len__(self) -> int:
        """Return the number of steps per epoch."""
        sizes = [len(shard) for shard in self.shards]
        if self.equal_shards:
            return math.ceil(sizes[0] / self.batch_size)
        return math.ceil(sum(sizes) / len(sizes) / self.batch_size)

    def epoch(self, epoch: int) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield the stacked minibatches of epoch ``epoch`` (0-based), moved to ``device``."""
        order = self._epoch_order(epoch)
        for step in range(len(self)):
            indices = order[:, step * self.batch_size : (step + 1) * self.batch_size]
            yield self._gather(indices)

    def full_shards(self) -> Iterator[tuple[Tensor, Tensor]]:
        """Yield every worker's whole shard in order, worker 0 first, in chunks of at most ``batch_size``.

        Chunks are not stacked over workers: each is ``(inputs [b, C, H, W], targets [b])`` for one
        worker, moved to ``device``. Used to evaluate the training loss at x⁰ over all shards.
        """
        for shard in self.shards:
            for indices in shard.split(self.batch_size):
                yield self._gather(indices)

    def _epoch_order(self, epoch: int) -> Tensor:
        """Return the index order of every worker for one epoch, int64 [n_workers, steps · B or shard size]."""
        rows = []
        for worker, shard in enumerate(self.shards):
            generator = torch.Generator().manual_seed(_stream_seed(self.seed, epoch, worker))
            if self.equal_shards:
                rows.append(shard[torch.randperm(len(shard), generator=generator)])
                continue

            needed = len(self) * self.batch_size
            passes = math.ceil(needed / len(shard))
            stream = [shard[torch.randperm(len(shard), generator=generator)] for _ in range(passes)]
            rows.append(torch.cat(stream)[:needed])
        return torch.stack(rows)

    def _gather(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        non_blocking = self.device.type == "cuda"
        inputs = self.inputs[indices].to(self.device, non_blocking=non_blocking)
        targets = self.targets[indices].to(self.device, non_blocking=non_blocking)
        return inputs, targets


def _stream_seed(seed: int, epoch: int, worker: int) -> int:
    """Derive an independent 63-bit generator seed from (seed, epoch, worker)."""
    state = np.random.SeedSequence([seed, epoch, worker]).generate_state(2, dtype=np.uint32)
    return (int(state[0]) << 31) ^ int(state[1])


def iterate_batches(
    inputs: Tensor, targets: Tensor, batch_size: int, device: str | torch.device = "cpu"
) -> Iterator[tuple[Tensor, Tensor]]:
    """Yield ``(inputs, targets)`` in order, in chunks of at most ``batch_size`` moved to ``device``.

    Used for validation and test evaluation.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    for start in range(0, len(targets), batch_size):
        yield inputs[start : start + batch_size].to(device), targets[start : start + batch_size].to(device)
