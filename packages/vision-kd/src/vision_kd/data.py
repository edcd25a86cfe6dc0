"""Image data sets as in-memory tensors: MNIST, far-apart digit pairs, sklearn digits, CIFAR, folders.

Everything returns an :class:`ImageData` (float images N x C x H x W, normalised, int64 labels).
Small data sets stay in memory so a training step is a tensor slice, not a DataLoader round trip.

The *cued-pair* task ("mnist-cue") is the global-context task of the reproduction: two MNIST
digits sit at the two ends of a 32 x 64 canvas and a small bar in the middle says which of them
is the label (horizontal: left, vertical: right). A network whose features are local and then
globally averaged sees ``f(left) + f(cue) + f(right)``: it can find the two candidate digits but
cannot tie the cue to one of them, so it is capped near 50%; it needs units whose receptive field
spans the cue and a digit (20-30 pixels apart).
"""

from __future__ import annotations

import dataclasses
import os
import pathlib

import numpy as np
import torch
import torch.nn.functional as F

from research_systems_core.data import DatasetNotFoundError, load_mnist, require_path
from research_systems_core.validation import check_choice, check_int

__all__ = ["DATASETS", "ImageData", "load_dataset", "make_cued_pairs"]

DATASETS = ("mnist", "mnist-cue", "digits", "cifar10", "cifar100", "folder")


@dataclasses.dataclass(frozen=True)
class ImageData:
    """Images (float32, N x C x H x W) and int64 labels, plus the class count."""

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int
    name: str = ""

    def __post_init__(self) -> None:
        if self.images.ndim != 4:
            raise ValueError(f"images must be N x C x H x W, got shape {tuple(self.images.shape)}")
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def in_chans(self) -> int:
        return int(self.images.shape[1])

    @property
    def image_size(self) -> tuple[int, int]:
        return int(self.images.shape[2]), int(self.images.shape[3])

    def subset(self, n: int | None, seed: int = 0) -> ImageData:
        """A random subset of ``n`` examples (all of them when ``n`` is None or too large)."""
        if n is None or n >= len(self):
            return self
        check_int("n", n, minimum=1)
        idx = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n]
        return ImageData(self.images[idx], self.labels[idx], self.num_classes, self.name)


_CIFAR_MEAN, _CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def _normalise(
    images: torch.Tensor, mean: tuple[float, ...] = (0.5,), std: tuple[float, ...] = (0.5,)
) -> torch.Tensor:
    """(images - mean) / std per channel with fixed constants (the same for train and test)."""
    m = torch.tensor(mean).reshape(1, -1, 1, 1)
    s = torch.tensor(std).reshape(1, -1, 1, 1)
    return (images - m) / s


