"""GPU checks of sparse-dst (random inputs only, no download; about a minute on an H200).

1. ``resnet50_imagenet``: torchvision ResNet-50, dense vs Chase-slim at the paper's ImageNet
   channel sparsity (Sc = 0.4, beta = 0.2, density 0.1), random 224 px images, batch 256, bf16,
   channels_last: images/s of both and the speedup (paper: 1.7x on its GPU; goal >= 1.7x).
2. ``vgg19_cifar``: CIFAR-style VGG-19-BN at 32 px, Sc = 0.5, beta = 0.2 (the reference's CIFAR
   script), same measurement.

The slim widths come from Chase's own schedule run for a few steps on random data on the GPU
(scores after 8 steps, not after real training: the speed depends on the widths, not the values);
``finalize`` checks slim == masked before timing. Usage:
``python benchmarks/gpu_check.py --out results/gpu --budget-s 90``
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from research_systems_core.gpu_check import gpu_check_main
from sparse_dst.chase import Chase, ChaseConfig
from sparse_dst.speed import compare_throughput
from sparse_dst.surgery import conv_linear_macs


def _chase_slim(
    model: nn.Module, shape: tuple[int, ...], sc: float, beta: float, batch: int
) -> tuple[nn.Module, Chase]:
    device = torch.device("cuda")
    model = model.to(device)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    cfg = ChaseConfig(density=0.1, channel_sparsity=sc, beta=beta, channel_interval=1, channel_end_fraction=0.5,
                      update_frequency=2)  # fmt: skip
    steps = 8
    chase = Chase(
        model, optimizer, cfg, total_steps=steps, example_input=torch.randn(2, *shape, device=device)
    )
    gen = torch.Generator(device=device).manual_seed(0)
    for _ in range(steps):
        x = torch.randn(batch, *shape, device=device, generator=gen)
        y = torch.randint(0, 10, (batch,), device=device, generator=gen)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = nn.functional.cross_entropy(model(x).float(), y)
        optimizer.zero_grad()
        loss.backward()
        chase.step()
    model.eval()
    return chase.finalize(round_to=8), chase  # multiples of 8 for bf16 tensor cores (exact)


def _speed(dense: nn.Module, slim: nn.Module, shape: tuple[int, ...], batch: int) -> dict[str, Any]:
    models = {}
    for name, m in (("dense", dense), ("slim", slim)):
        models[name] = m.to(dtype=torch.bfloat16, memory_format=torch.channels_last).eval()
    rates = compare_throughput(
        models, shape, batch, rounds=5, device="cuda", dtype=torch.bfloat16, channels_last=True
    )
    example = torch.randn(2, *shape, device="cuda", dtype=torch.bfloat16)
    macs = {n: conv_linear_macs(m, example) for n, m in models.items()}
    return {"images_per_s": rates, "speedup": rates["slim"] / rates["dense"], "mac_ratio": macs["dense"] / macs["slim"],
            "batch": batch, "precision": "bf16", "channels_last": True}  # fmt: skip


def resnet50_imagenet() -> dict[str, Any]:
    import torchvision

    torch.manual_seed(0)
    slim, chase = _chase_slim(torchvision.models.resnet50(num_classes=1000), (3, 224, 224), 0.4, 0.2, 32)
    result = _speed(chase.model, slim, (3, 224, 224), 256)  # chase.model: the dense-shaped (masked) network
    result |= {"channel_sparsity": 0.4, "alive_channels": chase.alive_channels(), "baseline_channels": chase.baseline_channels,
               "slim_vs_masked": chase.equivalence_error, "goal": ">= 1.7x (paper)", "met": result["speedup"] >= 1.7}  # fmt: skip
    return result


def vgg19_cifar() -> dict[str, Any]:
    from sparse_dst.models import create_model

    torch.manual_seed(0)
    slim, chase = _chase_slim(create_model("vgg19", num_classes=100), (3, 32, 32), 0.5, 0.2, 128)
    result = _speed(chase.model, slim, (3, 32, 32), 256)
    result |= {"channel_sparsity": 0.5, "slim_vs_masked": chase.equivalence_error}
    return result


if __name__ == "__main__":
    gpu_check_main("sparse-dst", {"resnet50_imagenet": resnet50_imagenet, "vgg19_cifar": vgg19_cifar}, 90.0)
