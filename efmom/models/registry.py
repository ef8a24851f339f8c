"""The model registry and the argument checks every network shares."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import nn

#: Model factories by config name, filled by :func:`register`.
MODELS: dict[str, Callable[..., nn.Module]] = {}


def register(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a model factory under ``name`` for :func:`build_model`."""

    def decorator(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in MODELS:
            raise ValueError(f"model {name!r} is already registered")
        MODELS[name] = factory
        return factory

    return decorator


def build_model(name: str, **kwargs) -> nn.Module:
    """Create the model registered under ``name``; ``kwargs`` must include ``num_classes`` and ``input_shape``."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    return MODELS[name](**kwargs)


def check_shape(num_classes: int, input_shape: Sequence[int]) -> tuple[int, int, int]:
    """Return ``input_shape`` as a (C, H, W) tuple of ints, or raise ``ValueError`` on invalid arguments."""
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")
    shape = tuple(int(size) for size in input_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"input_shape must be three positive sizes (C, H, W), got {list(input_shape)}")
    return shape
