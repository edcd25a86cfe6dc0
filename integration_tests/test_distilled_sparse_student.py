"""Pipeline 2: a vision-kd large-kernel teacher distills (logit KD) into a small-kernel student
trained with sparse-dst's Chase; the finalized slim student equals the masked one and is smaller."""

from __future__ import annotations

import pathlib

import torch

from sparse_dst.chase import Chase, ChaseConfig
from sparse_dst.models import create_model as create_student
from sparse_dst.surgery import conv_linear_macs, count_parameters
from vision_kd.data import load_dataset
from vision_kd.losses import create_loss
from vision_kd.models import create_model as create_teacher
from vision_kd.train import TrainConfig, evaluate, train


def test_kd_from_large_kernel_teacher_into_a_chase_student(tmp_path: pathlib.Path) -> None:
    torch.manual_seed(0)
    train_data = load_dataset("digits", tmp_path, train=True)  # bundled with scikit-learn
    test_data = load_dataset("digits", tmp_path, train=False)

    # Patch size 1 for 8x8 images; 7x7 depthwise kernels see the whole 8x8 map from the first stage.
    teacher = create_teacher("kd_convnext_micro", in_chans=1, num_classes=10, kernel_sizes=7, patch_size=1)
    train(teacher, train_data, test_data, TrainConfig(epochs=12, lr=4e-3, batch_size=64, seed=0))
    teacher.eval()
    teacher_acc = evaluate(teacher, test_data)
    assert teacher_acc > 0.85, teacher_acc

    student = create_student("small_cnn", in_channels=1, num_classes=10, width=0.5)
    epochs, batch = 12, 64
    steps_per_epoch = -(-len(train_data) // batch)
    optimizer = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    config = ChaseConfig(
        density=0.3, update_frequency=20, channel_sparsity=0.5, channel_interval=10,
        channel_end_fraction=0.6, seed=0,
    )  # fmt: skip
    chase = Chase(student, optimizer, config, total_steps=epochs * steps_per_epoch)
    kd = create_loss("kd", temperature=3.0, alpha=0.9)
    gen = torch.Generator().manual_seed(0)
    for _ in range(epochs):
        student.train()
        order = torch.randperm(len(train_data), generator=gen)
        for i in range(0, len(order), batch):
            idx = order[i : i + batch]
            x, y = train_data.images[idx], train_data.labels[idx]
            with torch.no_grad():
                teacher_logits = teacher(x)
            loss = kd(student(x), teacher_logits, y)
            optimizer.zero_grad()
            loss.backward()
            chase.step()
    assert chase.alive_channels() <= round(0.5 * chase.baseline_channels) + len(chase.keep)

    student.eval()
    masked_acc = evaluate(student, test_data)
    assert masked_acc > 0.8, masked_acc
    example = test_data.images[:1]
    masked_macs = conv_linear_macs(student, example)
    masked_params = count_parameters(student)
    with torch.no_grad():
        masked_logits = student(test_data.images)

    slim = chase.finalize()
    slim.eval()
    with torch.no_grad():
        slim_logits = slim(test_data.images)
    torch.testing.assert_close(slim_logits, masked_logits, atol=1e-4, rtol=1e-4)
    slim_acc = evaluate(slim, test_data)
    assert abs(slim_acc - masked_acc) <= 0.005
    # Genuinely smaller: half the removable channels gone -> far fewer MACs and parameters.
    assert conv_linear_macs(slim, example) < 0.6 * masked_macs
    assert count_parameters(slim) < 0.6 * masked_params
    # The sparse masks carried over to the slim model keep the parameter budget.
    assert chase.slim_masks.n_active <= chase.budget
