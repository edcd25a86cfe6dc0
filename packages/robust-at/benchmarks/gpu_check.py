"""robust-at GPU checks (random CIFAR-shaped data, no download), for ``uv run nox -s gpu``.

1. ``pgd_bf16_vs_torchattacks``: PGD-10 on PreActResNet-18 at batch 512, ours under bf16
   autocast (and fp32) against torchattacks (fp32), images/s, goal >= 1.5x; robust accuracy of
   ours bf16 vs ours fp32 (and torchattacks) on a briefly trained model (learnable synthetic
   labels), goal within 1 point.
2. ``at_epoch_images_per_s``: one AT-PGD epoch (PGD-10 training, batch 128) of 50k random
   CIFAR-shaped images through the package's training loop, fp32 and bf16.
3. ``wot_overhead``: one WOT refinement at the reference settings (4 deltas, 1000 PGD-10
   validation images, BN recalibration on 400 batches; passes scaled to 10) amortised over the
   1600 AT steps it follows; goal <= 5%.

Usage: python benchmarks/gpu_check.py --out results/gpu --budget-s 75
"""

from __future__ import annotations

import time

import torch
import torch.nn.functional as F

from research_systems_core.distributed import DistInfo
from research_systems_core.gpu_check import gpu_check_main
from research_systems_core.precision import autocast
from research_systems_core.timing import compare_calls
from robust_at.attacks import AttackConfig, pgd
from robust_at.data import DataBundle, batches
from robust_at.methods import MadryAT
from robust_at.models import create_model
from robust_at.overhead import REFERENCE_WINDOW, measure_wot_overhead
from robust_at.train import build_config, build_run, train_one_epoch

EPS, STEP = 8 / 255, 2 / 255
CIFAR_MEAN, CIFAR_STD = (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616)


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def synthetic_cifar(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Random 3x32x32 images with learnable labels (a fixed random projection of a 4x4 pool)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 32, 32, generator=g)
    proj = torch.randn(3 * 16, 10, generator=torch.Generator().manual_seed(1234))
    y = (F.adaptive_avg_pool2d(x - 0.5, 4).flatten(1) @ proj).argmax(1)
    return x, y


