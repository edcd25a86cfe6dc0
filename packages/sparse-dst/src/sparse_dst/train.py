"""Training loop for dense, RigL, SET, MEST and Chase runs on any image data set and model.

Data comes from the shared image stack (``research_systems_core.vision``: MNIST, CIFAR-10/100,
SVHN, Tiny-ImageNet, ImageNet, ``folder:PATH``) or, for quick offline runs, sklearn's digits held
in memory. Models are this package's registry (``small_cnn``, ``vgg11``, CIFAR-style ``resnet18``,
...) or any timm/torchvision name. Device ``auto``, bf16/fp16 autocast, DDP under torchrun,
and one atomic checkpoint per epoch from which ``resume`` continues bit for bit.
"""

from __future__ import annotations

import logging
import math
import pathlib
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset, Subset, TensorDataset

from research_systems_core.checkpoint import (
    capture_rng_state,
    latest_checkpoint,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from research_systems_core.distributed import DistInfo, barrier, init_distributed, wrap_model
from research_systems_core.logs import progress
from research_systems_core.optim_state import load_optimizer_state, optimizer_state_to_tensors
from research_systems_core.precision import autocast, check_precision, grad_scaler, to_channels_last
from research_systems_core.seeding import seed_everything
from research_systems_core.torch_utils import resolve_device
from research_systems_core.validation import check_choice, check_int, check_positive, check_range
from sparse_dst.chase import Chase, ChaseConfig
from sparse_dst.data import ImageData
from sparse_dst.masking import Masking
from sparse_dst.models import MODELS, create_model

log = logging.getLogger(__name__)

METHODS = ("dense", "rigl", "set", "mest", "chase")
LR_SCHEDULES = ("cosine", "multistep")
IN_MEMORY = ("digits",)
DEVICE_PATTERN = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


@dataclass
class TrainConfig:
    """One training run. ``sparse`` holds the DST/Chase settings (ignored for ``dense``).

    ``dataset``: ``digits`` (in memory, offline) or a shared-stack spec (``mnist``, ``cifar10``,
    ``cifar100``, ``svhn``, ``tiny-imagenet``, ``imagenet``, ``folder:PATH``). ``model``: a package
    model or any timm/torchvision name (``width`` applies to package models only).
    ``lr_schedule``: ``cosine`` or ``multistep`` (x0.1 at 50% and 75%, the reference CIFAR recipe),
    after ``warmup_epochs`` of linear warm-up.
    """

    method: str = "chase"
    dataset: str = "digits"
    image_size: int = 0
    train_limit: int = 0
    model: str = "small_cnn"
    width: float = 1.0
    epochs: int = 4
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = True
    lr_schedule: str = "cosine"
    warmup_epochs: int = 0
    label_smoothing: float = 0.0
    augment: bool = True
    device: str = "auto"
    precision: str = "fp32"
    workers: int = 0
    seed: int = 0
    sparse: ChaseConfig = field(default_factory=ChaseConfig)

    def validate(self) -> TrainConfig:
        check_choice("method", self.method, METHODS)
        check_int("image_size", self.image_size, minimum=0)
        check_int("train_limit", self.train_limit, minimum=0)
        check_positive("width", self.width)
        check_int("epochs", self.epochs, minimum=1)
        check_int("batch_size", self.batch_size, minimum=1)
        check_positive("lr", self.lr)
        check_range("momentum", self.momentum, 0.0, 1.0, high_inclusive=False)
        check_range("weight_decay", self.weight_decay, 0.0, 1.0)
        check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        check_int("warmup_epochs", self.warmup_epochs, minimum=0, maximum=self.epochs - 1)
        check_range("label_smoothing", self.label_smoothing, 0.0, 1.0, high_inclusive=False)
        check_precision(self.precision)
        check_int("workers", self.workers, minimum=0)
        check_int("seed", self.seed, minimum=0, maximum=2**32 - 1)
        for name in ("lr", "width"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite positive number, got {getattr(self, name)}")
        if not isinstance(self.device, str) or not DEVICE_PATTERN.fullmatch(self.device):
            raise ValueError(f"device must be auto, cpu, cuda, cuda:N or mps, got {self.device!r}")
        self.sparse.validate()
        self._check_conflicts()
        return self

    def _check_conflicts(self) -> None:
        """Settings that contradict each other are errors, never silently overridden."""
        s = self.sparse
        if self.width != 1.0 and self.model not in MODELS:
            raise ValueError(
                f"width={self.width} applies to this package's models ({', '.join(MODELS.names())}); "
                f"{self.model!r} is a timm/torchvision model: pick a smaller variant instead"
            )
        if self.method == "rigl" and s.grow == "random":
            raise ValueError("method=rigl grows by gradient; sparse.grow=random conflicts (use method=set)")
        if self.method in ("rigl", "set") and s.memory_bound:
            raise ValueError(
                f"method={self.method} has no memory bound; sparse.memory_bound=true conflicts "
                "(use method=mest, or method=chase with the soft bound)"
            )
        if self.method != "chase" and s.channel_sparsity not in (0.0, ChaseConfig.channel_sparsity):
            raise ValueError(
                f"sparse.channel_sparsity={s.channel_sparsity} only applies to method=chase, not {self.method}"
            )
        if self.precision == "fp16" and self.method != "dense" and s.update_frequency == 1:
            raise ValueError(
                "precision=fp16 may skip optimizer steps (loss scaling); use update_frequency > 1 or bf16"
            )


@dataclass
class TrainData:
    """Train/val splits and what the model needs to know; ``mean``/``std`` None = already normalised."""

    train: Dataset
    val: Dataset
    num_classes: int
    in_chans: int
    image_size: int
    name: str
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None


@dataclass
class TrainResult:
    model: nn.Module
    masking: Masking | None
    test_accuracy: float
    train_seconds: float
    history: list[dict[str, Any]]
    data: TrainData | None = None


def from_image_data(data: ImageData) -> TrainData:
    """In-memory tensors (digits, pooled MNIST of the reproduction) as a TrainData."""
    return TrainData(
        TensorDataset(data.x_train, data.y_train), TensorDataset(data.x_test, data.y_test),
        data.num_classes, data.in_channels, data.image_size, data.name,
    )  # fmt: skip


def load_train_data(cfg: TrainConfig, data_dir: str | None = None, augment: bool | None = None) -> TrainData:
    """The data set ``cfg.dataset`` names, with ``cfg.train_limit`` (seeded subset) applied."""
    augment = cfg.augment if augment is None else augment
    if cfg.dataset in IN_MEMORY:
        from sparse_dst.data import load_data

        data = from_image_data(load_data(cfg.dataset, data_dir, 28, None, cfg.seed))
    else:
        from research_systems_core.vision import load_image_dataset

        ds = load_image_dataset(
            cfg.dataset, data_dir=data_dir, image_size=cfg.image_size or None, augment=augment
        )
        data = TrainData(
            ds.train, ds.val, ds.num_classes, ds.in_chans, ds.image_size, ds.name, ds.mean, ds.std
        )
    if cfg.train_limit and cfg.train_limit < len(data.train):
        order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(cfg.seed))
        data.train = Subset(data.train, order[: cfg.train_limit].tolist())
    return data


def build_model(cfg: TrainConfig, data: TrainData) -> nn.Module:
    """A package model, or a timm/torchvision model by name; normalisation inside for [0, 1] data."""
    if cfg.model in MODELS:
        model = create_model(
            cfg.model, in_channels=data.in_chans, num_classes=data.num_classes, width=cfg.width,
            in_features=data.in_chans * data.image_size**2,
        )  # fmt: skip
    else:
        from research_systems_core.vision import create_image_model

        model = create_image_model(cfg.model, num_classes=data.num_classes, in_chans=data.in_chans)
    if data.mean is not None:
        from research_systems_core.vision import with_normalization

        model = with_normalization(model, data.mean, data.std)
    return model


def build_masking(
    cfg: TrainConfig,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    total_steps: int,
    example_input: torch.Tensor | None = None,
) -> Masking | None:
    """The DST wrapper the method asks for (None for dense training)."""
    if cfg.method == "dense":
        return None
    sparse = ChaseConfig(**asdict(cfg.sparse))
    if cfg.method == "chase":
        return Chase(model, optimizer, sparse, total_steps, example_input=example_input)
    if cfg.method == "set":
        sparse.grow = "random"
    sparse.memory_bound = cfg.method == "mest" or sparse.memory_bound
    return Masking(model, optimizer, sparse, total_steps)


def lr_factor(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Learning-rate multiplier at optimizer step ``step`` (linear warm-up, then the schedule)."""
    warmup = cfg.warmup_epochs * steps_per_epoch
    total = cfg.epochs * steps_per_epoch
    if step < warmup:
        return (step + 1) / warmup
    if cfg.lr_schedule == "multistep":
        epoch = step // steps_per_epoch
        return 0.1 ** sum(epoch >= int(m * cfg.epochs) for m in (0.5, 0.75))
    progress_ = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * progress_))


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> float:
    """Top-1 accuracy in percent on in-memory tensors (CPU)."""
    was_training = model.training
    model.eval()
    correct = 0
    for i in range(0, len(x), batch_size):
        correct += int((model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum())
    model.train(was_training)
    return 100.0 * correct / len(x)


def evaluate_loader(model: nn.Module, loader: Any, device: torch.device, precision: str) -> float:
    """Top-1 accuracy in percent over a loader, summed across DDP ranks."""
    from research_systems_core.vision.evaluation import evaluate_accuracy

    return 100.0 * evaluate_accuracy(model, loader, device=device, precision=precision)["accuracy"]


def make_loaders(cfg: TrainConfig, data: TrainData, device: torch.device) -> tuple[Any, Any]:
    from research_systems_core.vision.loaders import make_loader

    train = make_loader(data.train, batch_size=cfg.batch_size, train=True, device=device,
                        workers=cfg.workers, seed=cfg.seed)  # fmt: skip
    val = make_loader(
        data.val, batch_size=max(cfg.batch_size, 256), train=False, device=device, workers=cfg.workers
    )
    return train, val


def resolve_run_device(cfg: TrainConfig) -> tuple[torch.device, DistInfo]:
    info = init_distributed()
    device = info.device if info.is_distributed else resolve_device(cfg.device)
    return device, info


@dataclass
class _Run:
    """Everything one training run mutates (kept together for checkpointing)."""

    cfg: TrainConfig
    model: nn.Module
    net: nn.Module
    optimizer: torch.optim.Optimizer
    masking: Masking | None
    scaler: torch.amp.GradScaler
    device: torch.device
    info: DistInfo
    steps_per_epoch: int
    history: list[dict[str, Any]] = field(default_factory=list)
    start_epoch: int = 0


def _setup(
    cfg: TrainConfig, data: TrainData, train_loader: Any, device: torch.device, info: DistInfo
) -> _Run:
    model = build_model(cfg, data).to(device)
    optimizer = torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
        nesterov=cfg.nesterov and cfg.momentum > 0,
    )  # fmt: skip
    steps_per_epoch = len(train_loader)
    example = torch.rand(2, data.in_chans, data.image_size, data.image_size)
    if data.mean is None:
        example = example * 2 - 1
    masking = build_masking(cfg, model, optimizer, cfg.epochs * steps_per_epoch, example.to(device))
    model = to_channels_last(model, device)
    net = wrap_model(model, info) if info.is_distributed else model
    scaler = grad_scaler(device, cfg.precision)
    return _Run(cfg, model, net, optimizer, masking, scaler, device, info, steps_per_epoch)


def _checkpoint(run: _Run, directory: pathlib.Path, epoch: int) -> None:
    tensors = {f"model/{k}": v.detach().contiguous() for k, v in run.model.state_dict().items()}
    optim_tensors, optim_meta = optimizer_state_to_tensors(run.optimizer)
    tensors |= optim_tensors
    meta: dict[str, Any] = {
        "config": asdict(run.cfg),
        "epoch": epoch,
        "history": run.history,
        "optim": optim_meta,
    }
    meta["scaler"] = run.scaler.state_dict() if run.scaler.is_enabled() else {}
    if run.masking is not None:
        dst_tensors, meta["dst"] = run.masking.state_dict()
        tensors |= {f"dst/{k}": v for k, v in dst_tensors.items()}
    rng_tensors, meta["rng"] = capture_rng_state()
    tensors |= rng_tensors
    save_checkpoint(directory, epoch, tensors, meta, keep=2)


def _resume(run: _Run, directory: pathlib.Path) -> None:
    path = latest_checkpoint(directory)
    if path is None:
        return
    tensors, meta = load_checkpoint(path)
    if meta.get("config") != asdict(run.cfg):
        raise ValueError(f"cannot resume from {path}: it was written with a different configuration")
    run.model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model/")})
    load_optimizer_state(
        run.optimizer, {k: v for k, v in tensors.items() if k.startswith("optim.")}, meta["optim"]
    )
    if run.scaler.is_enabled() and meta.get("scaler"):
        run.scaler.load_state_dict(meta["scaler"])
    if run.masking is not None:
        run.masking.load_state_dict(
            {k[4:]: v for k, v in tensors.items() if k.startswith("dst/")}, meta["dst"]
        )
    restore_rng_state({k: v for k, v in tensors.items() if k.startswith("rng.")}, meta["rng"])
    run.start_epoch, run.history = int(meta["epoch"]), list(meta["history"])
    log.info("resumed from %s at epoch %d", path, run.start_epoch)


def _train_step(run: _Run, x: torch.Tensor, y: torch.Tensor, step: int) -> torch.Tensor:
    cfg = run.cfg
    for group in run.optimizer.param_groups:
        group["lr"] = cfg.lr * lr_factor(cfg, step, run.steps_per_epoch)
    with autocast(run.device, cfg.precision):
        logits = run.net(x)
    loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
    run.optimizer.zero_grad(set_to_none=True)
    run.scaler.scale(loss).backward()
    if run.scaler.is_enabled():
        run.scaler.unscale_(run.optimizer)
        step_fn = lambda: run.scaler.step(run.optimizer)  # noqa: E731 (skips the step on inf/NaN)
    else:
        step_fn = run.optimizer.step
    if run.masking is None:
        step_fn()
    else:
        run.masking.step(step_fn)
    run.scaler.update()
    return loss.detach()


def _train_epoch(run: _Run, loader: Any, epoch: int, desc: str) -> float:
    from research_systems_core.vision.loaders import set_loader_epoch

    run.net.train()
    set_loader_epoch(loader, epoch)
    loss_sum = torch.zeros((), device=run.device)
    for i, (x, y) in enumerate(progress(loader, desc=f"{desc} epoch {epoch + 1}/{run.cfg.epochs}")):
        x, y = x.to(run.device, non_blocking=True), y.to(run.device, non_blocking=True)
        loss_sum += _train_step(run, x, y, epoch * run.steps_per_epoch + i)
    return float(loss_sum) / max(1, run.steps_per_epoch)


def train(
    cfg: TrainConfig,
    data: TrainData | ImageData,
    checkpoint_dir: str | pathlib.Path | None = None,
    resume: bool = False,
    desc: str | None = None,
    eval_every_epoch: bool = True,
) -> TrainResult:
    """Train ``cfg.model`` on ``data``; checkpoint every epoch into ``checkpoint_dir``."""
    cfg.validate()
    if isinstance(data, ImageData):
        data = from_image_data(data)
    device, info = resolve_run_device(cfg)
    seed_everything(cfg.seed)
    train_loader, val_loader = make_loaders(cfg, data, device)
    run = _setup(cfg, data, train_loader, device, info)
    directory = pathlib.Path(checkpoint_dir) if checkpoint_dir is not None else None
    if resume and directory is not None:
        _resume(run, directory)
    started = time.perf_counter()
    desc = desc or cfg.method
    for epoch in range(run.start_epoch, cfg.epochs):
        row: dict[str, Any] = {"epoch": epoch + 1, "loss": _train_epoch(run, train_loader, epoch, desc)}
        last = epoch + 1 == cfg.epochs
        row["test_accuracy"] = (
            evaluate_loader(run.net, val_loader, device, cfg.precision) if eval_every_epoch or last else None
        )
        if run.masking is not None:
            row["density"] = run.masking.maskset.density()
        if isinstance(run.masking, Chase):
            row["alive_channels"] = run.masking.alive_channels()
        run.history.append(row)
        log.info("%s epoch %d: %s", desc, epoch + 1, row)
        if directory is not None and info.is_main:
            _checkpoint(run, directory, epoch + 1)
        if info.is_distributed:
            barrier()
    accuracy = run.history[-1]["test_accuracy"]
    return TrainResult(run.model, run.masking, accuracy, time.perf_counter() - started, run.history, data)
