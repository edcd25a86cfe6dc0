"""The training loop: a student (or a teacher, trained alone) with an optional frozen teacher.

- Data: any :class:`research_systems_core.vision.ImageDataset` (see :mod:`vision_kd.data`),
  streamed through ``make_loader`` (DistributedSampler under torchrun, pinned memory on CUDA);
  each epoch's order depends on ``(seed, epoch)`` only. Mixup/cutmix + label smoothing through
  timm's ``Mixup`` when asked. Images arrive in [0, 1] and are normalised in the step.
- The teacher is in eval mode without gradients. Its logits (and tapped features) can be cached
  once per sample index (:func:`cache_teacher_outputs`) - exact only when the training images are
  the same every epoch (no random augmentation, no mixup); :func:`check_cache_exact` refuses otherwise.
- AdamW with linear warm-up then cosine decay (per step, from the step number), optional EMA
  (timm's ModelEmaV3), autocast at ``precision`` (bf16/fp16; a GradScaler for fp16 on CUDA),
  optional SLaK dynamic sparsity (:mod:`vision_kd.sparse`), checkpoints every epoch through the
  shared ``checkpoint``/``optim_state`` modules and exact resume, DDP under torchrun.
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
from research_systems_core.optim_state import load_optimizer_state, optimizer_state_to_tensors
from research_systems_core.precision import PRECISIONS, autocast, check_precision, grad_scaler
from research_systems_core.torch_utils import resolve_device
from research_systems_core.validation import check_choice, check_int, check_positive, check_range
from research_systems_core.vision import ImageDataset, Normalize, make_loader, mixup_fn, set_loader_epoch
from vision_kd.data import IndexedDataset
from vision_kd.features import forward_with_features
from vision_kd.losses import CELoss, DistillLoss
from vision_kd.models.factory import num_classes_of
from vision_kd.sparse import DynamicSparsity, SparseConfig, layer_densities

__all__ = [
    "TeacherOutputs",
    "TrainConfig",
    "cache_teacher_outputs",
    "check_cache_exact",
    "evaluate",
    "freeze",
    "lr_at",
    "resolve_train_device",
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
    grad_clip: float = 0.0  # 0 disables clipping
    seed: int = 0
    device: str = "auto"  # auto: CUDA, then MPS, then CPU
    precision: str = "auto"  # auto: bf16 on CUDA, fp32 elsewhere; or fp32 / bf16 / fp16
    workers: int = 0  # DataLoader workers (0: load in the main process; exact resume with augmentation)
    mixup: float = 0.0  # timm Mixup alpha (0 = off)
    cutmix: float = 0.0  # timm CutMix alpha (0 = off)
    label_smoothing: float = 0.0

    def validate(self) -> TrainConfig:
        check_int("epochs", self.epochs, minimum=1)
        check_int("batch_size", self.batch_size, minimum=1)
        for name, strict in (("lr", True), ("min_lr", False), ("weight_decay", False), ("grad_clip", False)):
            value = check_positive(name, getattr(self, name), strict=strict)
            if not math.isfinite(value):
                raise ValueError(f"{name} must be finite, got {value}")
        check_range("warmup_frac", self.warmup_frac, 0.0, 1.0, high_inclusive=False)
        check_range("ema_decay", self.ema_decay, 0.0, 1.0, high_inclusive=False)
        check_int("seed", self.seed, minimum=0, maximum=2**31 - 1)
        check_choice("precision", self.precision, ("auto", *PRECISIONS))
        check_int("workers", self.workers, minimum=0)
        for name in ("mixup", "cutmix"):
            value = check_positive(name, getattr(self, name), strict=False)
            if not math.isfinite(value):
                raise ValueError(f"{name} must be a finite alpha >= 0, got {value}")
        check_range("label_smoothing", self.label_smoothing, 0.0, 1.0, high_inclusive=False)
        if not isinstance(self.device, str):
            raise TypeError(f"device must be a string such as auto, cpu or cuda, got {self.device!r}")
        return self

    def resolved_precision(self, device: torch.device) -> str:
        if self.precision == "auto":
            return "bf16" if device.type == "cuda" else "fp32"
        return check_precision(self.precision)

    @property
    def mixes(self) -> bool:
        return self.mixup > 0 or self.cutmix > 0


@dataclasses.dataclass
class TeacherOutputs:
    """Teacher logits (and optionally tapped features) for every training sample, by sample index."""

    logits: torch.Tensor
    features: torch.Tensor | None = None


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """Linear warm-up over ``warmup_frac`` of the steps, then cosine decay to ``min_lr``."""
    warm = int(cfg.warmup_frac * total)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    frac = (step - warm) / max(1, total - warm)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1.0 + math.cos(math.pi * min(1.0, frac)))


def freeze(teacher: nn.Module) -> nn.Module:
    """Eval mode and no gradients, for good (the teacher is never updated)."""
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


def check_cache_exact(augment: bool, cfg: TrainConfig) -> None:
    """Cached teacher outputs equal the online ones only if every epoch sees the same images."""
    if augment or cfg.mixes:
        raise ValueError(
            "cached teacher logits are exact only when the training images are identical every epoch: "
            "with random augmentation or mixup/cutmix the teacher must run online; pass --no-augment "
            "(and no --mixup/--cutmix) to cache, or --no-cache-teacher"
        )


def resolve_train_device(cfg: TrainConfig, info: DistInfo | None = None) -> torch.device:
    """The device a run uses: the rank's device under torchrun, else ``cfg.device`` (auto: CUDA, MPS, CPU)."""
    if info is not None and info.is_distributed:
        return info.device
    return resolve_device(cfg.device)


