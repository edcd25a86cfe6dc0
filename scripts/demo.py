"""The main job: run every package's reproduction, then write one report (Markdown and HTML).

Each package's CLI offers ``reproduce --out DIR --data-dir DIR [--quick]``; it writes its
``summary.json`` last, so a package whose summary exists is finished and skipped on a rerun
(``--force`` reruns it). The report, ``<out>/report.md`` and ``<out>/report.html``, shows per
paper the claim, our numbers, the plots and a verdict. ``--publish DIR`` also copies the report
and its plots to DIR (the committed copy linked from the README).
"""

from __future__ import annotations

import argparse
import datetime as dt
import html
import json
import logging
import os
import pathlib
import shutil
import subprocess
import sys
import time
from typing import Any

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = [
    "llm-sparsity",
    "robust-at",
    "gnn-soup",
    "vision-kd",
    "sparse-dst",
    "feature-select",
    "usv-planner",
]
VERDICTS = ("reproduced", "partly", "not reproduced at this scale")
log = logging.getLogger("demo")


def run_package(
    package: str, out: pathlib.Path, data_dir: str | None, full: bool, timeout: float
) -> dict[str, Any]:
    """Run one package's reproduction; return a status record (never raises for a failed run)."""
    beside = pathlib.Path(sys.executable).parent / package  # the venv running this script
    exe = str(beside) if beside.is_file() else shutil.which(package)
    if exe is None:
        return {"package": package, "status": "missing", "detail": f"console script {package} not installed"}
    cmd = [exe, "reproduce", "--out", str(out)]
    if data_dir:
        cmd += ["--data-dir", str(data_dir)]
    if not full:
        cmd.append("--quick")
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "reproduce.log", "w") as logfile:
        try:
            code = subprocess.run(cmd, stdout=logfile, stderr=subprocess.STDOUT, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            code = "timeout"
    seconds = round(time.perf_counter() - start, 1)
    ok = code == 0 and (out / "summary.json").is_file()
    return {
        "package": package,
        "status": "ok" if ok else "failed",
        "exit": code,
        "seconds": seconds,
        "cmd": cmd,
    }


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list | tuple):
        return ", ".join(_cell(v) for v in value)
    return str(value).replace("|", "/").replace("\n", " ")


def markdown_table(rows: list[dict[str, Any]], limit: int = 40) -> str:
    if not rows:
        return "_no table_\n"
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows[:limit]:
        lines.append("| " + " | ".join(_cell(row.get(c, "")) for c in columns) + " |")
    if len(rows) > limit:
        lines.append(f"\n_{len(rows) - limit} more rows in summary.json_")
    return "\n".join(lines) + "\n"


