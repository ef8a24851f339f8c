"""Tests of efmom.models: every network builds for CIFAR-sized and digits-sized inputs and classifies."""

from __future__ import annotations

import hydra.utils
import pytest
import torch
from torch import nn

from efmom.models import MODELS, build_model, mlp, resnet18, small_cnn, vgg

SHAPES = [(3, 32, 32), (1, 8, 8)]


def parameter_count(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def test_registry_holds_every_network():
    expected = {"resnet18", "resnet34", "vgg", "mlp", "logreg", "small_cnn"}
    expected |= {f"vgg{depth}{suffix}" for depth in (11, 13, 16, 19) for suffix in ("", "_bn")}

    assert set(MODELS) == expected


@pytest.mark.parametrize("input_shape", SHAPES, ids=["cifar", "digits"])
@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_outputs_one_logit_per_class(name, input_shape):
    torch.manual_seed(0)
    model = build_model(name, num_classes=10, input_shape=input_shape)
    inputs = torch.randn(3, *input_shape)

    model.train()
    train_logits = model(inputs)
    model.eval()
    with torch.no_grad():
        eval_logits = model(inputs)

    assert train_logits.shape == (3, 10)
    assert eval_logits.shape == (3, 10)
    assert bool(torch.isfinite(eval_logits).all())


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_gradient_reaches_every_parameter(name):
    torch.manual_seed(0)
    model = build_model(name, num_classes=4, input_shape=(1, 8, 8))

    loss = nn.functional.cross_entropy(model(torch.randn(4, 1, 8, 8)), torch.tensor([0, 1, 2, 3]))
    loss.backward()

    unused = [key for key, parameter in model.named_parameters() if parameter.grad is None]
    assert unused == []


def test_resnet18_parameter_count():
    assert parameter_count(resnet18(num_classes=10, input_shape=(3, 32, 32))) == 11_173_962


def test_resnet34_is_deeper_than_resnet18():
    small = parameter_count(build_model("resnet18", num_classes=10, input_shape=(3, 32, 32)))
    large = parameter_count(build_model("resnet34", num_classes=10, input_shape=(3, 32, 32)))

    assert large == 21_282_122
    assert large > small


def test_resnet_stem_keeps_resolution():
    model = resnet18(num_classes=10, input_shape=(3, 32, 32))

    assert model.stem(torch.randn(1, 3, 32, 32)).shape == (1, 64, 32, 32)


def test_vgg_skips_pooling_at_one_pixel():
    cifar = vgg(depth=11, batch_norm=False, num_classes=10, input_shape=(3, 32, 32))
    digits = vgg(depth=11, batch_norm=False, num_classes=10, input_shape=(1, 8, 8))

    def pools(model):
        return sum(isinstance(layer, nn.MaxPool2d) for layer in model.features)

    assert pools(cifar) == 5
    assert pools(digits) == 3


def test_vgg_batch_norm_option():
    plain = vgg(depth=13, batch_norm=False, num_classes=10, input_shape=(3, 32, 32))
    normed = build_model("vgg13_bn", num_classes=10, input_shape=(3, 32, 32))

    assert not any(isinstance(layer, nn.BatchNorm2d) for layer in plain.modules())
    assert sum(isinstance(layer, nn.BatchNorm2d) for layer in normed.modules()) == 10


def test_vgg_rejects_unknown_depth():
    with pytest.raises(ValueError, match="depth"):
        vgg(depth=12, batch_norm=False, num_classes=10, input_shape=(3, 32, 32))


def test_mlp_hidden_widths_and_activation():
    model = mlp(hidden=(32, 16), activation="tanh", num_classes=10, input_shape=(1, 8, 8))

    linear = [layer for layer in model if isinstance(layer, nn.Linear)]
    assert [(layer.in_features, layer.out_features) for layer in linear] == [(64, 32), (32, 16), (16, 10)]
    assert sum(isinstance(layer, nn.Tanh) for layer in model) == 2


def test_mlp_rejects_unknown_activation():
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        mlp(activation="swish", num_classes=10, input_shape=(1, 8, 8))


def test_logreg_is_one_linear_layer():
    model = build_model("logreg", num_classes=10, input_shape=(1, 8, 8))

    assert parameter_count(model) == 64 * 10 + 10


def test_small_cnn_size_for_digits():
    with_norm = small_cnn(num_classes=10, input_shape=(1, 8, 8))
    without_norm = small_cnn(batch_norm=False, num_classes=10, input_shape=(1, 8, 8))

    assert parameter_count(with_norm) == 6_138
    assert 1_000 <= parameter_count(without_norm) <= 100_000
    assert not any(isinstance(layer, nn.BatchNorm2d) for layer in without_norm)


def test_build_model_unknown_name_lists_choices():
    with pytest.raises(ValueError, match="unknown model 'resnet50'") as info:
        build_model("resnet50", num_classes=10, input_shape=(3, 32, 32))

    assert "resnet18" in str(info.value)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"num_classes": 0, "input_shape": (3, 32, 32)}, "num_classes"),
        ({"num_classes": 10, "input_shape": (32, 32)}, "input_shape"),
        ({"num_classes": 10, "input_shape": (3, 0, 32)}, "input_shape"),
    ],
)
def test_model_rejects_invalid_shape_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_model("small_cnn", **kwargs)


@pytest.mark.parametrize("target", ["efmom.models.vgg11_bn", "efmom.models.resnet18", "efmom.models.mlp"])
def test_hydra_instantiates_with_list_shape(target):
    config = {"_target_": target}

    model = hydra.utils.instantiate(config, num_classes=10, input_shape=[1, 8, 8])

    assert model(torch.randn(2, 1, 8, 8)).shape == (2, 10)


def test_hydra_passes_model_options():
    config = {"_target_": "efmom.models.vgg", "depth": 16, "batch_norm": True}

    model = hydra.utils.instantiate(config, num_classes=100, input_shape=[3, 32, 32])

    assert parameter_count(model) == parameter_count(build_model("vgg16_bn", num_classes=100, input_shape=(3, 32, 32)))
