"""Composition of compressors: a quantiser or a second sparsifier applied to what a sparsifier sends."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from efmom.compressors.base import Compressor, Sparsifier, build_compressor


def build_part(role: str, spec: Mapping | Compressor) -> Compressor:
    """Build the ``inner`` or ``outer`` part of a composition from a compressor or a config mapping."""
    if isinstance(spec, Compressor):
        return spec
    if not isinstance(spec, Mapping) or "name" not in spec:
        raise ValueError(f"compressor.{role} must be a compressor or a mapping with a 'name' key, got {spec!r}")

    options = dict(spec)
    name = options.pop("name")
    try:
        return build_compressor(name, **options)
    except ValueError as error:
        raise ValueError(f"compressor.{role}: {error}") from error


class Compose(Compressor):
    """Apply ``outer`` to the values that the sparsifier ``inner`` sends: C(x) = outer(inner(x)).

    ``inner`` must be a :class:`Sparsifier` (``topk``, ``randk``, ``gradspars``, ``identity``). In each
    row, the s entries it sends are packed, in index order, into a vector of length s that ``outer``
    compresses as one block. The result goes back to the same positions. A real implementation sends
    the inner's positions and the outer's code for the values, so the bits per row and block are

        s·b + (outer's bits for a block of s entries),

    where b is the inner's position cost (⌈log₂ m⌉ for Top-K and gradspars, 0 for Rand-K with a shared
    seed and for identity). For Top-K with k kept entries this gives k·⌈log₂ m⌉ + 9k with ``natural``
    and k·⌈log₂ m⌉ + 32 + k·(1 + ⌈log₂(s_levels + 1)⌉) with ``dithering``, whose norm is taken over
    the k kept values. A row with s = 0 costs nothing.

    The blocks come from this compressor's ``scope`` (the inner's scope when not given). The outer
    compressor always receives a row's packed values as one block, so its own scope has no effect. Both
    parts draw from the same generator, the inner first.
    """

    name = "compose"

    def __init__(self, outer: Mapping | Compressor, inner: Mapping | Compressor, scope: str | None = None):
        self.inner = build_part("inner", inner)
        self.outer = build_part("outer", outer)
        if not isinstance(self.inner, Sparsifier):
            raise ValueError(
                f"compressor.inner must be a sparsifier (topk, randk, gradspars or identity), "
                f"got {self.inner.name!r}"
            )
        super().__init__(self.inner.scope if scope is None else scope)

    def compress_block(self, x, generator):
        size = x.shape[-1]
        message, sent = self.inner.sparsify_block(x, generator)
        counts = sent.sum(dim=-1)
        bits = counts.to(torch.float64) * self.inner.position_bits(size)

        # A stable sort on "not sent" moves each row's sent positions to the front, in index order.
        order = torch.argsort((~sent).to(torch.uint8), dim=-1, stable=True)
        result = torch.zeros_like(x)

        # Rows that send the same number of entries form one [rows, s] block for the outer compressor.
        # Top-K and Rand-K send the same count in every row, so this loop usually runs once.
        for count in counts.unique().tolist():
            if count == 0:
                continue
            rows = torch.nonzero(counts == count).squeeze(-1)
            positions = order[rows, :count]
            values = message[rows].gather(-1, positions)

            outer_message, outer_bits = self.outer.compress_block(values, generator)
            result[rows] = values.new_zeros(len(rows), size).scatter_(-1, positions, outer_message)
            bits[rows] += outer_bits
        return result, bits
