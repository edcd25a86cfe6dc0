"""Weighted Optimization Trajectories (WOT, Huang et al., ECML 2023).

During training WOT keeps parameter snapshots ``s_0, ..., s_n`` taken every ``gap`` optimizer
steps (``n = num_gaps``); the trajectory deltas are ``d_j = s_j - s_{j-1}``. It then learns
weights ``W`` of shape ``(num_gaps, groups)`` in [0, 1] that minimise the adversarial loss on
a held-out split of the parameters

    theta(W) = s_0 + sum_j W[j, g(p)] * d_j          (per parameter tensor p in group g(p))

by SGD with momentum on ``W`` (the gradient is ``dL/dW[j, g] = sum_{p in g} <d_j[p], dL/dp>``),
clamping ``W`` to [0, 1] after every step. The model continues from ``theta(W)`` after its
BatchNorm statistics are recomputed on training data.

``theta`` is evaluated as ``sum_k c_k s_k`` with ``c_k = W_k - W_{k+1}`` (``W_0 = 1``,
``W_{n+1} = 0``), which is the same affine map but returns ``s_n`` bit for bit when all
weights are 1 and ``s_0`` bit for bit when all weights are 0.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from research_systems_core.batchnorm import recalibrate_batchnorm
from research_systems_core.validation import check_choice, check_int, check_positive, check_range

__all__ = [
    "GROUPINGS",
    "INITS",
    "META_LOSSES",
    "WOT",
    "WOTConfig",
    "describe_groups",
    "parameter_groups",
]

log = logging.getLogger(__name__)

GROUPINGS = ("model", "block", "layer")
INITS = ("zero", "one", "random")
META_LOSSES = ("ce", "kl")
Batch = tuple[torch.Tensor, torch.Tensor]
AttackFn = Callable[[nn.Module, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class WOTConfig:
    """WOT settings; defaults are the reference's CIFAR settings (WOT-B)."""

    enabled: bool = False
    gap: int = 400  # optimizer steps between two snapshots
    num_gaps: int = 4  # deltas per refinement
    grouping: str = "block"  # "model" (WOT-W), "block" (WOT-B) or "layer"
    init: str = "zero"  # initial weights: "zero", "one" or "random"
    lr: float = 0.1  # SGD on the weights
    momentum: float = 0.9
    passes: int = 10  # passes over the validation split per refinement
    start_epoch: int = -1  # -1: at the first learning-rate decay (reference MetaStartEpoch: 50)
    bn_batches: int = 400  # BatchNorm recalibration batches (capped at one pass); 0 = off
    train_mode_epoch: int = 150  # BatchNorm in train mode while learning the weights from here on; -1 never
    times: int = 2  # the gap is multiplied by this once, at the first refinement from times_epoch on
    times_epoch: int = 150  # the reference hard-codes 150
    meta_loss: str = "ce"  # "ce": CE on attacked inputs; "kl": KL(p(x) || p(x_adv)) (reference option)
    save_trajectory: bool = False  # write the window before each refinement to wot_trajectory.safetensors
    reset_optimizer: bool = True  # recreate the training optimizer after a refinement
    momentum_per_tensor: bool = False  # reference quirk: momentum/weight update per parameter tensor
    reset_momentum_each_pass: bool = False  # reference quirk: weight momentum zeroed every pass

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        check_int("wot.gap", self.gap, minimum=1)
        check_int("wot.num_gaps", self.num_gaps, minimum=1)
        check_choice("wot.grouping", self.grouping, GROUPINGS)
        check_choice("wot.init", self.init, INITS)
        check_positive("wot.lr", self.lr, strict=True)
        check_range("wot.momentum", self.momentum, 0.0, 1.0, high_inclusive=False)
        check_int("wot.passes", self.passes, minimum=1)
        check_int("wot.start_epoch", self.start_epoch, minimum=-1)
        check_int("wot.bn_batches", self.bn_batches, minimum=0)
        check_int("wot.train_mode_epoch", self.train_mode_epoch, minimum=-1)
        check_int("wot.times", self.times, minimum=1)
        check_int("wot.times_epoch", self.times_epoch, minimum=0)
        check_choice("wot.meta_loss", self.meta_loss, META_LOSSES)

    def train_mode_at(self, epoch: int) -> bool:
        """Whether BatchNorm runs in train mode while the weights are learned at ``epoch``."""
        return 0 <= self.train_mode_epoch <= epoch


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def _has_params(module: nn.Module) -> bool:
    return any(p.requires_grad for p in module.parameters())


