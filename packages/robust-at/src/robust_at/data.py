"""Data sets as in-memory tensors with the train/validation/test split WOT needs.

Offline here: ``digits`` (scikit-learn's bundled 8x8 digits) and ``mnist`` (from the shared data
directory). For users who can download: ``cifar10``, ``cifar100``, ``svhn`` (torchvision) and
``tiny-imagenet`` (the ``tiny-imagenet-200`` folder). Images are kept as uint8 or float tensors
in [0, 1]; augmentation (random crop with padding, horizontal flip) runs batch-wise on tensors.
"""

from __future__ import annotations

import logging
import pathlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from research_systems_core.data import DatasetNotFoundError, load_mnist, require_path, resolve_data_dir
from research_systems_core.registry import Registry
from research_systems_core.validation import check_int, check_range

__all__ = ["DATASETS", "DataBundle", "batches", "flip_labels", "load_dataset"]

log = logging.getLogger(__name__)
DATASETS = Registry("dataset")

CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)
CIFAR100_MEAN, CIFAR100_STD = (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)


@dataclass
class DataBundle:
    """Train/validation/test tensors (images NCHW uint8 or float in [0, 1], int64 labels)."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    augment: bool = False  # random crop (pad 4) + horizontal flip on training batches
    noisy_labels: int = 0  # how many training labels were flipped

    @property
    def in_channels(self) -> int:
        return int(self.x_train.shape[1])

    def summary(self) -> dict:
        return {
            "dataset": self.name,
            "train": len(self.y_train),
            "val": len(self.y_val),
            "test": len(self.y_test),
            "classes": self.num_classes,
            "image_shape": list(self.x_train.shape[1:]),
            "noisy_labels": self.noisy_labels,
        }


def to_float(x: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float in [0, 1]; float images unchanged (no copy)."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x


def augment_batch(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop after zero padding by ``pad`` and random horizontal flip (a new tensor)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    rows = (dy.view(n, 1) + torch.arange(h).view(1, h)).to(x.device)
    cols = (dx.view(n, 1) + torch.arange(w).view(1, w)).to(x.device)
    cols = torch.where(flip.view(n, 1).to(x.device), cols.flip(1), cols)
    idx_n = torch.arange(n, device=x.device).view(n, 1, 1)
    out = padded.permute(0, 2, 3, 1)[idx_n, rows.view(n, h, 1), cols.view(n, 1, w)]
    return out.permute(0, 3, 1, 2).contiguous()


def batches(
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    augment: bool = False,
    device: torch.device | str = "cpu",
    rank: int = 0,
    world_size: int = 1,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Float batches on ``device``; shuffled with ``generator``; sharded by rank when distributed."""
    check_int("batch_size", batch_size, minimum=1)
    n = len(y)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    order = order[rank::world_size]
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        xb = to_float(x[idx])
        if augment:
            xb = augment_batch(xb, generator if generator is not None else torch.Generator().manual_seed(0))
        yield xb.to(device), y[idx].to(device)


def flip_labels(
    y: torch.Tensor, fraction: float, num_classes: int, generator: torch.Generator
) -> tuple[torch.Tensor, int]:
    """Symmetric label noise: a ``fraction`` of the labels moved to a different random class
    (a new tensor; the input is not changed). Returns ``(labels, number flipped)``."""
    check_range("label_noise", fraction, 0.0, 1.0)
    y = y.clone()
    n_flip = round(fraction * len(y))
    if n_flip == 0:
        return y, 0
    idx = torch.randperm(len(y), generator=generator)[:n_flip]
    shift = torch.randint(1, num_classes, (n_flip,), generator=generator)
    y[idx] = (y[idx] + shift) % num_classes
    return y, n_flip


