"""The image stack end to end on one device: generated folder -> loader -> timm model -> evaluation.

Used by the tests on CPU and by the shared GPU check (``benchmarks/gpu_check.py``) on CUDA, where it
exercises pinned memory, workers, autocast and the grad scaler together.
"""

from __future__ import annotations

import os
import time
from typing import Any

import torch
import torch.nn.functional as F

from research_systems_core.precision import autocast, check_precision, grad_scaler
from research_systems_core.validation import check_int
from research_systems_core.vision.datasets import load_image_dataset
from research_systems_core.vision.evaluation import evaluate_accuracy
from research_systems_core.vision.loaders import make_loader, set_loader_epoch
from research_systems_core.vision.models import create_image_model
from research_systems_core.vision.transforms import with_normalization

__all__ = ["folder_training_check"]


def _train_epoch(
    model: Any, loader: Any, optimizer: Any, scaler: Any, device: torch.device, precision: str
) -> float:
    """One epoch; the mean loss is summed on the device and read once at the end."""
    model.train()
    total = torch.zeros((), device=device)
    for images, labels in loader:
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        with autocast(device, precision):
            loss = F.cross_entropy(model(images).float(), labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        total += loss.detach()
    return float(total) / len(loader)


def folder_training_check(
    root: str | os.PathLike[str],
    *,
    device: torch.device | str,
    precision: str = "fp32",
    model_name: str = "resnet10t",
    image_size: int = 32,
    batch_size: int = 8,
    epochs: int = 4,
    workers: int = 0,
    seed: int = 0,
) -> dict[str, Any]:
    """Train ``model_name`` on the ``folder:root`` data set; report losses, throughput and accuracy."""
    precision = check_precision(precision)
    epochs = check_int("epochs", epochs, minimum=1)
    device = torch.device(device)
    torch.manual_seed(seed)
    data = load_image_dataset(f"folder:{root}", image_size=image_size)
    net = create_image_model(model_name, num_classes=data.num_classes, in_chans=data.in_chans)
    model = with_normalization(net, data.mean, data.std).to(device)
    train = make_loader(data, batch_size=batch_size, train=True, device=device, workers=workers, seed=seed)
    val = make_loader(data, batch_size=batch_size, train=False, device=device, workers=workers)
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-3)
    scaler = grad_scaler(device, precision)
    start = time.perf_counter()
    losses = []
    for epoch in range(epochs):
        set_loader_epoch(train, epoch)
        losses.append(_train_epoch(model, train, optimizer, scaler, device, precision))
    seconds = time.perf_counter() - start  # each epoch's float() synchronised the device
    metrics = evaluate_accuracy(model, val, device=device, precision=precision)
    images = epochs * len(train) * batch_size
    return {
        "epoch_losses": [round(v, 5) for v in losses],
        "train_images_per_s": round(images / seconds, 1),
        "val_accuracy": metrics["accuracy"],
        "val_loss": round(metrics["loss"], 5),
        "val_n": metrics["n"],
        "loss_decreased": losses[-1] < losses[0],
    }
