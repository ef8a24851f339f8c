"""efmom: error feedback with momentum under communication compression.

The package simulates n workers that each compute gradients on their own data shard, run an
error-feedback method, send compressed messages and let a master step. Worker state is kept in
stacked tensors with a leading worker dimension over a flat parameter vector (see ``efmom.layout``).
"""

__version__ = "0.1.0"
