"""Image data sets, recipes, generated folders and loaders (offline, tiny)."""

from __future__ import annotations

import os
import pathlib
import shutil

import numpy as np
import pytest
import torch
import torch.distributed as dist
from PIL import Image
from torch.utils.data import DistributedSampler, TensorDataset
from torchvision.datasets.folder import default_loader
from torchvision.transforms import v2

from research_systems_core.data import DatasetNotFoundError
from research_systems_core.vision import (
    IMAGENET_MEAN,
    MNIST_MEAN,
    MNIST_STD,
    ShardedEvalSampler,
    default_workers,
    load_image_dataset,
    make_image_folder,
    make_loader,
    parse_dataset_spec,
    set_loader_epoch,
    small_image_transforms,
)

# the offline data folder: $RESEARCH_DATA_DIR, else ../shared/data beside the repository
DATA_DIR = os.environ.get(
    "RESEARCH_DATA_DIR", str(pathlib.Path(__file__).resolve().parents[4] / "shared" / "data")
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    return make_image_folder(tmp_path_factory.mktemp("gen"), classes=3, per_class=4, size=32, seed=0)


# --------------------------------------------------------------------------- MNIST
@pytest.mark.skipif(
    not (pathlib.Path(DATA_DIR) / "MNIST" / "raw").is_dir(),
    reason=f"MNIST/raw not in the data directory {DATA_DIR} (set RESEARCH_DATA_DIR)",
)
def test_mnist_from_the_data_directory() -> None:
    data = load_image_dataset("mnist", data_dir=DATA_DIR)
    assert (len(data.train), len(data.val), data.num_classes, data.in_chans, data.image_size) == (
        60000,
        10000,
        10,
        1,
        28,
    )
    image, label = data.train[0]
    assert image.shape == (1, 28, 28) and image.dtype == torch.float32
    assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
    assert isinstance(label, int) and label == 5  # the first training digit of MNIST is a 5
    # the published statistics are the training set's
    pixels = data.train.data.double() / 255
    assert float(pixels.mean()) == pytest.approx(MNIST_MEAN[0], abs=1e-4)
    assert float(pixels.std()) == pytest.approx(MNIST_STD[0], abs=1e-4)
    # the same pixels as the raw idx file: ToTensor scaling only, no augmentation for digits
    assert torch.allclose(image[0], data.train.data[0].float() / 255, atol=1e-6)
    resized = load_image_dataset("mnist", data_dir=DATA_DIR, image_size=32)
    assert resized.train[0][0].shape == (1, 32, 32) and resized.image_size == 32


# --------------------------------------------------------------------------- specs and offline errors
def test_unknown_spec_lists_allowed_and_close_matches() -> None:
    with pytest.raises(ValueError, match=r"cifar10, cifar100.*choose one of: mnist, cifar10"):
        load_image_dataset("cifar")
    with pytest.raises(TypeError, match="spec"):
        load_image_dataset(10)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="folder:PATH"):
        load_image_dataset("folder:")
    assert parse_dataset_spec("CIFAR_10") == ("cifar10", None)
    assert parse_dataset_spec("Tiny_ImageNet") == ("tiny-imagenet", None)
    assert parse_dataset_spec("folder:/x/y") == ("folder", pathlib.Path("/x/y"))


@pytest.mark.parametrize(
    ("spec", "where", "downloadable"),
    [
        ("mnist", "MNIST/raw", True),
        ("cifar10", "cifar-10-batches-py", True),
        ("cifar100", "cifar-100-python", True),
        ("svhn", "SVHN", True),
        ("tiny-imagenet", "tiny-imagenet-200", True),
        ("imagenet", "imagenet", False),
    ],
)
def test_missing_data_set_names_path_data_dir_and_download(
    tmp_path: pathlib.Path, spec: str, where: str, downloadable: bool
) -> None:
    with pytest.raises(DatasetNotFoundError) as info:
        load_image_dataset(spec, data_dir=tmp_path)
    message = str(info.value)
    assert str(tmp_path / where) in message and f"data directory {tmp_path}" in message
    assert ("--download" in message) == downloadable
    assert not any(tmp_path.iterdir()), "nothing may be written without download=True"


