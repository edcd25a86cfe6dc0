"""Data sets as in-memory tensors with the train/validation/test split WOT needs.

Offline here: ``digits`` (scikit-learn's bundled 8x8 digits) and ``mnist`` (from the shared data
directory). Everything else comes from the shared image stack (``research_systems_core.vision``):
``cifar10``, ``cifar100``, ``svhn``, ``tiny-imagenet``, ``imagenet`` and ``folder:PATH``. Images are kept as uint8 or float tensors
in [0, 1]; augmentation (random crop with padding, horizontal flip) runs batch-wise on tensors.
"""

from __future__ import annotations

import functools
import logging
import pathlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from research_systems_core.data import load_mnist, resolve_data_dir
from research_systems_core.registry import Registry
from research_systems_core.validation import check_int, check_range

__all__ = [
    "DATASETS",
    "IMAGE_STACK",
    "DataBundle",
    "batches",
    "check_dataset_name",
    "flip_labels",
    "load_dataset",
    "load_image_stack",
]

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


IMAGE_STACK = ("cifar10", "cifar100", "svhn", "tiny-imagenet", "imagenet")
CROP_FLIP = ("cifar10", "cifar100", "tiny-imagenet", "imagenet")  # SVHN: no flips for digits


def check_dataset_name(name: str) -> str:
    """Raise ValueError unless ``name`` is ``digits``, ``mnist``, a shared image stack name or
    ``folder:PATH`` with ``PATH/train`` and ``PATH/val`` present (checked before any loading)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"dataset must be a non-empty name, got {name!r}")
    if name.startswith("folder:"):
        root = pathlib.Path(name[len("folder:") :]).expanduser()
        missing = [d for d in ("train", "val") if not (root / d).is_dir()]
        if missing:
            raise ValueError(
                f"dataset {name!r}: {root} needs train/ and val/ class folders, missing {', '.join(missing)}"
            )
        return name
    allowed = (*DATASETS.names(), *IMAGE_STACK)
    if name not in allowed:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(allowed)} or folder:PATH")
    return name


def _materialize(dataset, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """All images of a map-style dataset as uint8 NCHW (lossless for 8-bit sources) + labels."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
    xs, ys = [], []
    for x, y in loader:
        xs.append(x.mul(255).round_().clamp_(0, 255).to(torch.uint8))
        ys.append(torch.as_tensor(y, dtype=torch.long))
    if not xs:
        raise ValueError("the data set holds no images")
    return torch.cat(xs), torch.cat(ys)


def load_image_stack(
    spec: str, data_dir, *, val_size, train_size, test_size, label_noise, seed, download, image_size=None
) -> DataBundle:
    """A data set of the shared image stack (``research_systems_core.vision``): its train split
    gives our train/validation split, its val/test split our test split. Images are held in
    memory as uint8 (fine up to Tiny-ImageNet; not for ImageNet-1k) so that batches, the
    crop/flip augmentation and resumption stay exact; evaluation-size transforms are applied once."""
    from research_systems_core.vision import load_image_dataset

    ds = load_image_dataset(spec, data_dir=data_dir, image_size=image_size, augment=False, download=download)
    x_tr, y_tr = _materialize(ds.train)
    x_te, y_te = _materialize(ds.val)
    name = spec.split(":", 1)[0] if spec.startswith("folder:") else spec
    return _split(
        ds.name if hasattr(ds, "name") else name, x_tr, y_tr, x_te, y_te, ds.num_classes,
        val_size=val_size, train_size=train_size, test_size=test_size, label_noise=label_noise, seed=seed,
        mean=tuple(ds.mean) if ds.mean is not None else None, std=tuple(ds.std) if ds.std is not None else None,
        augment=name in CROP_FLIP or name == "folder",
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
    image_size: int | None = None,
) -> DataBundle:
    """Load ``digits``/``mnist`` or a shared image stack data set (``cifar10``, ``cifar100``,
    ``svhn``, ``tiny-imagenet``, ``imagenet``, ``folder:PATH``) with a seeded validation split.

    ``label_noise`` flips that fraction of the training labels (validation and test stay clean).
    """
    check_dataset_name(name)
    check_range("label_noise", label_noise, 0.0, 1.0)
    if name in DATASETS.names():
        factory = DATASETS.get(name)
    else:
        factory = functools.partial(load_image_stack, name, image_size=image_size)
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
