"""Pipeline 3 (issue 25): on one generated image folder, vision-kd trains a teacher that is a timm
model given by name (``resnet10t``), distils it into its small ResNet student (logit KD), and
sparse-dst's dynamic sparse training (RigL) then continues training that student, sparse.

Checked: the cached teacher logits equal the online ones, the KD loss equals its formula computed
here, the sparsity after DST is exact (every masked weight zero, active count = budget), and the
sparse student stays well above chance."""

from __future__ import annotations

import pathlib

import torch
import torch.nn.functional as F

from research_systems_core.vision import Normalize, make_image_folder, make_loader, with_normalization
from sparse_dst import DSTConfig, Masking
from vision_kd.data import load_data
from vision_kd.losses import create_loss
from vision_kd.train import TrainConfig, cache_teacher_outputs, evaluate, train
from vision_kd.weights import resolve_model

DENSITY = 0.2
T, ALPHA = 3.0, 0.9


def _check_kd_formula(student, teacher, data) -> None:
    x, y = next(iter(make_loader(data.train, batch_size=8, train=False, device="cpu", workers=0)))
    x = Normalize(data.mean, data.std)(x)
    with torch.no_grad():
        s, t = student(x), teacher(x)
        kl = F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1), reduction="batchmean")
        expected = ALPHA * T * T * kl + (1 - ALPHA) * F.cross_entropy(s, y)
        got = create_loss("kd", temperature=T, alpha=ALPHA)(s, t, y)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def _dst_train(student: torch.nn.Module, data, epochs: int) -> Masking:
    """RigL (gradient growth, ERK densities) around SGD on [0, 1] pixels, normalisation inside."""
    net = with_normalization(student, data.mean, data.std)
    loader = make_loader(data.train, batch_size=16, train=True, device="cpu", workers=0, seed=0)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.02, momentum=0.9)
    config = DSTConfig(density=DENSITY, update_frequency=4, update_rate=0.3, seed=0)
    masking = Masking(net, optimizer, config, total_steps=epochs * len(loader))
    net.train()
    for _ in range(epochs):
        for x, y in loader:
            loss = F.cross_entropy(net(x), y)
            optimizer.zero_grad()
            loss.backward()
            masking.step()
    net.eval()
    return masking


def test_timm_teacher_distilled_into_a_student_then_sparse_trained(tmp_path: pathlib.Path) -> None:
    torch.manual_seed(0)
    folder = make_image_folder(tmp_path / "images", classes=3, per_class=24, size=32, seed=3)
    data = load_data(f"folder:{folder}", image_size=32, augment=False)
    assert data.num_classes == 3 and len(data.train) == 72
    cfg = TrainConfig(
        epochs=4, batch_size=16, lr=2e-3, warmup_frac=0.0, device="cpu", precision="fp32", seed=0
    )

    teacher, meta = resolve_model("resnet10t", num_classes=3, in_chans=3)  # a timm model by name
    assert type(teacher).__module__.startswith("timm.") and meta["source"] == "new"
    train(teacher, data, cfg, evaluate_each_epoch=False)
    teacher_acc = evaluate(teacher, data)
    assert teacher_acc > 0.6, teacher_acc

    cache = cache_teacher_outputs(teacher, data)
    x0, _ = data.train[0]
    with torch.no_grad():
        online = teacher(Normalize(data.mean, data.std)(x0[None]))
    torch.testing.assert_close(cache.logits[0], online[0], rtol=1e-5, atol=1e-5)

    student, _ = resolve_model("kd_resnet_micro", num_classes=3, in_chans=3)
    _check_kd_formula(student, teacher, data)
    kd = create_loss("kd", temperature=T, alpha=ALPHA)
    result = train(student, data, cfg, loss_fn=kd, teacher_cache=cache, evaluate_each_epoch=False)
    distilled_acc = evaluate(student, data)
    assert len(result["history"]) == 4 and distilled_acc > 0.6, distilled_acc

    masking = _dst_train(student, data, epochs=3)
    params = dict(masking.model.named_parameters())
    assert masking.n_active() == masking.budget
    zeros = 0
    for name, mask in masking.masks.items():
        assert bool((params[name].detach()[~mask] == 0).all()), name
        zeros += int((params[name].detach() == 0).sum())
    n_masked = sum(m.numel() for m in masking.masks.values())
    assert zeros >= n_masked - masking.budget  # every pruned weight is an exact zero
    assert abs(masking.budget / masking.n_prunable - DENSITY) < 0.01  # ERK keeps the global density
    masking.handle.remove()
    sparse_acc = evaluate(student, data)
    print({"teacher": teacher_acc, "distilled": distilled_acc, "sparse": sparse_acc,
           "density": masking.budget / masking.n_prunable})  # fmt: skip
    assert sparse_acc > 1 / 3 + 0.2, sparse_acc
