"""Why are the learned WOT weights near zero? A diagnosis on a saved trajectory.

A run with ``wot.save_trajectory=true`` writes the window of its last refinement
(``wot_trajectory.safetensors``: snapshots s_0..s_n and the model's buffers). On it we

1. learn the weights with this package's update (one momentum step per batch) and with the
   reference's update (momentum and weight updated once per parameter tensor, momentum zeroed
   every pass; ``wot.momentum_per_tensor`` + ``wot.reset_momentum_each_pass``), and
2. scan the validation robust loss along W = t * 1 for t in [0, 1] (t = 0: the window's start,
   t = 1: the unrefined end), attacking the model at each point.

If the loss is lowest near t = 0, weights near zero are the optimum both rules find: the
trajectory of the window moved the model in a direction that hurts held-out robustness, and WOT
correctly undoes it. If the reference's rule finds larger weights and a lower loss, the gap is
the update rule.
"""

from __future__ import annotations

import copy
import dataclasses
import pathlib

import torch
import torch.nn.functional as F
from safetensors import safe_open

from research_systems_core.results import read_json
from robust_at.data import batches
from robust_at.train import (
    TrainConfig,
    _unprefixed,
    build_model,
    load_state_into,
    load_training_data,
    load_weights,
)
from robust_at.wot import WOT

__all__ = ["diagnose_run", "diagnose_trajectory", "loss_along_line"]


def _load_trajectory(wot: WOT, tensors: dict[str, torch.Tensor]) -> None:
    count = 1 + max(int(k.split(".")[2]) for k in tensors if k.startswith("wot.snapshot."))
    wot.load_state(
        tensors, {"steps": 0, "refinements": 0, "gap": wot.config.gap, "snapshots": count, "history": []}
    )


def loss_along_line(wot, model, val, attack, points: int) -> list[dict]:
    """Validation robust loss and accuracy at W = t * 1 for ``points`` values of t in [0, 1]."""
    rows = []
    n = len(wot.snapshots) - 1
    for t in torch.linspace(0, 1, points).tolist():
        wot.load_weights(torch.full((n, wot.num_groups), t))
        loss, correct, seen = 0.0, 0, 0
        for x, y in val():
            x_adv = attack(model, x, y)
            with torch.no_grad():
                logits = model(x_adv)
            loss += float(F.cross_entropy(logits, y, reduction="sum"))
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
        rows.append({"t": round(t, 4), "val_robust_loss": loss / seen, "val_robust_acc": correct / seen})
    return rows


def diagnose_trajectory(
    cfg: TrainConfig, model, tensors: dict[str, torch.Tensor], data, points: int = 6, epoch: int | None = None
) -> dict:
    """Weights learned by both update rules and the loss along W = t on one saved window.

    The weights are learned with BatchNorm in the mode the run used at ``epoch`` (train mode
    from ``wot.train_mode_epoch`` on, else eval mode); the line is scanned in eval mode."""
    train_mode = epoch is not None and cfg.wot.train_mode_at(epoch)
    attack = cfg.attack()
    val = lambda: batches(data.x_val, data.y_val, cfg.batch_size)  # noqa: E731
    run = lambda m, x, y: attack.run(m, x, y)  # noqa: E731
    out: dict = {}
    for name, quirks in (("ours", False), ("reference", True)):
        torch.manual_seed(cfg.seed)
        wcfg = dataclasses.replace(cfg.wot, momentum_per_tensor=quirks, reset_momentum_each_pass=quirks)
        m = copy.deepcopy(model)
        wot = WOT(m, wcfg)
        _load_trajectory(wot, tensors)
        m.train(train_mode)  # as the run (and the reference) at this window's epoch
        weights, stats = wot.learn_weights(m, val, run)
        out[name] = {
            "weights": weights.tolist(),
            "mean_weight": float(weights.mean()),
            "val_robust_loss_last_pass": stats["loss"] / stats["seen"],
            "val_robust_acc_last_pass": stats["correct"] / stats["seen"],
        }
    m = copy.deepcopy(model).eval()
    wot = WOT(m, cfg.wot)
    _load_trajectory(wot, tensors)
    torch.manual_seed(cfg.seed)
    out["line"] = loss_along_line(wot, m, val, run, points)
    best = min(out["line"], key=lambda r: r["val_robust_loss"])
    out["line_argmin_t"] = best["t"]
    out["batchnorm_train_mode_while_learning"] = train_mode
    out["explanation"] = f"the validation robust loss along W = t is lowest at t = {best['t']}: " + (
        "the window's steps hurt held-out robustness, so weights near zero are the optimum"
        if best["t"] <= 0.2
        else "moving along the window helps, so near-zero weights would be a defect of the update"
    )
    return out


def diagnose_run(run: str | pathlib.Path, *, data_dir=None, points: int = 6) -> dict:
    """:func:`diagnose_trajectory` on ``RUN/wot_trajectory.safetensors`` with the run's settings."""
    run = pathlib.Path(run)
    path = run / "wot_trajectory.safetensors"
    if not (run / "config.json").is_file():
        raise FileNotFoundError(f"{run} has no config.json; is it a run directory of `robust-at train`?")
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} does not exist; train with --wot --set wot.save_trajectory=true first"
        )
    from research_systems_core.config import config_from_dict

    cfg = config_from_dict(TrainConfig, read_json(run / "config.json")["config"])
    tensors = load_weights(path)
    data = load_training_data(cfg, data_dir)
    model = build_model(cfg, data)
    load_state_into(model, _unprefixed("model", tensors), f"trajectory {path}")
    with safe_open(str(path), "pt") as handle:
        epoch = (handle.metadata() or {}).get("epoch")
    result = diagnose_trajectory(cfg, model, tensors, data, points, None if epoch is None else int(epoch))
    result["trajectory"] = str(path)
    return result
