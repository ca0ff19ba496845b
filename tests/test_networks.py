"""Backbones by name; ConvNet-3 as PROTOCOL.md defines it."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from distill_bench.networks import ConvNet, create_backbone, list_backbones
from distill_bench.registry import UnknownNameError

WIDTH = 128


def _param_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def _convnet3_params(in_channels: int, num_classes: int) -> int:
    """ConvNet-3 counted by hand: three conv 3x3 (+bias), three GroupNorm (weight, bias),
    one linear layer on the 128 * 4 * 4 features."""
    convs = (in_channels * 9 * WIDTH + WIDTH) + 2 * (WIDTH * 9 * WIDTH + WIDTH)
    norms = 3 * 2 * WIDTH
    linear = WIDTH * 4 * 4 * num_classes + num_classes
    return convs + norms + linear


def test_builtin_backbones_are_registered():
    names = list_backbones()
    for name in ("convnet", "resnet18", "alexnet", "vgg11", "mlp"):
        assert name in names
    assert list_backbones("convnet*")[0] == "convnet"


@pytest.mark.parametrize("name", list_backbones())
@pytest.mark.parametrize("channels, size", [(1, 28), (3, 32)])
def test_every_backbone_gives_logits(name, channels, size):
    torch.manual_seed(0)
    model = create_backbone(name, 7, channels, size).eval()
    x = torch.randn(2, channels, size, size)
    with torch.no_grad():
        logits = model(x)
        features = model.embed(x)
    assert logits.shape == (2, 7) and torch.isfinite(logits).all()
    assert features.shape == (2, model.feature_dim)


def test_convnet_default_is_convnet3_of_the_protocol():
    model = create_backbone("convnet", 10, 3, 32)
    kinds = [type(m) for m in model.features]
    block = [nn.Conv2d, nn.GroupNorm, nn.ReLU, nn.AvgPool2d]
    assert kinds == block * 3
    for layer in model.features:
        if isinstance(layer, nn.Conv2d):
            assert layer.out_channels == WIDTH and layer.kernel_size == (3, 3)
            assert layer.padding == (1, 1)
        if isinstance(layer, nn.GroupNorm):
            assert layer.num_groups == WIDTH and layer.num_channels == WIDTH and layer.affine
        if isinstance(layer, nn.AvgPool2d):
            assert layer.kernel_size == 2
    assert model.feature_dim == 2048 and model.classifier.in_features == 2048
    assert _param_count(model) == _convnet3_params(3, 10) == 320_010


def test_convnet_on_28_pixels_pads_to_the_same_features():
    model = create_backbone("convnet", 10, 1, 28)
    assert model.features[0].padding == (3, 3)
    assert model.feature_dim == 2048
    assert model.embed(torch.randn(2, 1, 28, 28)).shape == (2, 2048)
    assert _param_count(model) == _convnet3_params(1, 10)


def test_convnet_options():
    deep = create_backbone("convnet", 10, 3, 64)
    assert sum(isinstance(m, nn.Conv2d) for m in deep.features) == 4  # depth 4 for 64x64
    assert deep.feature_dim == 2048
    bn = create_backbone("convnet_bn", 10, 3, 32)
    assert any(isinstance(m, nn.BatchNorm2d) for m in bn.features)
    plain = ConvNet(10, width=16, depth=2, norm="none", activation="leakyrelu",
                    pooling="maxpool")
    assert plain.feature_dim == 16 * 8 * 8
    assert not any(isinstance(m, nn.GroupNorm) for m in plain.features)
    assert any(isinstance(m, nn.LeakyReLU) for m in plain.features)
    assert any(isinstance(m, nn.MaxPool2d) for m in plain.features)
    assert ConvNet(10, pooling="none", depth=1, width=4).feature_dim == 4 * 32 * 32
    # None means "keep the default" (a CLI option left unset)
    assert create_backbone("convnet", 10, 3, 32, width=None).feature_dim == 2048


@pytest.mark.parametrize("option, value", [("norm", "groupnorm"), ("activation", "swish"),
                                           ("pooling", "median")])
def test_convnet_bad_options_name_the_allowed(option, value):
    with pytest.raises(ValueError, match=f"{option}={value!r}") as err:
        ConvNet(10, **{option: value})
    assert "choose one of" in str(err.value)


def test_unknown_backbone():
    with pytest.raises(UnknownNameError, match="Did you mean 'resnet18'"):
        create_backbone("resnet-18", 10, 3, 32)
