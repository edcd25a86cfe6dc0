"""Offline image data as in-memory tensors: sklearn's digits and MNIST."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from research_systems_core.data import load_mnist, resolve_data_dir
from research_systems_core.validation import check_choice, check_int

DATASETS = ("digits", "mnist")


@dataclass
class ImageData:
    """Normalised images (N, C, H, W) and int64 labels, train and test."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    @property
    def in_channels(self) -> int:
        return int(self.x_train.shape[1])

    @property
    def image_size(self) -> int:
        return int(self.x_train.shape[-1])

    @property
    def num_classes(self) -> int:
        return int(self.y_train.max()) + 1


def _normalise(x_train: torch.Tensor, x_test: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    mean, std = x_train.mean(), x_train.std()
    return (x_train - mean) / std, (x_test - mean) / std


def load_digits_data(seed: int = 0, test_fraction: float = 0.25) -> ImageData:
    """sklearn's bundled 8x8 digits (1797 images), stratified train/test split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = digits.images.astype(np.float32)[:, None] / 16.0
    y = digits.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=test_fraction, random_state=seed, stratify=y)
    x_train, x_test = _normalise(torch.from_numpy(xtr), torch.from_numpy(xte))
    return ImageData("digits", x_train, torch.from_numpy(ytr), x_test, torch.from_numpy(yte))


def load_mnist_data(
    data_dir: str | None = None, image_size: int = 28, train_limit: int | None = None, seed: int = 0
) -> ImageData:
    """MNIST from ``<data_dir>/MNIST/raw``; optionally average-pooled to ``image_size`` (14 or 7)
    and a class-balanced random subset of ``train_limit`` training images."""
    check_choice("image_size", image_size, (28, 14, 7))
    root = resolve_data_dir(data_dir)
    xtr, ytr = load_mnist(root, train=True)
    xte, yte = load_mnist(root, train=False)
    if train_limit is not None:
        check_int("train_limit", train_limit, minimum=10)
        order = np.random.default_rng(seed).permutation(len(ytr))[:train_limit]
        xtr, ytr = xtr[order], ytr[order]
    x_train = torch.from_numpy(xtr.astype(np.float32) / 255.0)[:, None]
    x_test = torch.from_numpy(xte.astype(np.float32) / 255.0)[:, None]
    if image_size != 28:
        factor = 28 // image_size
        x_train, x_test = F.avg_pool2d(x_train, factor), F.avg_pool2d(x_test, factor)
    x_train, x_test = _normalise(x_train, x_test)
    return ImageData("mnist", x_train, torch.from_numpy(ytr), x_test, torch.from_numpy(yte))


def load_data(
    name: str,
    data_dir: str | None = None,
    image_size: int = 28,
    train_limit: int | None = None,
    seed: int = 0,
) -> ImageData:
    """``digits`` (always offline) or ``mnist`` (needs the data directory)."""
    check_choice("dataset", name, DATASETS)
    if name == "digits":
        return load_digits_data(seed)
    return load_mnist_data(data_dir, image_size, train_limit, seed)
