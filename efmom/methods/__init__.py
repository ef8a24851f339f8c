"""Error-feedback methods: one update rule per class, registered by config name in ``METHODS``."""

from efmom.methods.base import (
    METHODS,
    Master,
    Method,
    OracleAnswer,
    GradientRequest,
    RequestKind,
    uncompressed,
)
from efmom.methods.classic import EF14, EF21, SGD, EControl
from efmom.methods.momentum import EF21HMNorm, EF21IGTNorm, EF21MVRNorm, EF21RHMNorm, EF21SGDM, EF21SGDMNorm


def build_method(name: str, **options) -> Method:
    """Create the method registered under ``name`` with the given hyper-parameters."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {sorted(METHODS)}")
    return METHODS[name](**options)


__all__ = [
    "METHODS", "Master", "Method", "OracleAnswer", "GradientRequest", "RequestKind", "uncompressed",
    "SGD", "EF14", "EF21", "EControl", "EF21SGDM", "EF21SGDMNorm", "EF21IGTNorm", "EF21MVRNorm",
    "EF21HMNorm", "EF21RHMNorm", "build_method",
]
