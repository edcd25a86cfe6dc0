import pytest
import torch

from research_systems_core.data import DatasetNotFoundError, resolve_data_dir
from robust_at.data import augment_batch, batches, flip_labels, load_dataset
from robust_at.models import MODELS, create_model

torch.set_num_threads(1)


def test_digits_split_sizes_and_label_noise() -> None:
    clean = load_dataset("digits", val_size=200, train_size=1000, seed=3)
    noisy = load_dataset("digits", val_size=200, train_size=1000, label_noise=0.2, seed=3)
    assert (len(noisy.y_train), len(noisy.y_val), len(noisy.y_test)) == (1000, 200, 597)
    assert noisy.x_train.shape[1:] == (1, 8, 8) and float(noisy.x_train.max()) <= 1.0
    assert torch.equal(clean.x_train, noisy.x_train) and torch.equal(clean.y_val, noisy.y_val)
    assert int((clean.y_train != noisy.y_train).sum()) == 200 == noisy.noisy_labels
    other = load_dataset("digits", val_size=200, train_size=1000, seed=4)
    assert not torch.equal(other.y_val, clean.y_val)  # the split depends on the seed
    assert torch.equal(other.y_test, clean.y_test)  # the test split does not


def test_flip_labels_never_keeps_the_class_and_does_not_mutate() -> None:
    y = torch.arange(10).repeat(10)
    copy = y.clone()
    flipped, n = flip_labels(y, 0.3, 10, torch.Generator().manual_seed(0))
    assert n == 30 and int((flipped != y).sum()) == 30
    assert torch.equal(y, copy)
    with pytest.raises(ValueError, match=r"label_noise must be in \[0, 1\], got 1.5"):
        flip_labels(y, 1.5, 10, torch.Generator())


def test_bad_split_sizes_are_rejected() -> None:
    with pytest.raises(ValueError, match="val_size must be smaller than the 1200"):
        load_dataset("digits", val_size=1200)
    with pytest.raises(ValueError, match="train_size must be <= 1000"):
        load_dataset("digits", val_size=200, train_size=5000)
    with pytest.raises(ValueError, match="dataset"):
        load_dataset("imagenet-1k")


def test_missing_downloadable_data_gives_a_clear_error(tmp_path) -> None:
    with pytest.raises(DatasetNotFoundError, match="--download"):
        load_dataset("cifar10", tmp_path)
    with pytest.raises(DatasetNotFoundError, match="tiny-imagenet-200"):
        load_dataset("tiny-imagenet", tmp_path)


def test_mnist_from_the_shared_data_directory() -> None:
    data_dir = resolve_data_dir()
    if not (data_dir / "MNIST" / "raw").is_dir():
        pytest.skip(f"MNIST not in {data_dir}")
    data = load_dataset("mnist", data_dir, val_size=500, train_size=2000, test_size=1000)
    assert (len(data.y_train), len(data.y_val), len(data.y_test)) == (2000, 500, 1000)
    xb, _ = next(batches(data.x_train, data.y_train, 64))
    assert xb.dtype == torch.float32 and xb.shape == (64, 1, 28, 28) and float(xb.max()) <= 1.0


def test_batches_cover_everything_once_and_shard_by_rank() -> None:
    x, y = torch.arange(10).float().view(10, 1, 1, 1), torch.arange(10)
    got = torch.cat(
        [yb for _, yb in batches(x, y, 3, shuffle=True, generator=torch.Generator().manual_seed(0))]
    )
    assert sorted(got.tolist()) == list(range(10))
    r0 = torch.cat([yb for _, yb in batches(x, y, 4, rank=0, world_size=2)])
    r1 = torch.cat([yb for _, yb in batches(x, y, 4, rank=1, world_size=2)])
    assert sorted(r0.tolist() + r1.tolist()) == list(range(10)) and not set(r0.tolist()) & set(r1.tolist())


def test_augment_batch_is_a_crop_and_flip_that_does_not_mutate() -> None:
    x = torch.rand(6, 3, 5, 5)
    copy = x.clone()
    out = augment_batch(x, torch.Generator().manual_seed(0), pad=0)
    assert torch.equal(x, copy) and out.shape == x.shape
    for i in range(6):  # with no padding, every image is itself or its mirror image
        assert torch.equal(out[i], x[i]) or torch.equal(out[i], x[i].flip(-1))
    padded = augment_batch(x, torch.Generator().manual_seed(1), pad=2)
    assert padded.shape == x.shape


@pytest.mark.parametrize(
    "name,kwargs,shape",
    [
        ("small-cnn", {"width": 8, "depth": 4}, (2, 1, 8, 8)),
        ("preact-resnet18", {"width": 8}, (2, 3, 32, 32)),
        ("vgg16", {}, (2, 3, 32, 32)),
    ],
)
def test_models_return_logits(name: str, kwargs: dict, shape: tuple) -> None:
    model = create_model(name, 7, shape[1], **kwargs)
    assert model(torch.rand(*shape)).shape == (2, 7)


def test_wide_resnet_34_10_has_the_reference_size() -> None:
    model = create_model("wrn-34-10", 10, 3)
    n = sum(p.numel() for p in model.parameters())
    assert 46.0e6 < n < 46.3e6  # WRN-34-10: 46.16M parameters
    small = create_model("wrn-34-10", 10, 3, depth=10, widen_factor=1)
    assert small(torch.rand(2, 3, 16, 16)).shape == (2, 10)
    with pytest.raises(ValueError, match="6n\\+4"):
        create_model("wrn-34-10", 10, 3, depth=12)


def test_normalisation_lives_inside_the_model() -> None:
    torch.manual_seed(0)
    a = create_model("small-cnn", 10, 3, width=4, depth=2, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    torch.manual_seed(0)
    b = create_model("small-cnn", 10, 3, width=4, depth=2)
    a.eval(), b.eval()
    x = torch.rand(2, 3, 8, 8)
    assert torch.allclose(a(x), b((x - 0.5) / 0.25), atol=1e-6)
    assert "normalize.mean" not in a.state_dict()


def test_unknown_model_lists_the_choices() -> None:
    with pytest.raises(ValueError, match="small-cnn"):
        create_model("resnet-1000")
    assert set(MODELS.names()) == {"small-cnn", "preact-resnet18", "wrn-34-10", "vgg16"}


def test_readme_documents_every_reference_option_as_the_presets_define_them() -> None:
    import pathlib

    from robust_at.presets import PRESETS, REFERENCE_OPTIONS, reference_table

    readme = (pathlib.Path(__file__).parents[1] / "README.md").read_text()
    assert reference_table() in readme
    wot = PRESETS["cifar10-preact18"]["wot"]
    assert (wot["start_epoch"], wot["train_mode_epoch"], wot["times"], wot["times_epoch"]) == (
        50,
        150,
        2,
        150,
    )
    assert wot["momentum_per_tensor"] and wot["reset_momentum_each_pass"] and wot["meta_loss"] == "ce"
    for key in REFERENCE_OPTIONS:
        if key.startswith("wot."):
            for part in key.split(", "):
                assert part.removeprefix("wot.") in wot, part
