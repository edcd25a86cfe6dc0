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
from safetensors.torch import load_file, save_file
from torch import nn
from torch.optim.swa_utils import AveragedModel

from research_systems_core.checkpoint import (
    capture_rng_state,
    latest_checkpoint,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from research_systems_core.config import config_from_dict, config_to_dict
from research_systems_core.distributed import init_distributed, reduce_metrics, wrap_model
from research_systems_core.logs import progress
from research_systems_core.metadata import run_metadata
from research_systems_core.results import JsonlWriter, plot_curves, write_json
from research_systems_core.seeding import seed_everything
from research_systems_core.torch_utils import resolve_device
from research_systems_core.validation import check_choice, check_int, check_positive, check_range
from robust_at.attacks import NORMS, AttackConfig, check_logits
from robust_at.data import DataBundle, batches, load_dataset
from robust_at.evaluate import clean_accuracy, pgd_accuracy
from robust_at.methods import METHODS, create_method
from robust_at.models import MODELS, create_model
from robust_at.wot import WOT, WOTConfig, recalibrate_batchnorm

__all__ = [
    "PRESETS",
    "TrainConfig",
    "TrainingDivergedError",
    "build_config",
    "load_weights",
    "save_weights",
    "train",
]

log = logging.getLogger(__name__)


class TrainingDivergedError(RuntimeError):
    """The training loss became NaN or infinite."""


@dataclass
class TrainConfig:
    """Everything a training run needs; ``PRESETS`` hold the reference settings."""

    dataset: str = "cifar10"
    download: bool = False
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
    keep_checkpoints: int = 2
    wot: WOTConfig = field(default_factory=WOTConfig)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        check_choice("model", self.model, MODELS.names())
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
        self.attack()  # validates eps, step size, steps
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


# Reference settings. CIFAR: Rice et al. 2020 / WOT (PGD-10, eps 8/255, step 2/255, piecewise
# decay at 50% and 75% of 200 epochs, wd 5e-4); TRADES: Zhang et al. (beta 6); AWP: Wu et al.
# (gamma 0.01). digits-pilot: the small CPU setting of this package's reproduction.
_CIFAR = {
    "dataset": "cifar10",
    "model": "preact-resnet18",
    "epochs": 200,
    "batch_size": 128,
    "lr": 0.1,
    "weight_decay": 5e-4,
    "milestones": [100, 150],
    "eps": 8 / 255,
    "step_size": 2 / 255,
    "attack_steps": 10,
    "val_size": 1000,
}
PRESETS: dict[str, dict] = {
    "cifar10": dict(_CIFAR),
    "cifar100": {**_CIFAR, "dataset": "cifar100"},
    "svhn": {**_CIFAR, "dataset": "svhn", "lr": 0.01, "epochs": 100, "milestones": [50, 75]},
    "cifar10-trades": {
        **_CIFAR,
        "method": "trades",
        "epochs": 110,
        "milestones": [75, 90, 100],
        "weight_decay": 2e-4,
    },
    "cifar10-awp": {**_CIFAR, "method": "awp", "awp_gamma": 0.01},
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


# ------------------------------------------------------------------ weights and state I/O
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
    """Load safetensors weights (never unpickles)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist")
    return load_file(str(path))


def _optimizer_state(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"optim.{idx}.{k}"] = v
            else:
                scalars[f"{idx}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def _load_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        if key.startswith("optim."):
            _, idx, k = key.split(".", 2)
            state.setdefault(int(idx), {})[k] = v
    for key, v in meta["scalars"].items():
        idx, k = key.split(".", 1)
        state.setdefault(int(idx), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


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


# ------------------------------------------------------------------ the loop
def _refine(wot: WOT, model: nn.Module, cfg: TrainConfig, data: DataBundle, device) -> torch.Tensor:
    """One WOT refinement: weights learned on the PGD-attacked validation split (the training
    attack), BatchNorm recalibrated on clean training batches."""
    gen = torch.Generator().manual_seed(cfg.seed * 7919 + wot.refinements)
    attack = cfg.attack()
    return wot.refine(
        model,
        lambda: batches(data.x_val, data.y_val, cfg.batch_size, device=device),
        lambda m, xb, yb: attack.run(m, xb, yb),
        lambda: batches(
            data.x_train,
            data.y_train,
            cfg.batch_size,
            shuffle=True,
            generator=gen,
            augment=data.augment,
            device=device,
        ),
        generator=gen,
    )


def _make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.SGD:
    return torch.optim.SGD(
        model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )


def _model_kwargs(cfg: TrainConfig) -> dict:
    kwargs = {}
    if cfg.width is not None:
        kwargs["width"] = cfg.width
    if cfg.depth is not None:
        kwargs["depth"] = cfg.depth
    return kwargs


def build_model(cfg: TrainConfig, data: DataBundle) -> nn.Module:
    return create_model(
        cfg.model, data.num_classes, data.in_channels, mean=data.mean, std=data.std, **_model_kwargs(cfg)
    )


def _evaluate(model: nn.Module, cfg: TrainConfig, data: DataBundle, device, prefix: str) -> dict[str, float]:
    n = cfg.eval_size or len(data.y_test)
    x_test, y_test = data.x_test[:n], data.y_test[:n]
    common = {
        "eps": cfg.eps,
        "step_size": cfg.step_size,
        "steps": cfg.eval_steps,
        "restarts": cfg.eval_restarts,
        "norm": cfg.norm,
        "batch_size": cfg.eval_batch_size,
        "device": device,
    }
    clean = clean_accuracy(model, x_test, y_test, cfg.eval_batch_size, device)
    robust = pgd_accuracy(model, x_test, y_test, **common)
    row = {
        f"{prefix}test_clean_acc": clean["acc"],
        f"{prefix}test_robust_acc": robust["acc"],
        f"{prefix}test_robust_loss": robust["loss"],
    }
    if len(data.y_val):
        val = pgd_accuracy(model, data.x_val, data.y_val, **common)
        row[f"{prefix}val_robust_acc"] = val["acc"]
    return row


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
    out = pathlib.Path(out_dir)
    ckpt_dir = out / "checkpoints"
    info = init_distributed()
    device = resolve_device(cfg.device) if not info.is_distributed else info.device
    seed_everything(cfg.seed + info.rank)
    data = data or load_dataset(
        cfg.dataset,
        data_dir,
        val_size=cfg.val_size,
        train_size=cfg.train_size,
        test_size=cfg.test_size,
        label_noise=cfg.label_noise,
        seed=cfg.seed,
        download=cfg.download,
    )
    if cfg.wot.enabled and len(data.y_val) == 0:
        raise ValueError(
            "WOT needs a non-empty validation split (val_size must be > 0), got 0 validation images"
        )
    model = build_model(cfg, data).to(device)
    with torch.no_grad():
        model.eval()
        probe = next(batches(data.x_train, data.y_train, min(cfg.batch_size, 4), device=device))
        check_logits(model(probe[0]), len(probe[1]), data.num_classes)
        model.train()
    model = wrap_model(model, info)
    base = _unwrap(model)
    opt = _make_optimizer(model, cfg)
    method = create_method(
        cfg.method,
        attack=cfg.attack(),
        attack_mode=cfg.attack_mode,
        trades_beta=cfg.trades_beta,
        awp_gamma=cfg.awp_gamma,
        awp_warmup=cfg.awp_warmup,
    )
    wot = WOT(base, cfg.wot) if cfg.wot.enabled else None
    swa_model = AveragedModel(base) if cfg.swa else None
    history: list[dict] = []
    best = {"val_robust_acc": -1.0, "epoch": -1, "stale": 0}
    best_state: dict[str, torch.Tensor] | None = None
    best_test_state: dict[str, torch.Tensor] | None = None
    best_test_acc = -1.0
    start_epoch = 0
    swa_started = False

    latest = latest_checkpoint(ckpt_dir) if resume else None
    if latest is not None:
        tensors, meta = load_checkpoint(latest)
        base.load_state_dict(_unprefixed("model", tensors))
        _load_optimizer(opt, tensors, meta["optimizer"])
        if wot is not None:
            wot.load_state(tensors, meta["wot"])
        if swa_model is not None and meta.get("swa_started"):
            swa_model.load_state_dict(_unprefixed("swa", tensors))
        best_state = _unprefixed("best", tensors) or None
        best_test_state = _unprefixed("besttest", tensors) or None
        history = list(meta["history"])
        best_test_acc = float(
            meta.get("best_test_acc", max((r["test_robust_acc"] for r in history), default=-1.0))
        )
        history, best = list(meta["history"]), dict(meta["best"])
        swa_started = bool(meta.get("swa_started"))
        start_epoch = int(meta["epoch"]) + 1
        restore_rng_state(tensors, meta)
        log.info("resumed from %s at epoch %d", latest, start_epoch)

    out.mkdir(parents=True, exist_ok=True)
    if info.is_main:
        write_json(out / "config.json", {"config": config_to_dict(cfg), "data": data.summary()})
        # keep the per-epoch log consistent with the checkpoint we resumed from
        (out / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in history))
    writer = JsonlWriter(out / "history.jsonl") if info.is_main else None

    epochs = progress(
        range(start_epoch, cfg.epochs),
        desc=f"{cfg.method}{'+wot' if wot else ''}",
        initial=start_epoch,
        total=cfg.epochs,
    )
    for epoch in epochs:
        t0 = time.perf_counter()
        lr = cfg.lr_at(epoch)
        for group in opt.param_groups:
            group["lr"] = lr
        if wot is not None and epoch == cfg.wot_start() and not wot.active:
            wot.start()
        model.train()
        gen = torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)
        train_loss, train_correct, train_n, wot_seconds = 0.0, 0, 0, 0.0
        n_batches = math.ceil(len(data.y_train) / info.world_size / cfg.batch_size)
        for i, (x, y) in enumerate(
            progress(
                batches(data.x_train, data.y_train, cfg.batch_size, shuffle=True, generator=gen, augment=data.augment,
                        device=device, rank=info.rank, world_size=info.world_size),
                desc=f"epoch {epoch}", total=n_batches,
            )
        ):  # fmt: skip
            loss, logits = method.loss(model, x, y, epoch)
            if not torch.isfinite(loss):
                last = latest_checkpoint(ckpt_dir)
                raise TrainingDivergedError(
                    f"training loss became {loss.detach().item()} at epoch {epoch}, batch {i} (lr {lr:g}); "
                    f"the last good checkpoint is {last if last else 'none (no epoch finished)'}; "
                    "lower lr or eps and resume"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            method.after_step(model)
            train_loss += loss.detach().item() * len(y)
            train_correct += int((logits.detach().argmax(1) == y).sum())
            train_n += len(y)
            if wot is not None and wot.record_step():
                tw = time.perf_counter()
                _refine(wot, base, cfg, data, device)
                if info.is_distributed:
                    _broadcast(base)
                    wot.start()
                if cfg.wot.reset_optimizer:
                    opt = _make_optimizer(model, cfg)
                    for group in opt.param_groups:
                        group["lr"] = lr
                model.train()
                wot_seconds += time.perf_counter() - tw
        train_seconds = time.perf_counter() - t0
        if swa_model is not None and epoch >= cfg.swa_begin():
            swa_model.update_parameters(base)
            swa_started = True

        t1 = time.perf_counter()
        row = {"epoch": epoch, "lr": lr}
        row.update(
            reduce_metrics(
                {
                    "train_robust_loss": train_loss / max(train_n, 1),
                    "train_robust_acc": train_correct / max(train_n, 1),
                }
            )
        )
        row.update(_evaluate(base, cfg, data, device, ""))
        swa_due = (epoch + 1) % cfg.swa_eval_every == 0 or epoch == cfg.epochs - 1
        if swa_model is not None and swa_started and swa_due:
            swa_eval = copy.deepcopy(swa_model.module)
            recalibrate_batchnorm(
                swa_eval,
                batches(data.x_train, data.y_train, cfg.batch_size, shuffle=False, device=device),
                max_batches=10**9,
            )
            row.update(_evaluate(swa_eval, cfg, data, device, "swa_"))
        row.update(
            {
                "train_seconds": train_seconds,
                "wot_seconds": wot_seconds,
                "eval_seconds": time.perf_counter() - t1,
            }
        )
        if "val_robust_acc" in row:
            if row["val_robust_acc"] > best["val_robust_acc"]:
                best = {"val_robust_acc": row["val_robust_acc"], "epoch": epoch, "stale": 0}
                best_state = {k: v.detach().clone() for k, v in base.state_dict().items()}
            else:
                best["stale"] += 1
        if row["test_robust_acc"] > best_test_acc:
            best_test_acc = row["test_robust_acc"]
            best_test_state = {k: v.detach().clone() for k, v in base.state_dict().items()}
        history.append(row)
        log.info(
            "epoch %d: train robust %.3f | test clean %.3f robust %.3f%s",
            epoch, row["train_robust_acc"], row["test_clean_acc"], row["test_robust_acc"],
            f" | swa robust {row['swa_test_robust_acc']:.3f}" if "swa_test_robust_acc" in row else "",
        )  # fmt: skip

        if info.is_main:
            tensors = _prefixed("model", base.state_dict())
            opt_tensors, opt_meta = _optimizer_state(opt)
            tensors.update(opt_tensors)
            meta = {
                "epoch": epoch,
                "history": history,
                "best": best,
                "best_test_acc": best_test_acc,
                "optimizer": opt_meta,
                "swa_started": swa_started,
            }
            if wot is not None:
                tensors.update(wot.state_tensors())
                meta["wot"] = wot.state_meta()
            if swa_model is not None and swa_started:
                tensors.update(_prefixed("swa", swa_model.state_dict()))
            if best_state is not None:
                tensors.update(_prefixed("best", best_state))
            if best_test_state is not None:
                tensors.update(_prefixed("besttest", best_test_state))
            rng_tensors, rng_meta = capture_rng_state()
            tensors.update(rng_tensors)
            meta.update(rng_meta)
            save_checkpoint(ckpt_dir, epoch, tensors, meta, keep=cfg.keep_checkpoints)
            writer.append(row)
        stop_early = cfg.early_stopping_patience > 0 and best["stale"] >= cfg.early_stopping_patience
        if stop_early:
            log.info(
                "early stopping at epoch %d (best validation robust acc %.3f at epoch %d)",
                epoch,
                best["val_robust_acc"],
                best["epoch"],
            )
        if stop_after_epoch is not None and epoch >= stop_after_epoch:
            return {"stopped_after_epoch": epoch}
        if stop_early:
            break

    states = {"best_val": best_state, "best_test": best_test_state}
    return _finish(
        cfg,
        out,
        base,
        swa_model if swa_started else None,
        states,
        best,
        history,
        data,
        device,
        info.is_main,
        wot,
    )


def _finish(cfg, out, base, swa_model, states, best, history, data, device, is_main, wot) -> dict:
    weights = {"last": out / "model_last.safetensors"}
    result: dict = {"config": config_to_dict(cfg), "data": data.summary(), "epochs_run": len(history)}
    if is_main:
        save_weights(weights["last"], base.state_dict())
        for name, state in states.items():
            if state is not None:
                weights[name] = save_weights(out / f"model_{name}.safetensors", state)
        if swa_model is not None:
            swa_eval = copy.deepcopy(swa_model.module)
            recalibrate_batchnorm(
                swa_eval, batches(data.x_train, data.y_train, cfg.batch_size, device=device), 10**9
            )
            weights["swa"] = save_weights(out / "model_swa.safetensors", swa_eval.state_dict())
    last = history[-1]
    robust = [r["test_robust_acc"] for r in history]
    best_test_epoch = max(range(len(robust)), key=robust.__getitem__)
    result.update(
        {
            "last": {k: last[k] for k in ("epoch", "test_clean_acc", "test_robust_acc")},
            "best_test": {"epoch": history[best_test_epoch]["epoch"], "test_robust_acc": robust[best_test_epoch],
                          "test_clean_acc": history[best_test_epoch]["test_clean_acc"]},
            "weights": {k: str(v) for k, v in weights.items()},
            "metadata": run_metadata(seed=cfg.seed, config=config_to_dict(cfg), packages=("robust-at", "research-systems-core", "torch")),
        }
    )  # fmt: skip
    if best["epoch"] >= 0:
        row = next(r for r in history if r["epoch"] == best["epoch"])
        result["early_stopping"] = {"epoch": best["epoch"], "val_robust_acc": best["val_robust_acc"],
                                    "test_robust_acc": row["test_robust_acc"], "test_clean_acc": row["test_clean_acc"]}  # fmt: skip
    if "swa_test_robust_acc" in last:
        result["swa"] = {
            "test_robust_acc": last["swa_test_robust_acc"],
            "test_clean_acc": last["swa_test_clean_acc"],
        }
    if wot is not None:
        result["wot"] = {"refinements": wot.refinements, "history": wot.history}
    if is_main:
        write_json(out / "result.json", result)
        epochs = [r["epoch"] for r in history]
        curves = {
            "train robust (PGD, noisy labels)" if cfg.label_noise else "train robust": (epochs, [r["train_robust_acc"] for r in history]),
            f"test robust (PGD-{cfg.eval_steps})": (epochs, robust),
            "test clean": (epochs, [r["test_clean_acc"] for r in history]),
        }  # fmt: skip
        if "val_robust_acc" in last:
            curves["val robust"] = (epochs, [r["val_robust_acc"] for r in history])
        plot_curves(
            out / "curves.png",
            curves,
            "epoch",
            "accuracy",
            title=f"{cfg.method}{' + WOT' if wot else ''} on {cfg.dataset}",
        )
    return result