def test_options_are_checked_before_loading(tmp_path: pathlib.Path) -> None:
    with pytest.raises(ValueError, match="image_size"):
        load_image_dataset("cifar10", data_dir=tmp_path, image_size=0)
    with pytest.raises(TypeError, match="image_size"):
        load_image_dataset("cifar10", data_dir=tmp_path, image_size=32.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="download"):
        load_image_dataset("cifar10", data_dir=tmp_path, download="yes")  # type: ignore[arg-type]
    with pytest.raises(DatasetNotFoundError, match="not a directory"):
        load_image_dataset(f"folder:{tmp_path / 'absent'}")


# --------------------------------------------------------------------------- generated folders
def test_make_image_folder_layout_is_deterministic_and_class_dependent(tmp_path: pathlib.Path) -> None:
    a = make_image_folder(tmp_path / "a", classes=3, per_class=2, size=16, seed=5)
    b = make_image_folder(tmp_path / "b", classes=3, per_class=2, size=16, seed=5)
    files = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert len(files) == 2 * 3 * 2
    assert [str(f.parent) for f in files[:2]] == ["train/class_0"] * 2 or files[0].parts[0] == "train"
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    train0 = np.asarray(Image.open(a / "train/class_0/00000.png"))
    val0 = np.asarray(Image.open(a / "val/class_0/00000.png"))
    assert train0.shape == (16, 16, 3) and not np.array_equal(train0, val0)
    colour = [
        np.asarray(Image.open(a / f"train/class_{k}/00000.png")).reshape(-1, 3).mean(0) for k in range(3)
    ]
    assert min(np.abs(colour[i] - colour[j]).max() for i in range(3) for j in range(i)) > 40
    wide = make_image_folder(tmp_path / "wide", classes=12, per_class=1, size=8, splits=("train",))
    assert sorted(p.name for p in (wide / "train").iterdir())[:3] == ["class_00", "class_01", "class_02"]
    assert not (wide / "val").exists()
    with pytest.raises(ValueError, match="classes"):
        make_image_folder(tmp_path / "c", classes=1)
    with pytest.raises(TypeError, match="splits"):
        make_image_folder(tmp_path / "c", splits="train")


def test_folder_dataset_shapes_range_and_labels(folder: pathlib.Path) -> None:
    data = load_image_dataset(f"folder:{folder}", image_size=32)
    assert (data.num_classes, data.in_chans, data.image_size) == (3, 3, 32)
    assert data.classes == ("class_0", "class_1", "class_2") and data.mean == IMAGENET_MEAN
    assert len(data.train) == len(data.val) == 12
    for index in range(len(data.val)):
        image, label = data.val[index]
        assert image.shape == (3, 32, 32) and image.dtype == torch.float32
        assert float(image.min()) >= 0.0 and float(image.max()) <= 1.0
        assert data.classes[label] == pathlib.Path(data.val.samples[index][0]).parent.name
    assert load_image_dataset(f"folder:{folder}").image_size == 224


def test_train_transforms_augment_and_eval_transforms_are_deterministic(folder: pathlib.Path) -> None:
    data = load_image_dataset(f"folder:{folder}", image_size=32)
    torch.manual_seed(0)
    first, second = data.train[0][0], data.train[0][0]
    assert not torch.equal(first, second), "RandomResizedCrop + flip should differ between draws"
    assert torch.equal(data.val[0][0], data.val[0][0])
    names = [type(t).__name__ for t in data.train.transform.transforms]
    assert names[:2] == ["RandomResizedCrop", "RandomHorizontalFlip"]
    eval_steps = data.val.transform.transforms
    assert isinstance(eval_steps[0], v2.Resize) and eval_steps[0].size == [36]  # int(32 / 0.875)
    assert isinstance(eval_steps[1], v2.CenterCrop) and list(eval_steps[1].size) == [32, 32]
    plain = load_image_dataset(f"folder:{folder}", image_size=32, augment=False)
    source = default_loader(plain.train.samples[0][0])
    assert torch.equal(plain.train[0][0], plain.val.transform(source))


