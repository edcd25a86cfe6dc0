"""Accuracy and mean cross-entropy over a loader, summed on the device and reduced across ranks."""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from research_systems_core.precision import autocast, check_precision

__all__ = ["evaluate_accuracy"]


def _reduce_sum(stats: torch.Tensor) -> torch.Tensor:
    """All-reduce (sum) across ranks when a process group is up; nccl needs the tensor on CUDA."""
    if dist.is_available() and dist.is_initialized():
        if dist.get_backend() == "nccl" and stats.device.type != "cuda":
            stats = stats.to(torch.device("cuda", torch.cuda.current_device()))
        dist.all_reduce(stats, op=dist.ReduceOp.SUM)
    return stats


@torch.no_grad()
def evaluate_accuracy(
    model: nn.Module, loader: Any, *, device: torch.device | str, precision: str = "fp32"
) -> dict[str, float]:
    """``{"accuracy", "loss", "n"}`` of ``model`` on ``loader``'s ``(images, labels)`` batches.

    Counts are accumulated on ``device`` (one host sync at the end) and summed over DDP ranks, so with
    ``make_loader(..., train=False)`` (each sample on exactly one rank) the result equals a
    single-process evaluation. ``loss`` is the mean cross-entropy in fp32. The model's train/eval
    mode is restored afterwards.
    """
    precision = check_precision(precision)
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    device = torch.device(device)
    loss_dtype = torch.float32 if device.type == "mps" else torch.float64
    correct = torch.zeros((), dtype=torch.int64, device=device)
    loss_sum = torch.zeros((), dtype=loss_dtype, device=device)
    n = 0
    was_training = model.training
    model.eval()
    try:
        for images, labels in loader:
            images = images.to(device, non_blocking=True)
            labels = labels.to(device, non_blocking=True)
            with autocast(device, precision):
                logits = model(images)
            if logits.ndim != 2 or logits.shape[0] != labels.shape[0]:
                raise ValueError(
                    f"model output must be batch x classes logits, got {tuple(logits.shape)} "
                    f"for {labels.shape[0]} labels"
                )
            loss_sum += F.cross_entropy(logits.float(), labels, reduction="sum").to(loss_dtype)
            correct += (logits.argmax(dim=1) == labels).sum()
            n += labels.shape[0]
    finally:
        model.train(was_training)
    stats = torch.stack(
        [correct.to(loss_dtype), loss_sum, torch.tensor(float(n), dtype=loss_dtype, device=device)]
    )
    total_correct, total_loss, total_n = _reduce_sum(stats).tolist()
    if total_n == 0:
        raise ValueError("the loader yielded no samples; nothing to evaluate")
    return {"accuracy": total_correct / total_n, "loss": total_loss / total_n, "n": int(total_n)}
