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
HEARTBEAT_S = 30.0
log = logging.getLogger("demo")

# What each quick reproduction reads from the data directory, and where it comes from originally.
# (relative path in the data directory, source URL, "gz" when the source is gzip-compressed)
_SVAMP = "https://raw.githubusercontent.com/arkilpatel/SVAMP/main/"
_PLANETOID = "https://raw.githubusercontent.com/kimiyoung/planetoid/master/data/"
_MNIST = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_SKFEATURE = "https://raw.githubusercontent.com/jundongl/scikit-feature/gh-pages/files/datasets/"
MNIST_FILES = [
    ("MNIST/raw/" + name, _MNIST + name + ".gz", "gz")
    for name in (
        "train-images-idx3-ubyte",
        "train-labels-idx1-ubyte",
        "t10k-images-idx3-ubyte",
        "t10k-labels-idx1-ubyte",
    )
]
DATA_NEEDS: dict[str, list[tuple[str, str, str]]] = {
    "llm-sparsity": [
        ("arithmetic/SVAMP.json", _SVAMP + "SVAMP.json", ""),
        ("arithmetic/mawps/train.csv", _SVAMP + "data/cv_mawps/fold0/train.csv", ""),
        ("arithmetic/mawps/dev.csv", _SVAMP + "data/cv_mawps/fold0/dev.csv", ""),
    ],
    "robust-at": MNIST_FILES,
    "gnn-soup": [
        (f"planetoid/Cora/raw/ind.cora.{ext}", f"{_PLANETOID}ind.cora.{ext}", "")
        for ext in ("x", "tx", "allx", "y", "ty", "ally", "graph", "test.index")
    ],
    "vision-kd": MNIST_FILES,
    "sparse-dst": MNIST_FILES,
    "feature-select": [
        (f"scikit-feature/{name}.mat", f"{_SKFEATURE}{name}.mat", "")
        for name in ("madelon", "Isolet", "BASEHOCK", "COIL20", "arcene", "Prostate_GE", "ALLAML", "PCMAC")
    ],
    "usv-planner": [],
}


def missing_files(packages: list[str], data_dir: pathlib.Path) -> list[tuple[str, str, str]]:
    """The data files the chosen reproductions need that are not in ``data_dir`` (deduplicated)."""
    seen: dict[str, tuple[str, str, str]] = {}
    for package in packages:
        for need in DATA_NEEDS.get(package, []):
            if not (data_dir / need[0]).is_file():
                seen.setdefault(need[0], need)
    return list(seen.values())


def download(needs: list[tuple[str, str, str]], data_dir: pathlib.Path) -> None:
    """Fetch each missing file from its original source into the data directory (atomically)."""
    import gzip
    import urllib.request

    for relative, url, compression in needs:
        target = data_dir / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        log.info("downloading %s -> %s", url, target)
        tmp = target.with_name(target.name + ".part")
        with urllib.request.urlopen(url, timeout=120) as response:
            payload = response.read()
        tmp.write_bytes(gzip.decompress(payload) if compression == "gz" else payload)
        tmp.replace(target)


def explain_missing(needs: list[tuple[str, str, str]], data_dir: pathlib.Path) -> str:
    """One message listing every missing file and the two ways to provide it."""
    lines = [f"{len(needs)} data file(s) missing from the data directory {data_dir}:"]
    lines += [f"  {relative}   (from {url})" for relative, url, _ in needs]
    lines += [
        "Provide them in one of two ways:",
        "  1. let the demo fetch them from their original sources: uv run nox -s demo -- --download",
        "  2. copy them there yourself, or point --data-dir / RESEARCH_DATA_DIR at a folder that has them.",
    ]
    return "\n".join(lines)


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
    log_path = out / "reproduce.log"
    with open(log_path, "w") as logfile:
        process = subprocess.Popen(cmd, stdout=logfile, stderr=subprocess.STDOUT)
        code: int | str = _wait_with_heartbeat(process, package, log_path, timeout)
    seconds = round(time.perf_counter() - start, 1)
    ok = code == 0 and (out / "summary.json").is_file()
    return {
        "package": package,
        "status": "ok" if ok else "failed",
        "exit": code,
        "seconds": seconds,
        "cmd": cmd,
    }


def _last_line(path: pathlib.Path) -> str:
    try:
        lines = path.read_text(errors="replace").replace("\r", "\n").strip().splitlines()
    except OSError:
        return ""
    return lines[-1][-160:] if lines else ""


def _wait_with_heartbeat(
    process: subprocess.Popen[bytes], package: str, log_path: pathlib.Path, timeout: float
) -> int | str:
    """Wait for a reproduction, logging its latest output line every 30 s so it never looks hung."""
    start = time.monotonic()
    while True:
        try:
            return process.wait(timeout=HEARTBEAT_S)
        except subprocess.TimeoutExpired:
            elapsed = time.monotonic() - start
            if elapsed > timeout:
                process.kill()
                process.wait()
                return "timeout"
            log.info("   %s: still running (%d s): %s", package, elapsed, _last_line(log_path))


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
    measured = measured_sections(ROOT / "results" / "bench", ROOT / "results" / "gpu")
    sections.append(measured)
    h.append(f"<pre>{html.escape(measured)}</pre>")
    h.append("</body></html>")
    return "\n".join(md + sections), "\n".join(h)


def measured_sections(bench_dir: pathlib.Path, gpu_dir: pathlib.Path) -> str:
    """Markdown for what was measured where: benchmark ratios against peers (results/bench) and
    the GPU checks (results/gpu), each saying plainly when it has no results."""
    from bench_table import bench_markdown, load_records  # scripts/ is on sys.path when run as a script
    from gpu_checks import summary_markdown

    records = load_records(bench_dir)
    parts = ["## Benchmarks against peer libraries", ""]
    if records:
        table = bench_markdown(records, PACKAGES).split("\n", 2)[2]  # drop the page title
        parts.append(f"From `{bench_dir}`.\n\n{table}")
    else:
        parts.append(f"No benchmark results in `{bench_dir}`: run `uv run nox -s bench -- --quick` first.\n")
    parts += ["## GPU checks", ""]
    if list(gpu_dir.glob("*.json")):
        parts.append(summary_markdown(gpu_dir).split("\n", 2)[2])
    else:
        parts.append(
            f"No GPU results in `{gpu_dir}`: run `uv run nox -s gpu` on a machine with a CUDA GPU.\n"
        )
    return "\n".join(parts)


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
    parser.add_argument(
        "--download", action="store_true", help="fetch missing data files from their original sources"
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s demo: %(message)s", datefmt="%H:%M:%S")
    data_dir = pathlib.Path(
        args.data_dir or pathlib.Path.home() / ".cache" / "research-systems-core" / "data"
    )
    args.data_dir = str(data_dir)
    needs = [] if args.report_only else missing_files(args.packages, data_dir)
    if needs and args.download:
        download(needs, data_dir)
    elif needs:
        log.error(explain_missing(needs, data_dir))
        return 2
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
