"""Networks for distillation and evaluation, created by name.

``ConvNet`` defaults to the field's ConvNet-3 (Zhao et al., DC, ICLR 2021): blocks of
conv 3x3 (width 128) -> instance norm -> ReLU -> 2x2 average pooling, then a linear layer.
"Instance norm" is ``GroupNorm(C, C, affine=True)``, as in the reference code. For 28x28
inputs the first convolution pads by 3, so every dataset ends in a ``width * 4 * 4`` feature.

Cross-architecture backbones: ``resnet18`` (BatchNorm), ``alexnet``, ``vgg11`` and ``mlp``,
all sized for 28-32 pixel inputs.
"""
from __future__ import annotations

import torch
from torch import nn

from distill_bench.registry import Registry

BACKBONES = Registry("backbone")

NORMS = ("instancenorm", "batchnorm", "layernorm", "none")
ACTIVATIONS = {"relu": nn.ReLU, "leakyrelu": nn.LeakyReLU, "sigmoid": nn.Sigmoid, "gelu": nn.GELU}
POOLINGS = ("avgpool", "maxpool", "none")


def _norm_layer(norm: str, channels: int, size: int) -> nn.Module:
    if norm == "instancenorm":
        return nn.GroupNorm(channels, channels, affine=True)
    if norm == "batchnorm":
        return nn.BatchNorm2d(channels)
    if norm == "layernorm":
        return nn.GroupNorm(1, channels, affine=True)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"norm={norm!r} is not known; choose one of {NORMS}")


