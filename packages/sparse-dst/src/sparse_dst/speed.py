"""Inference throughput (images per second), timed by the shared ``research_systems_core.timing``
(process CPU time on CPU, CUDA events on GPU; warm-up, interleaved repeats, medians).

On CPU two settings decide how much of a slim model's MAC reduction shows up as speed
(measured in ``benchmarks/bench.py``, see the README):

* **channels_last** (NHWC) is oneDNN's native layout; in NCHW PyTorch reorders around every
  convolution, and max-pooling/BatchNorm take slow paths (VGG-11 dense: 1.8x faster in NHWC).
* **freed memory reused** (:func:`reuse_freed_memory`): glibc serves every allocation above
  32 MiB with a fresh ``mmap`` that the kernel zero-fills page by page, so each large activation
  of a batch-64 forward pass costs page faults. They hit the *unpruned* early layers of dense and
  slim models alike, a fixed cost that the MAC ratio ignores (ResNet-50: about a third of the
  time). jemalloc/tcmalloc avoid it too (PyTorch's CPU tuning guide recommends them).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import time
import warnings
from collections.abc import Callable

import torch
from torch import nn

from research_systems_core.timing import compare_calls

log = logging.getLogger(__name__)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # glibc mallopt parameters (malloc.h)


def reuse_freed_memory() -> bool:
    """Make glibc keep freed memory for reuse (no per-allocation ``mmap`` / page faults).

    Process-wide and not undone: call it in a process that only runs inference or benchmarks.
    Returns False (and changes nothing) where the C library is not glibc.
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        log.info("reuse_freed_memory: no glibc mallopt here (%s); allocator unchanged", name)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    done = mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, 2**31 - 1) == 1
    log.info("reuse_freed_memory: glibc mallopt %s", "applied" if done else "refused")
    return done


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
    runs about ``seconds`` of forward passes (calibrated on the first model).

    With ``channels_last`` the input and every model (in place) use the NHWC memory format."""
    device = torch.device(device) if device is not None else torch.device("cpu")
    x = torch.randn(batch_size, *input_shape, device=device, dtype=dtype)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    for model in models.values():
        model.eval()
        if channels_last and x.dim() == 4:
            model.to(memory_format=torch.channels_last)
    first = next(iter(models.values()))
    iterations = _iterations_for(first, x, seconds) if device.type == "cpu" else 20
    calls = {name: _batch_runner(model, x, iterations) for name, model in models.items()}
    timings = compare_calls(calls, device=device if device.type == "cuda" else None, warmup=1, repeats=rounds)
    return {name: iterations * batch_size / t.median_s for name, t in timings.items()}


def frozen_for_inference(
    model: nn.Module, example: torch.Tensor, tolerance: float = 1e-4
) -> torch.jit.ScriptModule:
    """TorchScript trace, frozen and optimised for inference (BatchNorm folded into the
    convolutions, oneDNN conv+ReLU/add fusion on CPU) — the deployment form of the
    ``slim.torchscript.pt`` export. Raises RuntimeError if it disagrees with ``model`` on
    ``example`` by more than ``tolerance`` (relative max difference)."""
    model = model.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about Python values, none of them apply here
        frozen = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(model, example)))
        expected, got = model(example), frozen(example)
    error = float((expected - got).abs().max()) / (float(expected.abs().max()) + 1e-12)
    if not error <= tolerance:
        raise RuntimeError(f"frozen TorchScript disagrees with the eager model (relative error {error:.3g})")
    return frozen
