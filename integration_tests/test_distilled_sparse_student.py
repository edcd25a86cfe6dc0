"""Kept from 0.1 (updated to the 0.2 APIs): a vision-kd large-kernel teacher distills (logit KD) into a small-kernel student
trained with sparse-dst's Chase; the finalized slim student equals the masked one and is smaller."""

from __future__ import annotations

import pathlib

import torch

from research_systems_core.vision import Normalize
from sparse_dst import Chase, ChaseConfig
from sparse_dst import create_model as create_student
from sparse_dst.surgery import conv_linear_macs, count_parameters
from vision_kd.data import load_data
from vision_kd.losses import create_loss
from vision_kd.models import create_model as create_teacher
from vision_kd.train import TrainConfig, evaluate, train


def _accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def test_kd_from_large_kernel_teacher_into_a_chase_student(tmp_path: pathlib.Path) -> None:
    torch.manual_seed(0)
    data = load_data("digits")  # bundled with scikit-learn; [0, 1] pixels, normalised in the model
    norm = Normalize(data.mean, data.std)
    train_data, test_data = data.train, data.val
    train_x, test_x = norm(train_data.images), norm(test_data.images)

    # Patch size 1 for 8x8 images; 7x7 depthwise kernels see the whole 8x8 map from the first stage.
    teacher = create_teacher("kd_convnext_micro", in_chans=1, num_classes=10, kernel_sizes=7, patch_size=1)
    cfg = TrainConfig(epochs=10, lr=4e-3, batch_size=64, seed=0, device="cpu", precision="fp32")
    train(teacher, data, cfg, evaluate_each_epoch=False)
    teacher.eval()
    teacher_acc = evaluate(teacher, data)
    assert teacher_acc > 0.85, teacher_acc

    student = create_student("small_cnn", in_channels=1, num_classes=10, width=0.5)
    epochs, batch = 10, 64
    steps_per_epoch = -(-len(train_data) // batch)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    config = ChaseConfig(
        density=0.3, update_frequency=20, channel_sparsity=0.5, channel_interval=10,
        channel_end_fraction=0.6, seed=0,
    )  # fmt: skip
    chase = Chase(student, optimizer, config, total_steps=epochs * steps_per_epoch, example_input=test_x[:2])
    kd = create_loss("kd", temperature=3.0, alpha=0.9)
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        student.train()
        order = torch.randperm(len(train_data), generator=gen)
        for i in range(0, len(order), batch):
            idx = order[i : i + batch]
            x, y = train_x[idx], train_data.labels[idx]
            with torch.no_grad():
                teacher_logits = teacher(x)
            loss = kd(student(x), teacher_logits, y)
            optimizer.zero_grad()
            loss.backward()
            chase.step()
    assert chase.alive_channels() <= round(0.5 * chase.baseline_channels) + len(chase.keep)

    student.eval()
    masked_acc = _accuracy(student, test_x, test_data.labels)
    assert masked_acc > 0.8, masked_acc
    example = test_x[:1]
    masked_macs = conv_linear_macs(student, example)
    masked_params = count_parameters(student)
    with torch.no_grad():
        masked_logits = student(test_x)

    slim = chase.finalize()
    slim.eval()
    with torch.no_grad():
        slim_logits = slim(test_x)
    torch.testing.assert_close(slim_logits, masked_logits, atol=1e-4, rtol=1e-4)
    slim_acc = _accuracy(slim, test_x, test_data.labels)
    assert slim_acc == masked_acc
    assert (
        abs(masked_acc - evaluate(student, data)) < 1e-6
    )  # the package's evaluation (normalising inside) agrees
    # Genuinely smaller: half the removable channels gone -> far fewer MACs and parameters.
    assert conv_linear_macs(slim, example) < 0.6 * masked_macs
    assert count_parameters(slim) < 0.6 * masked_params
    # The sparse masks carried over to the slim model keep the parameter budget.
    assert chase.slim_masks.n_active <= chase.budget
