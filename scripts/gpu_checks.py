"""Run every package's ``benchmarks/gpu_check.py`` within its time budget, then write
``<out>/summary.md`` from the ``<out>/<package>.json`` records (what ``nox -s gpu`` runs).

Without CUDA it prints one line and exits 0.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def check_scripts() -> dict[str, pathlib.Path]:
    scripts = {
        "research-systems-core": ROOT / "shared" / "research-systems-core" / "benchmarks" / "gpu_check.py"
    }
    scripts |= {p.name: p / "benchmarks" / "gpu_check.py" for p in sorted((ROOT / "packages").iterdir())}
    return {name: path for name, path in scripts.items() if path.is_file()}


def _cell(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value).replace("|", "/").replace("\n", " ")


def summary_markdown(out: pathlib.Path) -> str:
    """One Markdown page: device, versions, and every check's numbers per package."""
    records = [json.loads(p.read_text()) for p in sorted(out.glob("*.json"))]
    if not records:
        return "# GPU checks\n\nNo GPU check results in this folder.\n"
    first = records[0]
    lines = [
        "# GPU checks",
        "",
        f"Device: **{first.get('device')}** ({first.get('memory_gib')} GiB), torch {first.get('torch')}, "
        f"CUDA {first.get('cuda')}, date {first.get('date')}.",
        "",
    ]
    for record in records:
        lines += [
            f"## {record['package']}",
            "",
            f"{record.get('total_seconds')} s of {record.get('budget_s')} s budget.",
            "",
        ]
        lines += ["| check | status | numbers |", "|---|---|---|"]
        for name, result in record.get("checks", {}).items():
            numbers = ", ".join(f"{k}={_cell(v)}" for k, v in result.items() if k != "status")
            lines.append(f"| {name} | {result.get('status')} | {numbers} |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "results" / "gpu")
    parser.add_argument("--budgets", default="", help="package=seconds,... (default 60 each)")
    args = parser.parse_args()
    import torch

    if not torch.cuda.is_available():
        print("no CUDA device visible to torch: GPU checks skipped")
        return 0
    budgets = dict(item.split("=") for item in args.budgets.split(",") if item)
    args.out.mkdir(parents=True, exist_ok=True)
    failed = []
    start = time.perf_counter()
    for package, script in check_scripts().items():
        budget = float(budgets.get(package, 60))
        print(f"== {package} (budget {budget:.0f} s)", flush=True)
        cmd = [sys.executable, str(script), "--out", str(args.out), "--budget-s", str(budget)]
        try:
            code = subprocess.run(cmd, timeout=budget * 2 + 60).returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
        if code != 0:
            failed.append(f"{package} ({code})")
    (args.out / "summary.md").write_text(summary_markdown(args.out))
    print(f"GPU checks done in {time.perf_counter() - start:.0f} s; summary: {args.out / 'summary.md'}")
    if failed:
        print("failed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