def test_small_image_recipe_pad_crop_and_flip() -> None:
    cifar = small_image_transforms(32, 32, train=True, augment=True, flip=True, padding=4)
    kinds = [type(t) for t in cifar.transforms]
    assert kinds[:2] == [v2.RandomCrop, v2.RandomHorizontalFlip] and cifar.transforms[0].padding == [
        4,
        4,
        4,
        4,
    ]
    digits = small_image_transforms(32, 32, train=True, augment=True, flip=False, padding=4)
    assert v2.RandomHorizontalFlip not in [type(t) for t in digits.transforms]
    image = Image.fromarray(np.full((32, 32, 3), 255, np.uint8))
    torch.manual_seed(1)
    crops = torch.stack([cifar(image) for _ in range(20)])
    assert crops.shape == (20, 3, 32, 32) and float(crops.min()) == 0.0  # zero padding shows up
    evaluation = small_image_transforms(32, 64, train=False, augment=True, flip=True)
    assert torch.equal(evaluation(image), torch.ones(3, 64, 64))


def test_tiny_imagenet_unzipped_layout(tmp_path: pathlib.Path) -> None:
    gen = make_image_folder(tmp_path / "gen", classes=2, per_class=2, size=64)
    base = tmp_path / "data" / "tiny-imagenet-200"
    wnids = ["n01", "n02"]
    annotations = []
    for k, wnid in enumerate(wnids):
        shutil.copytree(gen / "train" / f"class_{k}", base / "train" / wnid / "images")
        for i, src in enumerate(sorted((gen / "val" / f"class_{k}").iterdir())):
            (base / "val" / "images").mkdir(parents=True, exist_ok=True)
            shutil.copy(src, base / "val" / "images" / f"val_{k}_{i}.png")
            annotations.append(f"val_{k}_{i}.png\t{wnid}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(annotations) + "\n")
    data = load_image_dataset("tiny-imagenet", data_dir=tmp_path / "data")
    assert data.classes == tuple(wnids) and data.image_size == 64 and len(data.train) == 4
    assert [label for _, label in data.val.samples] == [0, 0, 1, 1]
    assert data.val[3][0].shape == (3, 64, 64)


def test_folder_val_with_unknown_class_is_rejected(tmp_path: pathlib.Path) -> None:
    root = make_image_folder(tmp_path / "x", classes=2, per_class=1, size=8)
    shutil.copytree(root / "val" / "class_1", root / "val" / "class_9")
    with pytest.raises(ValueError, match="class_9"):
        load_image_dataset(f"folder:{root}")


def test_val_subset_keeps_train_class_indices(tmp_path: pathlib.Path) -> None:
    root = make_image_folder(tmp_path / "x", classes=3, per_class=1, size=8)
    shutil.rmtree(root / "val" / "class_0")
    data = load_image_dataset(f"folder:{root}", image_size=8)
    assert [label for _, label in data.val.samples] == [1, 2]


# --------------------------------------------------------------------------- loaders
def _indices(n: int = 24) -> TensorDataset:
    return TensorDataset(torch.arange(n), torch.arange(n) % 3)


def _order(loader: torch.utils.data.DataLoader) -> list[int]:
    return [int(i) for batch, _ in loader for i in batch]


def test_loader_order_is_a_function_of_seed_and_epoch() -> None:
    a = make_loader(_indices(), batch_size=5, train=True, device="cpu", workers=0, seed=3)
    b = make_loader(_indices(), batch_size=5, train=True, device="cpu", workers=0, seed=3)
    other = make_loader(_indices(), batch_size=5, train=True, device="cpu", workers=0, seed=4)
    set_loader_epoch(a, 0)
    set_loader_epoch(b, 0)
    set_loader_epoch(other, 0)
    epoch0 = _order(a)
    assert epoch0 == _order(b) and epoch0 != _order(other)
    assert len(epoch0) == 20 and len(set(epoch0)) == 20  # drop_last by default when training
    set_loader_epoch(a, 1)
    epoch1 = _order(a)
    assert epoch1 != epoch0
    set_loader_epoch(a, 0)  # a resumed run at epoch 0 sees the same order again
    assert _order(a) == epoch0
    evaluation = make_loader(_indices(), batch_size=5, train=False, device="cpu", workers=0)
    assert _order(evaluation) == list(range(24))


def test_loader_with_workers_matches_in_process_order(folder: pathlib.Path) -> None:
    data = load_image_dataset(f"folder:{folder}", image_size=32, augment=False)
    inline = make_loader(data, batch_size=4, train=True, device="cpu", workers=0, seed=1)
    pooled = make_loader(data, batch_size=4, train=True, device="cpu", workers=1, seed=1)
    assert pooled.persistent_workers and not pooled.pin_memory and pooled.num_workers == 1
    set_loader_epoch(inline, 2)
    set_loader_epoch(pooled, 2)
    for (xa, ya), (xb, yb) in zip(inline, pooled, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_loader_defaults_and_bad_options() -> None:
    assert default_workers() == min(4, os.cpu_count() or 1)
    small = make_loader(_indices(3), batch_size=8, train=True, device="cpu", workers=0)
    assert not small.drop_last and len(list(small)) == 1  # smaller than a batch: keep it
    assert make_loader(_indices(), batch_size=8, train=True, device=torch.device("cpu"), workers=0).drop_last
    assert not make_loader(_indices(), batch_size=8, train=False, device="cpu", workers=0).drop_last
    with pytest.raises(ValueError, match="batch_size 8 exceeds the 3 samples"):
        make_loader(_indices(3), batch_size=8, train=True, device="cpu", workers=0, drop_last=True)
    with pytest.raises(ValueError, match="batch_size"):
        make_loader(_indices(), batch_size=0, train=True, device="cpu")
    with pytest.raises(ValueError, match="workers"):
        make_loader(_indices(), batch_size=2, train=True, device="cpu", workers=-1)
    with pytest.raises(TypeError, match="dataset"):
        make_loader([1, 2, 3], batch_size=2, train=True, device="cpu")
    with pytest.raises(TypeError, match="train"):
        make_loader(_indices(), batch_size=2, train="yes", device="cpu")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        make_loader(_indices(0), batch_size=2, train=True, device="cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            make_loader(_indices(), batch_size=2, train=True, device="cuda")


def test_sharded_eval_sampler_covers_every_sample_once() -> None:
    for world in (1, 2, 3, 4):
        shards = [list(ShardedEvalSampler(_indices(10), num_replicas=world, rank=r)) for r in range(world)]
        assert sorted(i for s in shards for i in s) == list(range(10))
        assert [len(ShardedEvalSampler(_indices(10), num_replicas=world, rank=r)) for r in range(world)] == [
            len(s) for s in shards
        ]


def test_distributed_samplers_under_a_process_group(tmp_path: pathlib.Path) -> None:
    assert not dist.is_initialized()
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        train = make_loader(_indices(), batch_size=5, train=True, device="cpu", workers=0, seed=2)
        assert isinstance(train.sampler, DistributedSampler) and train.sampler.seed == 2
        set_loader_epoch(train, 7)
        assert train.sampler.epoch == 7
        first = _order(train)
        set_loader_epoch(train, 7)
        assert _order(train) == first and len(first) == 20
        evaluation = make_loader(_indices(), batch_size=5, train=False, device="cpu", workers=0)
        assert isinstance(evaluation.sampler, ShardedEvalSampler)
        assert _order(evaluation) == list(range(24))
    finally:
        dist.destroy_process_group()
