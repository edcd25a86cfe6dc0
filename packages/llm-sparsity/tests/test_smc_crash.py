"""Crash safety (issue 23): an SMC-Bench run killed with SIGKILL at a seeded point resumes to the same
rows as an uninterrupted run, and a row torn by the kill is never taken for a complete one."""

from __future__ import annotations

import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

HELPER = pathlib.Path(__file__).with_name("smc_crash_run.py")


def _start(results: pathlib.Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    return subprocess.Popen([sys.executable, str(HELPER), str(results)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip


def _complete_rows(results: pathlib.Path) -> int:
    if not results.is_file():
        return 0
    return sum(1 for line in results.read_text().splitlines() if line.strip().endswith("}"))


def _cells(rows: list[dict]) -> dict[tuple, tuple]:
    return {
        (r["task"], r["method"], r["sparsity"], r["seed"]): (r["accuracy"], r["actual_sparsity"])
        for r in rows
    }


def test_sigkill_then_resume_gives_the_uninterrupted_rows(tmp_path) -> None:
    sys.path.insert(0, str(HELPER.parent))
    try:
        from smc_crash_run import run  # the same code, uninterrupted, in this process
    finally:
        sys.path.pop(0)
    reference = run(str(tmp_path / "reference.jsonl"))
    rng = random.Random(int(os.environ.get("CRASH_SEED", "0")))
    rows_before_kill = rng.randint(1, 4)
    results = tmp_path / "killed.jsonl"
    proc = _start(results)
    deadline = time.monotonic() + 300
    while _complete_rows(results) < rows_before_kill and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(rng.uniform(0.0, 0.02))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run finished before the kill"
    assert _complete_rows(results) < len(reference)
    with open(results, "a") as fh:  # a row torn mid-write, as a kill can leave one
        fh.write('{"task": "toy", "method": "random", "spar')
    resumed = _start(results)
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()[-2000:]
    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip().endswith("}")]
    assert len(rows) == len(reference)
    assert _cells(rows) == _cells(reference)