def make_cued_pairs(
    images: np.ndarray,
    labels: np.ndarray,
    n: int,
    seed: int,
    canvas: tuple[int, int] = (32, 64),
    digit_size: int = 16,
    margin: int = 4,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` canvases: a digit at each end and a cue in the middle saying which one is the label.

    Digits are resized to ``digit_size`` (area interpolation), jittered by up to ``margin`` pixels
    horizontally and freely vertically. The cue is a bar of 8 x 2 pixels at the canvas centre
    (jittered by up to 2 pixels): horizontal = "the label is the left digit", vertical = "the right
    digit". Returns (float images n x 1 x H x W in [0, 1], int64 labels).
    """
    check_int("n", n, minimum=1)
    h, w = canvas
    if digit_size + margin + 6 > w // 2 or digit_size > h or h < 12:
        raise ValueError(
            f"digit_size {digit_size} + margin {margin} leaves no room for the cue in canvas {canvas}"
        )
    rng = np.random.default_rng(seed)
    small = F.interpolate(torch.from_numpy(images).float()[:, None] / 255.0, size=digit_size, mode="area")
    left = rng.integers(0, len(labels), n)
    right = rng.integers(0, len(labels), n)
    use_right = rng.integers(0, 2, n).astype(bool)
    out = torch.zeros(n, 1, h, w)
    xl = rng.integers(0, margin + 1, n)
    xr = rng.integers(w - digit_size - margin, w - digit_size + 1, n)
    yl = rng.integers(0, h - digit_size + 1, n)
    yr = rng.integers(0, h - digit_size + 1, n)
    cx = w // 2 - 4 + rng.integers(-2, 3, n)
    cy = h // 2 - 4 + rng.integers(-2, 3, n)
    for i in range(n):
        out[i, 0, yl[i] : yl[i] + digit_size, xl[i] : xl[i] + digit_size] = small[left[i], 0]
        out[i, 0, yr[i] : yr[i] + digit_size, xr[i] : xr[i] + digit_size] = small[right[i], 0]
        if use_right[i]:
            out[i, 0, cy[i] : cy[i] + 8, cx[i] + 3 : cx[i] + 5] = 1.0
        else:
            out[i, 0, cy[i] + 3 : cy[i] + 5, cx[i] : cx[i] + 8] = 1.0
    target = torch.from_numpy(np.where(use_right, labels[right], labels[left])).long()
    return out, target


def load_dataset(
    name: str,
    data_dir: str | os.PathLike[str],
    train: bool = True,
    n: int | None = None,
    seed: int = 0,
    download: bool = False,
) -> ImageData:
    """Load a data set by name (see :data:`DATASETS`) as normalised in-memory tensors.

    ``n`` limits the number of examples (for "mnist-cue" it is the number of canvases built,
    default 10000 train / 2000 test). ``download`` lets torchvision fetch CIFAR for users online.
    For "folder", ``data_dir`` is an ImageFolder root with ``train/`` and ``val/``.
    """
    check_choice("dataset", name, DATASETS)
    data_dir = pathlib.Path(data_dir)
    if name == "mnist":
        x, y = load_mnist(data_dir, train=train)
        images = torch.from_numpy(x).float()[:, None] / 255.0
        data = ImageData(_normalise(images, (0.1307,), (0.3081,)), torch.from_numpy(y), 10, name)
        return data.subset(n, seed)
    if name == "mnist-cue":
        x, y = load_mnist(data_dir, train=train)
        count = n if n is not None else (10000 if train else 2000)
        images, labels = make_cued_pairs(x, y, count, seed=seed + (0 if train else 10_000))
        return ImageData(_normalise(images), labels, 10, name)
    if name == "digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()
        order = np.random.default_rng(0).permutation(len(bunch.target))
        cut = int(0.8 * len(order))
        idx = order[:cut] if train else order[cut:]
        images = torch.from_numpy(bunch.images[idx]).float()[:, None] / 16.0
        data = ImageData(_normalise(images), torch.from_numpy(bunch.target[idx]).long(), 10, name)
        return data.subset(n, seed)
    if name in ("cifar10", "cifar100"):
        from torchvision import datasets

        cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
        try:
            ds = cls(root=str(data_dir), train=train, download=download)
        except RuntimeError as err:
            raise DatasetNotFoundError(
                f"{name} not found in {data_dir}; pass --download (needs internet) or point --data-dir at "
                f"a folder holding torchvision's cifar-10-batches-py / cifar-100-python ({err})"
            ) from err
        images = torch.from_numpy(np.asarray(ds.data)).float().permute(0, 3, 1, 2) / 255.0
        data = ImageData(
            _normalise(images, _CIFAR_MEAN, _CIFAR_STD),
            torch.as_tensor(ds.targets).long(),
            len(ds.classes),
            name,
        )
        return data.subset(n, seed)
    # ImageNet-style folder: <data_dir>/train/<class>/*.jpg, <data_dir>/val/<class>/*.jpg
    from torchvision import datasets, transforms

    root = require_path(
        data_dir, "train" if train else "val", "expected an ImageFolder root with train/ and val/"
    )
    ds = datasets.ImageFolder(
        str(root),
        transform=transforms.Compose(
            [transforms.Resize(64), transforms.CenterCrop(64), transforms.ToTensor()]
        ),
    )
    indices = (
        range(len(ds))
        if n is None
        else torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed))[:n].tolist()
    )
    images = torch.stack([ds[i][0] for i in indices])
    labels = torch.tensor([ds.targets[i] for i in indices]).long()
    return ImageData(
        _normalise(images, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)), labels, len(ds.classes), name
    )
