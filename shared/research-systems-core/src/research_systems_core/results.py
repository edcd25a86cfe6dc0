"""Results on disk: atomic JSON, append-only JSONL, the shared ``results/`` layout, curve plots.

Layout shared by all packages: ``results/<kind>/<package>/`` with kind one of ``demo``,
``bench``, ``runs``; each run writes JSON (with :func:`research_systems_core.metadata.run_metadata`) and PNGs.
"""

from __future__ import annotations

import json
import logging
import math
import os
import pathlib
from collections.abc import Mapping, Sequence
from typing import Any

from research_systems_core.files import atomic_write

__all__ = [
    "JsonlWriter",
    "plot_curves",
    "read_json",
    "read_jsonl",
    "results_dir",
    "to_jsonable",
    "write_json",
]

log = logging.getLogger(__name__)
RESULT_KINDS = ("demo", "bench", "runs")


def to_jsonable(obj: Any) -> Any:
    """Convert numpy/torch scalars and arrays, paths, sets and tuples to plain JSON types."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple | set | frozenset):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "tolist") and callable(obj.tolist):  # numpy arrays/scalars, torch tensors
        return to_jsonable(obj.tolist())
    if isinstance(obj, float) and not math.isfinite(obj):
        return None if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    return obj


def write_json(path: str | os.PathLike[str], obj: Any, indent: int = 2) -> pathlib.Path:
    """Write ``obj`` as JSON atomically; returns the path."""
    path = pathlib.Path(path)
    with atomic_write(path) as handle:
        json.dump(to_jsonable(obj), handle, indent=indent, sort_keys=False)
        handle.write("\n")
    return path


def read_json(path: str | os.PathLike[str]) -> Any:
    path = pathlib.Path(path)
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None


class JsonlWriter:
    """Append-only JSON-lines file; every row is flushed and fsynced, so a kill loses no finished row."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = pathlib.Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # A kill mid-write can leave a partial last line: start on a fresh line.
        if self.path.exists() and self.path.stat().st_size > 0:
            with open(self.path, "rb") as handle:
                handle.seek(-1, os.SEEK_END)
                if handle.read(1) != b"\n":
                    with open(self.path, "ab") as fix:
                        fix.write(b"\n")

    def append(self, row: Mapping[str, Any]) -> None:
        line = json.dumps(to_jsonable(row), sort_keys=False)
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
            handle.flush()
            os.fsync(handle.fileno())


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All valid rows of a JSONL file; corrupt lines are logged (file and line number) and skipped."""
    path = pathlib.Path(path)
    if not path.exists():
        return []
    rows: list[dict[str, Any]] = []
    bad: list[int] = []
    with open(path, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                bad.append(number)
                continue
            if isinstance(row, dict):
                rows.append(row)
            else:
                bad.append(number)
    if bad:
        log.warning(
            "%s: skipped %d corrupt line(s) (line %s); kept %d valid rows",
            path,
            len(bad),
            bad[:10],
            len(rows),
        )
    return rows


def results_dir(kind: str, package: str, root: str | os.PathLike[str] = "results") -> pathlib.Path:
    """``<root>/<kind>/<package>/``, created if missing."""
    if kind not in RESULT_KINDS:
        raise ValueError(f"kind must be one of {RESULT_KINDS}, got {kind!r}")
    path = pathlib.Path(root) / kind / package
    path.mkdir(parents=True, exist_ok=True)
    return path


def plot_curves(
    path: str | os.PathLike[str],
    curves: Mapping[str, Sequence[Any]],
    xlabel: str,
    ylabel: str,
    title: str = "",
    vlines: Mapping[str, float] | None = None,
    logx: bool = False,
    hline: float | None = None,
) -> pathlib.Path:
    """Plot ``{label: (x, y)}`` or ``{label: (x, y, yerr)}`` curves to a PNG (Agg backend)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=110)
    try:
        colors: dict[str, Any] = {}
        for label, curve in curves.items():
            if len(curve) not in (2, 3):
                raise ValueError(f"curve {label!r} must be (x, y) or (x, y, yerr), got {len(curve)} items")
            x, y = list(curve[0]), list(curve[1])
            if len(x) != len(y):
                raise ValueError(f"curve {label!r}: x has {len(x)} points, y has {len(y)}")
            if len(curve) == 3:
                line = ax.errorbar(x, y, yerr=list(curve[2]), marker="o", ms=3, capsize=2, label=label)[0]
            else:
                (line,) = ax.plot(x, y, marker="o", ms=3, label=label)
            colors[label] = line.get_color()
        for label, x in (vlines or {}).items():
            ax.axvline(
                x, linestyle="--", linewidth=1, color=colors.get(label.split(":")[0], "gray"), label=label
            )
        if hline is not None:
            ax.axhline(hline, linestyle=":", color="gray", linewidth=1)
        if logx:
            ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if title:
            ax.set_title(title)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        with atomic_write(path, "wb") as handle:
            fig.savefig(handle, format="png")
    finally:
        plt.close(fig)
    return path
