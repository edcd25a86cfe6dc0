"""Data for every command: the shared image stack plus the generated global-context tasks.

- Real data sets go through :func:`research_systems_core.vision.load_image_dataset`: ``mnist``,
  ``cifar10``/``cifar100`` (32 px, random crop with padding 4 + flip), ``svhn``, ``tiny-imagenet``,
  ``imagenet`` and ``folder:PATH`` (ImageNet-style folders streamed from disk at 224 px with
  RandomResizedCrop + flip for training, resize + centre crop for evaluation). Mixup/cutmix and
  label smoothing are applied per batch in the training loop (timm's ``Mixup``).
- Generated tasks (kept in memory, they are small): ``mnist-cue`` (a cue in the middle of a
  32 x 64 canvas says which of two far-apart MNIST digits is the label), ``mnist-far`` (the same on
  a 32 x 96 canvas: the cue and the digits are ~40 px apart) and ``digits`` (scikit-learn's 8x8
  digits, for fast tests).

Every data set yields images in [0, 1] (the shared stack's convention) with its ``mean``/``std``;
vision-kd normalises inside the training/evaluation step (:class:`Normalize`), so student and
teacher stay plain timm models whose feature taps (``forward_intermediates``) keep working.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Subset

from research_systems_core.data import load_mnist, resolve_data_dir
from research_systems_core.validation import check_int
from research_systems_core.vision import ImageDataset, load_image_dataset

__all__ = ["GENERATED", "IndexedDataset", "TensorImages", "describe_datasets", "load_data", "make_cued_pairs"]

GENERATED = {"mnist-cue": (32, 64), "mnist-far": (32, 96), "digits": (8, 8)}
DATASET_HELP = (
    "mnist-cue / mnist-far (generated global-context tasks), digits, mnist, cifar10, cifar100, svhn, "
    "tiny-imagenet, imagenet or folder:PATH (ImageNet-style train/ and val/)"
)


def describe_datasets() -> str:
    return DATASET_HELP


class TensorImages(Dataset):
    """In-memory images (N x C x H x W in [0, 1]) and int64 labels as a torch Dataset."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        if images.ndim != 4 or len(images) != len(labels):
            raise ValueError(
                f"need N x C x H x W images and N labels, got {tuple(images.shape)} / {len(labels)}"
            )
        self.images, self.labels = images, labels.long()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i], self.labels[i]


class IndexedDataset(Dataset):
    """Yields ``(image, label, index)``: the key under which cached teacher outputs are stored."""

    def __init__(self, base: Dataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        x, y = self.base[i]
        return x, torch.as_tensor(y).long(), i


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
    digit". A network whose features stay local and are then averaged sees f(left) + f(cue) +
    f(right): it finds both candidate digits but cannot tie the cue to one of them. Returns (float
    images n x 1 x H x W in [0, 1], int64 labels).
    """
    check_int("n", n, minimum=1)
    h, w = canvas
    if digit_size + margin + 6 > w // 2 or digit_size > h or h < 12:
        raise ValueError(
            f"digit_size {digit_size} + margin {margin} leaves no room for the cue in canvas {canvas}"
        )
    rng = np.random.default_rng(seed)
    small = F.interpolate(torch.from_numpy(images).float()[:, None] / 255.0, size=digit_size, mode="area")
    left, right = rng.integers(0, len(labels), n), rng.integers(0, len(labels), n)
    use_right = rng.integers(0, 2, n).astype(bool)
    out = torch.zeros(n, 1, h, w)
    xl = rng.integers(0, margin + 1, n)
    xr = rng.integers(w - digit_size - margin, w - digit_size + 1, n)
    yl, yr = rng.integers(0, h - digit_size + 1, n), rng.integers(0, h - digit_size + 1, n)
    cx, cy = w // 2 - 4 + rng.integers(-2, 3, n), h // 2 - 4 + rng.integers(-2, 3, n)
    for i in range(n):
        out[i, 0, yl[i] : yl[i] + digit_size, xl[i] : xl[i] + digit_size] = small[left[i], 0]
        out[i, 0, yr[i] : yr[i] + digit_size, xr[i] : xr[i] + digit_size] = small[right[i], 0]
        if use_right[i]:
            out[i, 0, cy[i] : cy[i] + 8, cx[i] + 3 : cx[i] + 5] = 1.0
        else:
            out[i, 0, cy[i] + 3 : cy[i] + 5, cx[i] : cx[i] + 8] = 1.0
    target = torch.from_numpy(np.where(use_right, labels[right], labels[left])).long()
    return out, target


def _generated(name: str, root: pathlib.Path, n_train: int | None, n_test: int | None) -> ImageDataset:
    if name == "digits":
        from sklearn.datasets import load_digits

        bunch = load_digits()
        order = np.random.default_rng(0).permutation(len(bunch.target))
        cut = int(0.8 * len(order))
        x = torch.from_numpy(bunch.images[order]).float()[:, None] / 16.0
        y = torch.from_numpy(bunch.target[order]).long()
        train, val = TensorImages(x[:cut], y[:cut]), TensorImages(x[cut:], y[cut:])
        return ImageDataset(train, val, 10, 1, 8, (0.5,), (0.5,), name, tuple("0123456789"))
    canvas = GENERATED[name]
    splits = []
    for train_split, count, offset in ((True, n_train or 10000, 0), (False, n_test or 2000, 10_000)):
        xs, ys = load_mnist(root, train=train_split)
        splits.append(TensorImages(*make_cued_pairs(xs, ys, count, seed=offset, canvas=canvas)))
    return ImageDataset(splits[0], splits[1], 10, 1, canvas[0], (0.5,), (0.5,), name, tuple("0123456789"))


def _subset(ds: Dataset, n: int | None, seed: int) -> Dataset:
    size = len(ds)  # type: ignore[arg-type]
    if n is None or n >= size:
        return ds
    idx = torch.randperm(size, generator=torch.Generator().manual_seed(seed))[:n].tolist()
    return Subset(ds, idx)


def load_data(
    spec: str,
    data_dir: str | os.PathLike[str] | None = None,
    *,
    image_size: int | None = None,
    augment: bool = True,
    download: bool = False,
    n_train: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
) -> ImageDataset:
    """A data set by spec (see the module docstring) with optional seeded train/test subsets.

    For the generated tasks ``n_train``/``n_test`` are the number of canvases built (default
    10000/2000); for the others they take a random subset (all when None).
    """
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"dataset must be a non-empty string ({DATASET_HELP}), got {spec!r}")
    for name, n in (("n_train", n_train), ("n_test", n_test)):
        if n is not None:
            check_int(name, n, minimum=1)
    if spec == "digits":
        ds = _generated(spec, pathlib.Path("."), None, None)
        return dataclasses.replace(
            ds, train=_subset(ds.train, n_train, seed), val=_subset(ds.val, n_test, seed + 1)
        )
    if spec in GENERATED:
        return _generated(spec, resolve_data_dir(data_dir), n_train, n_test)
    ds = load_image_dataset(
        spec, data_dir=data_dir, image_size=image_size, augment=augment, download=download
    )
    if n_train is None and n_test is None:
        return ds
    return ImageDataset(_subset(ds.train, n_train, seed), _subset(ds.val, n_test, seed + 1), ds.num_classes,
                        ds.in_chans, ds.image_size, ds.mean, ds.std, ds.name, ds.classes)  # fmt: skip


def input_shape(data: ImageDataset) -> tuple[int, int, int]:
    """(C, H, W) of the data set's images (read from the first validation image)."""
    x = data.val[0][0]
    return int(x.shape[0]), int(x.shape[1]), int(x.shape[2])
