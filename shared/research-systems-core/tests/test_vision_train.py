"""The required end-to-end check: a generated ``folder:`` data set trains a timm model."""

from __future__ import annotations

import pathlib

import torch
import torch.nn.functional as F

from research_systems_core.vision import (
    create_image_model,
    evaluate_accuracy,
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
