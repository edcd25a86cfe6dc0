"""Crash safety: a training run killed with SIGKILL at a random moment resumes to the same weights,
bit for bit, as an uninterrupted run; a torn checkpoint is never taken for a complete one."""

import os
import pathlib
import random
import signal
import subprocess
import sys
import time

from safetensors.torch import load_file

HELPER = pathlib.Path(__file__).with_name("crash_train.py")
EPOCHS = 30  # epochs on digits take tens of ms: leave many after the kill point


def _run(out: pathlib.Path) -> subprocess.Popen:
    env = dict(os.environ, OMP_NUM_THREADS="1", RESEARCH_PROGRESS="0")
    return subprocess.Popen([sys.executable, str(HELPER), str(out), str(EPOCHS)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip


def _latest_epoch(out: pathlib.Path) -> int:
    """The newest checkpointed epoch (training keeps only the last two checkpoints), 0 if none."""
    steps = [int(p.stem.removeprefix("ckpt-")) for p in out.glob("ckpt-*.json")] if out.is_dir() else []
    return max(steps, default=0)


def test_sigkill_then_resume_gives_identical_weights(tmp_path) -> None:
    reference = tmp_path / "reference"
    sys.path.insert(0, str(HELPER.parent))
    try:
        from crash_train import run  # the same code, uninterrupted, in this process
    finally:
        sys.path.pop(0)
    run(str(reference), EPOCHS)
    killed = tmp_path / "killed"
    rng = random.Random(int(os.environ.get("CRASH_SEED", "0")))
    target = rng.randint(1, 5)  # kill once this many epochs are checkpointed (+ a random delay)
    proc = _run(killed)
    deadline = time.monotonic() + 300
    while _latest_epoch(killed) < target and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(rng.uniform(0.0, 0.03))
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (killed / "final.safetensors").exists(), "the run finished before the kill; raise EPOCHS"
    # a torn checkpoint (tensor file without its sidecar, as a kill mid-write leaves) is ignored
    (killed / "ckpt-000000099.safetensors").write_bytes(b"partial")
    resumed = _run(killed)
    assert resumed.wait(timeout=300) == 0, resumed.stderr.read()[-2000:]
    a = load_file(str(reference / "final.safetensors"))
    b = load_file(str(killed / "final.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].equal(b[key]), key
