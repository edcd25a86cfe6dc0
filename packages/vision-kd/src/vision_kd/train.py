"""The training loop: a student (or a teacher, trained alone) with an optional frozen teacher.

- The teacher is put in eval mode, its parameters get ``requires_grad=False`` and it runs under
  ``torch.no_grad()``; its logits (and tapped features) can be precomputed once
  (:func:`cache_teacher_outputs`) when the augmentation is static (here: none).
- AdamW with linear warm-up then cosine decay (per step, computed from the step number, so a
  resumed run continues the schedule exactly), optional EMA of the student (timm's ModelEmaV3),
  autocast (bf16) on CUDA when ``amp`` allows it, checkpoints every epoch through
  ``research_systems_core.checkpoint`` (safetensors + RNG state) and exact resume, DDP under torchrun
  via ``research_systems_core.distributed``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from collections.abc import Callable
from typing import Any

import torch
from timm.utils import ModelEmaV3
from torch import nn

from research_systems_core.checkpoint import (
    capture_rng_state,
    latest_checkpoint,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from research_systems_core.distributed import (
    DistInfo,
    init_distributed,
    is_main_process,
    reduce_mean,
    wrap_model,
)
from research_systems_core.logs import progress
from research_systems_core.validation import check_choice, check_int, check_positive, check_range
from vision_kd.data import ImageData
from vision_kd.features import forward_with_features
from vision_kd.losses import DistillLoss
from vision_kd.models.factory import num_classes_of

__all__ = [
    "TeacherOutputs",
    "TrainConfig",
    "cache_teacher_outputs",
    "evaluate",
    "freeze",
    "lr_at",
    "train",
]

log = logging.getLogger(__name__)


@dataclasses.dataclass
class TrainConfig:
    """Optimisation settings of one run."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 2e-3
    min_lr: float = 1e-5
    weight_decay: float = 0.05
    warmup_frac: float = 0.1
    ema_decay: float = 0.0  # 0 disables the EMA
    amp: str = "auto"  # auto: bf16 autocast on CUDA, off on CPU; "off"; "on"
    grad_clip: float = 0.0  # 0 disables clipping
    seed: int = 0
    device: str = "cpu"

    def validate(self) -> TrainConfig:
        check_int("epochs", self.epochs, minimum=1)
        check_int("batch_size", self.batch_size, minimum=1)
        check_positive("lr", self.lr)
        check_positive("min_lr", self.min_lr, strict=False)
        check_positive("weight_decay", self.weight_decay, strict=False)
        check_range("warmup_frac", self.warmup_frac, 0.0, 1.0, high_inclusive=False)
        check_range("ema_decay", self.ema_decay, 0.0, 1.0, high_inclusive=False)
        check_choice("amp", self.amp, ("auto", "on", "off"))
        check_positive("grad_clip", self.grad_clip, strict=False)
        check_int("seed", self.seed, minimum=0)
        return self


@dataclasses.dataclass
class TeacherOutputs:
    """Precomputed teacher logits (and, optionally, tapped features) for every training example."""

    logits: torch.Tensor
    features: torch.Tensor | None = None


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """Linear warm-up over ``warmup_frac`` of the steps, then cosine decay to ``min_lr``."""
    warm = int(cfg.warmup_frac * total)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    progress_frac = (step - warm) / max(1, total - warm)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + math.cos(math.pi * min(1.0, progress_frac)))


def freeze(teacher: nn.Module) -> nn.Module:
    """Eval mode and no gradients, for good (the teacher is never updated)."""
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


