"""Networks, each built from keyword arguments ``num_classes`` and ``input_shape`` (C, H, W) plus its own options.

Hydra configs instantiate them with ``_target_: efmom.models.<name>``; ``build_model(name, **kwargs)``
looks one up by its registered name.
"""

from efmom.models.cifar_vgg import (
    VGG,
    vgg,
    vgg11,
    vgg11_bn,
    vgg13,
    vgg13_bn,
    vgg16,
    vgg16_bn,
    vgg19,
    vgg19_bn,
)
from efmom.models.registry import MODELS, build_model, register
from efmom.models.resnet import ResNet, resnet18, resnet34
from efmom.models.simple import logreg, mlp, small_cnn

__all__ = [
    "MODELS",
    "VGG",
    "ResNet",
    "build_model",
    "logreg",
    "mlp",
    "register",
    "resnet18",
    "resnet34",
    "small_cnn",
    "vgg",
    "vgg11",
    "vgg11_bn",
    "vgg13",
    "vgg13_bn",
    "vgg16",
    "vgg16_bn",
    "vgg19",
    "vgg19_bn",
]
