"""A short training loop for dense, RigL, SET, MEST-style and Chase runs, with checkpoint/resume."""

from __future__ import annotations

import logging
import math
import pathlib
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from research_systems_core.checkpoint import (
    capture_rng_state,
    latest_checkpoint,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from research_systems_core.logs import progress
from research_systems_core.seeding import seed_everything
from research_systems_core.validation import check_choice, check_int, check_positive
from sparse_dst.chase import Chase, ChaseConfig
from sparse_dst.data import ImageData
from sparse_dst.masking import Masking
from sparse_dst.models import create_model

log = logging.getLogger(__name__)

METHODS = ("dense", "rigl", "set", "mest", "chase")


@dataclass
class TrainConfig:
    """One training run. ``sparse`` holds the DST/Chase settings (ignored for ``dense``)."""

    method: str = "chase"
    dataset: str = "digits"
    image_size: int = 28
    train_limit: int = 0
    model: str = "small_cnn"
    width: float = 1.0
    epochs: int = 4
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0
    sparse: ChaseConfig = field(default_factory=ChaseConfig)

    def validate(self) -> TrainConfig:
        check_choice("method", self.method, METHODS)
        check_int("train_limit", self.train_limit, minimum=0)
        check_int("epochs", self.epochs, minimum=1)
        check_int("batch_size", self.batch_size, minimum=1)
        check_positive("lr", self.lr)
        self.sparse.validate()
        return self


@dataclass
class TrainResult:
    model: nn.Module
    masking: Masking | None
    test_accuracy: float
    train_seconds: float
    history: list[dict[str, Any]]


def build_masking(
    cfg: TrainConfig, model: nn.Module, optimizer: torch.optim.Optimizer, total_steps: int
) -> Masking | None:
    """The DST wrapper the method asks for (None for dense training)."""
    if cfg.method == "dense":
        return None
    sparse = ChaseConfig(**asdict(cfg.sparse))
    if cfg.method == "chase":
        return Chase(model, optimizer, sparse, total_steps)
    sparse.grow = "random" if cfg.method == "set" else sparse.grow
    sparse.memory_bound = cfg.method == "mest" or sparse.memory_bound
    return Masking(model, optimizer, sparse, total_steps)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy in percent."""
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        correct += int((model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum())
    return 100.0 * correct / len(x)


def _optimizer_tensors(optimizer: torch.optim.Optimizer, model: nn.Module) -> dict[str, torch.Tensor]:
    out = {}
    for name, p in model.named_parameters():
        for key, value in optimizer.state.get(p, {}).items():
            if isinstance(value, torch.Tensor):
                out[f"optim/{name}/{key}"] = value
    return out


def _restore_optimizer(
    optimizer: torch.optim.Optimizer, model: nn.Module, tensors: dict[str, torch.Tensor]
) -> None:
    for name, p in model.named_parameters():
        prefix = f"optim/{name}/"
        state = {k[len(prefix) :]: v.clone() for k, v in tensors.items() if k.startswith(prefix)}
        if state:
            optimizer.state[p] = state


def train(
    cfg: TrainConfig,
    data: ImageData,
    checkpoint_dir: str | pathlib.Path | None = None,
    resume: bool = False,
    desc: str | None = None,
    eval_every_epoch: bool = True,
) -> TrainResult:
    """Train ``cfg.model`` on ``data``; checkpoint every epoch into ``checkpoint_dir``."""
    cfg.validate()
    seed_everything(cfg.seed)
    model = create_model(
        cfg.model,
        in_channels=data.in_channels,
        num_classes=data.num_classes,
        width=cfg.width,
        in_features=data.in_channels * data.image_size**2,
    )
    optimizer = torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True
    )
    steps_per_epoch = math.ceil(len(data.x_train) / cfg.batch_size)
    total_steps = cfg.epochs * steps_per_epoch
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, total_steps)
    masking = build_masking(cfg, model, optimizer, total_steps)
    generator = torch.Generator().manual_seed(cfg.seed)
    start_epoch = 0
    history: list[dict[str, Any]] = []
    if resume and checkpoint_dir is not None and (path := latest_checkpoint(checkpoint_dir)) is not None:
        tensors, meta = load_checkpoint(path)
        if meta.get("config") != asdict(cfg):
            raise ValueError(f"cannot resume from {path}: it was written with a different configuration")
        model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model/")})
        _restore_optimizer(optimizer, model, tensors)
        scheduler.load_state_dict(meta["scheduler"])
        for group, lr in zip(optimizer.param_groups, meta["lrs"], strict=True):
            group["lr"] = lr
        if masking is not None:
            masking.load_state_dict(
                {k[4:]: v for k, v in tensors.items() if k.startswith("dst/")}, meta["dst"]
            )
        generator.set_state(tensors["batch_generator"])
        restore_rng_state({k: v for k, v in tensors.items() if k.startswith("rng.")}, meta["rng"])
        start_epoch, history = int(meta["epoch"]), list(meta["history"])
        log.info("resumed from %s at epoch %d", path, start_epoch)
    started = time.perf_counter()
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        order = torch.randperm(len(data.x_train), generator=generator)
        total_loss = 0.0
        for i in progress(
            range(steps_per_epoch), desc=f"{desc or cfg.method} epoch {epoch + 1}/{cfg.epochs}"
        ):
            index = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            loss = F.cross_entropy(model(data.x_train[index]), data.y_train[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if masking is None:
                optimizer.step()
            else:
                masking.step()
            scheduler.step()
            total_loss += loss.item()
        row = {
            "epoch": epoch + 1,
            "loss": total_loss / steps_per_epoch,
            "test_accuracy": evaluate(model, data.x_test, data.y_test)
            if eval_every_epoch or epoch + 1 == cfg.epochs
            else None,
        }
        if masking is not None:
            row["density"] = masking.maskset.density()
        if isinstance(masking, Chase):
            row["alive_channels"] = masking.alive_channels()
        history.append(row)
        log.info("%s epoch %d: %s", desc or cfg.method, epoch + 1, row)
        if checkpoint_dir is not None:
            tensors = {f"model/{k}": v for k, v in model.state_dict().items()}
            tensors |= _optimizer_tensors(optimizer, model)
            meta: dict[str, Any] = {"config": asdict(cfg), "epoch": epoch + 1, "history": history}
            meta["scheduler"] = scheduler.state_dict()
            meta["lrs"] = [group["lr"] for group in optimizer.param_groups]
            if masking is not None:
                dst_tensors, meta["dst"] = masking.state_dict()
                tensors |= {f"dst/{k}": v for k, v in dst_tensors.items()}
            rng_tensors, meta["rng"] = capture_rng_state()
            tensors |= rng_tensors
            tensors["batch_generator"] = generator.get_state()
            save_checkpoint(checkpoint_dir, epoch + 1, tensors, meta, keep=2)
    seconds = time.perf_counter() - started
    accuracy = history[-1]["test_accuracy"]
    return TrainResult(model, masking, accuracy, seconds, history)
