"""SLaK's dynamic sparsity (reference: VITA-Group/SLaK ``sparse_core.py`` + ``funcs.py``), on shared masks.

What the reference does, and what this module does the same way:

- **Which weights.** Every 2-D or 4-D parameter (convolutions including the stem, down-sampling
  and depthwise large/small kernels, the MLP linears and the classifier head); 1-D parameters
  (norms, biases, layer scale) stay dense. ``only_large_kernels`` restricts it to the large-kernel
  branches (the reference's ``--only-L``).
- **Layer densities** for an overall sparsity ``s`` (``--sparsity``, 0.4 for SLaK):
  ``snip`` (the reference's default in its README commands) scores ``|w * dL/dw|`` on one batch,
  keeps the global top ``(1 - s)`` and uses each layer's kept fraction as its density; the kept
  *positions* are then re-drawn at random (the reference "re-samples mask positions");
  ``erk`` (Erdős–Rényi-Kernel, :func:`research_systems_core.masks.erk_densities`) and
  ``uniform`` (1 - s everywhere). A layer whose density reaches 0.99 is left dense, as in the reference.
- **Prune and regrow** every ``update_frequency`` optimizer steps: in each layer the
  ``ceil(rate * active)`` active weights of smallest magnitude are pruned and as many inactive
  positions are regrown uniformly at random (new weights start at 0; their optimizer state is
  zero because the masks are enforced on the optimizer state too). The per-layer count of active
  weights never changes.
- **Decaying prune rate**: the reference's ``CosineDecay`` (``CosineAnnealingLR`` with
  ``eta_min=0.005`` over all training steps), here in closed form so a resumed run continues exactly.

Deviation (named): the reference regrows by drawing each inactive position with probability
``n / inactive`` (so the regrown count only matches on average); here exactly ``n`` positions are
drawn, which keeps the sparsity exact. Randomness comes from a generator seeded by
``(seed, step)``, so the masks after a resume equal those of an uninterrupted run.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from research_systems_core.masks import MaskHandle, MaskSet, erk_densities, uniform_densities
from research_systems_core.validation import check_choice, check_int, check_range

__all__ = [
    "DENSITY_RULES",
    "DynamicSparsity",
    "SparseConfig",
    "layer_densities",
    "nonzero_parameter_count",
    "prunable_names",
    "prune_rate_at",
    "snip_densities",
]

DENSITY_RULES = ("snip", "erk", "uniform")
_DENSE_AT = 0.99  # the reference pops layers whose density is >= 0.99 out of the masking
_LARGE_KERNEL_BRANCHES = ("large_kernel.branches.vertical", "large_kernel.branches.horizontal",
                          "large_kernel.branches.large")  # fmt: skip


@dataclasses.dataclass
class SparseConfig:
    """Sparse-training settings (reference flag in brackets; defaults: SLaK-T's README command)."""

    sparsity: float = 0.4  # [--sparsity] fraction of the prunable weights that are zero
    init: str = "snip"  # [--sparse_init] snip, erk or uniform layer densities
    prune_rate: float = 0.5  # [--prune_rate] initial fraction of a layer's active weights swapped
    update_frequency: int = 2000  # [-u] optimizer steps between prune-and-regrow updates
    min_prune_rate: float = 0.005  # CosineDecay's eta_min
    only_large_kernels: bool = False  # [--only-L]
    fix: bool = False  # [--fix] static masks (no prune-and-regrow)
    seed: int = 0

    def validate(self) -> SparseConfig:
        check_range("sparsity", self.sparsity, 0.0, 1.0, high_inclusive=False)
        check_choice("sparse_init", self.init, DENSITY_RULES)
        check_range("prune_rate", self.prune_rate, 0.0, 1.0)
        check_int("update_frequency", self.update_frequency, minimum=1)
        check_range("min_prune_rate", self.min_prune_rate, 0.0, 1.0)
        check_int("seed", self.seed, minimum=0)
        return self


def prunable_names(model: nn.Module, only_large_kernels: bool = False) -> list[str]:
    """Names of the 2-D/4-D parameters (the reference's ``add_module`` rule)."""
    names = [n for n, p in model.named_parameters() if p.dim() in (2, 4) and p.requires_grad]
    if only_large_kernels:
        names = [n for n in names if any(b in n for b in _LARGE_KERNEL_BRANCHES)]
    if not names:
        raise ValueError(
            f"{type(model).__name__} has no prunable {'large-kernel ' if only_large_kernels else ''}2-D/4-D weights"
        )
    return names


def nonzero_parameter_count(model: nn.Module, sparsity: float, only_large_kernels: bool = False) -> int:
    """Parameters left non-zero when ``sparsity`` of the prunable weights is removed (paper's #params)."""
    check_range("sparsity", sparsity, 0.0, 1.0, high_inclusive=False)
    params = dict(model.named_parameters())
    prunable = sum(params[n].numel() for n in prunable_names(model, only_large_kernels))
    total = sum(p.numel() for p in params.values())
    return total - round(sparsity * prunable)


def snip_densities(
    model: nn.Module,
    names: list[str],
    density: float,
    batch: tuple[torch.Tensor, torch.Tensor],
    forward: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, float]:
    """Per-layer kept fraction of a global SNIP mask (``|w * dCE/dw|`` on one batch)."""
    x, y = batch
    params = dict(model.named_parameters())
    model.zero_grad(set_to_none=True)
    logits = forward(model, x) if forward is not None else model(x)
    grads = torch.autograd.grad(
        F.cross_entropy(logits.float(), y), [params[n] for n in names], allow_unused=True
    )
    scores = {}
    for name, grad in zip(names, grads, strict=True):
        w = params[name].detach()
        scores[name] = (w * grad).abs() if grad is not None else torch.zeros_like(w)
    masks = MaskSet.from_scores(scores, 1.0 - density, allocation="global")
    return {n: float(m.float().mean()) for n, m in masks.masks.items()}


def layer_densities(
    model: nn.Module,
    cfg: SparseConfig,
    batch: tuple[torch.Tensor, torch.Tensor] | None = None,
    forward: Callable[[nn.Module, torch.Tensor], torch.Tensor] | None = None,
) -> dict[str, float]:
    """Density of every prunable layer for ``cfg.init`` (``snip`` needs one training ``batch``)."""
    cfg.validate()
    names = prunable_names(model, cfg.only_large_kernels)
    params = dict(model.named_parameters())
    shapes = {n: tuple(params[n].shape) for n in names}
    density = 1.0 - cfg.sparsity
    if cfg.init == "uniform":
        return uniform_densities(shapes, density)
    if cfg.init == "erk":
        return erk_densities(shapes, density)
    if batch is None:
        raise ValueError("sparse_init 'snip' needs one training batch to score the weights")
    return snip_densities(model, names, density, batch, forward)


def prune_rate_at(step: int, total_steps: int, cfg: SparseConfig) -> float:
    """The reference's CosineDecay: ``eta_min + (r0 - eta_min) (1 + cos(pi t / T)) / 2``."""
    t = min(step, total_steps)
    return cfg.min_prune_rate + 0.5 * (cfg.prune_rate - cfg.min_prune_rate) * (
        1.0 + math.cos(math.pi * t / max(1, total_steps))
    )


def _generator(seed: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 1_000_003 + step)


class DynamicSparsity:
    """Masks a model's prunable weights and adapts them by magnitude pruning + random regrowth.

    Create after the optimizer; call :meth:`step` after every ``optimizer.step()`` (the masks are
    enforced on weights, gradients and optimizer state through the optimizer's step hooks).
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        cfg: SparseConfig,
        total_steps: int,
        densities: Mapping[str, float],
    ) -> None:
        self.cfg = cfg.validate()
        self.total_steps = check_int("total_steps", total_steps, minimum=1)
        self.model = model
        self.steps = 0
        params = dict(model.named_parameters())
        sparse = {n: d for n, d in densities.items() if d < _DENSE_AT}
        self.dense_layers = sorted(set(densities) - set(sparse))
        if not sparse:
            raise ValueError(f"sparsity {cfg.sparsity} leaves every layer dense (density >= {_DENSE_AT})")
        shapes = {n: tuple(params[n].shape) for n in sparse}
        masks = MaskSet.random(shapes, sparse, generator=_generator(cfg.seed, 0))
        device = next(iter(params.values())).device
        self.maskset = MaskSet({n: m.to(device) for n, m in masks.masks.items()})
        self.handle: MaskHandle = self.maskset.attach(model, optimizer)
        self._active = {n: int(m.sum()) for n, m in self.maskset.masks.items()}

    @property
    def prune_rate(self) -> float:
        return prune_rate_at(self.steps, self.total_steps, self.cfg)

    def step(self) -> bool:
        """Count one optimizer step; prune and regrow when it is due. Returns True after an update."""
        self.steps += 1
        if self.cfg.fix or self.steps % self.cfg.update_frequency != 0:
            return False
        self.update()
        return True

    @torch.no_grad()
    def update(self) -> dict[str, int]:
        """Prune ``ceil(rate * active)`` smallest-magnitude weights per layer, regrow as many at random."""
        rate = self.prune_rate
        params = dict(self.model.named_parameters())
        generator = _generator(self.cfg.seed, self.steps)
        swapped: dict[str, int] = {}
        for name, mask in self.maskset.masks.items():
            flat = mask.reshape(-1)
            active = int(flat.sum())
            n = min(math.ceil(rate * active), active)
            if n == 0:
                swapped[name] = 0
                continue
            score = params[name].detach().abs().reshape(-1).float().masked_fill(~flat, float("inf"))
            pruned = torch.sort(score, stable=True).indices[:n]
            new = flat.clone()
            new[pruned] = False
            inactive = (~new).nonzero().reshape(-1).cpu()
            grow = inactive[torch.randperm(len(inactive), generator=generator)[:n]].to(flat.device)
            new[grow] = True
            params[name][~new.reshape(mask.shape)] = 0.0
            params[name][new.reshape(mask.shape) & ~mask] = 0.0  # regrown weights start at zero
            self.maskset.masks[name] = new.reshape(mask.shape)
            swapped[name] = n
        self._check_counts()
        return swapped

    def _check_counts(self) -> None:
        """Invariant: prune-and-regrow never changes a layer's number of active weights."""
        for name, mask in self.maskset.masks.items():
            if int(mask.sum()) != self._active[name]:
                raise RuntimeError(
                    f"sparse update changed the active count of {name}: {int(mask.sum())} != {self._active[name]}"
                )

    def sparsity(self) -> float:
        """Sparsity over every prunable weight (dense layers included in the denominator)."""
        params = dict(self.model.named_parameters())
        total = self.maskset.n_total + sum(params[n].numel() for n in self.dense_layers)
        return 1.0 - (self.maskset.n_active + total - self.maskset.n_total) / total

    def state_tensors(self, prefix: str = "sparse.") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Masks (as uint8) and the step count, for a checkpoint."""
        tensors = {f"{prefix}{n}": m.to(torch.uint8).cpu() for n, m in self.maskset.masks.items()}
        return tensors, {"sparse_steps": self.steps, "sparse_dense_layers": self.dense_layers}

    def load_state_tensors(
        self, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any], prefix: str = "sparse."
    ) -> None:
        """Restore masks and step count written by :meth:`state_tensors` (strict)."""
        found = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        if set(found) != set(self.maskset.masks):
            raise ValueError(
                f"checkpoint masks cover {sorted(found)[:3]}..., the model's sparse layers are "
                f"{sorted(self.maskset.masks)[:3]}... (different model or sparsity settings)"
            )
        for name, mask in found.items():
            self.maskset.masks[name].copy_(mask.bool())
            self._active[name] = int(mask.sum())
        self.steps = int(meta["sparse_steps"])
        self.maskset.apply(self.model)
