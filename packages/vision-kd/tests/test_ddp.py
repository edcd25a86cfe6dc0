import os
import pathlib
import socket
import subprocess
import sys

import pytest
import torch.distributed as dist


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not available")
def test_ddp_two_cpu_ranks_stay_in_sync(tmp_path):
    out = tmp_path / "ddp.txt"
    with socket.socket() as sock:  # a free port, so parallel test runs do not collide
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={port}",
           str(pathlib.Path(__file__).with_name("ddp_worker.py")), str(out)]  # fmt: skip
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert out.read_text() == "1 2"  # student and projector identical on both ranks
