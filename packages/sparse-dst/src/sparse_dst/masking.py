"""Dynamic sparse training (RigL / SET / MEST-style) on research-systems-core masks.

:class:`Masking` wraps an optimizer: call ``masking.step()`` instead of ``optimizer.step()``.
Every ``update_frequency`` steps it drops the active weights of lowest magnitude (per layer or
globally) and grows as many new ones, chosen by dense-gradient magnitude (RigL) or at random
(SET). New weights start at zero with zero optimizer state. The number of active weights stays
constant; pruned weights stay exactly zero (``MaskSet.attach``).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from research_systems_core.masks import MaskSet, erk_densities, uniform_densities
from research_systems_core.validation import check_choice, check_int, check_range
from sparse_dst.schedules import cosine_update_rate
from sparse_dst.scores import channel_density

log = logging.getLogger(__name__)

DISTRIBUTIONS = ("erk", "uniform")
PRUNE_MODES = ("layer", "global")
GROW_MODES = ("gradient", "random")


@dataclass
class DSTConfig:
    """Settings of unstructured dynamic sparse training.

    ``grow="gradient"`` is RigL, ``grow="random"`` is SET. ``memory_bound`` switches to the
    MEST-style soft memory bound: each update first drops the weights above the budget, then
    grows ``update_rate`` extra ones that train until the next update (grow-then-prune).
    """

    density: float = 0.1
    distribution: str = "erk"
    update_frequency: int = 100
    update_rate: float = 0.5
    final_update_rate: float = 0.005
    stop_fraction: float = 1.0
    prune: str = "layer"
    grow: str = "gradient"
    memory_bound: bool = False
    dense_first: bool = False
    dense_last: bool = False
    seed: int = 0

    def validate(self) -> DSTConfig:
        check_range("density", self.density, 0.0, 1.0, low_inclusive=False)
        check_choice("distribution", self.distribution, DISTRIBUTIONS)
        check_int("update_frequency", self.update_frequency, minimum=1)
        check_range("update_rate", self.update_rate, 0.0, 1.0)
        check_range("final_update_rate", self.final_update_rate, 0.0, 1.0)
        check_range("stop_fraction", self.stop_fraction, 0.0, 1.0)
        check_choice("prune", self.prune, PRUNE_MODES)
        check_choice("grow", self.grow, GROW_MODES)
        return self


def prunable_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """Weights of every Conv2d and Linear layer, in module order."""
    return {
        f"{name}.weight": module.weight
        for name, module in model.named_modules()
        if isinstance(module, nn.Conv2d | nn.Linear)
    }


def _alive_shape(allowed: torch.Tensor) -> tuple[int, ...]:
    """Shape of the sub-tensor of surviving rows and columns of a structural mask."""
    flat = allowed.reshape(allowed.shape[0], allowed.shape[1] if allowed.dim() > 1 else 1, -1)
    rows = int(flat.any(dim=2).any(dim=1).sum())
    cols = int(flat.any(dim=2).any(dim=0).sum())
    return (rows, cols, *allowed.shape[2:]) if allowed.dim() > 1 else (rows,)


class Masking:
    """Unstructured dynamic sparse training around an optimizer.

    ``total_steps`` is the length of training in optimizer steps; the update rate is
    cosine-annealed over ``stop_fraction * total_steps`` after which the topology is frozen.
    """

    def __init__(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, config: DSTConfig, total_steps: int
    ):
        self.config = config.validate()
        self.total_steps = check_int("total_steps", total_steps, minimum=1)
        self.model = model
        self.optimizer = optimizer
        self.params = prunable_weights(model)
        if not self.params:
            raise ValueError(
                f"{type(model).__name__} has no prunable layers: dynamic sparse training needs Conv2d or Linear weights"
            )
        names = list(self.params)
        forced = set()
        if config.dense_first:
            forced.add(names[0])
        if config.dense_last:
            forced.add(names[-1])
        if len(forced) == len(names):
            raise ValueError(
                "every prunable layer is kept dense (dense_first/dense_last): nothing to sparsify"
            )
        self.forced_dense = forced
        self.generator = torch.Generator().manual_seed(config.seed)
        shapes = {n: tuple(p.shape) for n, p in self.params.items()}
        self.allowed = {
            n: torch.ones(s, dtype=torch.bool, device=self.params[n].device) for n, s in shapes.items()
        }
        densities = self._densities(shapes, config.density)
        if not self._mask_dense_layers():  # forced-dense layers count in ERK's budget but need no mask
            shapes = {n: s for n, s in shapes.items() if n not in forced}
            densities = {n: densities[n] for n in shapes}
        self.maskset = MaskSet.random(shapes, densities, generator=self.generator)
        self.maskset = self.maskset.to(next(iter(self.params.values())).device)
        self.targets = {n: int(m.sum()) for n, m in self.maskset.masks.items()}
        self.budget = sum(self.targets.values())
        self._capacity_cache: dict[str, int] = {}
        self.step_count = 0
        self.update_seconds = 0.0
        self.n_updates = 0
        self.history: list[dict[str, Any]] = []
        self.handle = self.maskset.attach(model, optimizer)

    # ------------------------------------------------------------------ densities
    def _mask_dense_layers(self) -> bool:
        """Whether forced-dense layers get a (full) mask too; Chase needs it to remove channels."""
        return False

    def _densities(self, shapes: dict[str, tuple[int, ...]], density: float) -> dict[str, float]:
        if self.config.distribution == "erk":
            return erk_densities(shapes, density, dense=self.forced_dense)
        out = uniform_densities(shapes, density)
        return {n: 1.0 if n in self.forced_dense else d for n, d in out.items()}

    @property
    def masks(self) -> dict[str, torch.Tensor]:
        return self.maskset.masks

    @property
    def stop_step(self) -> int:
        return int(self.config.stop_fraction * self.total_steps)

    def update_rate(self, step: int | None = None) -> float:
        """Fraction of active weights replaced by the update at ``step`` (cosine-annealed)."""
        step = self.step_count if step is None else step
        return cosine_update_rate(
            step, self.stop_step, self.config.update_rate, self.config.final_update_rate
        )

    # ------------------------------------------------------------------ training step
    def step(self) -> None:
        """``optimizer.step()`` then, every ``update_frequency`` steps, a prune-and-grow update."""
        due = self._update_due(self.step_count + 1)
        grads = self._dense_grads(self.sparse_names()) if due else {}
        self.optimizer.step()
        self.step_count += 1
        if due:
            self.update_topology(grads)
        if self.config.memory_bound and self.step_count == self.stop_step:
            self.settle()

    def _update_due(self, step: int) -> bool:
        return step % self.config.update_frequency == 0 and step < self.stop_step

    def _dense_grads(self, names: list[str]) -> dict[str, torch.Tensor]:
        """Gradients of the named weights, pruned entries included (read before the mask zeroes them)."""
        start = time.perf_counter()
        grads = {n: self.params[n].grad.detach().clone() for n in names if self.params[n].grad is not None}
        self.update_seconds += time.perf_counter() - start
        return grads

    def sparse_names(self) -> list[str]:
        """Layers taking part in prune-and-grow (not forced dense, not full within their channels)."""
        return [n for n in self.masks if n not in self.forced_dense and self.targets[n] < self._capacity(n)]

    def _capacity(self, name: str) -> int:
        if name not in self._capacity_cache:
            self._capacity_cache[name] = int(self.allowed[name].sum())
        return self._capacity_cache[name]

    # ------------------------------------------------------------------ topology update
    @torch.no_grad()
    def update_topology(self, grads: dict[str, torch.Tensor] | None = None) -> dict[str, int]:
        """One prune-and-grow update; returns how many weights were pruned and grown."""
        start = time.perf_counter()
        grads = grads or {}
        rate = self.update_rate()
        names = self.sparse_names()
        if self.config.memory_bound:
            removed = self._prune_to_targets(names)
            extra = {n: int(rate * self.targets[n]) for n in names}
            grown = self._grow(names, grads, extra)
        elif self.config.prune == "layer":
            drop = {}
            for n in names:
                active = int(self.masks[n].sum())
                drop[n] = min(active, int(rate * active) + max(0, active - self.targets[n]))
            removed = self._prune(names, drop)
            need = {n: self.targets[n] - int(self.masks[n].sum()) for n in names}
            grown = self._grow(names, grads, need)
        else:
            active = sum(int(self.masks[n].sum()) for n in names)
            sparse_budget = sum(self.targets[n] for n in names)
            k = min(active, int(rate * active) + max(0, active - sparse_budget))
            removed = self._prune_global(names, k)
            now = sum(int(self.masks[n].sum()) for n in names)
            grown = self._grow_global(names, grads, sparse_budget - now)
        self._zero_pruned(names)
        self.n_updates += 1
        self.update_seconds += time.perf_counter() - start
        record = {"step": self.step_count, "rate": rate, "pruned": removed, "grown": grown}
        self.history.append(record)
        log.debug("topology update %s", record)
        return {"pruned": removed, "grown": grown}

    def _prune(self, names: list[str], counts: dict[str, int]) -> int:
        total = 0
        for n in names:
            k = counts.get(n, 0)
            if k <= 0:
                continue
            flat = self.masks[n].view(-1)
            active = flat.nonzero().flatten()
            magnitude = self.params[n].detach().reshape(-1)[active].abs()
            drop = active[torch.topk(magnitude, k, largest=False).indices]
            flat[drop] = False
            total += k
        return total

    def _prune_to_targets(self, names: list[str]) -> int:
        excess = {n: max(0, int(self.masks[n].sum()) - self.targets[n]) for n in names}
        return self._prune(names, excess)

    def _prune_global(self, names: list[str], k: int) -> int:
        if k <= 0 or not names:
            return 0
        scores = [
            self.params[n].detach().abs().masked_fill(~self.masks[n], math.inf).reshape(-1) for n in names
        ]
        flat = torch.cat(scores)
        drop = torch.topk(flat, k, largest=False).indices
        offset = 0
        for n, s in zip(names, scores, strict=True):
            local = drop[(drop >= offset) & (drop < offset + s.numel())] - offset
            self.masks[n].view(-1)[local] = False
            offset += s.numel()
        return k

    def _candidates(self, n: str) -> torch.Tensor:
        return self.allowed[n] & ~self.masks[n]

    def _grow_scores(self, n: str, grads: dict[str, torch.Tensor]) -> torch.Tensor:
        candidates = self._candidates(n).reshape(-1)
        if self.config.grow == "gradient" and n in grads:
            score = grads[n].abs().reshape(-1).float()
        else:  # random growth (SET), or no gradient available
            score = torch.rand(candidates.shape, generator=self.generator).to(candidates.device)
        return score.masked_fill(~candidates, -math.inf)

    def _grow(self, names: list[str], grads: dict[str, torch.Tensor], counts: dict[str, int]) -> int:
        total = 0
        for n in names:
            k = min(counts.get(n, 0), int(self._candidates(n).sum()))
            if k <= 0:
                continue
            new = torch.topk(self._grow_scores(n, grads), k).indices
            self.masks[n].view(-1)[new] = True
            self.params[n].data.view(-1)[new] = 0.0  # new connections start at zero
            total += k
        return total

    def _grow_global(self, names: list[str], grads: dict[str, torch.Tensor], k: int) -> int:
        room = sum(int(self._candidates(n).sum()) for n in names)
        k = min(k, room)
        if k <= 0:
            return 0
        scores = [self._grow_scores(n, grads) for n in names]
        new = torch.topk(torch.cat(scores), k).indices
        offset = 0
        for n, s in zip(names, scores, strict=True):
            local = new[(new >= offset) & (new < offset + s.numel())] - offset
            self.masks[n].view(-1)[local] = True
            self.params[n].data.view(-1)[local] = 0.0
            offset += s.numel()
        return k

    @torch.no_grad()
    def _zero_pruned(self, names: list[str] | None = None) -> None:
        """Zero pruned weights and their optimizer state (momentum, Adam moments)."""
        for n in self.masks if names is None else names:
            p, mask = self.params[n], self.masks[n]
            p.mul_(mask)
            for value in self.optimizer.state.get(p, {}).values():
                if isinstance(value, torch.Tensor) and value.shape == p.shape:
                    value.mul_(mask)

    @torch.no_grad()
    def settle(self) -> int:
        """Drop the weights above the budget (end of the MEST-style soft memory bound)."""
        removed = self._prune_to_targets(self.sparse_names())
        self._zero_pruned()
        return removed

    # ------------------------------------------------------------------ budget after reshaping
    @torch.no_grad()
    def rebalance(self, grads: dict[str, torch.Tensor] | None = None) -> None:
        """Recompute per-layer targets on the surviving shapes, same total budget, and regrow.

        Used after channels were removed: the freed parameters go to the surviving channels.
        """
        self._capacity_cache = {}
        shapes = {n: _alive_shape(a) for n, a in self.allowed.items()}
        alive_total = sum(math.prod(s) for s in shapes.values())
        density = min(1.0, self.budget / alive_total)
        if self.budget > alive_total:
            log.warning(
                "budget of %d weights exceeds the %d left in surviving channels", self.budget, alive_total
            )
        densities = self._densities(shapes, density)
        capacity = {n: int(self.allowed[n].sum()) for n in shapes}
        targets = {n: min(capacity[n], round(densities[n] * capacity[n])) for n in shapes}
        for n in self.forced_dense:
            targets[n] = capacity[n]
        diff = self.budget - sum(targets.values())
        order = sorted((n for n in shapes if n not in self.forced_dense), key=lambda n: -capacity[n])
        for n in order:  # rounding: put the remainder where there is room
            if diff == 0:
                break
            change = max(-targets[n], min(diff, capacity[n] - targets[n]))
            targets[n] += change
            diff -= change
        self.targets = targets
        for n in self.masks:
            self.masks[n] &= self.allowed[n]
        names = [n for n in self.masks if n not in self.forced_dense]
        self._prune_to_targets(names)
        need = {n: self.targets[n] - int(self.masks[n].sum()) for n in names}
        self._grow(names, grads or {}, need)
        for n in self.forced_dense:
            if n in self.masks:
                self.masks[n].copy_(self.allowed[n])
        self._zero_pruned()

    # ------------------------------------------------------------------ reporting
    def n_active(self) -> int:
        return self.maskset.n_active

    def layer_density(self) -> dict[str, float]:
        """Active fraction of every masked layer (relative to its original size)."""
        return {n: float(self.masks[n].float().mean()) if n in self.masks else 1.0 for n in self.params}

    def channel_density(self) -> dict[str, torch.Tensor]:
        """Active fraction of every output channel of every masked layer."""
        return {n: channel_density(m) for n, m in self.masks.items()}

    def update_overhead(self) -> dict[str, float]:
        return {"updates": self.n_updates, "seconds": self.update_seconds}

    # ------------------------------------------------------------------ checkpoint
    def signature(self) -> dict[str, list[int]]:
        return {n: list(p.shape) for n, p in self.params.items()}

    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Tensors (masks, structural masks, RNG) and JSON metadata for a checkpoint."""
        tensors = {f"mask/{n}": m.cpu() for n, m in self.masks.items()}
        tensors |= {f"allowed/{n}": a.cpu() for n, a in self.allowed.items()}
        tensors["generator"] = self.generator.get_state()
        meta = {
            "kind": type(self).__name__,
            "config": asdict(self.config),
            "signature": self.signature(),
            "step_count": self.step_count,
            "targets": self.targets,
            "budget": self.budget,
            "n_updates": self.n_updates,
        }
        return tensors, meta

    @torch.no_grad()
    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """Restore masks and schedule state; refuses a checkpoint of another model or method."""
        if meta.get("kind") != type(self).__name__:
            raise ValueError(
                f"checkpoint holds a {meta.get('kind')!r} state, cannot resume a {type(self).__name__}"
            )
        saved = {n: list(s) for n, s in meta["signature"].items()}
        if saved != self.signature():
            mine = self.signature()
            bad = next((n for n in set(saved) | set(mine) if saved.get(n) != mine.get(n)), None)
            raise ValueError(
                f"cannot resume: checkpoint was made for a different model "
                f"({bad!r}: checkpoint {saved.get(bad)}, this model {mine.get(bad)})"
            )
        device = next(iter(self.params.values())).device
        for n in self.masks:
            self.masks[n] = tensors[f"mask/{n}"].to(device=device, dtype=torch.bool)
        for n in self.params:
            self.allowed[n] = tensors[f"allowed/{n}"].to(device=device, dtype=torch.bool)
        self._capacity_cache = {}
        self.generator.set_state(tensors["generator"])
        self.step_count = int(meta["step_count"])
        self.targets = {n: int(v) for n, v in meta["targets"].items()}
        self.budget = int(meta["budget"])
        self.n_updates = int(meta.get("n_updates", 0))
        self._zero_pruned()
