"""Classifiers for adversarial training: PreAct-ResNet-18, WideResNet-34-10, VGG-16, a small CNN.

Every model takes images in [0, 1] and normalises them itself (optional ``mean``/``std``), so
attacks can clamp to the valid input box. Each model lists its blocks in ``wot_blocks`` (names
of child modules, in order), which WOT-B uses as its layer groups.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from research_systems_core.registry import Registry
from research_systems_core.validation import check_int

__all__ = [
    "MODELS",
    "VGG16",
    "Normalize",
    "PreActResNet18",
    "SmallCNN",
    "WideResNet",
    "build_any_model",
    "check_model_name",
    "create_model",
]

MODELS = Registry("model")


class Normalize(nn.Module):
    """(x - mean) / std per channel; identity when ``mean`` is None."""

    def __init__(self, mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> None:
        super().__init__()
        self.enabled = mean is not None
        if self.enabled:
            std = std if std is not None else [1.0] * len(mean)
            self.register_buffer(
                "mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
            )
            self.register_buffer(
                "std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std if self.enabled else x


class SmallCNN(nn.Module):
    """conv-BN-ReLU stack for quick runs: ``depth`` convs, width doubling every two convs,
    2x2 max-pooling after every second conv, global average pooling, linear head."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 1,
        width: int = 64,
        depth: int = 4,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        check_int("width", width, minimum=1)
        check_int("depth", depth, minimum=1)
        self.normalize = Normalize(mean, std)
        channels, blocks = in_channels, []
        for i in range(depth):
            out = width * 2 ** (i // 2)
            layers: list[nn.Module] = [
                nn.Conv2d(channels, out, 3, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(),
            ]
            if i % 2 == 1:
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            blocks.append(nn.Sequential(*layers))
            channels = out
        self.stem = blocks[0]
        self.stages = nn.ModuleList(blocks[1:])
        self.head = nn.Linear(channels, num_classes)
        self.wot_blocks = ["stem", *[f"stages.{i}" for i in range(depth - 1)], "head"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stem(self.normalize(x))
        for stage in self.stages:
            out = stage(out)
        return self.head(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


class PreActBlock(nn.Module):
    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.shortcut = None
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet18(nn.Module):
    """PreAct-ResNet-18 (He et al. 2016) as used by Rice et al. 2020 and WOT; global average
    pooling instead of a fixed 4x4 pool so other image sizes work."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        width: int = 64,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        self.in_planes = width
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.layer1 = self._make_layer(width, 2, 1)
        self.layer2 = self._make_layer(width * 2, 2, 2)
        self.layer3 = self._make_layer(width * 4, 2, 2)
        self.layer4 = self._make_layer(width * 8, 2, 2)
        self.bn = nn.BatchNorm2d(width * 8)
        self.linear = nn.Linear(width * 8, num_classes)
        # stem, four stages, head: the six blocks of WOT-B
        self.wot_blocks = ["conv1", "layer1", "layer2", "layer3", "layer4", ("bn", "linear")]

    def _make_layer(self, planes: int, num_blocks: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (num_blocks - 1):
            layers.append(PreActBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.normalize(x))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        out = F.relu(self.bn(out))
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


class WideBasicBlock(nn.Module):
    def __init__(self, in_planes: int, out_planes: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = nn.Conv2d(in_planes, out_planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.conv2 = nn.Conv2d(out_planes, out_planes, 3, stride=1, padding=1, bias=False)
        self.equal = in_planes == out_planes
        self.shortcut = None if self.equal else nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = x if self.equal else self.shortcut(out)
        out = self.conv2(F.relu(self.bn2(self.conv1(out))))
        return out + shortcut


class WideResNet(nn.Module):
    """WideResNet-depth-widen (Zagoruyko & Komodakis 2016), the AT variant (no dropout)."""

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        depth: int = 34,
        widen_factor: int = 10,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WideResNet depth must be 6n+4 (e.g. 16, 28, 34), got {depth}")
        check_int("widen_factor", widen_factor, minimum=1)
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.normalize = Normalize(mean, std)
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.block1 = self._group(widths[0], widths[1], n, 1)
        self.block2 = self._group(widths[1], widths[2], n, 2)
        self.block3 = self._group(widths[2], widths[3], n, 2)
        self.bn1 = nn.BatchNorm2d(widths[3])
        self.fc = nn.Linear(widths[3], num_classes)
        self.wot_blocks = ["conv1", "block1", "block2", "block3", ("bn1", "fc")]
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.zeros_(m.bias)

    @staticmethod
    def _group(in_planes: int, out_planes: int, n: int, stride: int) -> nn.Sequential:
        return nn.Sequential(
            *[
                WideBasicBlock(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1)
                for i in range(n)
            ]
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block3(self.block2(self.block1(self.conv1(self.normalize(x)))))
        out = F.relu(self.bn1(out))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


class VGG16(nn.Module):
    """VGG-16 with batch norm (configuration D), one linear head as in the AT literature."""

    CONFIG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.normalize = Normalize(mean, std)
        stages, layers, channels = [], [], in_channels
        for v in self.CONFIG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
                stages.append(nn.Sequential(*layers))
                layers = []
            else:
                layers += [nn.Conv2d(channels, v, 3, padding=1, bias=False), nn.BatchNorm2d(v), nn.ReLU()]
                channels = v
        self.stages = nn.ModuleList(stages)
        self.classifier = nn.Linear(channels, num_classes)
        self.wot_blocks = [*[f"stages.{i}" for i in range(len(stages))], "classifier"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.normalize(x)
        for stage in self.stages:
            out = stage(out)
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


@MODELS.register("small-cnn")
def small_cnn(**kwargs) -> nn.Module:
    return SmallCNN(**kwargs)


@MODELS.register("preact-resnet18")
def preact_resnet18(**kwargs) -> nn.Module:
    return PreActResNet18(**kwargs)


@MODELS.register("wrn-34-10")
def wrn_34_10(**kwargs) -> nn.Module:
    kwargs.setdefault("depth", 34)
    kwargs.setdefault("widen_factor", 10)
    return WideResNet(**kwargs)


@MODELS.register("vgg16")
def vgg16(**kwargs) -> nn.Module:
    return VGG16(**kwargs)


def create_model(
    name: str,
    num_classes: int = 10,
    in_channels: int = 3,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    **kwargs,
) -> nn.Module:
    """Build a registered model (``MODELS.names()``): ``create_model("small-cnn", 10, 1, width=32)``."""
    check_int("num_classes", num_classes, minimum=2)
    check_int("in_channels", in_channels, minimum=1)
    return MODELS.create(name, num_classes=num_classes, in_channels=in_channels, mean=mean, std=std, **kwargs)


@functools.lru_cache(maxsize=1)
def _external_names() -> tuple[str, ...]:
    names: list[str] = []
    try:
        import timm

        names += timm.list_models()
    except ImportError:  # pragma: no cover - timm is a declared dependency
        pass
    try:
        import torchvision

        names += torchvision.models.list_models()
    except (ImportError, AttributeError):  # pragma: no cover
        pass
    return tuple(names)


def check_model_name(name: str) -> str:
    """Raise ValueError unless ``name`` is a registered model, a timm or a torchvision model
    (``timm:``/``torchvision:`` prefixes allowed); cheap, so options are checked before data loads."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"model must be a non-empty name, got {name!r}")
    if name in MODELS.names():
        return name
    bare = name.split(":", 1)[1] if name.startswith(("timm:", "torchvision:")) else name
    known = _external_names()
    if bare in known:
        return name
    close = difflib.get_close_matches(bare, list(dict.fromkeys([*MODELS.names(), *known])), n=5)
    hint = f"; close matches: {', '.join(close)}" if close else ""
    raise ValueError(
        f"unknown model {name!r}: not one of this package's ({', '.join(MODELS.names())}) nor a timm or "
        f"torchvision model{hint}"
    )


def build_any_model(
    name: str,
    num_classes: int,
    in_channels: int,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    **kwargs,
) -> nn.Module:
    """A registered model, or any timm/torchvision model through the shared image stack with the
    normalisation inside (attacks work on [0, 1] inputs)."""
    if name in MODELS.names():
        return create_model(name, num_classes, in_channels, mean=mean, std=std, **kwargs)
    if kwargs:
        raise ValueError(f"width/depth only apply to this package's models, not to {name!r}")
    from research_systems_core.vision import create_image_model, with_normalization

    model = create_image_model(name, num_classes=num_classes, in_chans=in_channels)
    if mean is None:
        return nn.Sequential(Normalize(None, None), model)
    return with_normalization(model, mean, std)
