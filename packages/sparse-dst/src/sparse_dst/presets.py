"""Named training configurations: per-layer RigL, the reference's MEST + global updates, and the
reference scripts' CIFAR and ImageNet hyper-parameters (luuyin/chase, ``Cifar/scripts``,
``Imagenet/scripts/Chase_0.4``), with the paper's reported numbers. None of the paper-scale presets
was run here (no GPU): their numbers are the paper's, not ours.

A preset is a dict of :class:`~sparse_dst.train.TrainConfig` overrides in ``--set`` syntax;
options given on the command line apply after it.
"""

from __future__ import annotations

from typing import Any

# The reference's DST: MEST soft memory bound (grow 5% of all weights above the budget, cosine-decayed,
# prune back at the next update), global magnitude pruning and global gradient growth, ERK, updates
# every 1000 steps; plain global DST (rate 0.5 -> 0.005) after the MEST phase.
_REFERENCE_DST = {
    "sparse.density": 0.1,
    "sparse.distribution": "erk",
    "sparse.memory_bound": True,
    "sparse.memory_bound_rate": 0.05,
    "sparse.prune": "global",
    "sparse.grow": "gradient",
    "sparse.update_frequency": 1000,
    "sparse.update_rate": 0.5,
    "sparse.final_update_rate": 0.005,
    "sparse.channel_score": "umm",
}

PRESETS: dict[str, dict[str, Any]] = {
    "rigl-layer": {
        "description": "per-layer RigL (this package's default): layer-wise magnitude pruning and gradient "
        "growth, update rate 0.5 cosine-annealed to 0.005",
        "overrides": {"sparse.memory_bound": False, "sparse.prune": "layer", "sparse.grow": "gradient"},
    },
    "reference": {
        "description": "the reference scripts' DST: MEST soft memory bound, global magnitude pruning and "
        "global gradient growth (use with any data set and model)",
        "overrides": {**_REFERENCE_DST, "sparse.memory_bound_end_fraction": 0.8125},
    },
    "cifar100-vgg19": {
        "description": "Cifar/scripts/vgg19.sh: VGG-19 (BN) on CIFAR-100, 160 epochs, batch 100, SGD lr 0.1 "
        "x0.1 at 50%/75%, density 0.1, Sc 0.5, beta 0.2, channel removal every 8000 steps until epoch 130",
        "overrides": {
            **_REFERENCE_DST,
            "method": "chase",
            "dataset": "cifar100",
            "model": "vgg19",
            "epochs": 160,
            "batch_size": 100,
            "lr": 0.1,
            "momentum": 0.9,
            "weight_decay": 5e-4,
            "nesterov": False,
            "lr_schedule": "multistep",
            "sparse.channel_sparsity": 0.5,
            "sparse.beta": 0.2,
            "sparse.channel_interval": 8000,
            "sparse.channel_end_fraction": 0.8125,
            "sparse.memory_bound_end_fraction": 0.8125,
        },
        "paper": {
            "reported": "paper Table 1 (CIFAR-100, 90% sparsity); not transcribed here",
            "run_here": False,
        },
    },
    "cifar100-resnet50": {
        "description": "Cifar/scripts/ResNet50.sh: ResNet-50 on CIFAR-100, 160 epochs, batch 100, SGD lr 0.1 "
        "x0.1 at 50%/75%, density 0.1, Sc 0.5, beta 0.5, channel removal every 1000 steps until epoch 130",
        "overrides": {
            **_REFERENCE_DST,
            "method": "chase",
            "dataset": "cifar100",
            "model": "resnet50",
            "epochs": 160,
            "batch_size": 100,
            "lr": 0.1,
            "momentum": 0.9,
            "weight_decay": 5e-4,
            "nesterov": False,
            "lr_schedule": "multistep",
            "sparse.channel_sparsity": 0.5,
            "sparse.beta": 0.5,
            "sparse.channel_interval": 1000,
            "sparse.channel_end_fraction": 0.8125,
            "sparse.memory_bound_end_fraction": 0.8125,
        },
        "paper": {
            "reported": "paper Table 1 (CIFAR-100, 90% sparsity); not transcribed here",
            "run_here": False,
        },
    },
    "imagenet-resnet50": {
        "description": "Imagenet/scripts/Chase_0.4: torchvision ResNet-50 on ImageNet, 100 epochs, 4 GPUs x "
        "batch 128 (lr 0.512 for the global batch of 512, 8 warm-up epochs, cosine), label smoothing 0.1, "
        "density 0.1, Sc 0.4, beta 0.2, MEST until epoch 80, channel removal every 2 epochs until epoch 80",
        "overrides": {
            **_REFERENCE_DST,
            "method": "chase",
            "dataset": "imagenet",
            "model": "torchvision:resnet50",
            "epochs": 100,
            "batch_size": 128,
            "lr": 0.512,
            "momentum": 0.9,
            "weight_decay": 1e-4,
            "nesterov": False,
            "lr_schedule": "cosine",
            "warmup_epochs": 8,
            "label_smoothing": 0.1,
            "precision": "bf16",
            "workers": 8,
            "sparse.channel_sparsity": 0.4,
            "sparse.beta": 0.2,
            "sparse.channel_end_fraction": 0.8,
            "sparse.memory_bound_end_fraction": 0.8,
            "sparse.channel_interval": 5004,
        },
        "channel_interval_epochs": 2,
        "paper": {
            "reported": "luuyin/chase README table, ResNet-50 on ImageNet, 100 epochs",
            "dense_top1": 76.8,
            "sparsity_90": {
                "chase_sc0.3_top1": 74.35,
                "chase_sc0.4_top1": 74.03,
                "rigl_top1": 73.0,
                "gpu_flops_sc0.4": 0.67,
            },
            "sparsity_80": {
                "chase_sc0.3_top1": 75.62,
                "chase_sc0.4_top1": 75.27,
                "rigl_top1": 75.1,
                "gpu_flops_sc0.4": 0.68,
            },
            "throughput_speedup": 1.7,
            "run_here": False,
        },
    },
}


def preset_names() -> list[str]:
    return list(PRESETS)


def preset_overrides(name: str) -> list[str]:
    """``key=value`` strings of a preset, for :func:`research_systems_core.config.load_config`."""
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {preset_names()}, got {name!r}")
    return [f"{k}={_text(v)}" for k, v in PRESETS[name]["overrides"].items()]


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
