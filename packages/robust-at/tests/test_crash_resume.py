"""Crash safety (issue 23): `robust-at train` killed with SIGKILL at a seeded random point and
resumed ends with weights bit-identical to an uninterrupted run; a partial checkpoint is never
taken for a complete one."""

import json
import os
import pathlib
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from research_systems_core.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint

SETS = [
    "dataset=digits", "train_size=64", "val_size=32", "width=4", "depth=2", "epochs=4", "batch_size=32",
    "milestones=[2]", "attack_steps=2", "eval_steps=2", "eval_size=40", "swa=true", "wot.enabled=true",
    "wot.gap=1", "wot.num_gaps=2", "wot.passes=1", "wot.bn_batches=1", "wot.start_epoch=0", "keep_checkpoints=2",
]  # fmt: skip


def _command(out: pathlib.Path) -> list[str]:
    args = [sys.executable, "-m", "robust_at.cli", "--log-level", "WARNING", "train", "--out", str(out)]
    for s in SETS:
        args += ["--set", s]
    return args


def _env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}


def _run_to_end(out: pathlib.Path) -> None:
    done = subprocess.run(_command(out), env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]


def _kill_at_random_point(out: pathlib.Path, rng: random.Random) -> bool:
    """Start training, SIGKILL it after a seeded number of finished epochs plus a seeded delay
    (so the kill can land mid-epoch or mid-save); True when it was killed before finishing."""
    epochs_done = rng.randint(1, 2)
    delay = rng.uniform(0.0, 0.1)
    proc = subprocess.Popen(_command(out), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    history = out / "history.jsonl"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if history.is_file() and len(history.read_text().splitlines()) >= epochs_done:
            time.sleep(delay)
            break
        time.sleep(0.02)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=60)
    return killed


@pytest.mark.parametrize("seed", [0])
def test_sigkill_then_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path, seed: int) -> None:
    reference, crashed = tmp_path / "reference", tmp_path / "crashed"
    _run_to_end(reference)
    killed = _kill_at_random_point(crashed, random.Random(seed))
    assert killed, "the run finished before the kill; make it longer"
    # every checkpoint that is listed as complete verifies; a torn one is never the latest
    latest = latest_checkpoint(crashed / "checkpoints")
    assert latest is not None
    assert latest.with_suffix(".json") in list_checkpoints(crashed / "checkpoints")
    load_checkpoint(latest)
    _run_to_end(crashed)
    a = load_file(str(reference / "model_last.safetensors"))
    b = load_file(str(crashed / "model_last.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    strip = lambda rows: [{k: v for k, v in r.items() if not k.endswith("_seconds")} for r in rows]  # noqa: E731
    rows = [
        strip(json.loads(line) for line in (d / "history.jsonl").read_text().splitlines())
        for d in (reference, crashed)
    ]
    assert rows[0] == rows[1]


def test_a_torn_checkpoint_file_is_skipped_for_the_previous_complete_one(tmp_path) -> None:
    from research_systems_core.config import parse_overrides
    from robust_at.train import build_config, train

    out = tmp_path / "run"
    train(
        build_config("digits-pilot", parse_overrides([*SETS, "epochs=2", "wot.enabled=false", "swa=false"])),
        out,
    )
    ckpts = sorted((out / "checkpoints").glob("ckpt-*.safetensors"))
    assert len(ckpts) == 2
    newest = ckpts[-1]
    newest.write_bytes(newest.read_bytes()[:100])  # torn write of the newest tensor file
    assert latest_checkpoint(out / "checkpoints").with_suffix("") == ckpts[0].with_suffix("")
