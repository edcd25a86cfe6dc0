"""The runner behind every package's ``benchmarks/gpu_check.py`` and ``nox -s gpu``.

A check is a function returning a dict of numbers. The runner times each one, stops starting new
checks once the package's budget is spent, and writes ``<out_dir>/<package>.json`` with the device
name and the torch/CUDA versions. Without CUDA it prints one line and writes nothing.
"""

from __future__ import annotations

import argparse
import pathlib
import time
import traceback
from collections.abc import Callable, Mapping
from typing import Any

from research_systems_core.results import write_json

__all__ = ["gpu_available", "gpu_check_main", "peak_memory_gib", "run_gpu_checks"]


def gpu_available() -> bool:
    """True when torch sees a CUDA device."""
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def peak_memory_gib(reset: bool = False) -> float:
    """Peak CUDA memory allocated since the last reset, in GiB (optionally reset afterwards)."""
    import torch

    peak = torch.cuda.max_memory_allocated() / 2**30
    if reset:
        torch.cuda.reset_peak_memory_stats()
    return peak


def _device_facts() -> dict[str, Any]:
    import torch

    props = torch.cuda.get_device_properties(0)
    return {
        "device": torch.cuda.get_device_name(0),
        "memory_gib": round(props.total_memory / 2**30, 1),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
    }


def run_gpu_checks(
    package: str,
    checks: Mapping[str, Callable[[], dict[str, Any]]],
    *,
    out_dir: str | pathlib.Path = "results/gpu",
    budget_s: float = 90.0,
) -> dict[str, Any] | None:
    """Run ``checks`` in order on the GPU; returns (and writes) the record, or None without CUDA."""
    if not gpu_available():
        print(f"{package}: no CUDA device here; GPU checks skipped")
        return None
    import torch

    record: dict[str, Any] = {"package": package, "budget_s": budget_s, **_device_facts(), "checks": {}}
    record["date"] = time.strftime("%Y-%m-%d", time.gmtime())
    start = time.perf_counter()
    for name, check in checks.items():
        if time.perf_counter() - start > budget_s:
            record["checks"][name] = {"status": "skipped", "reason": "budget spent"}
            continue
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        try:
            result = {"status": "ok", **check()}
        except Exception as error:  # a failed check is recorded, the others still run
            result = {"status": "failed", "error": f"{type(error).__name__}: {error}"}
            traceback.print_exc()
        result["seconds"] = round(time.perf_counter() - t0, 2)
        record["checks"][name] = result
        print(f"{package}/{name}: {result}", flush=True)
    record["total_seconds"] = round(time.perf_counter() - start, 2)
    write_json(pathlib.Path(out_dir) / f"{package}.json", record)
    return record


def gpu_check_main(
    package: str, checks: Mapping[str, Callable[[], dict[str, Any]]], default_budget_s: float = 90.0
) -> None:
    """Command-line entry for a package's ``benchmarks/gpu_check.py``: ``--out DIR --budget-s N``."""
    parser = argparse.ArgumentParser(description=f"{package} GPU checks (random/generated data)")
    parser.add_argument("--out", default="results/gpu", help="directory for <package>.json")
    parser.add_argument("--budget-s", type=float, default=default_budget_s, help="time budget in seconds")
    args = parser.parse_args()
    run_gpu_checks(package, checks, out_dir=args.out, budget_s=args.budget_s)