@torch.no_grad()
def evaluate(
    model: nn.Module, data: ImageDataset, *, device: torch.device | str = "cpu", precision: str = "fp32",
    batch_size: int = 256,
) -> float:  # fmt: skip
    """Top-1 accuracy on ``data.val`` (normalising with the data set's mean/std; mode restored)."""
    from research_systems_core.vision import evaluate_accuracy

    device = torch.device(device)
    loader = make_loader(data.val, batch_size=batch_size, train=False, device=device, workers=0)
    wrapped = nn.Sequential(Normalize(data.mean, data.std).to(device), model)
    return float(evaluate_accuracy(wrapped, loader, device=device, precision=precision)["accuracy"])


@torch.no_grad()
def cache_teacher_outputs(
    teacher: nn.Module,
    data: ImageDataset,
    tap: int | None = None,
    *,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    batch_size: int = 256,
) -> TeacherOutputs:
    """Teacher logits (and the feature map at ``tap``) for every training sample, stored by index."""
    device = torch.device(device)
    freeze(teacher).to(device)
    norm = Normalize(data.mean, data.std).to(device)
    loader = make_loader(
        IndexedDataset(data.train), batch_size=batch_size, train=False, device=device, workers=0
    )
    n = len(data.train)  # type: ignore[arg-type]
    logits: torch.Tensor | None = None
    feats: torch.Tensor | None = None
    seen = torch.zeros(n, dtype=torch.bool)
    for x, _, idx in loader:
        x = norm(x.to(device, non_blocking=True))
        with autocast(device, precision):
            out, feat = forward_with_features(teacher, x, tap) if tap is not None else (teacher(x), None)
        if logits is None:
            logits = torch.empty(n, out.shape[1])
            feats = torch.empty(n, *feat.shape[1:]) if feat is not None else None
        logits[idx] = out.float().cpu()
        if feats is not None:
            feats[idx] = feat.float().cpu()
        seen[idx] = True
    if logits is None or not bool(seen.all()):
        raise RuntimeError("teacher cache is incomplete: some training samples were never seen")
    return TeacherOutputs(logits, feats)


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

    def forward(self, x: torch.Tensor, y: torch.Tensor, t_logits: torch.Tensor | None,
                t_feat: torch.Tensor | None) -> torch.Tensor:  # fmt: skip
        if self.uses_features:
            s_logits, s_feat = forward_with_features(self.student, x, self.student_tap)
        else:
            s_logits, s_feat = self.student(x), None
        t = None if t_logits is None else t_logits.float()
        return self.loss_fn(s_logits.float(), t, y, s_feat, t_feat)