def _core(model: nn.Module) -> tuple[str, nn.Module]:
    """Descend through wrappers (DDP, ``Sequential(Normalize, net)``) whose parameters all live in
    one child; returns (name prefix, the module that holds the stages)."""
    prefix, module = "", _unwrap(model)
    while getattr(module, "wot_blocks", None) is None and getattr(module, "feature_info", None) is None:
        own = any(p.requires_grad for p in module.parameters(recurse=False))
        owners = [(n, c) for n, c in module.named_children() if _has_params(c)]
        if own or len(owners) != 1:
            break
        name, module = owners[0]
        prefix = f"{prefix}{name}."
    return prefix, module


def _stage_names(module: nn.Module) -> list[str | tuple[str, ...]]:
    """The top-level stages: ``wot_blocks``, else timm's ``feature_info`` modules, else children."""
    blocks = getattr(module, "wot_blocks", None)
    if blocks is not None:
        return list(blocks)
    info = getattr(module, "feature_info", None)
    if info is not None:
        names = info.module_name() if hasattr(info, "module_name") else [f["module"] for f in info]
        return [n for n in dict.fromkeys(names) if _has_params(module.get_submodule(n))]
    return [n for n, c in module.named_children() if _has_params(c)]


def _block_index(names: list[str], prefix: str, stages: list) -> tuple[list[int], list[str]]:
    """Group index per parameter: its stage; parameters before the first stage form ``stem``,
    after the last ``head`` (timm models list only their feature stages)."""
    prefixes = [(b,) if isinstance(b, str) else tuple(b) for b in stages]
    hits: list[int | None] = []
    for name in names:
        local = name[len(prefix) :] if name.startswith(prefix) else name
        found = [
            i for i, qs in enumerate(prefixes) if any(local == q or local.startswith(q + ".") for q in qs)
        ]
        hits.append(found[0] if found else None)
    labels = ["+".join(p) for p in prefixes]
    matched = [i for i, h in enumerate(hits) if h is not None]
    if not matched:
        return [0] * len(names), ["model"]
    first, last = matched[0], matched[-1]
    keys = []
    for i, h in enumerate(hits):
        if h is not None:
            keys.append(labels[h])
        elif i < first:
            keys.append("stem")
        elif i > last:
            keys.append("head")
        else:
            raise ValueError(f"parameter {names[i]!r} lies between stages but belongs to none of {labels}")
    order = list(dict.fromkeys(keys))
    return [order.index(k) for k in keys], order


def parameter_groups(model: nn.Module, grouping: str) -> tuple[list[str], list[int], list[str]]:
    """(parameter names, group index per parameter, group names) for a WOT layer grouping.

    ``model``: one group (WOT-W). ``block`` (WOT-B): the model's top-level stages: its
    ``wot_blocks`` if it declares them, else timm's ``feature_info`` stage modules (with the
    parameters before them as ``stem`` and after them as ``head``), else its children in order;
    wrappers such as ``Sequential(Normalize, net)`` are looked through. ``layer``: one group per
    module that owns parameters. WOT-B on a model with a single group is an error.
    """
    check_choice("grouping", grouping, GROUPINGS)
    base = _unwrap(model)
    names = [n for n, p in base.named_parameters() if p.requires_grad]
    if not names:
        raise ValueError("WOT needs a model with trainable parameters, got none")
    if grouping == "model":
        return names, [0] * len(names), ["model"]
    if grouping == "layer":
        modules = [n.rsplit(".", 1)[0] if "." in n else "" for n in names]
        order = list(dict.fromkeys(modules))
        return names, [order.index(m) for m in modules], order
    prefix, core = _core(base)
    index, labels = _block_index(names, prefix, _stage_names(core))
    if len(labels) < 2:
        raise ValueError(
            f"wot.grouping='block' (WOT-B) found only one block group ({labels[0]!r}) in "
            f"{type(core).__name__}; use wot.grouping=model (WOT-W) or give the model a wot_blocks list"
        )
    return names, index, labels


