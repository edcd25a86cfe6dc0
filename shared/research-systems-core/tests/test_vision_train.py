"""The required end-to-end check: a generated ``folder:`` data set trains a timm model."""

from __future__ import annotations

import pathlib

import pytest
import torch
import torch.nn.functional as F

from research_systems_core.vision import (
    create_image_model,
    evaluate_accuracy,
    folder_training_check,
    load_image_dataset,
    make_image_folder,
    make_loader,
    set_loader_epoch,
    with_normalization,
)


def _epoch(model: torch.nn.Module, loader: object, optimizer: torch.optim.Optimizer) -> float:
    model.train()
    losses = []
    for images, labels in loader:
        loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.detach())
    return float(torch.stack(losses).mean())


def test_folder_dataset_trains_a_timm_model(tmp_path: pathlib.Path) -> None:
    torch.manual_seed(0)
    root = make_image_folder(tmp_path / "shapes", classes=3, per_class=8, size=32, seed=0)
    data = load_image_dataset(f"folder:{root}", image_size=32)
    assert (data.num_classes, data.in_chans, data.image_size) == (3, 3, 32)
    model = with_normalization(
        create_image_model("resnet10t", num_classes=data.num_classes, in_chans=data.in_chans),
        data.mean,
        data.std,
    )
    train = make_loader(data, batch_size=8, train=True, device="cpu", workers=0, seed=0)
    val = make_loader(data, batch_size=12, train=False, device="cpu", workers=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    losses = []
    for epoch in range(4):
        set_loader_epoch(train, epoch)
        losses.append(_epoch(model, train, optimizer))
    assert losses[-1] < 0.5 * losses[0], losses
    metrics = evaluate_accuracy(model, val, device="cpu")
    assert metrics["n"] == 24
    assert metrics["accuracy"] > 2 / 3, (metrics, losses)


def test_folder_training_check_with_a_loader_worker(tmp_path: pathlib.Path) -> None:
    """The GPU check's routine, here on CPU in fp32 with one loader worker (bf16 convs are slow on CPU)."""
    root = make_image_folder(tmp_path / "shapes", classes=3, per_class=8, size=32, seed=1)
    report = folder_training_check(root, device="cpu", image_size=32, epochs=4, workers=1)
    assert report["val_n"] == 24 and len(report["epoch_losses"]) == 4
    assert report["epoch_losses"][-1] < 0.5 * report["epoch_losses"][0], report
    assert report["loss_decreased"] and report["train_images_per_s"] > 0
    with pytest.raises(ValueError, match="precision"):
        folder_training_check(root, device="cpu", precision="int8")