def _check_inputs(student, data, loss_fn, teacher, teacher_cache, student_tap, teacher_tap) -> None:
    distilling = not isinstance(loss_fn, CELoss)
    if distilling and teacher is None and teacher_cache is None:
        raise ValueError("a distillation loss needs a teacher or cached teacher outputs")
    n_classes = num_classes_of(student)
    if n_classes != data.num_classes:
        raise ValueError(
            f"student has {n_classes} classes but the data set {data.name!r} has {data.num_classes}"
        )
    if teacher is not None and num_classes_of(teacher) != n_classes:
        raise ValueError(f"teacher has {num_classes_of(teacher)} classes but the student has {n_classes}")
    n = len(data.train)  # type: ignore[arg-type]
    if teacher_cache is not None and tuple(teacher_cache.logits.shape) != (n, n_classes):
        raise ValueError(
            f"cached teacher logits have shape {tuple(teacher_cache.logits.shape)}, expected ({n}, {n_classes})"
        )
    if getattr(loss_fn, "uses_features", False):
        if student_tap is None:
            raise ValueError(f"{type(loss_fn).__name__} needs student_tap")
        if teacher_tap is None and (teacher_cache is None or teacher_cache.features is None):
            raise ValueError(f"{type(loss_fn).__name__} needs teacher_tap or cached teacher features")


@dataclasses.dataclass
class _Run:
    """Everything one training run holds (built by :func:`_setup`)."""

    device: torch.device
    precision: str
    loader: Any
    norm: nn.Module
    step_module: nn.Module
    params: list[torch.nn.Parameter]
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    ema: ModelEmaV3 | None
    mixer: Any
    sparsity: DynamicSparsity | None
    densities: dict[str, float] | None
    steps_per_epoch: int


