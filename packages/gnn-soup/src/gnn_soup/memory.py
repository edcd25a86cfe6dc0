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


def _smaps_rollup(pid: int) -> MemorySample | None:
    """RSS, PSS, USS from ``/proc/<pid>/smaps_rollup`` (Linux >= 4.14: one kernel pass, no
    per-mapping listing); None where the file does not exist or cannot be read."""
    try:
        text = open(f"/proc/{pid}/smaps_rollup").read()  # noqa: SIM115
    except OSError:
        return None
    fields: dict[str, int] = {}
    for line in text.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 2 and parts[0].endswith(":") and parts[1].isdigit():
            fields[parts[0][:-1]] = int(parts[1]) * 1024  # kB
    if "Pss" not in fields:
        return None
    uss = fields.get("Private_Clean", 0) + fields.get("Private_Dirty", 0)
    return MemorySample(rss=fields.get("Rss", 0), pss=fields["Pss"], uss=uss)


def process_memory(pid: int) -> MemorySample | None:
    """RSS, PSS and USS (bytes) of one process (``smaps_rollup`` where available, else psutil);
    None if it is gone or unreadable."""
    sample = _smaps_rollup(pid)
    if sample is not None:
        return sample
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