def _load_summary(path: pathlib.Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _pngs(summary: dict[str, Any], package_dir: pathlib.Path) -> list[pathlib.Path]:
    names = summary.get("pngs") or summary.get("plots") or []
    found = []
    for name in names:
        path = pathlib.Path(name)
        path = path if path.is_absolute() else package_dir / path
        if path.is_file():
            found.append(path)
    if not found:
        found = sorted(package_dir.glob("*.png"))
    return found


def build_report(out: pathlib.Path, statuses: dict[str, dict[str, Any]], full: bool) -> tuple[str, str]:
    """Markdown and HTML of the report; image links are relative to ``out``."""
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    mode = "full" if full else "quick"
    md = [
        "# Reproduction report",
        "",
        f"Generated {now} by `scripts/demo.py` (what `uv run nox -s demo` runs; {mode} mode) on {os.cpu_count()} CPU cores.",
        "Every number below was produced by this run; verdicts are the packages' own honest reading of them.",
        "",
        "| package | paper | verdict | time (s) |",
        "|---|---|---|---|",
    ]
    sections = []
    h = [
        "<!doctype html><html><head><meta charset='utf-8'><title>Reproduction report</title>",
        "<style>body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}"
        "table{border-collapse:collapse;font-size:90%}td,th{border:1px solid #ccc;padding:3px 6px}"
        "img{max-width:520px;margin:4px;border:1px solid #eee}.v{font-weight:bold}</style></head><body>",
        "<h1>Reproduction report</h1>",
        f"<p>Generated {html.escape(now)} by <code>scripts/demo.py</code> (what <code>uv run nox -s demo</code> runs; {mode} mode).</p>",
    ]
    for package in PACKAGES:
        package_dir = out / package
        summary = _load_summary(package_dir / "summary.json")
        status = statuses.get(package, {})
        seconds = status.get("seconds", summary.get("seconds", "") if summary else "")
        if summary is None:
            detail = status.get("status", "not run")
            md.append(f"| {package} | | {detail} (see {package}/reproduce.log) | {seconds} |")
            sections.append(f"## {package}\n\nNo results: {detail}. See `{package}/reproduce.log`.\n")
            h.append(f"<h2>{html.escape(package)}</h2><p>No results: {html.escape(str(detail))}.</p>")
            continue
        verdict = summary.get("verdict", "?")
        paper = _cell(summary.get("paper", ""))
        md.append(f"| [{package}](#{package}) | {paper} | {verdict} | {seconds} |")
        pngs = _pngs(summary, package_dir)
        rel = [p.relative_to(out).as_posix() if p.is_relative_to(out) else p.as_posix() for p in pngs]
        table = summary.get("table") or []
        sec = [
            f"## {package}",
            "",
            f"**Paper:** {paper}",
            "",
            f"**Claim:** {summary.get('claim', '')}",
            "",
            f"**Verdict: {verdict}.** {summary.get('verdict_reason', '')}",
            "",
            f"Seeds: {_cell(summary.get('seeds', ''))}",
            "",
            markdown_table(table if isinstance(table, list) else []),
        ]
        sec += [f"![{pathlib.Path(r).stem}]({r})" for r in rel]
        sections.append("\n".join(sec) + "\n")
        h.append(f"<h2 id='{package}'>{html.escape(package)}</h2>")
        h.append(
            f"<p><b>Paper:</b> {html.escape(paper)}</p><p><b>Claim:</b> {html.escape(str(summary.get('claim', '')))}</p>"
        )
        h.append(
            f"<p class='v'>Verdict: {html.escape(str(verdict))}.</p><p>{html.escape(str(summary.get('verdict_reason', '')))}</p>"
        )
        if isinstance(table, list) and table:
            cols = list(dict.fromkeys(k for row in table for k in row))
            h.append("<table><tr>" + "".join(f"<th>{html.escape(c)}</th>" for c in cols) + "</tr>")
            for row in table[:40]:
                h.append(
                    "<tr>" + "".join(f"<td>{html.escape(_cell(row.get(c, '')))}</td>" for c in cols) + "</tr>"
                )
            h.append("</table>")
        h.append(
            "<div>" + "".join(f"<img src='{html.escape(r)}' alt='{html.escape(r)}'>" for r in rel) + "</div>"
        )
    md.append("")
    h.append("</body></html>")
    return "\n".join(md + sections), "\n".join(h)


def publish(out: pathlib.Path, target: pathlib.Path) -> None:
    """Copy report.md/html and the PNGs they show into ``target`` (keeping relative links)."""
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for name in ("report.md", "report.html"):
        shutil.copy2(out / name, target / name)
    for package in PACKAGES:
        for file in [*sorted((out / package).glob("*.png")), out / package / "summary.json"]:
            if file.is_file():
                (target / package).mkdir(exist_ok=True)
                shutil.copy2(file, target / package / file.name)


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "results" / "demo")
    parser.add_argument("--data-dir", default=os.environ.get("RESEARCH_DATA_DIR"))
    parser.add_argument("--packages", nargs="*", default=PACKAGES, choices=PACKAGES)
    parser.add_argument(
        "--full", action="store_true", help="run the larger configurations instead of --quick"
    )
    parser.add_argument("--force", action="store_true", help="rerun packages that already finished")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds allowed per package")
    parser.add_argument("--publish", type=pathlib.Path, help="also copy the report and plots here")
    parser.add_argument(
        "--report-only", action="store_true", help="only rebuild the report from existing results"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s demo: %(message)s", datefmt="%H:%M:%S")
    args.out.mkdir(parents=True, exist_ok=True)
    status_file = args.out / "status.json"
    statuses: dict[str, dict[str, Any]] = _load_summary(status_file) or {}
    if not args.report_only:
        for i, package in enumerate(args.packages, 1):
            pkg_out = args.out / package
            if (pkg_out / "summary.json").is_file() and not args.force:
                log.info(
                    "[%d/%d] %s: finished earlier, skipped (use --force to rerun)",
                    i,
                    len(args.packages),
                    package,
                )
                continue
            log.info("[%d/%d] %s: running its reproduction ...", i, len(args.packages), package)
            statuses[package] = run_package(package, pkg_out, args.data_dir, args.full, args.timeout)
            log.info(
                "[%d/%d] %s: %s in %s s",
                i,
                len(args.packages),
                package,
                statuses[package]["status"],
                statuses[package].get("seconds"),
            )
            status_file.write_text(json.dumps(statuses, indent=1))
    md, page = build_report(args.out, statuses, args.full)
    (args.out / "report.md").write_text(md)
    (args.out / "report.html").write_text(page)
    log.info("report: %s", args.out / "report.md")
    if args.publish:
        publish(args.out, args.publish)
        log.info("published to %s", args.publish)
    failed = [p for p in args.packages if statuses.get(p, {}).get("status") not in (None, "ok")]
    if failed:
        log.error("failed: %s (logs in %s/<package>/reproduce.log)", ", ".join(failed), args.out)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
