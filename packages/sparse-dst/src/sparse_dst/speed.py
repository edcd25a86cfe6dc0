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
    ``(batch_size, *input_shape)``; each window runs at least ``min_seconds``.

    Time is this thread's CPU time (``time.thread_time``): with one torch thread the work runs
    in the calling thread, and CPU time is not inflated when a shared machine preempts us."""
    model.eval()
    x = torch.randn(batch_size, *input_shape)
    for _ in range(warmup):
        model(x)
    rates = []
    for _ in range(repeats):
        n = 0
        start = time.thread_time()
        while True:
            model(x)
            n += 1
            elapsed = time.thread_time() - start
            if elapsed >= min_seconds:
                break
        rates.append(n * batch_size / elapsed)
    return statistics.median(rates)


def compare_throughput(
    models: dict[str, nn.Module],
    input_shape: tuple[int, ...],
    batch_size: int = 64,
    seconds: float = 0.5,
    rounds: int = 5,
) -> dict[str, float]:
    """Images/s of several models, measured in interleaved rounds (median per model), so that
    a slow spell of a shared machine hits every model alike."""
    rates: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(rounds):
        for name, model in models.items():
            rates[name].append(throughput(model, input_shape, batch_size, seconds, repeats=1, warmup=2))
    return {name: statistics.median(values) for name, values in rates.items()}