def _batches(
    n: int, batch_size: int, seed: int, epoch: int, rank: int = 0, world: int = 1
) -> list[torch.Tensor]:
    """This rank's mini-batch indices of one epoch (a permutation seeded by seed and epoch)."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))
    order = order[: len(order) - len(order) % world][rank::world]  # equal step counts on every rank
    return [order[i : i + batch_size] for i in range(0, len(order) - batch_size + 1, batch_size)] or [order]


@torch.no_grad()
def evaluate(model: nn.Module, data: ImageData, batch_size: int = 500, device: str = "cpu") -> float:
    """Top-1 accuracy of ``model`` on ``data`` (eval mode; restores the previous mode)."""
    was_training = model.training
    model.eval()
    correct = 0
    for i in range(0, len(data), batch_size):
        logits = model(data.images[i : i + batch_size].to(device))
        correct += int((logits.argmax(1).cpu() == data.labels[i : i + batch_size]).sum())
    model.train(was_training)
    return correct / len(data)


@torch.no_grad()
def cache_teacher_outputs(
    teacher: nn.Module, data: ImageData, tap: int | None = None, batch_size: int = 500, device: str = "cpu"
) -> TeacherOutputs:
    """Teacher logits (and the feature map at ``tap``) for every example, computed once."""
    freeze(teacher)
    logits, feats = [], []
    for i in range(0, len(data), batch_size):
        x = data.images[i : i + batch_size].to(device)
        if tap is None:
            logits.append(teacher(x).float().cpu())
        else:
            out, feat = forward_with_features(teacher, x, tap)
            logits.append(out.float().cpu())
            feats.append(feat.float().cpu())
    return TeacherOutputs(torch.cat(logits), torch.cat(feats) if feats else None)


def _autocast(cfg: TrainConfig, device: torch.device) -> Any:
    enabled = cfg.amp == "on" or (cfg.amp == "auto" and device.type == "cuda")
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def _optimizer_tensors(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    out = {}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            out[f"optim.{index}.{key}"] = torch.as_tensor(value).clone()
    return out


def _load_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor]) -> None:
    state_dict = optimizer.state_dict()
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, index, key = name.split(".", 2)
            state.setdefault(int(index), {})[key] = value
    state_dict["state"] = state
    optimizer.load_state_dict(state_dict)


def _prefixed(prefix: str, module: nn.Module) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v.detach().clone() for k, v in module.state_dict().items()}


def _unprefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    cut = len(prefix) + 1
    return {k[cut:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


class _DistillStep(nn.Module):
    """Student + loss as one module, so DDP syncs the student and any projector in the loss."""

    def __init__(self, student: nn.Module, loss_fn: DistillLoss, student_tap: int | None) -> None:
        super().__init__()
        self.student = student
        self.loss_fn = loss_fn
        self.student_tap = student_tap
        self.uses_features = bool(getattr(loss_fn, "uses_features", False))

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, t_logits: torch.Tensor | None, t_feat: torch.Tensor | None
    ) -> torch.Tensor:
        if self.uses_features:
            s_logits, s_feat = forward_with_features(self.student, x, self.student_tap)
        else:
            s_logits, s_feat = self.student(x), None
        return self.loss_fn(
            s_logits.float(), None if t_logits is None else t_logits.float(), y, s_feat, t_feat
        )


def train(
    student: nn.Module,
    train_data: ImageData,
    test_data: ImageData | None,
    cfg: TrainConfig,
    loss_fn: DistillLoss | None = None,
    teacher: nn.Module | None = None,
    teacher_cache: TeacherOutputs | None = None,
    student_tap: int | None = None,
    teacher_tap: int | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    desc: str = "train",
) -> dict[str, Any]:
    """Train ``student`` in place; return the history and final (EMA) test accuracy.

    Without ``teacher``/``teacher_cache`` the loss gets ``teacher_logits=None`` (use the "none" loss:
    plain cross-entropy). Feature losses (``loss_fn.uses_features``) need ``student_tap`` and a
    teacher tap (``teacher_tap``, or features in ``teacher_cache``).
    """
    from vision_kd.losses import CELoss

    cfg.validate()
    loss_fn = loss_fn if loss_fn is not None else CELoss()
    distilling = not isinstance(loss_fn, CELoss)
    if distilling and teacher is None and teacher_cache is None:
        raise ValueError("a distillation loss needs a teacher or cached teacher outputs")
    n_classes = num_classes_of(student)
    if n_classes != train_data.num_classes:
        raise ValueError(
            f"student has {n_classes} classes but the data set {train_data.name!r} has {train_data.num_classes}"
        )
    if teacher is not None and num_classes_of(teacher) != n_classes:
        raise ValueError(f"teacher has {num_classes_of(teacher)} classes but the student has {n_classes}")
    if teacher_cache is not None and teacher_cache.logits.shape != (len(train_data), n_classes):
        raise ValueError(
            f"cached teacher logits have shape {tuple(teacher_cache.logits.shape)}, "
            f"expected ({len(train_data)}, {n_classes})"
        )
    uses_features = bool(getattr(loss_fn, "uses_features", False))
    if uses_features:
        if student_tap is None:
            raise ValueError(f"{type(loss_fn).__name__} needs student_tap")
        if teacher_tap is None and (teacher_cache is None or teacher_cache.features is None):
            raise ValueError(f"{type(loss_fn).__name__} needs teacher_tap or cached teacher features")

    info: DistInfo = init_distributed()
    device = torch.device(cfg.device if not info.is_distributed else info.device)
    student.to(device)
    loss_fn.to(device)
    if teacher is not None:
        freeze(teacher).to(device)
    step_module = wrap_model(_DistillStep(student, loss_fn, student_tap), info)
    params = [p for p in list(student.parameters()) + list(loss_fn.parameters()) if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    ema = ModelEmaV3(student, decay=cfg.ema_decay) if cfg.ema_decay > 0 else None

    steps_per_epoch = len(_batches(len(train_data), cfg.batch_size, cfg.seed, 0, info.rank, info.world_size))
    total = cfg.epochs * steps_per_epoch
    history: list[dict[str, Any]] = []
    start_epoch = 0
    if checkpoint_dir is not None and (last := latest_checkpoint(checkpoint_dir)) is not None:
        tensors, meta = load_checkpoint(last)
        student.load_state_dict(_unprefixed("student", tensors))
        loss_fn.load_state_dict(_unprefixed("loss", tensors))
        if ema is not None:
            ema.module.load_state_dict(_unprefixed("ema", tensors))
        _load_optimizer(optimizer, tensors)
        restore_rng_state(tensors, meta)
        start_epoch, history = int(meta["epoch"]) + 1, list(meta["history"])
        log.info("%s: resumed from %s (epoch %d done)", desc, last.name, start_epoch)

    student.train()
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        running, count = 0.0, 0
        batches = _batches(len(train_data), cfg.batch_size, cfg.seed, epoch, info.rank, info.world_size)
        for i, idx in enumerate(progress(batches, desc=f"{desc} {epoch + 1}/{cfg.epochs}")):
            step = epoch * steps_per_epoch + i
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step, total, cfg)
            x = train_data.images[idx].to(device, non_blocking=True)
            y = train_data.labels[idx].to(device, non_blocking=True)
            t_logits = t_feat = None
            if teacher_cache is not None:
                t_logits = teacher_cache.logits[idx].to(device)
                if uses_features and teacher_cache.features is not None:
                    t_feat = teacher_cache.features[idx].to(device)
            with _autocast(cfg, device):
                if distilling and (t_logits is None or (uses_features and t_feat is None)):
                    with torch.no_grad():
                        if uses_features:
                            t_logits, t_feat = forward_with_features(teacher, x, teacher_tap)
                        else:
                            t_logits = teacher(x)
                loss = step_module(x, y, t_logits, t_feat)
            if not torch.isfinite(loss):
                raise FloatingPointError(
                    f"{desc}: loss is {loss.item()} at epoch {epoch}, step {i}; lower the lr"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if cfg.grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            optimizer.step()
            if ema is not None:
                ema.update(student, step=step)
            running += float(loss.detach()) * len(idx)
            count += len(idx)
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "loss": reduce_mean(running / max(count, 1)),
            "seconds": time.perf_counter() - t0,
        }
        if test_data is not None:
            row["test_acc"] = evaluate(student, test_data, device=str(device))
            if ema is not None:
                row["test_acc_ema"] = evaluate(ema.module, test_data, device=str(device))
        history.append(row)
        log.info("%s epoch %d: %s", desc, epoch + 1, {k: round(v, 4) for k, v in row.items()})
        if checkpoint_dir is not None and is_main_process():
            rng_tensors, rng_meta = capture_rng_state()
            tensors = {
                **_prefixed("student", student),
                **_prefixed("loss", loss_fn),
                **_optimizer_tensors(optimizer),
            }
            if ema is not None:
                tensors.update(_prefixed("ema", ema.module))
            save_checkpoint(
                checkpoint_dir,
                epoch,
                {**tensors, **rng_tensors},
                {"epoch": epoch, "history": history, **rng_meta},
                keep=2,
            )
        if on_epoch is not None:
            on_epoch(row)
    student.eval()
    final = history[-1] if history else {}
    return {
        "history": history,
        "test_acc": final.get("test_acc"),
        "test_acc_ema": final.get("test_acc_ema"),
        "ema": ema.module if ema is not None else None,
        "epoch_seconds": [r["seconds"] for r in history],
    }
