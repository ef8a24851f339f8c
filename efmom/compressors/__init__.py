"""Compressors: a stacked tensor of worker messages in, compressed messages and their bits out.

``build_compressor(name, **options)`` looks a compressor up by its config name. Importing this
package registers every compressor below.
"""

from efmom.compressors.base import (
    COMPRESSORS,
    Compressed,
    Compressor,
    Identity,
    Sparsifier,
    TopK,
    build_compressor,
    index_bits,
)
from efmom.compressors.compose import Compose
from efmom.compressors.unbiased import Dithering, GradSpars, Natural, RandK

__all__ = [
    "COMPRESSORS",
    "Compose",
    "Compressed",
    "Compressor",
    "Dithering",
    "GradSpars",
    "Identity",
    "Natural",
    "RandK",
    "Sparsifier",
    "TopK",
    "build_compressor",
    "index_bits",
]
