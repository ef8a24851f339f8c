"""Splitting a training set into a validation hold-out and one shard per worker.

Schemes (``dataset.split``):

- ``paper``: the heterogeneous split of Sadiev et al. (arXiv:2511.14501). A seeded shuffle holds
  out ``val_fraction`` of the training set for validation. Of the remaining m indices, in shuffled
  order, the first n·a with a = ⌊m/(2n)⌋ are dealt i.i.d. to the n workers (a each), and every
  later index goes to worker ``label mod n``. Every shard is then cut to the shortest shard's
  length, dropping the tail of the class-determined part, so each shard contains a i.i.d. indices
  followed by at most a indices of its own classes. When n exceeds the number of classes, some
  workers get no class-determined indices and every shard is cut to its i.i.d. part.
- ``iid``: after the same hold-out, equal shards of a seeded shuffle (the remainder is dropped).
- ``dirichlet``: label skew. For each class, proportions over the workers are drawn from a
  symmetric Dirichlet(alpha) distribution and the class's indices are cut accordingly, so shards
  differ in size; smaller alpha means stronger skew.

The hold-out is the same for every scheme with the same seed and ``val_fraction``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

logger = logging.getLogger(__name__)

SCHEMES = ("paper", "iid", "dirichlet")


@dataclass
class WorkerSplit:
    """Indices into the training set: one shard per worker and the validation hold-out."""

    worker_indices: list[Tensor]  # int64 [shard size] per worker
    val_indices: Tensor  # int64 [validation size]


def split_workers(
    targets: Tensor,
    n_workers: int,
    scheme: str = "paper",
    seed: int = 42,
    val_fraction: float = 0.1,
    alpha: float = 0.5,
    num_classes: int | None = None,
) -> WorkerSplit:
    """Hold out ``round(val_fraction · N)`` training indices for validation and shard the rest over workers.

    Args:
        targets: int64 labels [N] of the training set.
        n_workers: number of workers n (at least 1).
        scheme: ``paper``, ``iid`` or ``dirichlet`` (see the module docstring).
        seed: seeds every random choice; the same seed gives the same split.
        val_fraction: share of the training set held out for validation, in [0, 1).
        alpha: Dirichlet concentration (``dirichlet`` only), greater than 0.
        num_classes: number of classes; inferred as ``max(targets) + 1`` when None.

    Raises:
        ValueError: an argument is invalid, or a worker would get no training index.
    """
    targets = _check_arguments(targets, n_workers, scheme, val_fraction, alpha)
    if num_classes is None:
        num_classes = int(targets.max()) + 1 if len(targets) else 0

    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(targets), generator=generator)
    val_size = round(val_fraction * len(targets))
    val_indices, rest = order[:val_size], order[val_size:]
    if len(rest) < n_workers:
        raise ValueError(
            f"{len(rest)} training indices remain after the validation hold-out, fewer than "
            f"n_workers={n_workers}; use fewer workers or a smaller dataset.val_fraction"
        )

    if scheme == "paper":
        shards = _paper_shards(rest, targets, n_workers)
    elif scheme == "iid":
        shard_size = len(rest) // n_workers
        shards = list(rest[: shard_size * n_workers].view(n_workers, shard_size))
    else:
        rng = np.random.default_rng(seed)
        shards = _dirichlet_shards(rest, targets, n_workers, num_classes, alpha, rng)

    sizes = [len(shard) for shard in shards]
    logger.info(
        "Split %d training indices with dataset.split=%s: %d workers, shard sizes %d..%d, %d for validation",
        len(targets),
        scheme,
        n_workers,
        min(sizes),
        max(sizes),
        len(val_indices),
    )
    return WorkerSplit(worker_indices=[shard.clone() for shard in shards], val_indices=val_indices.clone())


def _check_arguments(targets: Tensor, n_workers: int, scheme: str, val_fraction: float, alpha: float) -> Tensor:
    if scheme not in SCHEMES:
        raise ValueError(f"unknown dataset.split {scheme!r}; choose one of {list(SCHEMES)}")
    if isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 1:
        raise ValueError(f"n_workers must be an integer >= 1, got {n_workers!r}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"dataset.val_fraction must be in [0, 1), got {val_fraction!r}")
    if not alpha > 0.0:
        raise ValueError(f"dataset.alpha (the Dirichlet concentration) must be > 0, got {alpha!r}")

    targets = torch.as_tensor(targets)
    if targets.ndim != 1 or targets.dtype.is_floating_point or targets.dtype == torch.bool:
        raise ValueError(f"targets must be a 1-D integer tensor, got {targets.dtype} of shape {list(targets.shape)}")
    if len(targets) and int(targets.min()) < 0:
        raise ValueError(f"targets must be non-negative class labels, found {int(targets.min())}")
    return targets.long()


def _paper_shards(rest: Tensor, targets: Tensor, n_workers: int) -> list[Tensor]:
    """Deal ``a = ⌊m/(2n)⌋`` i.i.d. indices to each worker, the rest by ``label mod n``, and cut to the shortest."""
    iid_size = len(rest) // (2 * n_workers)
    iid_part = rest[: iid_size * n_workers].view(n_workers, iid_size)
    class_pool = rest[iid_size * n_workers :]
    owners = targets[class_pool] % n_workers

    shards = [torch.cat([iid_part[worker], class_pool[owners == worker]]) for worker in range(n_workers)]
    length = min(len(shard) for shard in shards)
    if length == 0:
        raise ValueError(
            f"the paper split leaves a worker without training indices: {len(rest)} indices for "
            f"n_workers={n_workers} give a = 0 i.i.d. indices per worker, and some worker owns no class; "
            f"use fewer workers or dataset.split=iid"
        )

    dropped = len(rest) - length * n_workers
    logger.debug(
        "Paper split: %d i.i.d. + %d class-determined indices per worker, %d indices dropped",
        iid_size,
        length - iid_size,
        dropped,
    )
    return [shard[:length] for shard in shards]


def _dirichlet_shards(
    rest: Tensor, targets: Tensor, n_workers: int, num_classes: int, alpha: float, rng: np.random.Generator
) -> list[Tensor]:
    """Cut each class's indices over the workers in Dirichlet(alpha) proportions.

    A worker left empty by the draw takes one index from the currently largest shard, so every worker
    has at least one index (possible because ``len(rest) >= n_workers`` was checked).
    """
    rest_targets = targets[rest]
    if len(rest_targets) and int(rest_targets.max()) >= num_classes:
        raise ValueError(f"targets contain label {int(rest_targets.max())} but num_classes={num_classes}")

    pieces: list[list[Tensor]] = [[] for _ in range(n_workers)]
    for label in range(num_classes):
        members = rest[rest_targets == label]
        proportions = rng.dirichlet(np.full(n_workers, alpha))
        cuts = np.floor(np.cumsum(proportions)[:-1] * len(members)).astype(np.int64)
        for worker, piece in enumerate(np.split(np.arange(len(members)), cuts)):
            pieces[worker].append(members[torch.from_numpy(piece)])

    shards = [torch.cat(parts) if parts else torch.empty(0, dtype=torch.long) for parts in pieces]
    for worker in range(n_workers):
        if len(shards[worker]) == 0:
            donor = max(range(n_workers), key=lambda other: len(shards[other]))
            shards[worker] = shards[donor][-1:]
            shards[donor] = shards[donor][:-1]
            logger.debug("Dirichlet split: worker %d was empty and took one index from worker %d", worker, donor)
    return shards