class ConvNet(nn.Module):
    """ConvNet-D of the distillation literature.

    Args:
        num_classes: number of output logits.
        in_channels: image channels (1 or 3).
        image_size: input height (= width); 28 gets first-layer padding 3 so that features
            have the same shape as for 32.
        width: channels of every convolution.
        depth: number of conv blocks (3 for 32x32 data, 4 for 64x64).
        norm: one of ``NORMS``.
        activation: one of ``ACTIVATIONS``.
        pooling: one of ``POOLINGS``.
    """

    def __init__(self, num_classes: int, in_channels: int = 3, image_size: int = 32,
                 width: int = 128, depth: int = 3, norm: str = "instancenorm",
                 activation: str = "relu", pooling: str = "avgpool"):
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation={activation!r} is not known; "
                             f"choose one of {sorted(ACTIVATIONS)}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling={pooling!r} is not known; choose one of {POOLINGS}")
        layers: list[nn.Module] = []
        channels, size = in_channels, image_size
        for block in range(depth):
            padding = 3 if (block == 0 and image_size == 28) else 1
            layers.append(nn.Conv2d(channels, width, 3, padding=padding))
            channels, size = width, size + 2 * padding - 2
            layers.append(_norm_layer(norm, channels, size))
            layers.append(ACTIVATIONS[activation](inplace=True) if activation != "gelu"
                          else nn.GELU())
            if pooling == "avgpool":
                layers.append(nn.AvgPool2d(2))
                size //= 2
            elif pooling == "maxpool":
                layers.append(nn.MaxPool2d(2))
                size //= 2
        self.features = nn.Sequential(*layers)
        self.feature_dim = channels * size * size
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features, flattened: (N, feature_dim)."""
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


class MLP(nn.Module):
    """Three-layer perceptron (hidden width 128) on flattened pixels."""

    def __init__(self, num_classes: int, in_channels: int = 3, image_size: int = 32,
                 width: int = 128):
        super().__init__()
        self.features = nn.Sequential(
            nn.Flatten(), nn.Linear(in_channels * image_size * image_size, width),
            nn.ReLU(inplace=True), nn.Linear(width, width), nn.ReLU(inplace=True))
        self.feature_dim = width
        self.classifier = nn.Linear(width, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


class AlexNet(nn.Module):
    """AlexNet sized for 32x32 inputs (as in the DC code's cross-architecture table)."""

    def __init__(self, num_classes: int, in_channels: int = 3, image_size: int = 32):
        super().__init__()
        pad = 4 if image_size == 28 else 2
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 128, 5, stride=1, padding=pad), nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(128, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Conv2d(192, 256, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(256, 192, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(192, 192, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
            nn.Flatten())
        self.feature_dim = 192 * 4 * 4
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


class VGG11(nn.Module):
    """VGG-11 with instance norm, sized for 32x32 inputs."""

    PLAN = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")

    def __init__(self, num_classes: int, in_channels: int = 3, image_size: int = 32,
                 norm: str = "instancenorm"):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for i, item in enumerate(self.PLAN):
            if item == "M":
                layers.append(nn.MaxPool2d(2))
                continue
            padding = 3 if (i == 0 and image_size == 28) else 1
            layers += [nn.Conv2d(channels, item, 3, padding=padding),
                       _norm_layer(norm, item, 0), nn.ReLU(inplace=True)]
            channels = item
        self.features = nn.Sequential(*layers, nn.Flatten())
        self.feature_dim = 512
        self.classifier = nn.Linear(512, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


class _BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True), nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
            nn.BatchNorm2d(cout))
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class ResNet18(nn.Module):
    """ResNet-18 (BatchNorm) with a 3x3 stem for 32x32 inputs."""

    def __init__(self, num_classes: int, in_channels: int = 3, image_size: int = 32):
        super().__init__()
        stem_pad = 3 if image_size == 28 else 1
        layers: list[nn.Module] = [nn.Conv2d(in_channels, 64, 3, 1, stem_pad, bias=False),
                                   nn.BatchNorm2d(64), nn.ReLU(inplace=True)]
        cin = 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [_BasicBlock(cin, cout, stride), _BasicBlock(cout, cout, 1)]
            cin = cout
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.feature_dim = 512
        self.classifier = nn.Linear(512, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


@BACKBONES.register("convnet")
def convnet(num_classes, in_channels=3, image_size=32, **kwargs):
    """ConvNet-3, the field's default (width 128, instance norm, ReLU, average pooling)."""
    depth = kwargs.pop("depth", 4 if image_size == 64 else 3)
    return ConvNet(num_classes, in_channels, image_size, depth=depth, **kwargs)


@BACKBONES.register("convnet_bn")
def convnet_bn(num_classes, in_channels=3, image_size=32, **kwargs):
    """ConvNet-3 with BatchNorm instead of instance norm."""
    return convnet(num_classes, in_channels, image_size, norm="batchnorm", **kwargs)


@BACKBONES.register("convnet_nonorm")
def convnet_nonorm(num_classes, in_channels=3, image_size=32, **kwargs):
    """ConvNet-3 without normalisation layers."""
    return convnet(num_classes, in_channels, image_size, norm="none", **kwargs)


@BACKBONES.register("resnet18")
def resnet18(num_classes, in_channels=3, image_size=32, **kwargs):
    """ResNet-18 with BatchNorm, 3x3 stem."""
    return ResNet18(num_classes, in_channels, image_size, **kwargs)


@BACKBONES.register("alexnet")
def alexnet(num_classes, in_channels=3, image_size=32, **kwargs):
    """AlexNet for small images."""
    return AlexNet(num_classes, in_channels, image_size, **kwargs)


@BACKBONES.register("vgg11")
def vgg11(num_classes, in_channels=3, image_size=32, **kwargs):
    """VGG-11 with instance norm."""
    return VGG11(num_classes, in_channels, image_size, **kwargs)


@BACKBONES.register("mlp")
def mlp(num_classes, in_channels=3, image_size=32, **kwargs):
    """Three-layer MLP."""
    return MLP(num_classes, in_channels, image_size, **kwargs)


def create_backbone(name: str, num_classes: int, in_channels: int, image_size: int,
                    **kwargs) -> nn.Module:
    """Build a backbone by registered name, dropping options left as ``None``."""
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    return BACKBONES.get(name)(num_classes, in_channels, image_size, **kwargs)


def list_backbones(pattern: str = "*") -> list[str]:
    return BACKBONES.list(pattern)
