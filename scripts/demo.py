"""The main job: run every package's quick reproduction and collect the results.

Each package's CLI offers `reproduce --quick --data-dir DIR --out DIR`; a package whose
reproduction has already written its `summary.json` is skipped (rerun with --force).
"""

from __future__ import annotations

import argparse
import logging
import os
import pathlib
import shutil
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = sorted(p.name for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").is_file())
log = logging.getLogger("demo")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=pathlib.Path, default=ROOT / "results" / "demo")
    parser.add_argument("--data-dir", type=pathlib.Path, default=os.environ.get("RESEARCH_DATA_DIR"))
    parser.add_argument("--packages", nargs="*", default=PACKAGES, choices=PACKAGES)
    parser.add_argument("--full", action="store_true", help="run the larger configurations (GPU-sized)")
    parser.add_argument("--force", action="store_true", help="rerun packages that already finished")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    failures = []
    for i, package in enumerate(args.packages, 1):
        out = args.out / package
        if (out / "summary.json").is_file() and not args.force:
            log.info("[%d/%d] %s: finished earlier, skipped", i, len(args.packages), package)
            continue
        exe = shutil.which(package)
        help_text = subprocess.run([exe, "--help"], capture_output=True, text=True).stdout if exe else ""
        if "reproduce" not in help_text:
            log.info("[%d/%d] %s: no reproduce command yet", i, len(args.packages), package)
            continue
        cmd = [exe, "reproduce", "--out", str(out)]
        if args.data_dir:
            cmd += ["--data-dir", str(args.data_dir)]
        if not args.full:
            cmd += ["--quick"]
        log.info("[%d/%d] %s: %s", i, len(args.packages), package, " ".join(cmd))
        start = time.perf_counter()
        if subprocess.run(cmd).returncode != 0:
            failures.append(package)
        log.info("%s took %.0f s", package, time.perf_counter() - start)
    if failures:
        log.error("failed: %s", ", ".join(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
