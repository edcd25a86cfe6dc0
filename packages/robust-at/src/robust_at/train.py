"""The adversarial training loop shared by every method, with WOT, SWA and early stopping.

Each epoch: train on attacked batches (the method decides how), let WOT record / refine the
trajectory, update the SWA average, evaluate clean and PGD-k accuracy on the test split and PGD-k
on the validation split (model selection for early stopping), append a row to
``history.jsonl`` and write an atomic checkpoint that resumes the run bit for bit (model,
optimizer, WOT state, SWA average, best-validation weights, RNG).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import pathlib
import tempfile
import time
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from torch.optim.swa_utils import AveragedModel

from research_systems_core.batchnorm import recalibrate_batchnorm
from research_systems_core.checkpoint import (
    CheckpointError,
    capture_rng_state,
    latest_checkpoint,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from research_systems_core.config import config_from_dict, config_to_dict
from research_systems_core.distributed import DistInfo, init_distributed, reduce_metrics, wrap_model
from research_systems_core.logs import progress
from research_systems_core.metadata import run_metadata
from research_systems_core.optim_state import load_optimizer_state, optimizer_state_to_tensors
from research_systems_core.precision import autocast, check_precision, configure_determinism, grad_scaler
from research_systems_core.results import JsonlWriter, plot_curves, write_json
from research_systems_core.torch_utils import resolve_device
from research_systems_core.validation import check_choice, check_int, check_positive, check_range
from robust_at.attacks import NORMS, AttackConfig, check_logits
from robust_at.data import DataBundle, batches, check_dataset_name, load_dataset
from robust_at.evaluate import clean_accuracy, pgd_accuracy
from robust_at.methods import METHODS, ATMethod, create_method
from robust_at.models import build_any_model, check_model_name
from robust_at.presets import PRESETS
from robust_at.wot import WOT, WOTConfig, describe_groups

__all__ = [
    "PRESETS",
    "RunState",
    "TrainConfig",
    "TrainingDivergedError",
    "build_config",
    "build_model",
    "build_run",
    "evaluate_epoch",
    "load_state_into",
    "load_weights",
    "refine_with_wot",
    "resume_run",
    "save_run_checkpoint",
    "save_weights",
    "train",
    "train_one_epoch",
]

log = logging.getLogger(__name__)


class TrainingDivergedError(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass
class TrainConfig:
    """Everything a training run needs; ``PRESETS`` hold the reference settings."""

    dataset: str = "cifar10"  # digits, mnist, cifar10, cifar100, svhn, tiny-imagenet, imagenet, folder:PATH
    download: bool = False
    image_size: int | None = None  # shared image stack resolution (None: the data set's own)
    train_size: int | None = None
    val_size: int = 1000
    test_size: int | None = None
    label_noise: float = 0.0
    model: str = "preact-resnet18"
    width: int | None = None  # small-cnn / preact-resnet18 width
    depth: int | None = None  # small-cnn depth (number of convs)
    method: str = "at-pgd"
    epochs: int = 200
    batch_size: int = 128
    lr: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    milestones: list[int] = field(default_factory=lambda: [100, 150])
    lr_decay: float = 0.1
    norm: str = "linf"
    eps: float = 8 / 255
    step_size: float = 2 / 255
    attack_steps: int = 10
    attack_mode: str | None = None  # None: the method's reference ("train" for AT/AWP, "eval" for TRADES)
    trades_beta: float = 6.0
    awp_gamma: float = 0.01
    awp_warmup: int = 0
    eval_steps: int = 20
    eval_restarts: int = 1
    eval_size: int | None = None  # test images evaluated per epoch (None: all)
    eval_batch_size: int = 256
    swa: bool = False
    swa_start: int = -1  # -1: the first learning-rate decay
    swa_eval_every: int = 1  # evaluate the SWA average every k epochs (and at the end)
    early_stopping_patience: int = 0  # 0: train all epochs (best-validation weights are kept anyway)
    seed: int = 0
    device: str = "auto"
    precision: str = "fp32"  # autocast for training, attacks and evaluation: fp32, bf16, fp16
    keep_checkpoints: int = 2
    wot: WOTConfig = field(default_factory=WOTConfig)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        check_model_name(self.model)
        check_dataset_name(self.dataset)
        check_precision(self.precision)
        check_choice("method", self.method, METHODS.names())
        check_choice("norm", self.norm, NORMS)
        check_int("epochs", self.epochs, minimum=1)
        check_int("batch_size", self.batch_size, minimum=1)
        check_int("val_size", self.val_size, minimum=0)
        check_positive("lr", self.lr, strict=True)
        check_range("momentum", self.momentum, 0.0, 1.0, high_inclusive=False)
        check_positive("weight_decay", self.weight_decay, strict=False)
        check_range("lr_decay", self.lr_decay, 0.0, 1.0, low_inclusive=False)
        check_range("label_noise", self.label_noise, 0.0, 1.0)
        for m in self.milestones:
            check_int("milestones", m, minimum=1)
        check_int("eval_steps", self.eval_steps, minimum=1)
        check_int("early_stopping_patience", self.early_stopping_patience, minimum=0)
        check_int("swa_start", self.swa_start, minimum=-1)
        check_int("swa_eval_every", self.swa_eval_every, minimum=1)
        check_int("keep_checkpoints", self.keep_checkpoints, minimum=1)
        check_int("attack_steps", self.attack_steps, minimum=1)
        self.attack()  # validates eps, step size
        self.wot.validate()
        if self.wot.enabled and self.val_size == 0:
            raise ValueError(
                "val_size must be > 0 when WOT is on (WOT learns its weights on the validation split), got 0"
            )

    def attack(self) -> AttackConfig:
        return AttackConfig(eps=self.eps, step_size=self.step_size, steps=self.attack_steps, norm=self.norm)

    def lr_at(self, epoch: int) -> float:
        return self.lr * self.lr_decay ** sum(1 for m in self.milestones if epoch >= m)

    def first_decay(self) -> int:
        return min(self.milestones) if self.milestones else 0

    def wot_start(self) -> int:
        return self.wot.start_epoch if self.wot.start_epoch >= 0 else self.first_decay()

    def swa_begin(self) -> int:
        return self.swa_start if self.swa_start >= 0 else self.first_decay()


def build_config(preset: str | None = None, overrides: dict | None = None) -> TrainConfig:
    """A TrainConfig from a preset (``PRESETS``) updated with an (optionally nested) dict."""
    data: dict = {}
    if preset is not None:
        check_choice("preset", preset, PRESETS)
        data = copy.deepcopy(PRESETS[preset])
    for key, value in (overrides or {}).items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return config_from_dict(TrainConfig, data)


# ------------------------------------------------------------------ weights I/O
def save_weights(
    path: str | os.PathLike, state: dict[str, torch.Tensor], meta: dict | None = None
) -> pathlib.Path:
    """Write a state dict as safetensors atomically (temp file, fsync, rename)."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
        save_file(tensors, tmp, metadata={k: str(v) for k, v in (meta or {}).items()})
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        pathlib.Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Load safetensors weights (never unpickles); a missing, empty, truncated or corrupt file
    raises CheckpointError naming the file."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        size = path.stat().st_size
        raise CheckpointError(
            f"weights file {path} ({size} bytes) is not a readable safetensors file "
            f"(truncated or corrupt?): {exc}"
        ) from None


