"""Image data sets by name, streamed from the data directory, yielding ``(float CHW in [0, 1], int)``.

Specs and where they live (``DATA_DIR`` = ``--data-dir`` / ``$RESEARCH_DATA_DIR``):

- ``mnist``: ``DATA_DIR/MNIST/raw/`` (torchvision's layout, the four idx files)
- ``cifar10`` / ``cifar100``: ``DATA_DIR/cifar-10-batches-py/`` / ``DATA_DIR/cifar-100-python/``
- ``svhn``: ``DATA_DIR/SVHN/{train,test}_32x32.mat`` (reading needs scipy)
- ``tiny-imagenet``: ``DATA_DIR/tiny-imagenet-200/`` as unzipped (``train/<wnid>/images/*.JPEG``,
  ``val/images`` + ``val/val_annotations.txt``) or after the usual reorganisation (``val/<wnid>/``)
- ``imagenet``: ``DATA_DIR/imagenet/{train,val}/<wnid>/*.JPEG`` (ImageFolder; val sorted into classes)
- ``folder:PATH``: any ImageFolder ``PATH/{train,val}/<class>/*`` (classes taken from ``train/``)

``val`` is the official test split for MNIST, CIFAR and SVHN. Only MNIST, CIFAR, SVHN and
Tiny-ImageNet can be downloaded (``download=True``); without it a missing set is a
:class:`~research_systems_core.data.DatasetNotFoundError` naming the path and ``--download``.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import os
import pathlib
from collections.abc import Callable
from typing import Any

from torch.utils.data import Dataset
from torchvision import datasets as tvd
from torchvision.datasets.folder import IMG_EXTENSIONS, default_loader

from research_systems_core.data import ENV_VAR, DatasetNotFoundError, resolve_data_dir
from research_systems_core.validation import UnknownNameError, check_int
from research_systems_core.vision import transforms as T

__all__ = ["DATASET_SPECS", "ImageDataset", "load_image_dataset", "parse_dataset_spec"]

DATASET_SPECS = ("mnist", "cifar10", "cifar100", "svhn", "tiny-imagenet", "imagenet", "folder:PATH")
_NAMED = DATASET_SPECS[:-1]
_TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"


@dataclasses.dataclass(frozen=True)
class ImageDataset:
    """A train and a val split plus what a model needs to know about them."""

    train: Dataset
    val: Dataset
    num_classes: int
    in_chans: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    name: str
    classes: tuple[str, ...] = ()


def parse_dataset_spec(spec: str) -> tuple[str, pathlib.Path | None]:
    """``"cifar10"`` -> ``("cifar10", None)``; ``"folder:PATH"`` -> ``("folder", Path(PATH))``."""
    if not isinstance(spec, str):
        raise TypeError(f"dataset spec must be a string, got {spec!r} ({type(spec).__name__})")
    if spec.startswith("folder:"):
        path = spec[len("folder:") :].strip()
        if not path:
            raise ValueError("dataset spec 'folder:' needs a path: folder:PATH with PATH/train and PATH/val")
        return "folder", pathlib.Path(path).expanduser()
    name = spec.strip().lower().replace("_", "-")
    name = {"tinyimagenet": "tiny-imagenet", "cifar-10": "cifar10", "cifar-100": "cifar100"}.get(name, name)
    if name not in _NAMED:
        close = difflib.get_close_matches(name, DATASET_SPECS, n=3, cutoff=0.5)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise UnknownNameError(f"unknown dataset {spec!r}{hint}; choose one of: {', '.join(DATASET_SPECS)}")
    return name, None


def _check_options(image_size: Any, augment: Any, download: Any) -> int | None:
    if image_size is not None:
        image_size = check_int("image_size", image_size, minimum=8, maximum=4096)
    for name, value in (("augment", augment), ("download", download)):
        if not isinstance(value, bool):
            raise TypeError(f"{name} must be True or False, got {value!r}")
    return image_size


def _missing(
    what: str, path: pathlib.Path, data_dir: pathlib.Path, downloadable: bool
) -> DatasetNotFoundError:
    how = (
        "pass --download (download=True) to fetch it from its original source"
        if downloadable
        else "it cannot be downloaded automatically; put the files there"
    )
    return DatasetNotFoundError(
        f"{what} not found at {path} (data directory {data_dir}); {how}, "
        f"or point --data-dir / ${ENV_VAR} at a directory that holds it"
    )


def load_image_dataset(
    spec: str,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    image_size: int | None = None,
    augment: bool = True,
    download: bool = False,
) -> ImageDataset:
    """Load a data set by spec (see the module docstring); training transforms augment when ``augment``.

    ``image_size`` defaults to the native size (28 MNIST, 32 CIFAR/SVHN, 64 Tiny-ImageNet) and to 224
    for ``imagenet`` and ``folder:`` (small generated folders can pass ``image_size=32``).
    """
    kind, path = parse_dataset_spec(spec)
    image_size = _check_options(image_size, augment, download)
    if kind == "folder":
        assert path is not None
        return _load_folder(path, image_size or 224, augment)
    root = resolve_data_dir(data_dir)
    return _LOADERS[kind](root, image_size, augment, download)


# --------------------------------------------------------------------------- torchvision sets
def _small(
    native: int, image_size: int | None, augment: bool, flip: bool, padding: int
) -> tuple[Any, Any, int]:
    size = image_size or native
    train = T.small_image_transforms(native, size, train=True, augment=augment, flip=flip, padding=padding)
    val = T.small_image_transforms(native, size, train=False, augment=augment, flip=flip, padding=padding)
    return train, val, size


def _load_mnist(root: pathlib.Path, image_size: int | None, augment: bool, download: bool) -> ImageDataset:
    raw = root / "MNIST" / "raw"
    files = [f"{p}-{k}" for p in ("train", "t10k") for k in ("images-idx3-ubyte", "labels-idx1-ubyte")]
    if not download and not all((raw / f).is_file() for f in files):
        raise _missing("MNIST (" + ", ".join(files) + ")", raw, root, downloadable=True)
    # Handwritten digits: no flip; the standard recipe uses no augmentation at 28 px.
    train_tf, val_tf, size = _small(28, image_size, augment, flip=False, padding=0)
    train = tvd.MNIST(root=root, train=True, transform=train_tf, download=download)
    val = tvd.MNIST(root=root, train=False, transform=val_tf, download=download)
    classes = tuple(str(c) for c in range(10))
    return ImageDataset(train, val, 10, 1, size, T.MNIST_MEAN, T.MNIST_STD, "mnist", classes)


def _load_cifar(
    root: pathlib.Path, image_size: int | None, augment: bool, download: bool, *, hundred: bool
) -> ImageDataset:
    cls = tvd.CIFAR100 if hundred else tvd.CIFAR10
    name = "cifar100" if hundred else "cifar10"
    folder = root / cls.base_folder
    if not download and not folder.is_dir():
        raise _missing(name.upper(), folder, root, downloadable=True)
    train_tf, val_tf, size = _small(32, image_size, augment, flip=True, padding=4)
    train = cls(root=root, train=True, transform=train_tf, download=download)
    val = cls(root=root, train=False, transform=val_tf, download=download)
    mean, std = (T.CIFAR100_MEAN, T.CIFAR100_STD) if hundred else (T.CIFAR10_MEAN, T.CIFAR10_STD)
    classes = tuple(train.classes)
    return ImageDataset(train, val, len(classes), 3, size, mean, std, name, classes)


def _load_svhn(root: pathlib.Path, image_size: int | None, augment: bool, download: bool) -> ImageDataset:
    folder = root / "SVHN"
    files = ("train_32x32.mat", "test_32x32.mat")
    if not download and not all((folder / f).is_file() for f in files):
        raise _missing("SVHN (" + ", ".join(files) + ")", folder, root, downloadable=True)
    if importlib.util.find_spec("scipy") is None:
        raise ImportError("reading SVHN's .mat files needs scipy: pip install scipy")
    # Digits: pad-crop without flip.
    train_tf, val_tf, size = _small(32, image_size, augment, flip=False, padding=4)
    train = tvd.SVHN(root=folder, split="train", transform=train_tf, download=download)
    val = tvd.SVHN(root=folder, split="test", transform=val_tf, download=download)
    classes = tuple(str(c) for c in range(10))
    return ImageDataset(train, val, 10, 3, size, T.SVHN_MEAN, T.SVHN_STD, "svhn", classes)


# --------------------------------------------------------------------------- folders
def _class_dirs(split: pathlib.Path) -> list[str]:
    return sorted(e.name for e in os.scandir(split) if e.is_dir() and not e.name.startswith("."))


class _FixedClassFolder(tvd.ImageFolder):
    """An ImageFolder whose class -> index map is given (the train split's), not re-derived."""

    def __init__(self, root: pathlib.Path, classes: list[str], transform: Callable[..., Any]) -> None:
        self._fixed_classes = classes
        super().__init__(str(root), transform=transform, allow_empty=True)

    def find_classes(self, directory: str) -> tuple[list[str], dict[str, int]]:
        return list(self._fixed_classes), {c: i for i, c in enumerate(self._fixed_classes)}


class _LabelledFiles(Dataset):
    """Images listed with their labels (Tiny-ImageNet's val/images + val_annotations.txt)."""

    def __init__(self, samples: list[tuple[str, int]], transform: Callable[..., Any]) -> None:
        self.samples = samples
        self.targets = [label for _, label in samples]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, label = self.samples[index]
        return self.transform(default_loader(path)), label


def _image_folder_splits(
    base: pathlib.Path, what: str, train_tf: Any, val_tf: Any
) -> tuple[tvd.ImageFolder, Dataset, list[str]]:
    """train/ as an ImageFolder; val/ with the same class indices (classes may be a subset)."""
    train_dir, val_dir = base / "train", base / "val"
    for split in (train_dir, val_dir):
        if not split.is_dir():
            raise DatasetNotFoundError(
                f"{what}: {split} is not a directory; expected {base}/train and {base}/val"
            )
    classes = _class_dirs(train_dir)
    if len(classes) < 2:
        raise ValueError(f"{what}: {train_dir} must hold one sub-folder per class (>= 2), found {classes}")
    train = tvd.ImageFolder(str(train_dir), transform=train_tf)
    annotations = val_dir / "val_annotations.txt"
    val_classes = _class_dirs(val_dir)
    if annotations.is_file() and val_classes == ["images"]:
        val: Dataset = _annotated_val(val_dir, annotations, train.class_to_idx, val_tf)
    else:
        unknown = sorted(set(val_classes) - set(classes))
        if unknown:
            raise ValueError(f"{what}: {val_dir} has classes missing from train/: {unknown[:5]}")
        val = _FixedClassFolder(val_dir, classes, val_tf)
    if len(val) == 0:
        raise ValueError(f"{what}: no images ({', '.join(IMG_EXTENSIONS)}) found under {val_dir}")
    return train, val, classes


def _annotated_val(
    val_dir: pathlib.Path, annotations: pathlib.Path, class_to_idx: dict[str, int], tf: Any
) -> Dataset:
    samples = []
    for line_no, line in enumerate(annotations.read_text().splitlines(), 1):
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in class_to_idx:
            raise ValueError(
                f"{annotations}:{line_no}: expected 'FILE<TAB>WNID...' with a train class, got {line!r}"
            )
        samples.append((str(val_dir / "images" / fields[0]), class_to_idx[fields[1]]))
    return _LabelledFiles(samples, tf)


def _load_folder(path: pathlib.Path, image_size: int, augment: bool) -> ImageDataset:
    if not path.is_dir():
        raise DatasetNotFoundError(
            f"folder:{path}: {path} is not a directory (expected {path}/train and {path}/val)"
        )
    train_tf = T.imagenet_transforms(image_size, train=True, augment=augment)
    val_tf = T.imagenet_transforms(image_size, train=False, augment=augment)
    train, val, classes = _image_folder_splits(path, f"folder:{path}", train_tf, val_tf)
    return ImageDataset(
        train,
        val,
        len(classes),
        3,
        image_size,
        T.IMAGENET_MEAN,
        T.IMAGENET_STD,
        f"folder:{path}",
        tuple(classes),
    )


def _load_imagenet(root: pathlib.Path, image_size: int | None, augment: bool, download: bool) -> ImageDataset:
    base = root / "imagenet"
    if not base.is_dir():
        raise _missing(
            "ImageNet (imagenet/train/<wnid>/ and imagenet/val/<wnid>/)", base, root, downloadable=False
        )
    size = image_size or 224
    train_tf = T.imagenet_transforms(size, train=True, augment=augment)
    val_tf = T.imagenet_transforms(size, train=False, augment=augment)
    train, val, classes = _image_folder_splits(base, "imagenet", train_tf, val_tf)
    return ImageDataset(
        train, val, len(classes), 3, size, T.IMAGENET_MEAN, T.IMAGENET_STD, "imagenet", tuple(classes)
    )


def _load_tiny_imagenet(
    root: pathlib.Path, image_size: int | None, augment: bool, download: bool
) -> ImageDataset:
    base = root / "tiny-imagenet-200"
    if not base.is_dir():
        if not download:
            raise _missing("Tiny-ImageNet (tiny-imagenet-200/)", base, root, downloadable=True)
        from torchvision.datasets.utils import download_and_extract_archive

        download_and_extract_archive(_TINY_IMAGENET_URL, download_root=str(root))
    train_tf, val_tf, size = _small(64, image_size, augment, flip=True, padding=4)
    train, val, classes = _image_folder_splits(base, "tiny-imagenet", train_tf, val_tf)
    return ImageDataset(
        train,
        val,
        len(classes),
        3,
        size,
        T.TINY_IMAGENET_MEAN,
        T.TINY_IMAGENET_STD,
        "tiny-imagenet",
        tuple(classes),
    )


_LOADERS: dict[str, Callable[[pathlib.Path, int | None, bool, bool], ImageDataset]] = {
    "mnist": _load_mnist,
    "cifar10": lambda r, s, a, d: _load_cifar(r, s, a, d, hundred=False),
    "cifar100": lambda r, s, a, d: _load_cifar(r, s, a, d, hundred=True),
    "svhn": _load_svhn,
    "tiny-imagenet": _load_tiny_imagenet,
    "imagenet": _load_imagenet,
}
