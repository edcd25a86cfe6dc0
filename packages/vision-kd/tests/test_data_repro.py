import numpy as np
import pytest
import torch

from research_systems_core.validation import UnknownNameError
from vision_kd.data import load_dataset, make_cued_pairs
from vision_kd.reproduce import ReproConfig, _match_teachers, _verdict


def _fake_digits():
    # digit d is a 28x28 image whose pixels all equal 10 * d + 5 (so position and identity are readable)
    labels = np.arange(10).repeat(3)
    images = np.stack([np.full((28, 28), 10 * d + 5, dtype=np.uint8) for d in labels])
    return images, labels


def test_cued_pairs_label_follows_the_cue():
    images, labels = _fake_digits()
    x, y = make_cued_pairs(images, labels, 200, seed=3)
    assert x.shape == (200, 1, 32, 64) and y.dtype == torch.int64
    for i in range(200):
        canvas = x[i, 0]
        left = canvas[:, :20].max().item() * 255
        right = canvas[:, 44:].max().item() * 255
        cue = canvas[:, 22:42]
        rows, cols = torch.nonzero(cue == 1.0, as_tuple=True)
        vertical = (rows.max() - rows.min()) > (cols.max() - cols.min())
        value = right if vertical else left
        assert y[i].item() == round((value - 5) / 10)


def test_cued_pairs_are_repeatable_and_seeded():
    images, labels = _fake_digits()
    a = make_cued_pairs(images, labels, 20, seed=1)
    b = make_cued_pairs(images, labels, 20, seed=1)
    c = make_cued_pairs(images, labels, 20, seed=2)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    with pytest.raises(ValueError, match="no room for the cue"):
        make_cued_pairs(images, labels, 5, seed=0, canvas=(32, 40))


def test_mnist_cue_from_real_mnist(mnist_dir):
    data = load_dataset("mnist-cue", mnist_dir, train=False, n=50)
    assert data.images.shape == (50, 1, 32, 64) and data.num_classes == 10
    assert set(data.labels.tolist()) <= set(range(10))


def test_unknown_dataset_and_missing_data(tmp_path):
    with pytest.raises(UnknownNameError, match="unknown dataset 'svhn'"):
        load_dataset("svhn", tmp_path)
    with pytest.raises(FileNotFoundError, match="MNIST"):
        load_dataset("mnist-cue", tmp_path)


def test_teacher_matching_picks_the_closest_snapshot():
    strong, weak = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    snaps = {
        "large-kernel": [
            (acc, {"weight": torch.full((2, 2), float(i)), "bias": torch.zeros(2)})
            for i, acc in enumerate([0.3, 0.52, 0.7, 0.9])
        ],
        "transformer": [(0.2, weak.state_dict()), (0.5, weak.state_dict())],
    }
    rows = {"large-kernel": {"test_acc": 0.9}, "transformer": {"test_acc": 0.5}}
    _match_teachers({"large-kernel": strong, "transformer": weak}, snaps, rows)
    assert rows["large-kernel"]["epoch_used"] == 2 and rows["large-kernel"]["test_acc"] == 0.52
    assert rows["large-kernel"]["final_test_acc"] == 0.9
    assert torch.all(strong.weight == 1.0)
    assert rows["transformer"]["epoch_used"] == 2 and rows["transformer"]["test_acc"] == 0.5


def test_verdict_rules():
    cfg = ReproConfig(seeds=(0, 1), losses=("kd", "fd"))
    teachers = {"large-kernel": {"test_acc": 0.8}, "transformer": {"test_acc": 0.8}}
    accs = {("none", "none"): [0.5, 0.5], ("large-kernel", "kd"): [0.7, 0.72], ("transformer", "kd"): [0.6, 0.61],
            ("large-kernel", "fd"): [0.6, 0.6], ("transformer", "fd"): [0.6, 0.601]}  # fmt: skip
    verdict, reason = _verdict(cfg, accs, teachers)
    assert verdict == "partly" and "kd: LK-taught" in reason and "within seed noise" in reason
    accs[("large-kernel", "fd")] = [0.7, 0.7]
    assert _verdict(cfg, accs, teachers)[0] == "reproduced"
    accs[("large-kernel", "kd")] = accs[("large-kernel", "fd")] = [0.5, 0.5]
    assert _verdict(cfg, accs, teachers)[0] == "not reproduced at this scale"
    with pytest.raises(ValueError, match="n_student"):
        ReproConfig(n_train=100, n_student=200).validate()


def test_image_folder_loading(tmp_path):
    from PIL import Image

    for split in ("train", "val"):
        for cls, value in (("cat", 40), ("dog", 200)):
            folder = tmp_path / split / cls
            folder.mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (80, 70), (value, value + i, value)).save(folder / f"{i}.png")
    data = load_dataset("folder", tmp_path, train=True)
    assert data.images.shape == (6, 3, 64, 64) and data.num_classes == 2
    assert sorted(data.labels.tolist()) == [0, 0, 0, 1, 1, 1]
    assert load_dataset("folder", tmp_path, train=False, n=4).images.shape[0] == 4
