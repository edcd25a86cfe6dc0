"""Per-data-set statistics, the standard augmentation recipes, and normalisation inside the model.

One documented choice: **loaders yield pixels in [0, 1]**; the model normalises with
:class:`Normalize` (``with_normalization(model, mean, std)``). Attacks (robust-at) then work
directly in [0, 1] pixel space, and every package sees the same inputs.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torchvision.transforms import v2

from research_systems_core.validation import check_int, check_range

__all__ = [
    "CIFAR10_MEAN",
    "CIFAR10_STD",
    "CIFAR100_MEAN",
    "CIFAR100_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MNIST_MEAN",
    "MNIST_STD",
    "SVHN_MEAN",
    "SVHN_STD",
    "TINY_IMAGENET_MEAN",
    "TINY_IMAGENET_STD",
    "Normalize",
    "imagenet_transforms",
    "mixup_fn",
    "small_image_transforms",
    "with_normalization",
]

# Per-channel mean and standard deviation of the training images in [0, 1].
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)
SVHN_MEAN, SVHN_STD = (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)
TINY_IMAGENET_MEAN, TINY_IMAGENET_STD = (0.4802, 0.4481, 0.3975), (0.2770, 0.2691, 0.2821)
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# ImageNet evaluation resizes the short side to image_size / 0.875, then centre-crops image_size.
EVAL_CROP_FRACTION = 0.875


def _to_unit_float() -> list[Any]:
    """PIL image or uint8 tensor -> float32 CHW tensor in [0, 1]."""
    return [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]


def small_image_transforms(
    native_size: int, image_size: int, *, train: bool, augment: bool, flip: bool, padding: int = 4
) -> v2.Compose:
    """CIFAR/SVHN/MNIST-style: RandomCrop(native, padding) (+ flip) when training, resized if asked."""
    steps: list[Any] = []
    if train and augment:
        if padding > 0:
            steps.append(v2.RandomCrop(native_size, padding=padding))
        if flip:
            steps.append(v2.RandomHorizontalFlip())
    steps += _to_unit_float()
    if image_size != native_size:
        steps.append(v2.Resize((image_size, image_size), antialias=True))
    return v2.Compose(steps)


def imagenet_transforms(image_size: int, *, train: bool, augment: bool) -> v2.Compose:
    """ImageNet-style: RandomResizedCrop + flip (train); Resize(size / 0.875) + CenterCrop (eval)."""
    if train and augment:
        steps: list[Any] = [v2.RandomResizedCrop(image_size, antialias=True), v2.RandomHorizontalFlip()]
    else:
        resize = math.floor(image_size / EVAL_CROP_FRACTION)
        steps = [v2.Resize(resize, antialias=True), v2.CenterCrop(image_size)]
    return v2.Compose(steps + _to_unit_float())


def _check_stats(mean: Sequence[float], std: Sequence[float]) -> tuple[tuple[float, ...], tuple[float, ...]]:
    if isinstance(mean, (str, bytes)) or not isinstance(mean, Sequence):
        raise TypeError(f"mean must be a sequence of floats, got {mean!r}")
    if isinstance(std, (str, bytes)) or not isinstance(std, Sequence):
        raise TypeError(f"std must be a sequence of floats, got {std!r}")
    if len(mean) == 0 or len(mean) != len(std):
        raise ValueError(f"mean and std need the same non-zero length, got {len(mean)} and {len(std)}")
    mean_t = tuple(check_range(f"mean[{i}]", m) for i, m in enumerate(mean))
    std_t = tuple(check_range(f"std[{i}]", s, 0.0, None, low_inclusive=False) for i, s in enumerate(std))
    if not all(math.isfinite(v) for v in mean_t + std_t):
        raise ValueError(f"mean and std must be finite, got {mean!r} and {std!r}")
    return mean_t, std_t


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel, as the first layer of a model that takes [0, 1] pixels.

    The statistics are non-persistent buffers: they follow ``.to(device)`` but are configuration
    (from the data set), not learned state, so checkpoints hold only the wrapped model's tensors.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        mean_t, std_t = _check_stats(mean, std)
        self.register_buffer("mean", torch.tensor(mean_t).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std_t).view(1, -1, 1, 1), persistent=False)

    mean: torch.Tensor
    std: torch.Tensor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the shape check needs no host sync; it is skipped under torch.fx symbolic tracing (a Proxy)
        if not isinstance(x, torch.fx.Proxy) and (x.ndim != 4 or x.shape[1] != self.mean.shape[1]):
            raise ValueError(
                f"Normalize expects N x {self.mean.shape[1]} x H x W images, got shape {tuple(x.shape)}"
            )
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def with_normalization(model: nn.Module, mean: Sequence[float], std: Sequence[float]) -> nn.Sequential:
    """``nn.Sequential(normalize=Normalize(mean, std), model=model)``, keeping ``.num_classes``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    wrapped = nn.Sequential(collections.OrderedDict(normalize=Normalize(mean, std), model=model))
    if hasattr(model, "num_classes"):
        wrapped.num_classes = model.num_classes
    return wrapped


def mixup_fn(num_classes: int, mixup: float, cutmix: float, label_smoothing: float) -> Any:
    """timm's ``Mixup`` (soft targets, smoothing included) when mixup or cutmix > 0, else None.

    With None, apply ``label_smoothing`` through ``nn.CrossEntropyLoss(label_smoothing=...)``; with a
    Mixup, train with ``timm.loss.SoftTargetCrossEntropy`` on the mixed targets.
    """
    num_classes = check_int("num_classes", num_classes, minimum=2)
    mixup = check_range("mixup", mixup, 0.0)
    cutmix = check_range("cutmix", cutmix, 0.0)
    label_smoothing = check_range("label_smoothing", label_smoothing, 0.0, 1.0, high_inclusive=False)
    for name, value in (("mixup", mixup), ("cutmix", cutmix)):
        if not math.isfinite(value):
            raise ValueError(f"{name} must be a finite Beta-distribution alpha >= 0, got {value!r}")
    if mixup == 0.0 and cutmix == 0.0:
        return None
    from timm.data import Mixup

    return Mixup(
        mixup_alpha=mixup, cutmix_alpha=cutmix, label_smoothing=label_smoothing, num_classes=num_classes
    )