def load_state_into(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``model.load_state_dict`` with a one-line error naming ``source`` on a mismatch."""
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    shapes = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or extra or shapes:
        parts = [
            f"{len(missing)} missing (e.g. {missing[0]!r})" if missing else "",
            f"{len(extra)} unexpected (e.g. {extra[0]!r})" if extra else "",
            f"shape mismatch at {shapes[0]!r}: file {tuple(state[shapes[0]].shape)} vs model "
            f"{tuple(expected[shapes[0]].shape)}"
            if shapes
            else "",
        ]
        raise CheckpointError(
            f"{source} does not fit the model ({', '.join(p for p in parts if p)}); "
            "was it trained with another --model / data set?"
        )
    model.load_state_dict(state)


def _prefixed(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"{prefix}.{k}": v.detach().clone() for k, v in state.items()}


def _unprefixed(prefix: str, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    n = len(prefix) + 1
    return {k[n:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _broadcast(model: nn.Module) -> None:
    if dist.is_available() and dist.is_initialized():
        for t in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(t.data, src=0)


# ------------------------------------------------------------------ building a run
@dataclass
class RunState:
    """Everything that changes during training and goes into a checkpoint."""

    model: nn.Module  # possibly DDP-wrapped
    base: nn.Module  # the unwrapped module (attacks, WOT, saving)
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler
    method: ATMethod
    wot: WOT | None
    swa_model: AveragedModel | None
    history: list[dict] = field(default_factory=list)
    best: dict = field(default_factory=lambda: {"val_robust_acc": -1.0, "epoch": -1, "stale": 0})
    best_state: dict[str, torch.Tensor] | None = None
    best_test_state: dict[str, torch.Tensor] | None = None
    best_test_acc: float = -1.0
    swa_started: bool = False
    start_epoch: int = 0
    out_dir: pathlib.Path | None = None


def build_model(cfg: TrainConfig, data: DataBundle) -> nn.Module:
    """The configured model for ``data`` (normalisation inside; takes [0, 1] inputs)."""
    kwargs = {k: v for k, v in (("width", cfg.width), ("depth", cfg.depth)) if v is not None}
    return build_any_model(
        cfg.model, data.num_classes, data.in_channels, mean=data.mean, std=data.std, **kwargs
    )


def make_optimizer(model: nn.Module, cfg: TrainConfig, lr: float | None = None) -> torch.optim.SGD:
    """SGD with the configured momentum and weight decay."""
    return torch.optim.SGD(
        model.parameters(),
        lr=cfg.lr if lr is None else lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
    )


def load_training_data(cfg: TrainConfig, data_dir: str | os.PathLike | None) -> DataBundle:
    """The configured data set with its seeded validation split."""
    data = load_dataset(
        cfg.dataset, data_dir, val_size=cfg.val_size, train_size=cfg.train_size, test_size=cfg.test_size,
        label_noise=cfg.label_noise, seed=cfg.seed, download=cfg.download, image_size=cfg.image_size,
    )  # fmt: skip
    if cfg.wot.enabled and len(data.y_val) == 0:
        raise ValueError(
            "WOT needs a non-empty validation split (val_size must be > 0), got 0 validation images"
        )
    return data


def _check_model_output(model: nn.Module, data: DataBundle, device: torch.device) -> None:
    with torch.no_grad():
        model.eval()
        probe = next(batches(data.x_train, data.y_train, 4, device=device))
        check_logits(model(probe[0]), len(probe[1]), data.num_classes)
        model.train()


def build_run(cfg: TrainConfig, data: DataBundle, device: torch.device, info: DistInfo) -> RunState:
    """Model, optimizer, grad scaler, method, WOT and SWA for a fresh run."""
    base = build_model(cfg, data).to(device)
    _check_model_output(base, data, device)
    wot = WOT(base, cfg.wot) if cfg.wot.enabled else None
    if wot is not None:
        log.info("WOT %s groups: %s", cfg.wot.grouping, describe_groups(base, cfg.wot.grouping))
    model = wrap_model(base, info)
    method = create_method(
        cfg.method, attack=cfg.attack(), attack_mode=cfg.attack_mode, trades_beta=cfg.trades_beta,
        awp_gamma=cfg.awp_gamma, awp_warmup=cfg.awp_warmup,
    )  # fmt: skip
    return RunState(
        model=model, base=base, optimizer=make_optimizer(model, cfg), scaler=grad_scaler(device, cfg.precision),
        method=method, wot=wot, swa_model=AveragedModel(base) if cfg.swa else None,
    )  # fmt: skip


# ------------------------------------------------------------------ checkpoints
def save_run_checkpoint(state: RunState, cfg: TrainConfig, ckpt_dir: pathlib.Path, epoch: int) -> None:
    """Atomic checkpoint of everything needed to resume bit for bit after ``epoch``."""
    tensors = _prefixed("model", state.base.state_dict())
    opt_tensors, opt_meta = optimizer_state_to_tensors(state.optimizer)
    tensors.update(opt_tensors)
    meta = {
        "epoch": epoch, "history": state.history, "best": state.best, "best_test_acc": state.best_test_acc,
        "optimizer": opt_meta, "swa_started": state.swa_started, "scaler": state.scaler.state_dict(),
    }  # fmt: skip
    if state.wot is not None:
        tensors.update(state.wot.state_tensors())
        meta["wot"] = state.wot.state_meta()
    if state.swa_model is not None and state.swa_started:
        tensors.update(_prefixed("swa", state.swa_model.state_dict()))
    if state.best_state is not None:
        tensors.update(_prefixed("best", state.best_state))
    if state.best_test_state is not None:
        tensors.update(_prefixed("besttest", state.best_test_state))
    rng_tensors, rng_meta = capture_rng_state()
    tensors.update(rng_tensors)
    meta.update(rng_meta)
    save_checkpoint(ckpt_dir, epoch, tensors, meta, keep=cfg.keep_checkpoints)


def resume_run(state: RunState, ckpt_dir: pathlib.Path, wot_start: int | None = None) -> bool:
    """Load the latest verified checkpoint in ``ckpt_dir`` into ``state``; False when none.

    A checkpoint without WOT state (a plain run's, e.g. to fork WOT off an AT trajectory)
    loads into a WOT run only if WOT has not started by then (``wot_start``)."""
    latest = latest_checkpoint(ckpt_dir)
    if latest is None:
        return False
    tensors, meta = load_checkpoint(latest)
    no_wot_state = state.wot is not None and "wot" not in meta
    if no_wot_state and (wot_start is None or int(meta["epoch"]) + 1 > wot_start):
        raise CheckpointError(
            f"checkpoint {latest} has no WOT state but this WOT run starts WOT at epoch {wot_start} "
            f"and the checkpoint ends at epoch {meta['epoch']}; resume it without WOT or start afresh"
        )
    load_state_into(state.base, _unprefixed("model", tensors), f"checkpoint {latest}")
    load_optimizer_state(state.optimizer, tensors, meta["optimizer"])
    if meta.get("scaler"):
        state.scaler.load_state_dict(meta["scaler"])
    if state.wot is not None and "wot" in meta:
        state.wot.load_state(tensors, meta["wot"])
    if state.swa_model is not None and meta.get("swa_started"):
        state.swa_model.load_state_dict(_unprefixed("swa", tensors))
    state.best_state = _unprefixed("best", tensors) or None
    state.best_test_state = _unprefixed("besttest", tensors) or None
    state.history, state.best = list(meta["history"]), dict(meta["best"])
    state.best_test_acc = float(meta["best_test_acc"])
    state.swa_started = bool(meta.get("swa_started"))
    state.start_epoch = int(meta["epoch"]) + 1
    restore_rng_state(tensors, meta)
    log.info("resumed from %s at epoch %d", latest, state.start_epoch)
    return True


# ------------------------------------------------------------------ one epoch
def refine_with_wot(
    state: RunState, cfg: TrainConfig, data: DataBundle, device, info: DistInfo, epoch: int, lr: float
) -> None:
    """One WOT refinement: weights learned on the attacked validation split, BatchNorm
    recalibrated on clean training batches; the optimizer is recreated if configured."""
    wot = state.wot
    assert wot is not None
    gen = torch.Generator().manual_seed(cfg.seed * 7919 + wot.refinements)
    attack = cfg.attack()
    if cfg.wot.save_trajectory and info.is_main and state.out_dir is not None:
        save_trajectory(state, state.out_dir / "wot_trajectory.safetensors", epoch)
    wot.refine(
        state.base,
        lambda: batches(data.x_val, data.y_val, cfg.batch_size, device=device),
        lambda m, xb, yb: attack.run(m, xb, yb),
        lambda: batches(data.x_train, data.y_train, cfg.batch_size, shuffle=True, generator=gen,
                        augment=data.augment, device=device),
        generator=gen, epoch=epoch, amp=lambda: autocast(device, cfg.precision),
    )  # fmt: skip
    if info.is_distributed:
        _broadcast(state.base)
        wot.start()
    if cfg.wot.reset_optimizer:
        state.optimizer = make_optimizer(state.model, cfg, lr)
    state.model.train()


def save_trajectory(state: RunState, path: pathlib.Path, epoch: int) -> None:
    """The window about to be refined (snapshots) and the model's buffers, for ``wot-diagnose``."""
    wot = state.wot
    assert wot is not None
    tensors = {**wot.state_tensors(), **_prefixed("model", state.base.state_dict())}
    save_weights(path, tensors, {"epoch": epoch, "refinement": wot.refinements + 1, "gap": wot.gap})


def _diverged(loss: torch.Tensor, ckpt_dir: pathlib.Path | None, epoch: int, batch: str, lr: float) -> None:
    last = latest_checkpoint(ckpt_dir) if ckpt_dir is not None else None
    raise TrainingDivergedError(
        f"training loss became {loss.detach().item()} at epoch {epoch}, batch {batch} (lr {lr:g}); "
        f"the last good checkpoint is {last if last else 'none (no epoch finished)'}; lower lr or eps and resume"
    )


def train_one_epoch(
    state: RunState, cfg: TrainConfig, data: DataBundle, device, info: DistInfo, epoch: int,
    ckpt_dir: pathlib.Path | None,
) -> dict[str, float]:  # fmt: skip
    """Adversarial training for one epoch (with WOT recording/refinement); returns train metrics."""
    lr = cfg.lr_at(epoch)
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    if state.wot is not None and epoch == cfg.wot_start() and not state.wot.active:
        state.wot.start()
    state.model.train()
    gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    seen, wot_seconds, t0 = 0, 0.0, time.perf_counter()
    n_batches = math.ceil(len(data.y_train) / info.world_size / cfg.batch_size)
    stream = batches(data.x_train, data.y_train, cfg.batch_size, shuffle=True, generator=gen, augment=data.augment,
                     device=device, rank=info.rank, world_size=info.world_size)  # fmt: skip
    for i, (x, y) in enumerate(progress(stream, desc=f"epoch {epoch}", total=n_batches)):
        with autocast(device, cfg.precision):
            loss, logits = state.method.loss(state.model, x, y, epoch)
        if (device.type == "cpu" or i == 0) and not torch.isfinite(loss):  # no per-batch sync on GPUs
            _diverged(loss, ckpt_dir, epoch, str(i), lr)
        state.optimizer.zero_grad(set_to_none=True)
        state.scaler.scale(loss).backward()
        state.scaler.step(state.optimizer)
        state.scaler.update()
        state.method.after_step(state.model)
        loss_sum += loss.detach().double() * len(y)
        correct += (logits.detach().argmax(1) == y).sum()
        seen += len(y)
        if state.wot is not None and state.wot.record_step():
            tw = time.perf_counter()
            refine_with_wot(state, cfg, data, device, info, epoch, lr)
            wot_seconds += time.perf_counter() - tw
    mean_loss = float(loss_sum) / max(seen, 1)
    if not math.isfinite(mean_loss):
        _diverged(torch.tensor(mean_loss), ckpt_dir, epoch, "unknown (checked at the epoch end)", lr)
    metrics = reduce_metrics(
        {"train_robust_loss": mean_loss, "train_robust_acc": int(correct) / max(seen, 1)}
    )
    return {**metrics, "lr": lr, "train_seconds": time.perf_counter() - t0, "wot_seconds": wot_seconds}


# ------------------------------------------------------------------ evaluation
def evaluate_model(
    model: nn.Module, cfg: TrainConfig, data: DataBundle, device, prefix: str, info: DistInfo | None = None
) -> dict[str, float]:
    """Clean and PGD-k accuracy on the test split (and PGD-k on the validation split), each
    rank on its shard, reduced over ranks."""
    n = cfg.eval_size or len(data.y_test)
    shard = {"rank": info.rank, "world_size": info.world_size} if info is not None else {}
    common = {
        "eps": cfg.eps, "step_size": cfg.step_size, "steps": cfg.eval_steps, "restarts": cfg.eval_restarts,
        "norm": cfg.norm, "batch_size": cfg.eval_batch_size, "device": device, "precision": cfg.precision, **shard,
    }  # fmt: skip
    clean = clean_accuracy(model, data.x_test[:n], data.y_test[:n], cfg.eval_batch_size, device,
                           precision=cfg.precision, **shard)  # fmt: skip
    robust = pgd_accuracy(model, data.x_test[:n], data.y_test[:n], **common)
    row = {
        f"{prefix}test_clean_acc": clean["acc"],
        f"{prefix}test_robust_acc": robust["acc"],
        f"{prefix}test_robust_loss": robust["loss"],
    }
    if len(data.y_val):
        row[f"{prefix}val_robust_acc"] = pgd_accuracy(model, data.x_val, data.y_val, **common)["acc"]
    return row


def swa_for_evaluation(state: RunState, cfg: TrainConfig, data: DataBundle, device) -> nn.Module:
    """A copy of the SWA average with BatchNorm statistics recomputed on the training set."""
    assert state.swa_model is not None
    swa_eval = copy.deepcopy(state.swa_model.module)
    recalibrate_batchnorm(swa_eval, batches(data.x_train, data.y_train, cfg.batch_size, device=device))
    return swa_eval


def evaluate_epoch(
    state: RunState, cfg: TrainConfig, data: DataBundle, device, info: DistInfo, epoch: int
) -> dict[str, float]:
    """The epoch's evaluation row (model, and the SWA average when due)."""
    t1 = time.perf_counter()
    row = evaluate_model(state.base, cfg, data, device, "", info)
    swa_due = (epoch + 1) % cfg.swa_eval_every == 0 or epoch == cfg.epochs - 1
    if state.swa_model is not None and state.swa_started and swa_due:
        row.update(
            evaluate_model(swa_for_evaluation(state, cfg, data, device), cfg, data, device, "swa_", info)
        )
    row["eval_seconds"] = time.perf_counter() - t1
    return row


def update_best(state: RunState, row: dict, epoch: int) -> None:
    """Track the best-validation (early stopping) and best-test (oracle) weights."""
    if "val_robust_acc" in row:
        if row["val_robust_acc"] > state.best["val_robust_acc"]:
            state.best = {"val_robust_acc": row["val_robust_acc"], "epoch": epoch, "stale": 0}
            state.best_state = {k: v.detach().clone() for k, v in state.base.state_dict().items()}
        else:
            state.best["stale"] += 1
    if row["test_robust_acc"] > state.best_test_acc:
        state.best_test_acc = row["test_robust_acc"]
        state.best_test_state = {k: v.detach().clone() for k, v in state.base.state_dict().items()}


# ------------------------------------------------------------------ the loop
def _start_outputs(
    out: pathlib.Path, cfg: TrainConfig, data: DataBundle, state: RunState, info
) -> JsonlWriter | None:
    out.mkdir(parents=True, exist_ok=True)
    if not info.is_main:
        return None
    write_json(out / "config.json", {"config": config_to_dict(cfg), "data": data.summary()})
    # keep the per-epoch log consistent with the checkpoint we resumed from
    (out / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in state.history))
    return JsonlWriter(out / "history.jsonl")


def train(
    cfg: TrainConfig,
    out_dir: str | os.PathLike,
    *,
    data_dir: str | os.PathLike | None = None,
    data: DataBundle | None = None,
    resume: bool = True,
    stop_after_epoch: int | None = None,
) -> dict:
    """Train with ``cfg``, writing checkpoints, ``history.jsonl``, weights and ``result.json``
    into ``out_dir``. Resumes from the latest checkpoint there unless ``resume=False``.
    ``stop_after_epoch`` ends the process early (as a preemption would) for resume tests."""
    cfg.validate()
    out, info = pathlib.Path(out_dir), init_distributed()
    ckpt_dir = out / "checkpoints"
    device = resolve_device(cfg.device) if not info.is_distributed else info.device
    configure_determinism(cfg.seed + info.rank)
    data = data or load_training_data(cfg, data_dir)
    state = build_run(cfg, data, device, info)
    state.out_dir = out
    if resume:
        resume_run(state, ckpt_dir, cfg.wot_start())
    writer = _start_outputs(out, cfg, data, state, info)
    desc = f"{cfg.method}{'+wot' if state.wot else ''}"
    for epoch in progress(
        range(state.start_epoch, cfg.epochs), desc=desc, initial=state.start_epoch, total=cfg.epochs
    ):
        row = {"epoch": epoch, **train_one_epoch(state, cfg, data, device, info, epoch, ckpt_dir)}
        if state.swa_model is not None and epoch >= cfg.swa_begin():
            state.swa_model.update_parameters(state.base)
            state.swa_started = True
        row.update(evaluate_epoch(state, cfg, data, device, info, epoch))
        update_best(state, row, epoch)
        state.history.append(row)
        _log_epoch(row)
        if info.is_main:
            save_run_checkpoint(state, cfg, ckpt_dir, epoch)
            writer.append(row)
        stop_early = 0 < cfg.early_stopping_patience <= state.best["stale"]
        if stop_after_epoch is not None and epoch >= stop_after_epoch:
            return {"stopped_after_epoch": epoch}
        if stop_early:
            log.info("early stopping at epoch %d (best validation robust acc %.3f at epoch %d)",
                     epoch, state.best["val_robust_acc"], state.best["epoch"])  # fmt: skip
            break
    if info.is_main:
        save_final_weights(state, cfg, data, device, out)
    return summarize_run(state, cfg, data, out, info.is_main)


def _log_epoch(row: dict) -> None:
    swa = f" | swa robust {row['swa_test_robust_acc']:.3f}" if "swa_test_robust_acc" in row else ""
    log.info("epoch %d: train robust %.3f | test clean %.3f robust %.3f%s", row["epoch"],
             row["train_robust_acc"], row["test_clean_acc"], row["test_robust_acc"], swa)  # fmt: skip


# ------------------------------------------------------------------ the end of a run
def save_final_weights(
    state: RunState, cfg: TrainConfig, data: DataBundle, device, out: pathlib.Path
) -> dict:
    """model_last / model_best_val / model_best_test / model_swa .safetensors."""
    weights = {"last": save_weights(out / "model_last.safetensors", state.base.state_dict())}
    for name, best in (("best_val", state.best_state), ("best_test", state.best_test_state)):
        if best is not None:
            weights[name] = save_weights(out / f"model_{name}.safetensors", best)
    if state.swa_model is not None and state.swa_started:
        swa = swa_for_evaluation(state, cfg, data, device)
        weights["swa"] = save_weights(out / "model_swa.safetensors", swa.state_dict())
    return weights


def summarize_run(
    state: RunState, cfg: TrainConfig, data: DataBundle, out: pathlib.Path, is_main: bool
) -> dict:
    """result.json (last, best-test, early-stopping, SWA rows, WOT history) and curves.png."""
    history = state.history
    last = history[-1]
    robust = [r["test_robust_acc"] for r in history]
    best_i = max(range(len(robust)), key=robust.__getitem__)
    names = ["last", "best_val", "best_test", "swa"]
    result: dict = {
        "config": config_to_dict(cfg), "data": data.summary(), "epochs_run": len(history),
        "last": {k: last[k] for k in ("epoch", "test_clean_acc", "test_robust_acc")},
        "best_test": {"epoch": history[best_i]["epoch"], "test_robust_acc": robust[best_i],
                      "test_clean_acc": history[best_i]["test_clean_acc"]},
        "weights": {k: str(out / f"model_{k}.safetensors") for k in names if (out / f"model_{k}.safetensors").is_file()},
        "metadata": run_metadata(seed=cfg.seed, config=config_to_dict(cfg), packages=("robust-at", "research-systems-core", "torch")),
    }  # fmt: skip
    if state.best["epoch"] >= 0:
        row = next(r for r in history if r["epoch"] == state.best["epoch"])
        result["early_stopping"] = {"epoch": state.best["epoch"], "val_robust_acc": state.best["val_robust_acc"],
                                    "test_robust_acc": row["test_robust_acc"], "test_clean_acc": row["test_clean_acc"]}  # fmt: skip
    if "swa_test_robust_acc" in last:
        result["swa"] = {
            "test_robust_acc": last["swa_test_robust_acc"],
            "test_clean_acc": last["swa_test_clean_acc"],
        }
    if state.wot is not None:
        result["wot"] = {"refinements": state.wot.refinements, "groups": state.wot.group_names,
                         "history": state.wot.history}  # fmt: skip
    if is_main:
        write_json(out / "result.json", result)
        _plot_history(out, cfg, history, state.wot is not None)
    return result


def _plot_history(out: pathlib.Path, cfg: TrainConfig, history: list[dict], with_wot: bool) -> None:
    epochs = [r["epoch"] for r in history]
    label = "train robust (PGD, noisy labels)" if cfg.label_noise else "train robust"
    curves = {
        label: (epochs, [r["train_robust_acc"] for r in history]),
        f"test robust (PGD-{cfg.eval_steps})": (epochs, [r["test_robust_acc"] for r in history]),
        "test clean": (epochs, [r["test_clean_acc"] for r in history]),
    }
    if "val_robust_acc" in history[-1]:
        curves["val robust"] = (epochs, [r["val_robust_acc"] for r in history])
    title = f"{cfg.method}{' + WOT' if with_wot else ''} on {cfg.dataset}"
    plot_curves(out / "curves.png", curves, "epoch", "accuracy", title=title)
