"""Model registry: a small MLP and CNN for quick runs, CIFAR-style VGG and ResNet.

Every model is written so that `torch.fx` can trace it (``torch.flatten`` rather than
``x.view(x.size(0), -1)``), which is what the channel surgery in :mod:`sparse_dst.surgery` needs.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from research_systems_core.registry import Registry
from research_systems_core.validation import check_int, check_positive

MODELS = Registry("model")

VGG_CONFIGS: dict[str, list[int | str]] = {
    "vgg11": [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512],
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512],
    "vgg19": [
        64,
        64,
        "M",
        128,
        128,
        "M",
        256,
        256,
        256,
        256,
        "M",
        512,
        512,
        512,
        512,
        "M",
        512,
        512,
        512,
        512,
    ],
    "vgg_small": [32, 32, "M", 64, 64, "M", 128, 128],
}


def _scaled(channels: int, width: float) -> int:
    return max(1, round(channels * width))


class MLP(nn.Module):
    """Fully connected network, e.g. LeNet-300-100 (784-300-100-10)."""

    def __init__(self, in_features: int = 784, hidden: Sequence[int] = (300, 100), num_classes: int = 10):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_features
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(torch.flatten(x, 1)))


class VGG(nn.Module):
    """CIFAR-style VGG: 3x3 conv + BatchNorm + ReLU stages, global average pooling, one linear."""

    def __init__(self, config: Sequence[int | str], in_channels: int = 3, num_classes: int = 10):
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for item in config:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                out = int(item)
                layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
                channels = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.pool(self.features(x)), 1))


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu3 = nn.ReLU()
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes * 4:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes * 4, 1, stride=stride, bias=False), nn.BatchNorm2d(planes * 4)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.relu2(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu3(out + self.shortcut(x))


class ResNet(nn.Module):
    """CIFAR-style ResNet (3x3 stem, no max-pool) with a width multiplier."""

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        num_blocks: Sequence[int],
        in_channels: int = 3,
        num_classes: int = 10,
        width: float = 1.0,
    ):
        super().__init__()
        base = [_scaled(c, width) for c in (64, 128, 256, 512)]
        self.in_planes = base[0]
        self.conv1 = nn.Conv2d(in_channels, base[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(base[0])
        self.relu = nn.ReLU()
        stages = []
        for i, (planes, blocks) in enumerate(zip(base, num_blocks, strict=True)):
            stride = 1 if i == 0 else 2
            layers = []
            for s in [stride] + [1] * (blocks - 1):
                layers.append(block(self.in_planes, planes, s))
                self.in_planes = planes * block.expansion
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = nn.Linear(self.in_planes, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(torch.flatten(self.pool(out), 1))


@MODELS.register("mlp")
def mlp(
    in_features: int = 784, num_classes: int = 10, hidden: Sequence[int] = (300, 100), **_: object
) -> MLP:
    """LeNet-300-100 style MLP (flattens its input)."""
    return MLP(in_features, hidden, num_classes)


@MODELS.register("small_cnn")
def small_cnn(in_channels: int = 1, num_classes: int = 10, width: float = 1.0, **_: object) -> VGG:
    """Four 3x3 convs (32-32-M-64-64-M-128-128 at width 1) for 8x8 to 28x28 grey images."""
    config = [item if item == "M" else _scaled(int(item), width) for item in VGG_CONFIGS["vgg_small"]]
    return VGG(config, in_channels, num_classes)


def _vgg(name: str, in_channels: int, num_classes: int, width: float) -> VGG:
    config = [item if item == "M" else _scaled(int(item), width) for item in VGG_CONFIGS[name]]
    return VGG(config, in_channels, num_classes)


@MODELS.register("vgg11")
def vgg11(in_channels: int = 3, num_classes: int = 10, width: float = 1.0, **_: object) -> VGG:
    return _vgg("vgg11", in_channels, num_classes, width)


@MODELS.register("vgg16")
def vgg16(in_channels: int = 3, num_classes: int = 10, width: float = 1.0, **_: object) -> VGG:
    return _vgg("vgg16", in_channels, num_classes, width)


@MODELS.register("vgg19")
def vgg19(in_channels: int = 3, num_classes: int = 10, width: float = 1.0, **_: object) -> VGG:
    """CIFAR-style VGG-19 with BatchNorm (the reference's ``vgg19``)."""
    return _vgg("vgg19", in_channels, num_classes, width)


@MODELS.register("resnet18")
def resnet18(in_channels: int = 3, num_classes: int = 10, width: float = 1.0, **_: object) -> ResNet:
    return ResNet(BasicBlock, [2, 2, 2, 2], in_channels, num_classes, width)


@MODELS.register("resnet50")
def resnet50(in_channels: int = 3, num_classes: int = 10, width: float = 1.0, **_: object) -> ResNet:
    return ResNet(Bottleneck, [3, 4, 6, 3], in_channels, num_classes, width)


def create_model(name: str, **kwargs: object) -> nn.Module:
    """Build a registered model; ``width`` scales every channel count (default 1.0)."""
    if "width" in kwargs:
        check_positive("width", kwargs["width"])
    for key in ("in_channels", "num_classes", "in_features"):
        if key in kwargs:
            check_int(key, kwargs[key], minimum=1)
    return MODELS.create(name, **kwargs)