def describe_groups(model: nn.Module, grouping: str) -> str:
    """One line per group: name and parameter count (printed at the start of a WOT run)."""
    names, index, labels = parameter_groups(model, grouping)
    params = dict(_unwrap(model).named_parameters())
    counts = [0] * len(labels)
    for name, g in zip(names, index, strict=True):
        counts[g] += params[name].numel()
    return "; ".join(f"{label}: {c:,} params" for label, c in zip(labels, counts, strict=True))


class WOT:
    """Trajectory recorder and weight learner for one model (see the module docstring)."""

    def __init__(self, model: nn.Module, config: WOTConfig) -> None:
        config.validate()
        self.config = config
        self.names, self.group_of, self.group_names = parameter_groups(model, config.grouping)
        self.params = self._params(model)
        self.group_index = torch.tensor(self.group_of, dtype=torch.long)
        self.snapshots: list[list[torch.Tensor]] = []
        self.steps = 0
        self.refinements = 0
        self.gap = config.gap  # multiplied by ``times`` once (reference: at epoch 150)
        self.history: list[dict] = []

    def _params(self, model: nn.Module) -> list[nn.Parameter]:
        named = dict(_unwrap(model).named_parameters())
        return [named[n] for n in self.names]

    @property
    def num_groups(self) -> int:
        return len(self.group_names)

    @property
    def active(self) -> bool:
        return bool(self.snapshots)

    # ---------------------------------------------------------------- recording
    def start(self) -> None:
        """Begin a trajectory window at the current parameters."""
        self.snapshots = [[p.detach().clone() for p in self.params]]
        self.steps = 0

    def record_step(self) -> bool:
        """Call after every optimizer step; True when ``num_gaps`` deltas are ready to refine."""
        if not self.active:
            return False
        self.steps += 1
        if self.steps % self.gap == 0:
            self.snapshots.append([p.detach().clone() for p in self.params])
        return len(self.snapshots) == self.config.num_gaps + 1

    def deltas(self) -> list[list[torch.Tensor]]:
        """``d_j = s_j - s_{j-1}`` for j = 1..n, each a list aligned with the parameters."""
        s = self.snapshots
        return [[b - a for a, b in zip(s[j - 1], s[j], strict=True)] for j in range(1, len(s))]

    # ---------------------------------------------------------------- weights
    def initial_weights(self, generator: torch.Generator | None = None) -> torch.Tensor:
        n, g = len(self.snapshots) - 1, self.num_groups
        if self.config.init == "zero":
            return torch.zeros(n, g)
        if self.config.init == "one":
            return torch.ones(n, g)
        return torch.rand(n, g, generator=generator)

    def _coefficients(self, weights: torch.Tensor) -> list[list[float]]:
        """``c[k][g] = W_k - W_{k+1}`` for k = 0..n (``W_0 = 1``, ``W_{n+1} = 0``) as Python
        floats: scalar arguments of the device kernels, no per-tensor host-to-device copies."""
        n = len(self.snapshots) - 1
        if weights.shape != (n, self.num_groups):
            raise ValueError(f"weights must have shape ({n}, {self.num_groups}), got {tuple(weights.shape)}")
        padded = torch.cat(
            [torch.ones(1, self.num_groups), weights.detach().float().cpu(), torch.zeros(1, self.num_groups)]
        )
        return (padded[:-1] - padded[1:]).tolist()

    def combine(self, weights: torch.Tensor) -> list[torch.Tensor]:
        """theta(W) for every parameter as new tensors, exact at W = 0 (s_0) and W = 1 (s_n)."""
        c = self._coefficients(weights)
        out = []
        for i, g in enumerate(self.group_of):
            theta = self.snapshots[0][i] * c[0][g]
            for k in range(1, len(c)):
                theta = theta + self.snapshots[k][i] * c[k][g]
            out.append(theta)
        return out

    @torch.no_grad()
    def load_weights(self, weights: torch.Tensor) -> None:
        """Set the model's parameters to theta(W) in place (same Parameter objects, no temporary
        tensors): ``p = c_0 s_0``, then ``p += c_k s_k`` for every non-zero ``c_k``. Exact at
        W = 0 and W = 1 like :meth:`combine`."""
        c = self._coefficients(weights)
        for i, (p, g) in enumerate(zip(self.params, self.group_of, strict=True)):
            p.copy_(self.snapshots[0][i])
            if c[0][g] != 1.0:
                p.mul_(c[0][g])
            for k in range(1, len(c)):
                if c[k][g] != 0.0:
                    p.add_(self.snapshots[k][i], alpha=c[k][g])

    def _dots(self, grads: list[torch.Tensor], deltas: list[list[torch.Tensor]]) -> torch.Tensor:
        """<d_j[p], dL/dp> for every delta j and parameter p, (deltas, params) float64 on the CPU;
        one fused dot per pair (no product tensor) and one device-to-host copy per batch."""
        flat = [g.reshape(-1) for g in grads]
        dots = torch.stack(
            [
                torch.stack([torch.dot(d.reshape(-1), g) for d, g in zip(delta, flat, strict=True)])
                for delta in deltas
            ]
        )
        return dots.detach().cpu().double()

    def weight_gradient(self, grads: list[torch.Tensor], deltas: list[list[torch.Tensor]]) -> torch.Tensor:
        """dL/dW[j, g] = sum over parameters p in group g of <d_j[p], dL/dp>."""
        out = torch.zeros(len(deltas), self.num_groups, dtype=torch.float64)
        out.index_add_(1, self.group_index, self._dots(grads, deltas))
        return out.float()

    def update_weights(
        self,
        weights: torch.Tensor,
        buffer: torch.Tensor,
        grads: list[torch.Tensor],
        deltas: list[list[torch.Tensor]],
    ) -> torch.Tensor:
        """One momentum-SGD step on the weights, then clamp to [0, 1]; ``buffer`` is updated in place.

        With ``momentum_per_tensor`` (the reference's update) the momentum and the weight are
        updated once per parameter tensor, in parameter order, each delta in turn."""
        lr, mu = self.config.lr, self.config.momentum
        if not self.config.momentum_per_tensor:
            buffer.mul_(mu).add_(self.weight_gradient(grads, deltas))
            return (weights - lr * buffer).clamp(0.0, 1.0)
        dots = self._dots(grads, deltas).float()
        weights = weights.clone()
        for i, g in enumerate(self.group_of):
            for j in range(len(deltas)):
                buffer[j, g] = buffer[j, g] * mu + dots[j, i]
                weights[j, g] = weights[j, g] - lr * buffer[j, g]
        return weights.clamp(0.0, 1.0)

    def meta_loss(self, model: nn.Module, x: torch.Tensor, x_adv: torch.Tensor, y: torch.Tensor):
        """(loss, logits on x_adv): CE on the attacked inputs, or the reference's ``kl`` option
        KL(p(x) || p(x_adv)) with batch-mean reduction (gradient through both terms)."""
        logits = model(x_adv)
        if self.config.meta_loss == "ce":
            return F.cross_entropy(logits, y), logits
        clean = model(x)
        loss = F.kl_div(F.log_softmax(logits, dim=1), F.softmax(clean, dim=1), reduction="batchmean")
        return loss, logits

    def learn_weights(
        self,
        model: nn.Module,
        val_batches: Callable[[], Iterable[Batch]],
        attack: AttackFn | None,
        generator: torch.Generator | None = None,
        amp: Callable[[], AbstractContextManager] = nullcontext,
    ) -> tuple[torch.Tensor, dict]:
        """SGD with momentum on W over ``passes`` passes of the attacked validation batches;
        the model's parameters end at theta(W). Returns W and last-pass statistics."""
        cfg = self.config
        deltas = self.deltas()
        weights = self.initial_weights(generator)
        buffer = torch.zeros_like(weights)
        self.load_weights(weights)
        stats = {"loss": 0.0, "correct": 0, "seen": 0}
        for _ in range(cfg.passes):
            if cfg.reset_momentum_each_pass:
                buffer.zero_()
            stats = {"loss": 0.0, "correct": 0, "seen": 0}
            for x, y in val_batches():
                with amp():
                    x_in = attack(model, x, y) if attack is not None else x
                    loss, logits = self.meta_loss(model, x, x_in, y)
                grads = torch.autograd.grad(loss, self.params)
                weights = self.update_weights(weights, buffer, list(grads), deltas)
                self.load_weights(weights)
                stats["loss"] += loss.detach().float() * y.shape[0]
                stats["correct"] += (logits.detach().argmax(1) == y).sum()
                stats["seen"] += y.shape[0]
        if stats["seen"] == 0:
            raise ValueError("WOT needs a non-empty validation split (val_size must be > 0 when WOT is on)")
        return weights, {k: float(v) for k, v in stats.items()}

    def refine(
        self,
        model: nn.Module,
        val_batches: Callable[[], Iterable[Batch]],
        attack: AttackFn | None,
        bn_batches: Callable[[], Iterable[Batch]] | None = None,
        generator: torch.Generator | None = None,
        *,
        epoch: int = 0,
        amp: Callable[[], AbstractContextManager] = nullcontext,
    ) -> torch.Tensor:
        """Learn the weights on the (attacked) validation batches (BatchNorm in train mode from
        ``wot.train_mode_epoch`` on), move the model to theta(W), recalibrate BatchNorm, multiply
        the gap by ``times`` once from ``times_epoch`` on, and start a new window from there."""
        if len(self.snapshots) < 2:
            raise RuntimeError(
                "WOT.refine needs at least one recorded delta; call start() and record_step() first"
            )
        cfg = self.config
        was_training = model.training
        model.train(cfg.train_mode_at(epoch))
        weights, stats = self.learn_weights(model, val_batches, attack, generator, amp)
        if not bool(torch.isfinite(weights).all()):
            raise FloatingPointError(f"WOT weights became non-finite: {weights.tolist()}")
        samples = 0
        if bn_batches is not None and cfg.bn_batches > 0:
            samples = recalibrate_batchnorm(model, bn_batches(), max_batches=cfg.bn_batches)
        model.train(was_training)
        self.refinements += 1
        if epoch >= cfg.times_epoch and self.gap == cfg.gap and cfg.times > 1:
            self.gap = cfg.gap * cfg.times
            log.info("WOT gap multiplied by %d to %d steps (epoch %d)", cfg.times, self.gap, epoch)
        self.history.append(
            {
                "refinement": self.refinements,
                "epoch": epoch,
                "weights": weights.tolist(),
                "val_robust_loss_last_pass": stats["loss"] / stats["seen"],
                "val_robust_acc_last_pass": stats["correct"] / stats["seen"],
                "bn_samples": samples,
                "train_mode": cfg.train_mode_at(epoch),
            }
        )
        log.info(
            "WOT refinement %d: mean weight %.3f, val robust acc (last pass) %.3f",
            self.refinements,
            float(weights.mean()),
            stats["correct"] / stats["seen"],
        )
        self.start()
        return weights

    # ---------------------------------------------------------------- checkpointing
    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {
            f"wot.snapshot.{k}.{i}": t for k, snap in enumerate(self.snapshots) for i, t in enumerate(snap)
        }

    def state_meta(self) -> dict:
        return {
            "steps": self.steps,
            "refinements": self.refinements,
            "gap": self.gap,
            "snapshots": len(self.snapshots),
            "history": self.history,
        }

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        self.steps = int(meta["steps"])
        self.refinements = int(meta["refinements"])
        self.gap = int(meta["gap"])
        self.history = list(meta["history"])
        self.snapshots = [
            [tensors[f"wot.snapshot.{k}.{i}"].to(self.params[i].device) for i in range(len(self.params))]
            for k in range(int(meta["snapshots"]))
        ]
