"""Timing that means the same on every machine: process CPU time on the CPU (not inflated when a
shared machine preempts us), CUDA events with synchronisation on the GPU; warm-up, then repeats."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from research_systems_core.validation import check_int

__all__ = ["Timing", "compare_calls", "time_call"]


@dataclass(frozen=True)
class Timing:
    """Seconds per call of each repeat, and their median."""

    times_s: list[float] = field(default_factory=list)

    @property
    def median_s(self) -> float:
        return statistics.median(self.times_s)

    @property
    def min_s(self) -> float:
        return min(self.times_s)


def _is_cuda(device: Any) -> bool:
    if device is None:
        return False
    import torch

    return torch.device(device).type == "cuda"


def _once(fn: Callable[[], Any], cuda: bool) -> float:
    if cuda:
        import torch

        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        return start.elapsed_time(end) / 1000.0
    t0 = time.process_time()
    fn()
    return time.process_time() - t0


def time_call(fn: Callable[[], Any], *, device: Any = None, warmup: int = 2, repeats: int = 5) -> Timing:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` timed times."""
    return compare_calls({"fn": fn}, device=device, warmup=warmup, repeats=repeats)["fn"]


def compare_calls(
    fns: dict[str, Callable[[], Any]], *, device: Any = None, warmup: int = 2, repeats: int = 5
) -> dict[str, Timing]:
    """Time several callables with interleaved repeats (a, b, a, b, ...), so a busy spell of the
    machine hits all of them alike; compare medians."""
    warmup = check_int("warmup", warmup, minimum=0)
    repeats = check_int("repeats", repeats, minimum=1)
    if not fns:
        raise ValueError("fns is empty: give at least one callable to time")
    cuda = _is_cuda(device)
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            times[name].append(_once(fn, cuda))
    return {name: Timing(values) for name, values in times.items()}
