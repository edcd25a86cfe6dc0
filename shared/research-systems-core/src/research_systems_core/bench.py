"""Benchmark records every package writes the same way: the environment they ran in, and one row
per measure with ours, the peer's, their ratio and the goal (met or missed).

No torch import at module level: usable by any package.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata as md
import math
import os
import pathlib
import platform
from collections.abc import Iterable, Mapping
from typing import Any

from research_systems_core.results import read_json, write_json

__all__ = [
    "BENCH_SCHEMA_VERSION",
    "bench_environment",
    "ratio_row",
    "validate_bench_json",
    "write_bench_json",
]

BENCH_SCHEMA_VERSION = 1
_ROW_KEYS = ("name", "ours", "peer", "ratio", "unit", "goal", "met", "higher_is_better")


def _cpu_model() -> str:
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def _torch_facts() -> dict[str, Any]:
    try:
        import torch
    except ImportError:
        return {"torch": None}
    facts: dict[str, Any] = {
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "threads": torch.get_num_threads(),
        "device": "cpu",
    }
    if torch.cuda.is_available():
        facts["device"] = torch.cuda.get_device_name(0)
    return facts


def bench_environment(peers: Mapping[str, str | None] | Iterable[str] = ()) -> dict[str, Any]:
    """Machine, versions, thread count and load at the start of a benchmark.

    ``peers``: peer package names (their installed versions are looked up) or a mapping of name to
    version. A ``warning`` is set when the 1-minute load average exceeds the core count."""
    cores = os.cpu_count() or 1
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    if isinstance(peers, Mapping):
        peer_versions = {name: version or _version(name) for name, version in peers.items()}
    else:
        peer_versions = {name: _version(name) for name in peers}
    env: dict[str, Any] = {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": platform.node(),
        "cpu_model": _cpu_model(),
        "cores": cores,
        "python": platform.python_version(),
        "load_average_1m": load,
        "peers": peer_versions,
        **_torch_facts(),
    }
    if load is not None and load > cores:
        env["warning"] = f"load average {load:.1f} above the {cores} cores: timings are noisy"
    return env


def ratio_row(
    name: str,
    ours: float,
    peer: float | None,
    *,
    unit: str,
    goal: str | None = None,
    higher_is_better: bool = True,
    met: bool | None = None,
    ratio: float | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """One measure. ``ratio`` defaults to the advantage of ours over the peer (ours/peer when higher
    is better, peer/ours when lower is better), so a ratio above 1 always means we are better."""
    if ratio is None and peer is not None:
        ratio = (ours / peer) if higher_is_better else (peer / ours)
    return {
        "name": name,
        "ours": ours,
        "peer": peer,
        "ratio": ratio,
        "unit": unit,
        "goal": goal,
        "met": met,
        "higher_is_better": higher_is_better,
        **extra,
    }


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_rows(rows: list[Mapping[str, Any]]) -> None:
    if not rows:
        raise ValueError("a benchmark must record at least one row")
    for row in rows:
        missing = [k for k in _ROW_KEYS if k not in row]
        if missing:
            raise ValueError(f"benchmark row {row.get('name')!r} lacks {missing}")
        if not _finite(row["ours"]):
            raise ValueError(
                f"benchmark row {row['name']!r}: 'ours' is not a finite number ({row['ours']!r})"
            )
        if row["peer"] is not None and not (_finite(row["peer"]) and _finite(row["ratio"])):
            raise ValueError(f"benchmark row {row['name']!r}: peer/ratio not finite ({row['ratio']!r})")
        if row["goal"] is not None and not isinstance(row["met"], bool):
            raise ValueError(f"benchmark row {row['name']!r} has a goal but 'met' is {row['met']!r}")


def write_bench_json(
    path: str | os.PathLike[str],
    *,
    package: str,
    mode: str,
    environment: Mapping[str, Any],
    rows: list[Mapping[str, Any]],
    extra: Mapping[str, Any] | None = None,
) -> pathlib.Path:
    """Validate and write ``bench.json`` atomically (schema checked by :func:`validate_bench_json`)."""
    _check_rows(list(rows))
    record = {
        "schema": BENCH_SCHEMA_VERSION,
        "package": package,
        "mode": mode,
        "environment": dict(environment),
        "rows": [dict(r) for r in rows],
        **(dict(extra) if extra else {}),
    }
    return write_json(path, record)


def validate_bench_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a bench JSON and check its schema: environment present, every row complete and finite,
    every peer named in the environment has a recorded version."""
    record = read_json(path)
    for key in ("schema", "package", "mode", "environment", "rows"):
        if key not in record:
            raise ValueError(f"{path}: missing key {key!r}")
    _check_rows(record["rows"])
    peers = record["environment"].get("peers", {})
    unversioned = [name for name, version in peers.items() if not version]
    if unversioned:
        raise ValueError(f"{path}: peer versions not recorded for {unversioned}")
    return record
