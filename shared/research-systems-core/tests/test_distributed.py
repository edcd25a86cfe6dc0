"""Distributed helpers, for real, with two CPU processes on loopback (gloo)."""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys

import pytest
from torch import nn

from research_systems_core import distributed as rd

WORKER = """
import json, os, sys
import torch
from torch import nn
from research_systems_core import distributed as rd

torch.set_num_threads(1)
info = rd.init_distributed()
try:
    sampler = rd.distributed_sampler(list(range(10)), shuffle=False)
    indices = list(iter(sampler))
    mean = rd.reduce_mean(float(info.rank + 1))
    metrics = rd.reduce_metrics({"acc": info.rank * 1.0, "loss": 2.0})
    torch.manual_seed(info.rank)  # different init per rank: DDP broadcasts rank 0's weights
    model = rd.wrap_model(nn.Linear(3, 1), info)
    model(torch.randn(4, 3)).sum().backward()
    rd.barrier()
    out = {"rank": info.rank, "is_main": info.is_main, "main_process": rd.is_main_process(), "indices": indices,
           "mean": mean, "metrics": metrics, "weight": model.module.weight.detach().flatten().tolist()}
    with open(os.path.join(sys.argv[1], f"rank{info.rank}.json"), "w") as handle:
        json.dump(out, handle)
finally:
    rd.cleanup()
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_under_torchrun(tmp_path: pathlib.Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes=1", "--nproc-per-node=2",
        "--master-addr=127.0.0.1", f"--master-port={_free_port()}", str(script), str(tmp_path),
    ]  # fmt: skip
    subprocess.run(cmd, env=env, check=True, timeout=240, capture_output=True)
    r0, r1 = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert (r0["is_main"], r0["main_process"], r1["is_main"], r1["main_process"]) == (
        True,
        True,
        False,
        False,
    )
    assert sorted(r0["indices"] + r1["indices"]) == list(range(10))
    assert not set(r0["indices"]) & set(r1["indices"])
    assert r0["mean"] == r1["mean"] == 1.5
    assert r0["metrics"] == r1["metrics"] == {"acc": 0.5, "loss": 2.0}
    assert r0["weight"] == r1["weight"]


def test_single_process_is_a_no_op(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(var, raising=False)
    info = rd.init_distributed()
    assert (info.rank, info.world_size, info.is_distributed, info.is_main) == (0, 1, False, True)
    assert rd.distributed_sampler([1, 2]) is None
    assert rd.reduce_mean(3.0) == 3.0 and rd.reduce_metrics({"a": 1}) == {"a": 1.0}
    model = nn.Linear(2, 2)
    assert rd.wrap_model(model, info) is model
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(ValueError, match="WORLD_SIZE must be an integer, got 'two'"):
        rd.init_distributed()