def _snip_batch(loader: Any, norm: nn.Module, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    set_loader_epoch(loader, 0)
    x, y, _ = next(iter(loader))
    return norm(x.to(device)), y.to(device)


def _broadcast_densities(densities: dict[str, float], info: DistInfo) -> dict[str, float]:
    """Every rank must use rank 0's SNIP densities (each rank scored a different batch)."""
    if not info.is_distributed:
        return densities
    box = [densities]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def _setup(student, data, cfg, loss_fn, teacher, student_tap, sparse, info, densities) -> _Run:
    device = resolve_train_device(cfg, info)
    precision = cfg.resolved_precision(device)
    student.to(device)
    loss_fn.to(device)
    if teacher is not None:
        freeze(teacher).to(device)
    norm = Normalize(data.mean, data.std).to(device)
    loader = make_loader(IndexedDataset(data.train), batch_size=cfg.batch_size, train=True, device=device,
                         workers=cfg.workers, seed=cfg.seed)  # fmt: skip
    step_module = wrap_model(_DistillStep(student, loss_fn, student_tap), info)
    params = [p for p in list(student.parameters()) + list(loss_fn.parameters()) if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = len(loader)
    sparsity = None
    if sparse is not None:
        if densities is None:
            densities = layer_densities(student, sparse, _snip_batch(loader, norm, device))
            densities = _broadcast_densities(densities, info)
        sparsity = DynamicSparsity(student, optimizer, sparse, cfg.epochs * steps_per_epoch, densities)
    ema = ModelEmaV3(student, decay=cfg.ema_decay) if cfg.ema_decay > 0 else None
    mixer = mixup_fn(data.num_classes, cfg.mixup, cfg.cutmix, cfg.label_smoothing) if cfg.mixes else None
    return _Run(device, precision, loader, norm, step_module, params, optimizer, grad_scaler(device, precision),
                ema, mixer, sparsity, densities, steps_per_epoch)  # fmt: skip


def _save(checkpoint_dir, epoch, history, student, loss_fn, run: _Run) -> None:
    rng_tensors, rng_meta = capture_rng_state()
    optim_tensors, optim_meta = optimizer_state_to_tensors(run.optimizer)
    tensors = {**_prefixed("student", student), **_prefixed("loss", loss_fn), **optim_tensors, **rng_tensors}
    meta: dict[str, Any] = {"epoch": epoch, "history": history, "optim": optim_meta, **rng_meta,
                            "scaler": run.scaler.state_dict()}  # fmt: skip
    if run.ema is not None:
        tensors.update(_prefixed("ema", run.ema.module))
    if run.sparsity is not None:
        sparse_tensors, sparse_meta = run.sparsity.state_tensors()
        tensors.update(sparse_tensors)
        meta.update(sparse_meta, sparse_densities=run.densities)
    save_checkpoint(checkpoint_dir, epoch, tensors, meta, keep=2)


def _resume(checkpoint_dir, student, loss_fn, run: _Run, desc: str) -> tuple[int, list[dict[str, Any]]]:
    last = latest_checkpoint(checkpoint_dir) if checkpoint_dir is not None else None
    if last is None:
        return 0, []
    tensors, meta = load_checkpoint(last)
    student.load_state_dict(_unprefixed("student", tensors))
    loss_fn.load_state_dict(_unprefixed("loss", tensors))
    if run.ema is not None:
        run.ema.module.load_state_dict(_unprefixed("ema", tensors))
    load_optimizer_state(run.optimizer, tensors, meta["optim"])
    if run.sparsity is not None:
        run.sparsity.load_state_tensors(tensors, meta)
    if meta.get("scaler"):
        run.scaler.load_state_dict(meta["scaler"])
    restore_rng_state(tensors, meta)
    log.info("%s: resumed from %s (epoch %d done)", desc, last.name, int(meta["epoch"]) + 1)
    return int(meta["epoch"]) + 1, list(meta["history"])


def _peek_densities(checkpoint_dir) -> dict[str, float] | None:
    """The SNIP/ERK densities a checkpointed sparse run used (so a resume rebuilds the same masks)."""
    last = latest_checkpoint(checkpoint_dir) if checkpoint_dir is not None else None
    if last is None:
        return None
    _, meta = load_checkpoint(last)
    return meta.get("sparse_densities")


def _teacher_outputs(teacher, teacher_cache, teacher_tap, uses_features, x, idx, device):
    if teacher_cache is not None:
        t_logits = teacher_cache.logits[idx].to(device, non_blocking=True)
        t_feat = (
            teacher_cache.features[idx].to(device, non_blocking=True)
            if teacher_cache.features is not None
            else None
        )
        if not uses_features or t_feat is not None:
            return t_logits, t_feat
    with torch.no_grad():
        if uses_features:
            return forward_with_features(teacher, x, teacher_tap)
        return teacher(x), None


def _train_epoch(epoch, run: _Run, cfg, student, loss_fn, teacher, teacher_cache, teacher_tap, desc) -> float:
    total = cfg.epochs * run.steps_per_epoch
    uses_features = bool(getattr(loss_fn, "uses_features", False))
    distilling = not isinstance(loss_fn, CELoss)
    set_loader_epoch(run.loader, epoch)
    running = torch.zeros((), device=run.device, dtype=torch.float64)
    count = 0
    for i, (x, y, idx) in enumerate(progress(run.loader, desc=f"{desc} {epoch + 1}/{cfg.epochs}")):
        step = epoch * run.steps_per_epoch + i
        for group in run.optimizer.param_groups:
            group["lr"] = lr_at(step, total, cfg)
        x = run.norm(x.to(run.device, non_blocking=True))
        y = y.to(run.device, non_blocking=True)
        if run.mixer is not None:
            x, y = run.mixer(x, y)
        with autocast(run.device, run.precision):
            t_logits = t_feat = None
            if distilling:
                t_logits, t_feat = _teacher_outputs(teacher, teacher_cache, teacher_tap, uses_features, x, idx,
                                                    run.device)  # fmt: skip
            loss = run.step_module(x, y, t_logits, t_feat)
        run.optimizer.zero_grad(set_to_none=True)
        run.scaler.scale(loss).backward()
        if cfg.grad_clip > 0:
            run.scaler.unscale_(run.optimizer)
            torch.nn.utils.clip_grad_norm_(run.params, cfg.grad_clip)
        run.scaler.step(run.optimizer)
        run.scaler.update()
        if run.sparsity is not None:
            run.sparsity.step()
        if run.ema is not None:
            run.ema.update(student, step=step)
        running += loss.detach().double() * len(idx)
        count += len(idx)
    mean = float(running) / max(count, 1)  # one host sync per epoch
    if not math.isfinite(mean):
        raise FloatingPointError(
            f"{desc}: the training loss became {mean} in epoch {epoch + 1}; lower the lr"
        )
    return mean


def train(
    student: nn.Module,
    data: ImageDataset,
    cfg: TrainConfig,
    loss_fn: DistillLoss | None = None,
    teacher: nn.Module | None = None,
    teacher_cache: TeacherOutputs | None = None,
    student_tap: int | None = None,
    teacher_tap: int | None = None,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    desc: str = "train",
    sparse: SparseConfig | None = None,
    evaluate_each_epoch: bool = True,
) -> dict[str, Any]:
    """Train ``student`` in place on ``data.train``; return the history and final (EMA) val accuracy.

    Without ``teacher``/``teacher_cache`` use the ``none`` loss (cross-entropy). Feature losses need
    ``student_tap`` and a teacher tap (or cached features). ``sparse`` trains with SLaK's dynamic
    sparsity. ``checkpoint_dir`` checkpoints every epoch and resumes from the latest intact one.
    """
    cfg.validate()
    loss_fn = loss_fn if loss_fn is not None else CELoss()
    _check_inputs(student, data, loss_fn, teacher, teacher_cache, student_tap, teacher_tap)
    if sparse is not None:
        sparse.validate()
    if teacher_cache is not None and cfg.mixes:
        raise ValueError("cached teacher logits cannot be used with mixup/cutmix (the mixed images differ)")
    info = init_distributed()
    run = _setup(
        student, data, cfg, loss_fn, teacher, student_tap, sparse, info, _peek_densities(checkpoint_dir)
    )
    start_epoch, history = _resume(checkpoint_dir, student, loss_fn, run, desc)
    student.train()
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        mean_loss = _train_epoch(epoch, run, cfg, student, loss_fn, teacher, teacher_cache, teacher_tap, desc)
        row: dict[str, Any] = {
            "epoch": epoch + 1,
            "loss": reduce_mean(mean_loss),
            "seconds": time.perf_counter() - t0,
        }
        if run.sparsity is not None:
            row["sparsity"] = run.sparsity.sparsity()
        if evaluate_each_epoch:
            row["test_acc"] = evaluate(student, data, device=run.device, precision=run.precision)
            if run.ema is not None:
                row["test_acc_ema"] = evaluate(
                    run.ema.module, data, device=run.device, precision=run.precision
                )
        history.append(row)
        log.info("%s epoch %d: %s", desc, epoch + 1, {k: round(v, 4) for k, v in row.items()})
        if checkpoint_dir is not None and is_main_process():
            _save(checkpoint_dir, epoch, history, student, loss_fn, run)
        if on_epoch is not None:
            on_epoch(row)
    if run.sparsity is not None:
        run.sparsity.handle.remove()
    student.eval()
    final = history[-1] if history else {}
    return {
        "history": history,
        "test_acc": final.get("test_acc"),
        "test_acc_ema": final.get("test_acc_ema"),
        "ema": run.ema.module if run.ema is not None else None,
        "epoch_seconds": [r["seconds"] for r in history],
        "device": str(run.device),
        "precision": run.precision,
        "sparsity": run.sparsity.sparsity() if run.sparsity is not None else 0.0,
    }
