import numpy as np
import pytest
import torch

from research_systems_core.validation import UnknownNameError
from vision_kd.data import load_data, make_cued_pairs
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


@pytest.mark.parametrize(("name", "width"), [("mnist-cue", 64), ("mnist-far", 96)])
def test_generated_tasks_from_real_mnist(mnist_dir, name, width):
    data = load_data(name, mnist_dir, n_train=20, n_test=50)
    assert len(data.train) == 20 and len(data.val) == 50 and data.num_classes == 10
    x, y = data.val[0]
    assert x.shape == (1, 32, width) and float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    assert 0 <= int(y) < 10


def test_unknown_dataset_and_missing_data(tmp_path):
    with pytest.raises(UnknownNameError, match="unknown dataset 'imagenet22k'"):
        load_data("imagenet22k", tmp_path)
    with pytest.raises(FileNotFoundError, match="MNIST"):
        load_data("mnist-cue", tmp_path)
    with pytest.raises(FileNotFoundError, match="SVHN"):
        load_data("svhn", tmp_path)


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


def test_image_folder_streams_at_224_with_imagenet_recipe(tmp_path):
    from research_systems_core.vision import make_image_folder

    make_image_folder(tmp_path, classes=3, per_class=4, size=40, seed=0)
    data = load_data(f"folder:{tmp_path}", n_train=5)
    assert data.num_classes == 3 and data.image_size == 224 and len(data.train) == 5
    x, _ = data.train[0]
    assert x.shape == (3, 224, 224) and float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    small = load_data(f"folder:{tmp_path}", image_size=32, augment=False)
    a, b = small.train[0][0], small.train[0][0]
    assert a.shape == (3, 32, 32) and torch.equal(a, b)  # no augmentation: the same image every time


def test_erf_verdict_is_reported_on_its_own():
    from vision_kd.reproduce import _erf_verdict

    def row(run, area):
        return {"run": run, "erf_area@0.5": area}

    table = [row("scratch", 0.10), row("large-kernel kd", 0.15), row("transformer kd", 0.12),
             row("teacher large-kernel", 0.3), row("teacher transformer", 0.4)]  # fmt: skip
    verdict, reason = _erf_verdict(table)
    assert verdict == "reproduced" and "LK-taught 0.150 vs scratch 0.100" in reason
    table[2] = row("transformer kd", 0.2)
    assert _erf_verdict(table)[0] == "not reproduced at this scale"
