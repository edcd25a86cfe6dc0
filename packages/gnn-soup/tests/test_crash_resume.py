"""Issue 23: a SIGKILLed ingredient run resumes to the same weights bit for bit; Ray under uv run."""

import random
import signal
import subprocess
import sys
import time

import pytest
import torch
from typer.testing import CliRunner

from gnn_soup.cli import app
from gnn_soup.ingredients import IngredientStore

ARGS = [
    "train-ingredients",
    "--dataset",
    "synthetic",
    "-k",
    "2",
    "--hidden",
    "16",
    "--steps",
    "120",
    "--eval-every",
    "10",
    "--checkpoint-every",
    "10",
    "--executor",
    "sequential",
    "--sampler",
    "neighbor",
    "--sampler",
    "saint_rw",
    "--sampler-option",
    "neighbor.batch_size=8",
]


def _weights(run) -> list[dict[str, torch.Tensor]]:
    states, metas = IngredientStore(run).load_all()
    assert [m["index"] for m in metas] == [0, 1]
    return states


def _progress_step(run) -> int:
    steps = [int(p.stem.split("-")[1]) for p in (run / "progress").glob("*/ckpt-*.json")]
    return max(steps, default=0)


def test_sigkill_then_resume_is_bit_exact(tmp_path) -> None:
    reference = tmp_path / "reference"
    result = CliRunner().invoke(app, [*ARGS, "--out", str(reference)])
    assert result.exit_code == 0, result.output
    run = tmp_path / "killed"
    target = random.Random(23).choice(range(20, 100, 10))
    cmd = [sys.executable, "-c", "from gnn_soup.cli import app; app()", *ARGS, "--out", str(run)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while proc.poll() is None and _progress_step(run) < target and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL, "the run finished before it could be killed"
    assert _progress_step(run) >= target
    # a partial (unverified) checkpoint left by a kill is never taken for a complete one
    for folder in (run / "progress").iterdir():
        (folder / "ckpt-000999999.safetensors").write_bytes(b"truncated")
    resumed = CliRunner().invoke(app, [*ARGS, "--out", str(run)])
    assert resumed.exit_code == 0, resumed.output
    for a, b in zip(_weights(reference), _weights(run), strict=True):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not any((run / "progress").iterdir())  # finished ingredients drop their progress


def test_ray_workers_use_this_interpreter_even_under_uv_run(monkeypatch) -> None:
    pytest.importorskip("ray")
    import ray._private.runtime_env.uv_runtime_env_hook as hook_module
    from ray._private import worker

    from gnn_soup.executors import disable_ray_uv_hook, ray_runtime_env

    # pretend the driver was started by `uv run`: Ray's hook would replace py_executable with
    # "uv run ... python", which rebuilds the workspace environment without the ray extra
    monkeypatch.setattr(hook_module, "_get_uv_run_cmdline", lambda: ["uv", "run", "pytest"])
    monkeypatch.setenv("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "1")
    import ray._private.ray_constants as constants

    monkeypatch.setattr(constants, "RAY_ENABLE_UV_RUN_RUNTIME_ENV", True)
    hooked = worker._maybe_modify_runtime_env(ray_runtime_env(), False)
    assert hooked["py_executable"].startswith("uv run")  # the failure mode, reproduced
    disable_ray_uv_hook()
    kept = worker._maybe_modify_runtime_env(ray_runtime_env(), False)
    assert kept["py_executable"] == sys.executable
    assert kept["env_vars"]["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] == "0"
