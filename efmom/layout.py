"""Flat parameter layout: one vector for all trainable parameters, with per-tensor views.

Every method and compressor works on flat vectors of length ``d`` (or stacked ``[n_workers, d]``
tensors). A :class:`Layout` records where each parameter tensor lives inside that vector, so that
layer-wise compression and normalisation can address one tensor at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class Layout:
    """Names, shapes and offsets of the parameter tensors packed into one flat vector."""

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]

    @classmethod
    def from_named_shapes(cls, named_shapes: Iterable[tuple[str, Sequence[int]]]) -> "Layout":
        names, shapes = [], []
        for name, shape in named_shapes:
            names.append(name)
            shapes.append(tuple(int(s) for s in shape))
        return cls(tuple(names), tuple(shapes))

    @classmethod
    def of_module(cls, module: nn.Module) -> "Layout":
        """Build the layout of a module's trainable parameters (frozen ones are left out)."""
        return cls.from_named_shapes(
            (name, p.shape) for name, p in module.named_parameters() if p.requires_grad
        )

    @classmethod
    def single(cls, size: int) -> "Layout":
        """Build a layout with one segment of ``size`` entries (one tensor, or global scope)."""
        return cls(("all",), ((int(size),),))

    @property
    def sizes(self) -> tuple[int, ...]:
        sizes = []
        for shape in self.shapes:
            numel = 1
            for s in shape:
                numel *= s
            sizes.append(numel)
        return tuple(sizes)

    @property
    def offsets(self) -> tuple[int, ...]:
        offsets, total = [], 0
        for size in self.sizes:
            offsets.append(total)
            total += size
        return tuple(offsets)

    @property
    def numel(self) -> int:
        return sum(self.sizes)

    def __len__(self) -> int:
        return len(self.names)

    def segments(self, flat: Tensor) -> list[Tensor]:
        """Split the last dimension of ``flat`` into one view per parameter tensor (still flat)."""
        return list(torch.split(flat, self.sizes, dim=-1))

    def unflatten(self, flat: Tensor) -> dict[str, Tensor]:
        """Return views of a flat ``[d]`` vector shaped like the parameters, keyed by name."""
        return {
            name: segment.view(shape)
            for name, shape, segment in zip(self.names, self.shapes, self.segments(flat))
        }

    def flatten(self, tensors: Iterable[Tensor]) -> Tensor:
        """Concatenate tensors given in layout order into one flat vector."""
        return torch.cat([t.reshape(-1) for t in tensors])

    def segment_ids(self, device: torch.device | str | None = None) -> Tensor:
        """Return, for every flat index, the number of the parameter tensor it belongs to."""
        sizes = torch.tensor(self.sizes, device=device)
        return torch.repeat_interleave(torch.arange(len(self), device=device), sizes)


def bind_flat_parameters(module: nn.Module, dtype: torch.dtype | None = None) -> tuple[Tensor, Layout]:
    """Make the module's trainable parameters views into one new flat vector and return it.

    Writing into the returned vector (``flat.sub_(...)``) moves the module in place, so evaluation
    code can use the module directly. Frozen parameters keep their own storage.
    """
    layout = Layout.of_module(module)
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise ValueError(f"{type(module).__name__} has no trainable parameters")
    dtype = dtype or params[0].dtype
    flat = torch.cat([p.detach().reshape(-1).to(dtype) for p in params])
    for p, view in zip(params, layout.unflatten(flat).values()):
        p.data = view
    return flat, layout
