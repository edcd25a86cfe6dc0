"""Inference throughput (images per second), timed by the shared ``research_systems_core.timing``
(process CPU time on CPU, CUDA events on GPU; warm-up, interleaved repeats, medians)."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch import nn

from research_systems_core.timing import compare_calls


def _batch_runner(model: nn.Module, x: torch.Tensor, iterations: int) -> Callable[[], None]:
    @torch.inference_mode()
    def run() -> None:
        for _ in range(iterations):
            model(x)

    return run


def _iterations_for(model: nn.Module, x: torch.Tensor, seconds: float) -> int:
    """How many forward passes fill about ``seconds`` (measured once, after one warm-up pass)."""
    with torch.inference_mode():
        model(x)
        start = time.process_time()
        model(x)
        once = max(time.process_time() - start, 1e-4)
    return max(1, round(seconds / once))


def compare_throughput(
    models: dict[str, nn.Module],
    input_shape: tuple[int, ...],
    batch_size: int = 64,
    seconds: float = 0.5,
    rounds: int = 5,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    channels_last: bool = False,
) -> dict[str, float]:
    """Images/s of several models on the same random batch, timed in interleaved rounds (median
    per model), so that a slow spell of a shared machine hits every model alike. Each timed call
    runs about ``seconds`` of forward passes (calibrated on the first model)."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    x = torch.randn(batch_size, *input_shape, device=device, dtype=dtype)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    for model in models.values():
        model.eval()
    first = next(iter(models.values()))
    iterations = _iterations_for(first, x, seconds) if device.type == "cpu" else 20
    calls = {name: _batch_runner(model, x, iterations) for name, model in models.items()}
    timings = compare_calls(calls, device=device if device.type == "cuda" else None, warmup=1, repeats=rounds)
    return {name: iterations * batch_size / t.median_s for name, t in timings.items()}