def _brief_training(model, x, y, steps: int, batch: int, device) -> None:
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    method = MadryAT(AttackConfig(eps=EPS, step_size=STEP, steps=3))
    gen = torch.Generator().manual_seed(0)
    for i, (xb, yb) in enumerate(batches(x, y, batch, shuffle=True, generator=gen, device=device)):
        if i >= steps:
            break
        with autocast(device, "bf16"):
            loss, _ = method.loss(model.train(), xb, yb, 0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.eval()


def _robust_acc(fn, x, y, batch: int, device, model) -> float:
    correct = torch.zeros((), dtype=torch.int64, device=device)
    for xb, yb in batches(x, y, batch, device=device):
        torch.manual_seed(0)
        with torch.no_grad():
            correct += (model(fn(xb, yb)).argmax(1) == yb).sum()
    return int(correct) / len(y)


def check_pgd(
    batch: int = 512, n_eval: int = 2048, train_steps: int = 150, width: int = 64, repeats: int = 5
) -> dict:
    device = _device()
    torch.manual_seed(0)
    model = create_model("preact-resnet18", 10, 3, mean=CIFAR_MEAN, std=CIFAR_STD, width=width).to(device)
    x, y = synthetic_cifar(max(n_eval, batch * 4))
    _brief_training(model, x, y, train_steps, 128, device)

    def ours(precision: str):
        def run(xb, yb):
            with autocast(device, precision):
                return pgd(model, xb, yb, eps=EPS, step_size=STEP, steps=10, check_inputs=False)

        return run

    fns = {"ours_bf16": ours("bf16"), "ours_fp32": ours("fp32")}
    try:
        import torchattacks

        atk = torchattacks.PGD(model, eps=EPS, alpha=STEP, steps=10, random_start=True)
        fns["torchattacks_fp32"] = lambda xb, yb: atk(xb, yb)
        peer_version = torchattacks.__version__
    except ImportError:
        peer_version = None
    xb, yb = x[:batch].to(device), y[:batch].to(device)
    timings = compare_calls(
        {k: (lambda f=f: f(xb, yb)) for k, f in fns.items()}, device=device, warmup=2, repeats=repeats
    )
    ips = {k: batch / t.median_s for k, t in timings.items()}
    acc = {k: _robust_acc(f, x[:n_eval], y[:n_eval], batch, device, model) for k, f in fns.items()}
    with torch.no_grad():
        clean = sum(int((model(xc).argmax(1) == yc).sum()) for xc, yc in batches(x[:n_eval], y[:n_eval], batch, device=device)) / n_eval  # fmt: skip
    out = {
        "images_per_s": ips,
        "robust_acc": acc,
        "clean_acc": clean,
        "batch": batch,
        "torchattacks": peer_version,
    }
    out["bf16_minus_fp32_points"] = 100 * (acc["ours_bf16"] - acc["ours_fp32"])
    out["bf16_within_1_point"] = abs(out["bf16_minus_fp32_points"]) <= 1.0
    if peer_version:
        out["speedup_bf16_vs_torchattacks"] = ips["ours_bf16"] / ips["torchattacks_fp32"]
        out["speedup_goal_1_5x_met"] = out["speedup_bf16_vs_torchattacks"] >= 1.5
    return out


def _random_bundle(n: int) -> DataBundle:
    x, y = synthetic_cifar(n)
    x = x.mul(255).round().to(torch.uint8)
    return DataBundle(
        "random-cifar", x, y, x[:0], y[:0], x[:256], y[:256], 10, CIFAR_MEAN, CIFAR_STD, augment=True
    )


def check_at_epoch(n: int = 50_000, batch: int = 128, width: int = 64, warm_batches: int = 10) -> dict:
    device = _device()
    data = _random_bundle(n)
    info = DistInfo(rank=0, local_rank=0, world_size=1, device=device, is_distributed=False)  # type: ignore[call-arg]
    out = {"images": n, "batch": batch}
    for precision in ("fp32", "bf16"):
        cfg = build_config(None, {"dataset": "cifar10", "model": "preact-resnet18", "width": width, "val_size": 0,
                                  "batch_size": batch, "precision": precision, "epochs": 1})  # fmt: skip
        state = build_run(cfg, data, device, info)
        warm = _random_bundle(batch * warm_batches)
        train_one_epoch(state, cfg, warm, device, info, 0, None)  # cuDNN autotuning, allocator warm-up
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        metrics = train_one_epoch(state, cfg, data, device, info, 0, None)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t
        out[precision] = {
            "images_per_s": n / seconds,
            "epoch_seconds": seconds,
            "train_robust_loss": metrics["train_robust_loss"],
        }
    out["bf16_speedup"] = out["bf16"]["images_per_s"] / out["fp32"]["images_per_s"]
    return out


def check_wot_overhead(
    width: int = 64,
    steps: int = 30,
    n_val: int = 1000,
    bn_batches: int = 401,
    passes: int = 1,
    batch: int = 128,
) -> dict:
    """WOT's components timed separately on PreAct-ResNet-18 and combined at the reference's ratio
    (``robust_at.overhead``: 1600 AT steps per refinement of 10 passes, BN on 401 batches)."""
    device = _device()
    torch.manual_seed(0)
    model = create_model("preact-resnet18", 10, 3, mean=CIFAR_MEAN, std=CIFAR_STD, width=width).to(device)
    x, y = synthetic_cifar(batch * 50)
    x_val, y_val = synthetic_cifar(n_val, seed=1)
    train_batches = list(
        batches(x, y, batch, shuffle=True, generator=torch.Generator().manual_seed(0), device=device)
    )
    cost = measure_wot_overhead(
        model, train_batches, lambda: batches(x_val, y_val, batch, device=device),
        AttackConfig(eps=EPS, step_size=STEP, steps=10), bn_batches=bn_batches, passes_timed=passes,
        steps_timed=steps, device=device, repeats=2, check_inputs=False,
    )  # fmt: skip
    ref = {**REFERENCE_WINDOW, "val_images": n_val, "bn_batches": bn_batches}
    result = cost.as_dict(ref)
    result["overhead_percent"] = result.pop("window_percent")
    result["goal_5_percent_met"] = result["overhead_percent"] <= 5.0
    return result


CHECKS = {
    "pgd_bf16_vs_torchattacks": check_pgd,
    "at_epoch_images_per_s": check_at_epoch,
    "wot_overhead": check_wot_overhead,
}

if __name__ == "__main__":
    gpu_check_main("robust-at", CHECKS, default_budget_s=75)
