"""Training presets: the WOT reference recipe (TienjinHuang/WOT, ``train_cifar_meta``-style
scripts on top of Rice et al.'s robust-overfitting code) and the package's CPU settings.

``REFERENCE_OPTIONS`` documents every WOT option: the reference's value, this package's generic
default and why they differ (rendered in the README). The ``*-preact18`` / ``*-wrn34`` presets
use the reference value of every option.
"""

from __future__ import annotations

__all__ = ["PRESETS", "REFERENCE_OPTIONS", "reference_table"]

# The reference recipe: PGD-10 AT (eps 8/255, step 2/255), SGD lr 0.1 momentum 0.9, weight decay
# 5e-4, batch 128, 200 epochs, piecewise decay at 50% and 75%, a 1000-image validation split
# (Rice et al.'s generate_validation.py), PGD-20 + AutoAttack evaluation.
_REFERENCE_WOT = {
    "enabled": True,
    "gap": 400,
    "num_gaps": 4,
    "grouping": "block",
    "init": "zero",
    "lr": 0.1,
    "momentum": 0.9,
    "passes": 10,
    "start_epoch": 50,
    "bn_batches": 401,
    "train_mode_epoch": 150,
    "times": 2,
    "times_epoch": 150,
    "meta_loss": "ce",
    "reset_optimizer": True,
    "momentum_per_tensor": True,
    "reset_momentum_each_pass": True,
}
_REFERENCE = {
    "model": "preact-resnet18",
    "epochs": 200,
    "batch_size": 128,
    "lr": 0.1,
    "momentum": 0.9,
    "weight_decay": 5e-4,
    "milestones": [100, 150],
    "eps": 8 / 255,
    "step_size": 2 / 255,
    "attack_steps": 10,
    "eval_steps": 20,
    "val_size": 1000,
    "wot": _REFERENCE_WOT,
}
_WRN = {"model": "wrn-34-10"}

PRESETS: dict[str, dict] = {
    "cifar10-preact18": {**_REFERENCE, "dataset": "cifar10"},
    "cifar10-wrn34": {**_REFERENCE, **_WRN, "dataset": "cifar10"},
    "cifar100-preact18": {**_REFERENCE, "dataset": "cifar100"},
    "cifar100-wrn34": {**_REFERENCE, **_WRN, "dataset": "cifar100"},
    "svhn-preact18": {**_REFERENCE, "dataset": "svhn", "lr": 0.01},
    "svhn-wrn34": {**_REFERENCE, **_WRN, "dataset": "svhn", "lr": 0.01},
    "tiny-imagenet-preact18": {**_REFERENCE, "dataset": "tiny-imagenet"},
    "tiny-imagenet-wrn34": {**_REFERENCE, **_WRN, "dataset": "tiny-imagenet"},
    "cifar10-trades": {
        **_REFERENCE,
        "dataset": "cifar10",
        "method": "trades",
        "epochs": 110,
        "milestones": [75, 90, 100],
        "weight_decay": 2e-4,
    },
    "cifar10-awp": {**_REFERENCE, "dataset": "cifar10", "method": "awp", "awp_gamma": 0.01},
    "digits-pilot": {
        "dataset": "digits",
        "train_size": 1000,
        "val_size": 200,
        "label_noise": 0.2,
        "model": "small-cnn",
        "width": 64,
        "depth": 4,
        "epochs": 80,
        "batch_size": 128,
        "lr": 0.05,
        "weight_decay": 0.0,
        "milestones": [20],
        "eps": 0.1,
        "step_size": 0.025,
        "attack_steps": 10,
        "eval_steps": 20,
        "wot": {"gap": 8, "num_gaps": 4, "passes": 3, "bn_batches": 8},
    },
}
PRESETS["cifar10"] = PRESETS["cifar10-preact18"]  # 0.1 names
PRESETS["cifar100"] = PRESETS["cifar100-preact18"]
PRESETS["svhn"] = PRESETS["svhn-preact18"]

# option -> (reference value, our generic default, why)
REFERENCE_OPTIONS: dict[str, tuple[str, str, str]] = {
    "wot.gap": ("400 (`--gap`, argparse default 100, 400 in the published runs)", "400", "same"),
    "wot.num_gaps": ("4", "4", "same"),
    "wot.grouping": ("`--layer_wise 6` (PreAct: conv1, layer1-4, head) / 5 (WRN)", "block", "same groups"),
    "wot.passes": ("10 (hard-coded)", "10", "same"),
    "wot.lr, wot.momentum": ("0.1, 0.9 (hard-coded)", "0.1, 0.9", "same"),
    "wot.start_epoch": (
        "50 (`--MetaStartEpoch`)",
        "-1 = first LR decay",
        "generic schedules: the decay is where robust overfitting starts; presets use 50",
    ),
    "wot.train_mode_epoch": ("150", "150", "same; -1 never"),
    "wot.times, wot.times_epoch": ("2, 150 (hard-coded epoch)", "2, 150", "same; times=1 turns it off"),
    "wot.meta_loss": ("CE (`--meta_loss`: CE or kl)", "ce", "same; kl = KL(p(x) to p(x_adv)), batch mean"),
    "wot.bn_batches": (
        "401 (`bn_update(..., 400)` breaks at i > 400)",
        "400",
        "the off-by-one is reproduced only in the presets",
    ),
    "wot.reset_optimizer": (
        "argparse default 0 (keep SGD momentum), published runs `--reinitialize 1`",
        "true",
        "the published runs",
    ),
    "wot.momentum_per_tensor": (
        "true (momentum and weight updated once per parameter tensor)",
        "false",
        "the clean form takes one step per batch; the reference's per-tensor steps are larger when a group has "
        "many tensors (on the diagnosis trajectory both give near-zero weights); presets use the reference",
    ),
    "wot.reset_momentum_each_pass": ("true (buffer zeroed every pass)", "false", "presets use the reference"),
    "first delta": ("gap - 1 steps (origin taken after the first step)", "gap steps", "not reproduced"),
}


def reference_table() -> str:
    """The Markdown table of ``REFERENCE_OPTIONS``."""
    rows = ["| option | reference | our default | why |", "|---|---|---|---|"]
    rows += [f"| `{k}` | {ref} | {ours} | {why} |" for k, (ref, ours, why) in REFERENCE_OPTIONS.items()]
    return "\n".join(rows)
