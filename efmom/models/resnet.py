"""ResNet-18 and ResNet-34 in the CIFAR variant (He et al., 2016, arXiv:1512.03385).

The stem is one 3×3 convolution with stride 1 and no max-pooling, so 32×32 images keep their
resolution into the first stage. Adaptive average pooling before the classifier lets the same
network run on smaller images such as the 8×8 digits.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from efmom.models.registry import check_shape, register


class BasicBlock(nn.Module):
    """Two 3×3 convolutions with batch normalisation and an identity (or 1×1 projection) shortcut."""

    def __init__(self, in_channels: int, channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU()

        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(channels),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR ResNet: a 3×3 stem of 64 channels, four stages of basic blocks (64 to 512 channels), a linear layer."""

    def __init__(self, blocks_per_stage: Sequence[int], num_classes: int, input_shape: Sequence[int]):
        super().__init__()
        in_channels, _, _ = check_shape(num_classes, input_shape)

        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 64, 3, stride=1, padding=1, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(),
        )

        stages = []
        channels_in = 64
        for stage, blocks in enumerate(blocks_per_stage):
            channels = 64 * 2**stage
            stride = 1 if stage == 0 else 2
            layers = []
            for block in range(blocks):
                layers.append(BasicBlock(channels_in, channels, stride if block == 0 else 1))
                channels_in = channels
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)

        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels_in, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        features = self.pool(self.stages(self.stem(x)))
        return self.classifier(features.flatten(1))


@register("resnet18")
def resnet18(*, num_classes: int, input_shape: Sequence[int]) -> ResNet:
    """Build ResNet-18, two basic blocks per stage (11,173,962 parameters for 3×32×32 inputs and 10 classes)."""
    return ResNet((2, 2, 2, 2), num_classes=num_classes, input_shape=input_shape)


@register("resnet34")
def resnet34(*, num_classes: int, input_shape: Sequence[int]) -> ResNet:
    """Build ResNet-34, with 3, 4, 6 and 3 basic blocks per stage."""
    return ResNet((3, 4, 6, 3), num_classes=num_classes, input_shape=input_shape)
