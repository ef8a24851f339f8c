"""Compressors: a stacked tensor of worker messages in, compressed messages and their bits out.

``build_compressor(name, **options)`` looks a compressor up by its config name.
"""

from efmom.compressors.base import COMPRESSORS, Compressed, Compressor, Identity, TopK, index_bits


def build_compressor(name: str, **options) -> Compressor:
    """Create the compressor registered under ``name`` with the given options."""
    if name not in COMPRESSORS:
        raise ValueError(f"unknown compressor {name!r}; choose one of {sorted(COMPRESSORS)}")
    return COMPRESSORS[name](**options)


__all__ = ["COMPRESSORS", "Compressed", "Compressor", "Identity", "TopK", "build_compressor", "index_bits"]