def _split(
    name: str,
    x_pool: torch.Tensor,
    y_pool: torch.Tensor,
    x_test: torch.Tensor,
    y_test: torch.Tensor,
    num_classes: int,
    *,
    val_size: int,
    train_size: int | None,
    test_size: int | None,
    label_noise: float,
    seed: int,
    **extra,
) -> DataBundle:
    """Carve the validation split out of the training pool (seeded), subsample, add label noise."""
    check_int("val_size", val_size, minimum=0)
    gen = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(y_pool), generator=gen)
    if val_size >= len(order):
        raise ValueError(
            f"val_size must be smaller than the {len(order)} training images of {name}, got {val_size}"
        )
    val_idx, train_idx = order[:val_size], order[val_size:]
    if train_size is not None:
        check_int("train_size", train_size, minimum=1)
        if train_size > len(train_idx):
            raise ValueError(
                f"train_size must be <= {len(train_idx)} for {name} with val_size={val_size}, got {train_size}"
            )
        train_idx = train_idx[:train_size]
    if test_size is not None:
        check_int("test_size", test_size, minimum=1)
        test_idx = torch.randperm(len(y_test), generator=gen)[: min(test_size, len(y_test))]
        x_test, y_test = x_test[test_idx], y_test[test_idx]
    y_train, flipped = flip_labels(y_pool[train_idx], label_noise, num_classes, gen)
    return DataBundle(
        name,
        x_pool[train_idx],
        y_train,
        x_pool[val_idx],
        y_pool[val_idx],
        x_test,
        y_test,
        num_classes,
        noisy_labels=flipped,
        **extra,
    )


