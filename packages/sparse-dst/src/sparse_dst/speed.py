"""Inference throughput on the CPU (images per second), measured the same way for every model."""

from __future__ import annotations

import statistics
import time

import torch
from torch import nn


@torch.inference_mode()
def throughput(
    model: nn.Module,
    input_shape: tuple[int, ...],
    batch_size: int = 64,
    min_seconds: float = 1.0,
    repeats: int = 3,
    warmup: int = 3,
) -> float:
    """Median over ``repeats`` timing windows of images/s for ``model(x)`` with x of
    ``(batch_size, *input_shape)``; each window runs at least ``min_seconds``."""
    model.eval()
    x = torch.randn(batch_size, *input_shape)
    for _ in range(warmup):
        model(x)
    rates = []
    for _ in range(repeats):
        n = 0
        start = time.perf_counter()
        while True:
            model(x)
            n += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds:
                break
        rates.append(n * batch_size / elapsed)
    return statistics.median(rates)
