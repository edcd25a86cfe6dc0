"""Memory of a group of processes without double counting shared pages (psutil PSS / USS).

RSS counts a memory-mapped graph fully in every process that touched it; PSS (proportional set
size) splits each shared page among the processes mapping it, so the PSS of several workers adds
up to what they really occupy; USS is what a process alone holds.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import psutil


@dataclass
class MemorySample:
    rss: int
    pss: int
    uss: int


def process_memory(pid: int) -> MemorySample | None:
    """RSS, PSS and USS (bytes) of one process; None if it is gone or unreadable."""
    try:
        info = psutil.Process(pid).memory_full_info()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    return MemorySample(rss=int(info.rss), pss=int(getattr(info, "pss", info.rss)), uss=int(info.uss))


@dataclass
class MemoryMonitor:
    """Samples a set of processes every ``interval`` seconds in a thread; keeps the peaks.

    ``peak_total_pss`` is the largest sum of PSS over the processes at one instant (what the
    group occupies together); ``peak_rss[pid]`` etc. are per-process peaks.
    """

    pids: list[int]
    interval: float = 0.25
    peak_total_pss: int = 0
    peak_total_rss: int = 0
    peak_total_uss: int = 0
    peak_rss: dict[int, int] = field(default_factory=dict)
    peak_pss: dict[int, int] = field(default_factory=dict)
    peak_uss: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        samples = {pid: process_memory(pid) for pid in self.pids}
        alive = {pid: s for pid, s in samples.items() if s is not None}
        self.peak_total_pss = max(self.peak_total_pss, sum(s.pss for s in alive.values()))
        self.peak_total_rss = max(self.peak_total_rss, sum(s.rss for s in alive.values()))
        self.peak_total_uss = max(self.peak_total_uss, sum(s.uss for s in alive.values()))
        for pid, s in alive.items():
            self.peak_rss[pid] = max(self.peak_rss.get(pid, 0), s.rss)
            self.peak_pss[pid] = max(self.peak_pss.get(pid, 0), s.pss)
            self.peak_uss[pid] = max(self.peak_uss.get(pid, 0), s.uss)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.sample()
            time.sleep(self.interval)

    def __enter__(self) -> MemoryMonitor:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()

    def summary_mib(self) -> dict[str, float]:
        mib = 1 << 20
        return {
            "processes": len(self.pids),
            "peak_total_pss_mib": round(self.peak_total_pss / mib, 1),
            "peak_total_uss_mib": round(self.peak_total_uss / mib, 1),
            "peak_total_rss_mib": round(self.peak_total_rss / mib, 1),
            "max_process_rss_mib": round(max(self.peak_rss.values(), default=0) / mib, 1),
            "max_process_pss_mib": round(max(self.peak_pss.values(), default=0) / mib, 1),
        }
