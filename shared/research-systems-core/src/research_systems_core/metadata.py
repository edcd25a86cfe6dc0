"""Run metadata stored with every result: versions, git commit, machine, seed, config."""

from __future__ import annotations

import dataclasses
import datetime as dt
import importlib.metadata as md
import os
import platform
import subprocess
from collections.abc import Iterable
from typing import Any

__all__ = ["git_commit", "run_metadata"]


def git_commit(cwd: str | os.PathLike[str] | None = None) -> str | None:
    """The current git commit (with ``-dirty`` if the tree has changes), or None outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=5,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("-dirty" if dirty else "")


def _version(name: str) -> str | None:
    try:
        return md.version(name)
    except md.PackageNotFoundError:
        return None


def run_metadata(
    seed: int | None = None,
    config: Any = None,
    packages: Iterable[str] = (),
) -> dict[str, Any]:
    """Everything needed to tell later how a result was produced."""
    names = ["research-systems-core", "numpy", "torch", *packages]
    if dataclasses.is_dataclass(config) and not isinstance(config, type):
        config = dataclasses.asdict(config)
    machine: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpu_count": os.cpu_count(),
    }
    torch_version = _version("torch")
    if torch_version is not None:
        import sys

        if "torch" in sys.modules:  # only describe torch if the run already uses it
            torch = sys.modules["torch"]
            machine["torch_threads"] = torch.get_num_threads()
            machine["cuda"] = torch.cuda.is_available()
    return {
        "time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "seed": seed,
        "config": config,
        "versions": {n: v for n in dict.fromkeys(names) if (v := _version(n)) is not None},
        "git_commit": git_commit(),
        "machine": machine,
    }
