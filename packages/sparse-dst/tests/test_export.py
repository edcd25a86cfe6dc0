"""The exported slim model loads and runs in a process that cannot import sparse_dst."""

import subprocess
import sys

import torch
from torch import nn

from sparse_dst.chase import Chase, ChaseConfig
from sparse_dst.export import export_slim
from sparse_dst.models import create_model

LOADER = r"""
import sys
sys.modules["sparse_dst"] = None  # any import of sparse_dst now raises ImportError
import torch
from safetensors.torch import load_file
ref = load_file(sys.argv[1] + "/slim_reference.safetensors")
scripted = torch.jit.load(sys.argv[1] + "/slim.torchscript.pt")
program = torch.export.load(sys.argv[1] + "/slim.pt2").module()
with torch.no_grad():
    for model in (scripted, program):
        out = model(ref["input"])
        assert torch.allclose(out, ref["output"], atol=1e-5, rtol=1e-4), float((out - ref["output"]).abs().max())
try:
    import sparse_dst  # noqa: F401
except ImportError:
    print("ok without sparse_dst")
"""


def test_slim_export_loads_without_the_package(tmp_path) -> None:
    torch.manual_seed(0)
    model = create_model("resnet18", width=0.125)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    x = torch.randn(2, 3, 16, 16)
    config = ChaseConfig(density=0.3, channel_sparsity=0.5, channel_interval=1, channel_end_fraction=0.5)
    chase = Chase(model, optimizer, config, total_steps=4, example_input=x)
    for _ in range(4):
        loss = nn.functional.cross_entropy(model(x), torch.tensor([1, 2]))
        optimizer.zero_grad()
        loss.backward()
        chase.step()
    model.eval()
    slim = chase.finalize()
    result = export_slim(slim, x, tmp_path)
    assert result["torchscript"]["ok"] and result["torch_export"]["ok"], result
    done = subprocess.run(
        [sys.executable, "-c", LOADER, str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "ok without sparse_dst" in done.stdout
