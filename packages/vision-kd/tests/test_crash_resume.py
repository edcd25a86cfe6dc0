"""Crash safety (issue 23): a training command killed with SIGKILL at a seeded random point resumes
from its last intact checkpoint and ends with weights bit-identical to an uninterrupted run's."""

import os
import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from typer.testing import CliRunner

from research_systems_core.checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint
from vision_kd.cli import app

EPOCHS = 6
COMMON = ["--dataset", "digits", "--n-train", "192", "--n-test", "32", "--epochs", str(EPOCHS), "--batch-size", "32",
          "--device", "cpu", "--seed", "3"]  # fmt: skip
COMMANDS = {
    "train-teacher-sparse": ["train-teacher", "--model", "slak_pico", "--model-arg", "patch_size=1", "--model-arg",
                             "kernel_sizes=5,3,3,3", "--sparsity", "0.4", "--update-frequency", "2", *COMMON],
    "distill-nkd": ["distill", "--teacher", "kd_resnet_micro", "--student", "kd_resnet_micro", "--student-arg",
                    "channels=8,8,8,8", "--loss", "nkd", "--ema-decay", "0.9", *COMMON],
}  # fmt: skip


def _epochs_done(out) -> int:
    """Epochs checkpointed so far (the newest sidecar's step + 1; only the last 2 are kept)."""
    found = list_checkpoints(out / "checkpoints")
    return int(found[-1].stem.split("-")[1]) + 1 if found else 0


def _weights(out):
    tensors, _ = load_checkpoint(latest_checkpoint(out / "weights"))
    return tensors


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_sigkill_at_a_random_point_then_resume_is_bit_exact(tmp_path, name):
    rng = random.Random(f"{name}-2026")  # seeded: the kill point is reproducible
    args = COMMANDS[name]
    runner = CliRunner()
    reference = runner.invoke(app, ["--threads", "1", *args, "--out", str(tmp_path / "ref")])
    assert reference.exit_code == 0, reference.output

    out = tmp_path / "killed"
    kill_after = rng.randint(1, EPOCHS - 2)  # checkpoints written before the kill
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "vision_kd.cli", "--threads", "1", *args, "--out", str(out)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 240
    while _epochs_done(out) < kill_after and proc.poll() is None:
        assert time.monotonic() < deadline, "the training subprocess made no progress"
        time.sleep(0.02)
    time.sleep(rng.uniform(0.0, 0.05))  # somewhere inside the next epoch (or its checkpoint write)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    assert not (out / "weights").exists()

    # no partial file is taken as complete: whatever is on disk, the newest loadable checkpoint verifies
    last = latest_checkpoint(out / "checkpoints")
    assert last is not None
    _, meta = load_checkpoint(last)
    assert meta["epoch"] + 1 >= kill_after

    resumed = runner.invoke(app, ["--threads", "1", *args, "--out", str(out)])
    assert resumed.exit_code == 0, resumed.output
    ref, got = _weights(tmp_path / "ref"), _weights(out)
    assert ref.keys() == got.keys()
    for key in ref:
        assert torch.equal(ref[key], got[key]), key
