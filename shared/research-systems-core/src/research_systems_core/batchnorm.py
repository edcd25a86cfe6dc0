"""BatchNorm recalibration: recompute running statistics after the weights changed (soups, WOT,
channel surgery), as the sample-weighted average of the batch statistics over some data."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

__all__ = ["recalibrate_batchnorm"]


def _inputs(batch: Any) -> torch.Tensor:
    if torch.is_tensor(batch):
        return batch
    if isinstance(batch, (tuple, list)) and batch and torch.is_tensor(batch[0]):
        return batch[0]
    raise TypeError(f"batches must be tensors or (inputs, ...) tuples, got {type(batch).__name__}")


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module,
    batches: Iterable[Any],
    *,
    device: torch.device | str | None = None,
    max_batches: int | None = None,
    forward: Callable[[nn.Module, torch.Tensor], Any] | None = None,
) -> int:
    """Reset every BatchNorm's running mean/var and recompute them from ``batches``.

    Each batch of size b enters with momentum ``b / (seen + b)``, so the result is the exact
    sample-weighted mean of the per-batch statistics (an unequal last batch counts by its size).
    Weights are untouched; the model's train/eval mode and the BN momenta are restored.
    Returns the number of samples used (0 when the model has no BatchNorm)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms or max_batches == 0:
        return 0
    was_training = model.training
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
    model.train()
    seen = 0
    try:
        for used, batch in enumerate(batches):
            if max_batches is not None and used >= max_batches:
                break
            x = _inputs(batch)
            if device is not None:
                x = x.to(device, non_blocking=True)
            b = int(x.shape[0])
            for m in norms:
                m.momentum = b / (seen + b)
            forward(model, x) if forward is not None else model(x)
            seen += b
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        model.train(was_training)
    return seen
