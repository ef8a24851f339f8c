"""The compressor interface: a stacked ``[n_workers, d]`` tensor in, a message and its bits out."""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from efmom.layout import Layout

SCOPES = ("layer", "global")

#: Compressor classes by config name, filled by ``Compressor.__init_subclass__``.
COMPRESSORS: dict[str, type["Compressor"]] = {}


@dataclass
class Compressed:
    """A compressed message and what it costs on the wire."""

    message: Tensor  # same shape as the input: [n_workers, d]
    bits: Tensor  # float64 [n_workers]: bits each worker sends for its row


def index_bits(size: int) -> int:
    """Bits of one index into a block of ``size`` entries: ⌈log₂ size⌉ (0 for a single entry)."""
    return math.ceil(math.log2(size)) if size > 1 else 0


def check_ratio(key: str, value: float) -> float:
    """Return ``value`` as a float when it is a ratio in (0, 1], else raise ``ValueError`` naming ``key``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{key} must be a number in (0, 1], got {value!r}")
    if not 0.0 < float(value) <= 1.0 or math.isnan(value):
        raise ValueError(f"{key} must be in (0, 1], got {value!r}")
    return float(value)


class Compressor(ABC):
    """Map every worker's row of a ``[n_workers, d]`` tensor to a message and its bit cost.

    ``scope='layer'`` compresses each parameter tensor of the :class:`Layout` on its own (the
    released behaviour); ``scope='global'`` treats the whole vector as one block. Subclasses
    implement :meth:`compress_block` on one ``[n_workers, m]`` block; every worker's row is
    compressed independently of the others. Random compressors draw from the ``generator``
    they are given, so a seeded run is reproducible.
    """

    name: ClassVar[str] = ""
    #: Bits of one transmitted value (a float32 on the wire, whatever the simulation's dtype).
    value_bits: ClassVar[int] = 32

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if cls.name:
            COMPRESSORS[cls.name] = cls

    def __init__(self, scope: str = "layer"):
        if scope not in SCOPES:
            raise ValueError(f"compressor.scope must be one of {SCOPES}, got {scope!r}")
        self.scope = scope

    def __call__(self, x: Tensor, layout: Layout | None = None, generator: torch.Generator | None = None) -> Compressed:
        if x.dim() == 1:
            compressed = self(x.unsqueeze(0), layout, generator)
            return Compressed(compressed.message[0], compressed.bits[0])
        if layout is None or self.scope == "global":
            layout = Layout.single(x.shape[-1])
        if layout.numel != x.shape[-1]:
            raise ValueError(f"layout has {layout.numel} entries but the tensor has {x.shape[-1]}")

        messages, bits = [], torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)
        for block in layout.segments(x):
            message, block_bits = self.compress_block(block, generator)
            messages.append(message)
            bits += block_bits
        return Compressed(torch.cat(messages, dim=-1), bits)

    @abstractmethod
    def compress_block(self, x: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """Compress each row of a ``[n_workers, m]`` block; return the message and bits per row."""

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({fields})"


class Sparsifier(Compressor):
    """A compressor that sends a subset of each row's entries, each as one float32 value, plus their positions.

    Bits per row and block: s·(32 + b) for s sent entries, where b = :meth:`position_bits` locates
    one entry (⌈log₂ m⌉ by default). :class:`~efmom.compressors.compose.Compose` needs the mask of
    sent entries, so a sparsifier implements :meth:`sparsify_block` instead of
    :meth:`compress_block`.
    """

    def position_bits(self, size: int) -> int:
        """Return the bits that locate one sent entry in a block of ``size`` entries."""
        return index_bits(size)

    @abstractmethod
    def sparsify_block(self, x: Tensor, generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
        """Sparsify each row of a ``[n_workers, m]`` block and return the message and a bool mask of the sent entries.

        The mask may mark an entry whose value is zero (Top-K on a row with few non-zeros still sends
        k entries), so count sent entries from the mask, not from the message.
        """

    def compress_block(self, x, generator):
        message, sent = self.sparsify_block(x, generator)
        entry_bits = self.value_bits + self.position_bits(x.shape[-1])
        return message, sent.sum(dim=-1, dtype=torch.float64) * entry_bits


class Identity(Sparsifier):
    """Send everything. Bits per block of m entries: 32·m (positions are implicit)."""

    name = "identity"

    def position_bits(self, size):
        return 0

    def sparsify_block(self, x, generator):
        return x.clone(), torch.ones_like(x, dtype=torch.bool)


class TopK(Sparsifier):
    """Keep the k = max(1, ⌊topk·m⌋) largest-magnitude entries of each block of m entries.

    Contractive with α = k/m: ‖C(x) − x‖² ≤ (1 − k/m)‖x‖². Bits per block: k·(32 + ⌈log₂ m⌉),
    a float32 value and an index for every kept entry.
    """

    name = "topk"

    def __init__(self, topk: float = 0.1, scope: str = "layer"):
        super().__init__(scope)
        self.topk = check_ratio("compressor.topk", topk)

    def kept(self, size: int) -> int:
        """Number of entries kept in a block of ``size`` entries."""
        return min(size, max(1, math.floor(self.topk * size)))

    def sparsify_block(self, x, generator):
        k = self.kept(x.shape[-1])
        if k == x.shape[-1]:
            return x.clone(), torch.ones_like(x, dtype=torch.bool)

        indices = torch.topk(x.abs(), k, dim=-1, sorted=False).indices
        message = torch.zeros_like(x).scatter_(-1, indices, x.gather(-1, indices))
        sent = torch.zeros_like(x, dtype=torch.bool).scatter_(-1, indices, True)
        return message, sent


def build_compressor(name: str, **options) -> Compressor:
    """Create the compressor registered under ``name`` with the given options.

    Raises ``ValueError`` for an unknown name or an option the compressor does not take.
    """
    if name not in COMPRESSORS:
        raise ValueError(f"unknown compressor {name!r}; choose one of {sorted(COMPRESSORS)}")

    cls = COMPRESSORS[name]
    accepted = [key for key in inspect.signature(cls.__init__).parameters if key != "self"]
    for key in options:
        if key not in accepted:
            raise ValueError(f"compressor.{key} is not an option of {name!r}, which takes {accepted}")
    return cls(**options)
