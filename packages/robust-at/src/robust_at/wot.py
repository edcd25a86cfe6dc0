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
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from research_systems_core.validation import check_choice, check_int, check_positive, check_range

__all__ = [
    "GROUPINGS",
    "INITS",
    "WOT",
    "WOTConfig",
    "parameter_groups",
    "recalibrate_batchnorm",
]

log = logging.getLogger(__name__)

GROUPINGS = ("model", "block", "layer")
INITS = ("zero", "one", "random")
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
    start_epoch: int = -1  # -1: at the first learning-rate decay
    bn_batches: int = 400  # BatchNorm recalibration batches (capped at one pass); 0 = off
    train_mode: bool = False  # BatchNorm in train mode while learning the weights
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


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") and isinstance(model.module, nn.Module) else model


def parameter_groups(model: nn.Module, grouping: str) -> tuple[list[str], list[int], list[str]]:
    """(parameter names, group index per parameter, group names) for a WOT layer grouping.

    ``model``: one group (WOT-W). ``block``: the model's ``wot_blocks`` (or its top-level
    children owning parameters). ``layer``: one group per module that owns parameters.
    """
    check_choice("grouping", grouping, GROUPINGS)
    base = _unwrap(model)
    names = [n for n, p in base.named_parameters() if p.requires_grad]
    if grouping == "model":
        return names, [0] * len(names), ["model"]
    if grouping == "layer":
        modules = [n.rsplit(".", 1)[0] if "." in n else "" for n in names]
        order = list(dict.fromkeys(modules))
        return names, [order.index(m) for m in modules], order
    blocks = getattr(base, "wot_blocks", None)
    if blocks is None:
        blocks = [c for c, m in base.named_children() if any(p.requires_grad for p in m.parameters())]
    block_prefixes = [(b,) if isinstance(b, str) else tuple(b) for b in blocks]
    index = []
    for name in names:
        hit = [
            i
            for i, prefixes in enumerate(block_prefixes)
            if any(name == q or name.startswith(q + ".") for q in prefixes)
        ]
        if not hit:
            raise ValueError(f"parameter {name!r} belongs to none of the model's wot_blocks {blocks}")
        index.append(hit[0])
    return names, index, ["+".join(p) for p in block_prefixes]


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable[Batch], max_batches: int) -> int:
    """Recompute BatchNorm running statistics as the sample-weighted average over up to
    ``max_batches`` batches (clean inputs, train-mode forward). Returns the batches used."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not bns or max_batches == 0:
        return 0
    was_training = model.training
    momenta = {m: m.momentum for m in bns}
    for m in bns:
        m.reset_running_stats()
    model.train()
    seen, used = 0, 0
    for x, _ in batches:
        if used >= max_batches:
            break
        b = x.shape[0]
        for m in bns:
            m.momentum = b / (seen + b)
        model(x)
        seen += b
        used += 1
    for m, momentum in momenta.items():
        m.momentum = momentum
    model.train(was_training)
    return used


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
        if self.steps % self.config.gap == 0:
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

    def combine(self, weights: torch.Tensor) -> list[torch.Tensor]:
        """theta(W) for every parameter, exact at W = 0 (s_0) and W = 1 (s_n)."""
        n = len(self.snapshots) - 1
        if weights.shape != (n, self.num_groups):
            raise ValueError(f"weights must have shape ({n}, {self.num_groups}), got {tuple(weights.shape)}")
        padded = torch.cat(
            [torch.ones(1, self.num_groups), weights.detach().float().cpu(), torch.zeros(1, self.num_groups)]
        )
        coeffs = padded[:-1] - padded[1:]  # c_k = W_k - W_{k+1}, k = 0..n
        out = []
        for i, g in enumerate(self.group_of):
            c = coeffs[:, g].to(self.snapshots[0][i].device, self.snapshots[0][i].dtype)
            theta = self.snapshots[0][i] * c[0]
            for k in range(1, n + 1):
                theta = theta + self.snapshots[k][i] * c[k]
            out.append(theta)
        return out

    @torch.no_grad()
    def load_weights(self, weights: torch.Tensor) -> None:
        """Set the model's parameters to theta(W) (in place, same Parameter objects)."""
        for p, theta in zip(self.params, self.combine(weights), strict=True):
            p.copy_(theta)

    def weight_gradient(self, grads: list[torch.Tensor], deltas: list[list[torch.Tensor]]) -> torch.Tensor:
        """dL/dW[j, g] = sum over parameters p in group g of <d_j[p], dL/dp>."""
        out = torch.zeros(len(deltas), self.num_groups, dtype=torch.float64)
        for j, delta in enumerate(deltas):
            for i, g in enumerate(self.group_of):
                out[j, g] += float(torch.sum(delta[i] * grads[i]))
        return out.float()

    def update_weights(
        self,
        weights: torch.Tensor,
        buffer: torch.Tensor,
        grads: list[torch.Tensor],
        deltas: list[list[torch.Tensor]],
    ) -> torch.Tensor:
        """One momentum-SGD step on the weights, then clamp to [0, 1]; ``buffer`` is updated in place."""
        lr, mu = self.config.lr, self.config.momentum
        if not self.config.momentum_per_tensor:
            buffer.mul_(mu).add_(self.weight_gradient(grads, deltas))
            return (weights - lr * buffer).clamp(0.0, 1.0)
        weights = weights.clone()  # reference quirk: one momentum/weight update per parameter tensor
        for i, g in enumerate(self.group_of):
            for j, delta in enumerate(deltas):
                buffer[j, g] = buffer[j, g] * mu + float(torch.sum(delta[i] * grads[i]))
                weights[j, g] = weights[j, g] - lr * buffer[j, g]
        return weights.clamp(0.0, 1.0)

    def refine(
        self,
        model: nn.Module,
        val_batches: Callable[[], Iterable[Batch]],
        attack: AttackFn | None,
        bn_batches: Callable[[], Iterable[Batch]] | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Learn the weights on the (attacked) validation batches, move the model to
        theta(W), recalibrate BatchNorm and start a new trajectory window from there."""
        if len(self.snapshots) < 2:
            raise RuntimeError(
                "WOT.refine needs at least one recorded delta; call start() and record_step() first"
            )
        cfg = self.config
        deltas = self.deltas()
        weights = self.initial_weights(generator)
        buffer = torch.zeros_like(weights)
        was_training = model.training
        model.train(cfg.train_mode)
        self.load_weights(weights)
        loss_sum, correct, seen = 0.0, 0, 0
        for _ in range(cfg.passes):
            if cfg.reset_momentum_each_pass:
                buffer.zero_()
            loss_sum, correct, seen = 0.0, 0, 0
            for x, y in val_batches():
                x_in = attack(model, x, y) if attack is not None else x
                logits = model(x_in)
                loss = F.cross_entropy(logits, y)
                grads = torch.autograd.grad(loss, self.params)
                weights = self.update_weights(weights, buffer, list(grads), deltas)
                self.load_weights(weights)
                loss_sum += loss.detach().item() * y.shape[0]
                correct += int((logits.argmax(1) == y).sum())
                seen += y.shape[0]
        if seen == 0:
            raise ValueError("WOT needs a non-empty validation split (val_size must be > 0 when WOT is on)")
        used = 0
        if bn_batches is not None and cfg.bn_batches > 0:
            used = recalibrate_batchnorm(model, bn_batches(), cfg.bn_batches)
        model.train(was_training)
        self.refinements += 1
        self.history.append(
            {
                "refinement": self.refinements,
                "weights": weights.tolist(),
                "val_robust_loss_last_pass": loss_sum / seen,
                "val_robust_acc_last_pass": correct / seen,
                "bn_batches": used,
            }
        )
        log.info(
            "WOT refinement %d: mean weight %.3f, val robust acc (last pass) %.3f",
            self.refinements,
            float(weights.mean()),
            correct / seen,
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
            "snapshots": len(self.snapshots),
            "history": self.history,
        }

    def load_state(self, tensors: dict[str, torch.Tensor], meta: dict) -> None:
        self.steps = int(meta["steps"])
        self.refinements = int(meta["refinements"])
        self.history = list(meta["history"])
        self.snapshots = [
            [tensors[f"wot.snapshot.{k}.{i}"].to(self.params[i].device) for i in range(len(self.params))]
            for k in range(int(meta["snapshots"]))
        ]
