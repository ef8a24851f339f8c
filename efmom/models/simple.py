"""Small networks for quick runs: a multilayer perceptron, logistic regression and a two-layer CNN."""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import nn

from efmom.models.registry import check_shape, register

#: Activation functions ``mlp`` accepts, by name.
ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}


@register("mlp")
def mlp(
    *,
    hidden: Sequence[int] = (512,),
    activation: str = "relu",
    num_classes: int,
    input_shape: Sequence[int],
) -> nn.Sequential:
    """Build a multilayer perceptron on the flattened image: a linear layer and ``activation`` per width in ``hidden``.

    A linear classifier follows the last hidden layer, and ``hidden=()`` gives logistic regression.
    """
    shape = check_shape(num_classes, input_shape)
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
    widths = [int(width) for width in hidden]
    if any(width < 1 for width in widths):
        raise ValueError(f"hidden widths must be positive, got {list(hidden)}")

    layers: list[nn.Module] = [nn.Flatten()]
    features = math.prod(shape)
    for width in widths:
        layers += [nn.Linear(features, width), ACTIVATIONS[activation]()]
        features = width
    layers.append(nn.Linear(features, num_classes))
    return nn.Sequential(*layers)


@register("logreg")
def logreg(*, num_classes: int, input_shape: Sequence[int]) -> nn.Sequential:
    """Build multinomial logistic regression, one linear layer on the flattened image."""
    shape = check_shape(num_classes, input_shape)
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(shape), num_classes))


@register("small_cnn")
def small_cnn(
    *,
    channels: Sequence[int] = (16, 32),
    batch_norm: bool = True,
    num_classes: int,
    input_shape: Sequence[int],
) -> nn.Sequential:
    """Build a CNN of two 3×3 convolutions with ReLU (and batch normalisation if ``batch_norm``) and a linear layer.

    The first convolution is followed by 2×2 max-pooling, the second by adaptive average pooling to
    2×2. With the default channels that is 6,138 parameters for 1×8×8 inputs and 10 classes.
    """
    in_channels, _, _ = check_shape(num_classes, input_shape)
    widths = [int(width) for width in channels]
    if len(widths) != 2 or min(widths) < 1:
        raise ValueError(f"channels must be two positive widths, got {list(channels)}")

    layers: list[nn.Module] = []
    for index, width in enumerate(widths):
        layers.append(nn.Conv2d(in_channels, width, 3, padding=1, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm2d(width))
        layers.append(nn.ReLU())
        layers.append(nn.MaxPool2d(2, ceil_mode=True) if index == 0 else nn.AdaptiveAvgPool2d(2))
        in_channels = width

    layers += [nn.Flatten(), nn.Linear(widths[-1] * 4, num_classes)]
    return nn.Sequential(*layers)
