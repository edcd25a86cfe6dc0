import subprocess
import sys

import pytest
import torch
from torch import nn

from sparse_dst import speed
from sparse_dst.models import create_model


def test_channels_last_converts_models_and_counts_images() -> None:
    model = create_model("small_cnn", in_channels=3, width=0.25)
    rates = speed.compare_throughput(
        {"m": model}, (3, 8, 8), batch_size=4, seconds=0.01, rounds=1, channels_last=True
    )
    assert rates["m"] > 0
    conv = next(m for m in model.modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not model.training


def test_frozen_for_inference_matches_the_eager_model() -> None:
    torch.manual_seed(0)
    model = create_model("resnet18", width=0.125).eval()
    x = torch.randn(2, 3, 16, 16)
    frozen = speed.frozen_for_inference(model, x)
    other = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(frozen(other), model(other), atol=1e-5, rtol=1e-4)


def test_frozen_for_inference_refuses_a_disagreeing_result(monkeypatch: pytest.MonkeyPatch) -> None:
    class Wrong(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.zeros(x.shape[0], 10)

    monkeypatch.setattr(torch.jit, "optimize_for_inference", lambda module: Wrong())
    model = create_model("small_cnn", in_channels=3, width=0.25).eval()
    with pytest.raises(RuntimeError, match="disagrees"):
        speed.frozen_for_inference(model, torch.randn(2, 3, 8, 8))


def test_reuse_freed_memory_applies_in_a_fresh_process_and_keeps_results() -> None:
    # process-wide, so it runs in its own interpreter; on glibc it must apply, elsewhere be a no-op
    code = (
        "import torch, platform; from sparse_dst.speed import reuse_freed_memory;"
        "x = torch.randn(64, 64); y = x @ x; done = reuse_freed_memory();"
        "assert torch.equal(x @ x, y);"
        "assert done == (platform.libc_ver()[0] == 'glibc'), (done, platform.libc_ver())"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
