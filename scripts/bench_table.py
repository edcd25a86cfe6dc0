"""Turn every package's benchmark JSON into one Markdown table: ``docs/benchmarks.md``.

    python scripts/bench_table.py [--results results/bench] [--out docs/benchmarks.md]

Reads ``<results>/<package>/*.json`` (written by ``nox -s "bench(<package>)"``, schema of
``research_systems_core.bench``); a package without results is listed as not measured.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _num(value: object) -> str:
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, int | float):
        return f"{value:.3g}"
    return str(value)


def load_records(results: pathlib.Path) -> dict[str, list[dict]]:
    """Package name -> its bench records (files that are not bench records are ignored)."""
    records: dict[str, list[dict]] = {}
    for path in sorted(results.glob("*/*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and "rows" in data and "environment" in data:
            records.setdefault(data.get("package", path.parent.name), []).append(data)
    return records


def bench_markdown(records: dict[str, list[dict]], packages: list[str], note: str = "") -> str:
    """The table: one row per measure, with the machine each package ran on."""
    lines = [
        "# Benchmarks",
        "",
        "Ours against the peer library on the same inputs in one run (interleaved repeats, medians).",
        "`ratio` > 1 means ours is better (faster, or less memory). Regenerate with "
        '`python scripts/bench_table.py` after `uv run nox -s "bench(<package>)"`.',
        *(["", note] if note else []),
        "",
        "| package | measure | ours | peer | unit | ratio | goal | met | mode | date | machine |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for package in packages:
        if package not in records:
            lines.append(
                f"| {package} | _not measured: no results/bench/{package}/*.json_ | | | | | | | | | |"
            )
            continue
        for record in records[package]:
            env = record["environment"]
            machine = f"{env.get('cores')} cores, {env.get('cpu_model', '')}".strip()
            if env.get("device") and env["device"] != "cpu":
                machine = env["device"]
            if env.get("warning"):
                machine += " (busy)"
            for row in record["rows"]:
                lines.append(
                    "| "
                    + " | ".join(
                        [
                            package,
                            str(row["name"]),
                            _num(row["ours"]),
                            _num(row["peer"]),
                            str(row.get("unit", "")),
                            _num(row["ratio"]),
                            str(row.get("goal") or ""),
                            {True: "met", False: "**missed**", None: ""}[row.get("met")],
                            str(record.get("mode", "")),
                            str(env.get("date", ""))[:10],
                            machine,
                        ]
                    )
                    + " |"
                )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results", type=pathlib.Path, default=ROOT / "results" / "bench")
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--note", default="", help="a sentence on where these results come from")
    args = parser.parse_args()
    packages = sorted(p.name for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").is_file())
    records = load_records(args.results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(bench_markdown(records, packages, args.note))
    print(f"wrote {args.out} ({sum(len(r) for r in records.values())} records, {len(records)} packages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
