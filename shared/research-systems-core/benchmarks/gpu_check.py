"""GPU checks of the shared stack: autocast matmul throughput, the timing helper against wall
clock, BatchNorm recalibration and optimizer-state round trip on the device.

    python shared/research-systems-core/benchmarks/gpu_check.py --out results/gpu
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

import torch
from torch import nn

from research_systems_core.batchnorm import recalibrate_batchnorm
from research_systems_core.gpu_check import gpu_check_main
from research_systems_core.optim_state import load_optimizer_state, optimizer_state_to_tensors
from research_systems_core.precision import autocast
from research_systems_core.timing import time_call


def matmul_tflops() -> dict[str, Any]:
    """Dense matmul TFLOP/s at 8192^2 in fp32 (TF32 off), TF32 and bf16 autocast."""
    n = 8192
    a, b = torch.randn(n, n, device="cuda"), torch.randn(n, n, device="cuda")
    result: dict[str, Any] = {}
    for label, precision, tf32 in (("fp32", "fp32", False), ("tf32", "fp32", True), ("bf16", "bf16", False)):
        torch.backends.cuda.matmul.allow_tf32 = tf32

        def step(precision: str = precision) -> None:
            with autocast("cuda", precision):
                a @ b

        seconds = time_call(step, device="cuda", warmup=3, repeats=10).median_s
        result[f"{label}_tflops"] = round(2 * n**3 / seconds / 1e12, 1)
    torch.backends.cuda.matmul.allow_tf32 = False
    return result


def timing_agrees_with_wall_clock() -> dict[str, Any]:
    """CUDA-event timing of a long kernel sequence vs a synchronised wall-clock measurement."""
    x = torch.randn(4096, 4096, device="cuda")

    def work() -> None:
        for _ in range(20):
            x @ x

    events = time_call(work, device="cuda", warmup=2, repeats=5).median_s
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    work()
    torch.cuda.synchronize()
    wall = time.perf_counter() - t0
    return {"events_s": round(events, 5), "wall_s": round(wall, 5), "ratio": round(wall / events, 3)}


def batchnorm_and_optimizer_state() -> dict[str, Any]:
    """BN recalibration and an AdamW state round trip, all on the GPU."""
    model = nn.Sequential(nn.Conv2d(3, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), nn.Flatten(), nn.LazyLinear(10))
    model = model.cuda()
    batches = [torch.randn(64, 3, 32, 32, device="cuda") for _ in range(8)]
    model(batches[0])
    seen = recalibrate_batchnorm(model, batches)
    opt = torch.optim.AdamW(model.parameters())
    model(batches[0]).sum().backward()
    opt.step()
    tensors, meta = optimizer_state_to_tensors(opt)
    opt2 = torch.optim.AdamW(model.parameters())
    load_optimizer_state(opt2, tensors, meta)
    same = all(torch.equal(opt.state[p]["exp_avg"], opt2.state[p]["exp_avg"]) for p in model.parameters())
    return {"bn_samples": seen, "optimizer_state_equal": same}


def vision_stack() -> dict[str, Any]:
    """The shared image stack end to end on the GPU: a generated folder, loader workers, a timm
    ResNet trained in bf16 for a few epochs (loss must fall), images/s and accuracy."""
    from research_systems_core.vision import make_image_folder
    from research_systems_core.vision.selfcheck import folder_training_check

    with tempfile.TemporaryDirectory() as tmp:
        root = make_image_folder(tmp, classes=3, per_class=64, size=64)
        return folder_training_check(
            root, device="cuda", precision="bf16", image_size=64, batch_size=64, epochs=3, workers=2
        )


if __name__ == "__main__":
    gpu_check_main(
        "research-systems-core",
        {
            "matmul_tflops": matmul_tflops,
            "timing_vs_wall_clock": timing_agrees_with_wall_clock,
            "batchnorm_and_optimizer_state": batchnorm_and_optimizer_state,
            "vision_stack": vision_stack,
        },
        default_budget_s=20,
    )
