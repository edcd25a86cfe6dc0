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
import os
import time
from collections.abc import Callable
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

    ``grow="gradient"`` is RigL, ``grow="random"`` is SET; ``prune="global"`` ranks magnitudes
    (and gradients for growth) across all sparse layers at once, as the reference scripts do.
    ``memory_bound`` switches on the MEST soft memory bound of the reference code until
    ``memory_bound_end_fraction`` of training: each update first prunes back to the budget, then
    grows ``memory_bound_rate`` x (all prunable weights) extra weights, that fraction
    cosine-decayed to 0 over the phase (the reference's ``death_rate`` decay from
    ``density + death_rate`` to ``density``); the extra weights train until the next update.
    After the phase, updates are plain prune-and-grow (the reference's ``--mest_dst``).
    ``debug`` checks the mask invariants after every update (also on with ``SPARSE_DST_DEBUG=1``).
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
    memory_bound_rate: float = 0.05
    memory_bound_end_fraction: float = 0.8
    seed: int = 0
    debug: bool = False

    def validate(self) -> DSTConfig:
        check_range("density", self.density, 0.0, 1.0, low_inclusive=False)
        check_choice("distribution", self.distribution, DISTRIBUTIONS)
        check_int("update_frequency", self.update_frequency, minimum=1)
        check_range("update_rate", self.update_rate, 0.0, 1.0)
        check_range("final_update_rate", self.final_update_rate, 0.0, 1.0)
        check_range("stop_fraction", self.stop_fraction, 0.0, 1.0)
        check_choice("prune", self.prune, PRUNE_MODES)
        check_choice("grow", self.grow, GROW_MODES)
        check_range("memory_bound_rate", self.memory_bound_rate, 0.0, 1.0)
        check_range("memory_bound_end_fraction", self.memory_bound_end_fraction, 0.0, 1.0)
        if self.final_update_rate > self.update_rate:
            raise ValueError(
                f"final_update_rate ({self.final_update_rate}) must not exceed update_rate ({self.update_rate}): "
                "the rate is annealed downwards"
            )
        if self.memory_bound and self.memory_bound_end_fraction > self.stop_fraction:
            raise ValueError(
                f"memory_bound_end_fraction ({self.memory_bound_end_fraction}) must be <= stop_fraction "
                f"({self.stop_fraction}): the topology is frozen at stop_fraction"
            )
        if self.memory_bound and self.density + self.memory_bound_rate > 1.0:
            raise ValueError(
                f"density + memory_bound_rate = {self.density + self.memory_bound_rate} exceeds 1: "
                "the soft memory bound cannot grow past a dense network"
            )
        return self


SPARSE_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def prunable_weights(model: nn.Module) -> dict[str, nn.Parameter]:
    """Weights of every Conv1d/2d/3d and Linear layer, in module order.

    Transposed convolutions are refused by name (their weight is laid out (in, out, ...), which
    the channel machinery does not handle); other weight-bearing modules (embeddings, attention
    projections held as raw parameters) stay dense and are named in a warning.
    """
    out: dict[str, nn.Parameter] = {}
    dense: list[str] = []
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.conv._ConvTransposeNd):
            raise ValueError(
                f"layer {name!r} is a {type(module).__name__}: sparse-dst sparsifies Conv1d/Conv2d/Conv3d "
                "and Linear layers only; replace it or wrap the rest of the model"
            )
        if isinstance(module, SPARSE_LAYERS):
            out[f"{name}.weight"] = module.weight
        elif isinstance(module, nn.Embedding | nn.EmbeddingBag | nn.MultiheadAttention | nn.RNNBase):
            dense.append(f"{name} ({type(module).__name__})")
    if dense:
        log.warning("left dense (not sparsified): %s", ", ".join(dense))
    return out


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
        self.n_prunable = sum(p.numel() for p in self.params.values())
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
    def step(self, optimizer_step: Callable[[], Any] | None = None) -> None:
        """``optimizer.step()`` (or ``optimizer_step()``, e.g. a GradScaler's) then, every
        ``update_frequency`` steps, a prune-and-grow update."""
        due = self._update_due(self.step_count + 1)
        grads = self._dense_grads(self.sparse_names()) if due else {}
        (optimizer_step or self.optimizer.step)()
        self.step_count += 1
        if due:
            self.update_topology(grads)
        self._settle_if_due()

    def _settle_if_due(self) -> None:
        """End of the soft memory bound (or of all updates): prune back to the budget."""
        if self.config.memory_bound and self.step_count in (self.memory_bound_end, self.stop_step):
            self.settle()
            self.check_invariants("settle")

    @property
    def memory_bound_end(self) -> int:
        return int(self.config.memory_bound_end_fraction * self.total_steps)

    def in_memory_bound_phase(self, step: int | None = None) -> bool:
        step = self.step_count if step is None else step
        return self.config.memory_bound and step < self.memory_bound_end

    def memory_bound_extra(self, step: int | None = None) -> int:
        """Extra weights grown above the budget by a soft-memory-bound update at ``step``."""
        step = self.step_count if step is None else step
        fraction = cosine_update_rate(step, self.memory_bound_end, self.config.memory_bound_rate, 0.0)
        return int(fraction * self.n_prunable)

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

    def global_names(self) -> tuple[list[str], int]:
        """Layers taking part in global prune-and-grow (every masked, not forced-dense layer) and
        the number of active weights they share (the budget minus the forced-dense layers')."""
        names = [n for n in self.masks if n not in self.forced_dense]
        forced = sum(int(self.masks[n].sum()) for n in self.masks if n in self.forced_dense)
        return names, self.budget - forced

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
        if self.in_memory_bound_phase():
            removed, grown = self._memory_bound_update(names, grads)
        elif self.config.prune == "layer":
            drop = {}
            for n in names:
                active = int(self.masks[n].sum())
                drop[n] = min(active, int(rate * active) + max(0, active - self.targets[n]))
            removed = self._prune(names, drop)
            need = {n: self.targets[n] - int(self.masks[n].sum()) for n in names}
            grown = self._grow(names, grads, need)
        else:
            names, sparse_budget = self.global_names()
            active = sum(int(self.masks[n].sum()) for n in names)
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
        self.check_invariants("update")
        return {"pruned": removed, "grown": grown}

    def _memory_bound_update(self, names: list[str], grads: dict[str, torch.Tensor]) -> tuple[int, int]:
        """MEST soft bound: prune back to the budget, then grow the scheduled extra weights."""
        extra = self.memory_bound_extra()
        if self.config.prune == "global":
            names, sparse_budget = self.global_names()
            active = sum(int(self.masks[n].sum()) for n in names)
            removed = self._prune_global(names, max(0, active - sparse_budget))
            return removed, self._grow_global(names, grads, extra)
        removed = self._prune_to_targets(names)
        sparse_budget = max(1, sum(self.targets[n] for n in names))
        share = {n: extra * self.targets[n] // sparse_budget for n in names}
        return removed, self._grow(names, grads, share)

    def expected_active(self) -> int:
        """Active weights right after an update: the budget, plus the extra ones under the soft bound."""
        if self.in_memory_bound_phase():
            return -1  # the extra count depends on the room per layer; checked as >= budget
        return self.budget

    def debug_enabled(self) -> bool:
        return self.config.debug or os.environ.get("SPARSE_DST_DEBUG", "") not in ("", "0")

    @torch.no_grad()
    def check_invariants(self, where: str) -> None:
        """Debug mode: masks inside the structural masks, pruned weights and their optimizer state
        exactly zero, and the active count equal to the budget (at least the budget under the
        soft memory bound). Raises RuntimeError naming the broken invariant."""
        if not self.debug_enabled():
            return
        for n, mask in self.masks.items():
            if bool((mask & ~self.allowed[n]).any()):
                raise RuntimeError(
                    f"after {where} at step {self.step_count}: mask {n} has weights in removed channels"
                )
            p = self.params[n]
            if bool((p[~mask] != 0).any()):
                raise RuntimeError(
                    f"after {where} at step {self.step_count}: pruned weights of {n} are not zero"
                )
            for key, value in self.optimizer.state.get(p, {}).items():
                if (
                    isinstance(value, torch.Tensor)
                    and value.shape == p.shape
                    and bool((value[~mask] != 0).any())
                ):
                    raise RuntimeError(
                        f"after {where}: optimizer state {key!r} of pruned weights of {n} is not zero"
                    )
        active, expected = self.n_active(), self.expected_active()
        if (expected >= 0 and active != expected) or active < self.budget:
            raise RuntimeError(
                f"after {where} at step {self.step_count}: {active} active weights, expected "
                f"{expected if expected >= 0 else f'>= {self.budget}'}"
            )

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
        if self.config.prune == "global":
            names, sparse_budget = self.global_names()
            active = sum(int(self.masks[n].sum()) for n in names)
            removed = self._prune_global(names, max(0, active - sparse_budget))
        else:
            names = self.sparse_names()
            removed = self._prune_to_targets(names)
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
        if self.config.prune == "global":  # global allocation: regrow the freed weights globally
            for n in self.forced_dense:
                if n in self.masks:
                    self.masks[n].copy_(self.allowed[n])
            names, sparse_budget = self.global_names()
            active = sum(int(self.masks[n].sum()) for n in names)
            self._prune_global(names, max(0, active - sparse_budget))
            active = sum(int(self.masks[n].sum()) for n in names)
            self._grow_global(names, grads or {}, sparse_budget - active)
        else:
            self._prune_to_targets(names)
            need = {n: self.targets[n] - int(self.masks[n].sum()) for n in names}
            self._grow(names, grads or {}, need)
        for n in self.forced_dense:
            if n in self.masks:
                self.masks[n].copy_(self.allowed[n])
        self._zero_pruned()
        self.check_invariants("channel removal")

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
