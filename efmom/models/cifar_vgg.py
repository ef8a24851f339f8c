"""VGG networks in the CIFAR style (Simonyan and Zisserman, 2015, arXiv:1409.1556).

3×3 convolutions (optionally with batch normalisation) between 2×2 max-pooling layers, then
global average pooling and one linear layer in place of ImageNet VGG's three large ones. A
pooling layer is left out once the feature map is already 1×1, so 8×8 and 28×28 inputs work too.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from efmom.models.registry import check_shape, register

#: Output channels of each convolution per depth; "M" is a 2×2 max-pooling layer.
CONFIGURATIONS: dict[int, list[int | str]] = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


class VGG(nn.Module):
    """A CIFAR-style VGG of the given depth (11, 13, 16 or 19 weight layers)."""

    def __init__(self, depth: int, batch_norm: bool, num_classes: int, input_shape: Sequence[int]):
        super().__init__()
        if depth not in CONFIGURATIONS:
            raise ValueError(f"VGG depth must be one of {sorted(CONFIGURATIONS)}, got {depth!r}")
        channels, height, width = check_shape(num_classes, input_shape)

        layers: list[nn.Module] = []
        for entry in CONFIGURATIONS[depth]:
            if entry == "M":
                if height > 1 or width > 1:
                    layers.append(nn.MaxPool2d(2, ceil_mode=True))
                    height, width = math.ceil(height / 2), math.ceil(width / 2)
                continue
            layers.append(nn.Conv2d(channels, entry, 3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(entry))
            layers.append(nn.ReLU())
            channels = entry

        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


@register("vgg")
def vgg(*, depth: int = 11, batch_norm: bool = False, num_classes: int, input_shape: Sequence[int]) -> VGG:
    """Build a VGG of ``depth`` 11, 13, 16 or 19, with batch normalisation after each convolution if ``batch_norm``."""
    return VGG(depth, batch_norm, num_classes=num_classes, input_shape=input_shape)


def _variant(name: str, depth: int, batch_norm: bool):
    def factory(*, num_classes: int, input_shape: Sequence[int]) -> VGG:
        return VGG(depth, batch_norm, num_classes=num_classes, input_shape=input_shape)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = f"Build VGG-{depth}{' with batch normalisation' if batch_norm else ''}."
    return register(name)(factory)


vgg11 = _variant("vgg11", 11, False)
vgg11_bn = _variant("vgg11_bn", 11, True)
vgg13 = _variant("vgg13", 13, False)
vgg13_bn = _variant("vgg13_bn", 13, True)
vgg16 = _variant("vgg16", 16, False)
vgg16_bn = _variant("vgg16_bn", 16, True)
vgg19 = _variant("vgg19", 19, False)
vgg19_bn = _variant("vgg19_bn", 19, True)