@DATASETS.register("digits")
def _digits(
    data_dir: pathlib.Path, *, val_size, train_size, test_size, label_noise, seed, download
) -> DataBundle:
    """scikit-learn's 1797 8x8 digits (bundled, offline). No official test split: the images
    are shuffled with a fixed seed (0) and the last 597 form the test set."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(digits.target, dtype=torch.long)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    pool, test = order[:1200], order[1200:]
    return _split(
        "digits", x[pool], y[pool], x[test], y[test], 10,
        val_size=val_size, train_size=train_size, test_size=test_size, label_noise=label_noise, seed=seed,
    )  # fmt: skip


@DATASETS.register("mnist")
def _mnist(
    data_dir: pathlib.Path, *, val_size, train_size, test_size, label_noise, seed, download
) -> DataBundle:
    """MNIST from ``<data_dir>/MNIST/raw`` (torchvision's layout)."""
    x_tr, y_tr = load_mnist(data_dir, train=True)
    x_te, y_te = load_mnist(data_dir, train=False)
    to_t = lambda a: torch.from_numpy(np.ascontiguousarray(a)).unsqueeze(1)  # noqa: E731
    return _split(
        "mnist", to_t(x_tr), torch.from_numpy(y_tr).long(), to_t(x_te), torch.from_numpy(y_te).long(), 10,
        val_size=val_size, train_size=train_size, test_size=test_size, label_noise=label_noise, seed=seed,
    )  # fmt: skip


def _torchvision_pair(cls_name: str, root: pathlib.Path, download: bool, split_kw: tuple) -> tuple:
    import torchvision.datasets as tvd

    cls = getattr(tvd, cls_name)
    try:
        train = cls(root=str(root), download=download, **split_kw[0])
        test = cls(root=str(root), download=download, **split_kw[1])
    except RuntimeError as exc:
        raise DatasetNotFoundError(
            f"{cls_name} not found under {root} ({exc}); pass --download to fetch it with torchvision, "
            "or point --data-dir / $RESEARCH_DATA_DIR at a folder that holds it"
        ) from None
    return train, test


def _cifar(name: str, cls_name: str, folder: str, classes: int, mean, std):
    def factory(data_dir, *, val_size, train_size, test_size, label_noise, seed, download) -> DataBundle:
        root = pathlib.Path(data_dir) / folder
        train, test = _torchvision_pair(cls_name, root, download, ({"train": True}, {"train": False}))
        to_x = lambda d: torch.from_numpy(np.ascontiguousarray(d.data)).permute(0, 3, 1, 2).contiguous()  # noqa: E731
        return _split(
            name, to_x(train), torch.tensor(train.targets), to_x(test), torch.tensor(test.targets), classes,
            val_size=val_size, train_size=train_size, test_size=test_size, label_noise=label_noise, seed=seed,
            mean=mean, std=std, augment=True,
        )  # fmt: skip

    factory.__doc__ = f"{cls_name} via torchvision under <data_dir>/{folder} (download with --download)."
    return factory


DATASETS.register("cifar10")(_cifar("cifar10", "CIFAR10", "cifar10", 10, CIFAR10_MEAN, CIFAR10_STD))
DATASETS.register("cifar100")(_cifar("cifar100", "CIFAR100", "cifar100", 100, CIFAR100_MEAN, CIFAR100_STD))


@DATASETS.register("svhn")
def _svhn(data_dir, *, val_size, train_size, test_size, label_noise, seed, download) -> DataBundle:
    """SVHN (train + test splits) via torchvision under ``<data_dir>/svhn``; no flip augmentation
    is customary for digits, so no augmentation."""
    train, test = _torchvision_pair(
        "SVHN", pathlib.Path(data_dir) / "svhn", download, ({"split": "train"}, {"split": "test"})
    )
    return _split(
        "svhn", torch.from_numpy(train.data), torch.from_numpy(train.labels).long(),
        torch.from_numpy(test.data), torch.from_numpy(test.labels).long(), 10,
        val_size=val_size, train_size=train_size, test_size=test_size, label_noise=label_noise, seed=seed,
    )  # fmt: skip


def _read_images(paths: list[pathlib.Path]) -> torch.Tensor:
    from PIL import Image

    arrays = [np.asarray(Image.open(p).convert("RGB"), dtype=np.uint8) for p in paths]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


@DATASETS.register("tiny-imagenet")
def _tiny_imagenet(data_dir, *, val_size, train_size, test_size, label_noise, seed, download) -> DataBundle:
    """Tiny-ImageNet-200 from ``<data_dir>/tiny-imagenet-200`` (download
    http://cs231n.stanford.edu/tiny-imagenet-200.zip and unzip it there); its labelled ``val``
    folder serves as the test set."""
    hint = "Download http://cs231n.stanford.edu/tiny-imagenet-200.zip and unzip it into the data directory"
    root = require_path(data_dir, "tiny-imagenet-200", hint)
    wnids = (root / "wnids.txt").read_text().split()
    label_of = {w: i for i, w in enumerate(wnids)}
    train_paths, train_labels = [], []
    for w in wnids:
        for p in sorted((root / "train" / w / "images").glob("*.JPEG")):
            train_paths.append(p)
            train_labels.append(label_of[w])
    test_paths, test_labels = [], []
    for line in (root / "val" / "val_annotations.txt").read_text().splitlines():
        parts = line.split("\t")
        test_paths.append(root / "val" / "images" / parts[0])
        test_labels.append(label_of[parts[1]])
    return _split(
        "tiny-imagenet", _read_images(train_paths), torch.tensor(train_labels), _read_images(test_paths),
        torch.tensor(test_labels), 200,
        val_size=val_size, train_size=train_size, test_size=test_size, label_noise=label_noise, seed=seed,
        mean=(0.4802, 0.4481, 0.3975), std=(0.2302, 0.2265, 0.2262), augment=True,
    )  # fmt: skip


def load_dataset(
    name: str,
    data_dir: str | pathlib.Path | None = None,
    *,
    val_size: int = 1000,
    train_size: int | None = None,
    test_size: int | None = None,
    label_noise: float = 0.0,
    seed: int = 0,
    download: bool = False,
) -> DataBundle:
    """Load a registered data set (``DATASETS.names()``) with a seeded validation split.

    ``label_noise`` flips that fraction of the training labels (validation and test stay clean).
    """
    factory = DATASETS.get(name)
    check_range("label_noise", label_noise, 0.0, 1.0)
    bundle = factory(
        resolve_data_dir(data_dir),
        val_size=val_size,
        train_size=train_size,
        test_size=test_size,
        label_noise=label_noise,
        seed=seed,
        download=download,
    )
    log.info("data: %s", bundle.summary())
    return bundle
