"""Chase: channel-aware dynamic sparse training (Yin et al., 2023).

On top of unstructured DST (:class:`~sparse_dst.masking.Masking`), Chase scores every channel
group that surgery can remove (see :mod:`sparse_dst.tracing`: channels tied by residual additions,
concatenations and depthwise convolutions form one group), and every ``channel_interval`` steps
removes the lowest-scored channels until the fraction of removed channels follows a cubic schedule
up to ``Sc`` at ``channel_end``. Ranking is global, with a per-group floor of
``beta * size * (1 - Sc)`` channels. The parameter budget stays constant, so surviving channels
become denser. ``finalize()`` slices the removed channels away and returns a genuinely smaller
model, after checking that it computes what the masked model computes.

Group score: the *mean* of the members' UMM scores (each producer or depthwise conv whose weight
rows hold the channel counts once). Averaging keeps a group's score on the scale of a single
layer's UMM, so tied and untied channels compete fairly in the one global ranking; a sum would grow
with the number of tied layers (up to 7 convolutions share a ResNet-50 stage's residual channels)
and residual channels would practically never be removed.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from research_systems_core.batchnorm import recalibrate_batchnorm
from research_systems_core.masks import MaskSet
from research_systems_core.validation import check_choice, check_int, check_range
from sparse_dst.masking import DSTConfig, Masking
from sparse_dst.schedules import cubic_sparsity
from sparse_dst.scores import SCORE_METHODS, channel_scores
from sparse_dst.surgery import module_index_masks, remove_channels
from sparse_dst.tracing import ChannelGroup, UnsupportedGraphError, analyse, default_example_input

log = logging.getLogger(__name__)


@dataclass
class ChaseConfig(DSTConfig):
    """DST settings plus the channel schedule.

    ``channel_end_fraction`` is the fraction of training at which ``channel_sparsity`` is reached
    (the reference's ``stop_gmp_epochs``); ``beta`` sets the per-group floor (``minumum_ratio``);
    ``equivalence_tolerance`` bounds the relative difference between the slim and the masked
    model's outputs that ``finalize`` accepts.
    """

    channel_sparsity: float = 0.5
    channel_score: str = "umm"
    channel_interval: int = 100
    channel_start_fraction: float = 0.0
    channel_end_fraction: float = 0.6
    beta: float = 0.5
    equivalence_tolerance: float = 1e-4

    def validate(self) -> ChaseConfig:
        super().validate()
        check_range("channel_sparsity", self.channel_sparsity, 0.0, 1.0, high_inclusive=False)
        check_choice("channel_score", self.channel_score, SCORE_METHODS)
        check_int("channel_interval", self.channel_interval, minimum=1)
        check_range("channel_start_fraction", self.channel_start_fraction, 0.0, 1.0)
        check_range("channel_end_fraction", self.channel_end_fraction, 0.0, 1.0)
        if self.channel_end_fraction <= self.channel_start_fraction:
            raise ValueError(
                f"channel_end_fraction must be > channel_start_fraction ({self.channel_start_fraction}), "
                f"got {self.channel_end_fraction}"
            )
        check_range("beta", self.beta, 0.0, 1.0)
        check_range("equivalence_tolerance", self.equivalence_tolerance, 0.0, 1.0, low_inclusive=False)
        return self


def select_channels_to_remove(
    scores: dict[str, torch.Tensor],
    alive: dict[str, torch.Tensor],
    floors: dict[str, int],
    count: int,
) -> dict[str, list[int]]:
    """Global ascending ranking of alive channels; skip a layer once it reaches its floor.

    Ties are broken by layer order, then channel index. Returns the channels removed per layer
    (fewer than ``count`` when every layer sits at its floor).
    """
    entries = []
    for order, (name, score) in enumerate(scores.items()):
        for c in alive[name].nonzero().flatten().tolist():
            entries.append((float(score[c]), order, c, name))
    entries.sort()
    remaining = {n: int(a.sum()) for n, a in alive.items()}
    removed: dict[str, list[int]] = {n: [] for n in scores}
    taken = 0
    for _, _, c, name in entries:
        if taken >= count:
            break
        if remaining[name] - 1 < floors[name]:
            continue
        removed[name].append(c)
        remaining[name] -= 1
        taken += 1
    return removed


def group_channel_scores(
    params: Mapping[str, torch.Tensor],
    masks: Mapping[str, torch.Tensor],
    groups: Iterable[ChannelGroup],
    method: str = "umm",
) -> dict[str, torch.Tensor]:
    """Score of every channel of every group: the mean of its members' UMM (or MMM) scores."""
    out = {}
    for g in groups:
        total = torch.zeros(g.size)
        for slot in g.scored:
            name = f"{slot.module}.weight"
            rows = slice(slot.offset, slot.offset + g.size)
            mask = masks[name][rows] if name in masks else None
            total += channel_scores(params[name][rows], mask, method).float().cpu()
        out[g.name] = total / len(g.scored)
    return out


class Chase(Masking):
    """Channel-aware DST: ``step()`` wraps the optimizer, ``finalize()`` returns the slim model."""

    config: ChaseConfig

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        config: ChaseConfig,
        total_steps: int,
        groups: Iterable[ChannelGroup] | None = None,
        example_input: torch.Tensor | None = None,
    ):
        super().__init__(model, optimizer, config, total_steps)
        if example_input is None:
            example_input = default_example_input(model)
        self.example_input = example_input[:2].detach().cpu().clone()
        if groups is None:
            groups, skipped = analyse(model, example_input)
        else:
            skipped = {}
        self.skipped = skipped
        self.groups = [
            g for g in groups if all(f"{s.module}.weight" in self.params for s in g.slots if s.role != "norm")
        ]
        if config.channel_sparsity > 0 and not self.groups:
            reasons = "; ".join(f"{k}: {v}" for k, v in list(skipped.items())[:4])
            raise UnsupportedGraphError(
                f"{type(model).__name__} has no channel that surgery can remove ({reasons})"
            )
        self.by_name = {g.name: g for g in self.groups}
        self.keep = {g.name: torch.ones(g.size, dtype=torch.bool) for g in self.groups}
        self.baseline_channels = sum(len(k) for k in self.keep.values())
        sc = config.channel_sparsity
        self.floors = {g.name: max(1, int(config.beta * g.size * (1 - sc))) for g in self.groups}
        self.channel_history: list[dict[str, Any]] = []
        self.finalized = False
        self.dead_removed = 0

    def _mask_dense_layers(self) -> bool:
        return True

    @property
    def channel_start(self) -> int:
        return int(self.config.channel_start_fraction * self.total_steps)

    @property
    def channel_end(self) -> int:
        return int(self.config.channel_end_fraction * self.total_steps)

    def channel_sparsity_at(self, step: int) -> float:
        """Scheduled fraction of removed channels at ``step`` (cubic)."""
        return cubic_sparsity(step, self.config.channel_sparsity, self.channel_start, self.channel_end)

    def alive_channels(self) -> int:
        return sum(int(k.sum()) for k in self.keep.values())

    def step(self, optimizer_step: Callable[[], Any] | None = None) -> None:
        due = self._channel_due(self.step_count + 1)
        update_due = self._update_due(self.step_count + 1)
        grads = self._dense_grads(list(self.masks)) if due or update_due else {}
        (optimizer_step or self.optimizer.step)()
        self.step_count += 1
        if update_due:
            self.update_topology(grads)
        if due:
            self.remove_scheduled_channels(grads)
        self._settle_if_due()

    def _channel_due(self, step: int) -> bool:
        if self.finalized or self.config.channel_sparsity == 0 or step <= self.channel_start:
            return False
        return step == self.channel_end or (
            step < self.channel_end and step % self.config.channel_interval == 0
        )

    def channel_scores(self) -> dict[str, torch.Tensor]:
        """UMM or MMM score of every channel of every removable group (mean over its members)."""
        return group_channel_scores(self.params, self.masks, self.groups, self.config.channel_score)

    @torch.no_grad()
    def remove_scheduled_channels(self, grads: dict[str, torch.Tensor] | None = None) -> int:
        """Remove channels down to the scheduled count; regrow the freed budget. Returns count removed."""
        target_alive = round(self.baseline_channels * (1.0 - self.channel_sparsity_at(self.step_count)))
        count = self.alive_channels() - target_alive
        if count <= 0:
            return 0
        chosen = select_channels_to_remove(self.channel_scores(), self.keep, self.floors, count)
        removed = self.remove_channel_indices(chosen, grads)
        self.channel_history.append(
            {
                "step": self.step_count,
                "removed": removed,
                "alive": self.alive_channels(),
                "active": self.n_active(),
            }
        )
        log.debug("step %d: removed %d channels, %d alive", self.step_count, removed, self.alive_channels())
        return removed

    @torch.no_grad()
    def remove_channel_indices(
        self, chosen: dict[str, list[int]], grads: dict[str, torch.Tensor] | None = None
    ) -> int:
        """Mask the given channels in every member of their groups and rebalance the budget."""
        total = 0
        for name, channels in chosen.items():
            if not channels:
                continue
            group = self.by_name[name]
            index = torch.tensor(channels, dtype=torch.long)
            self.keep[name][index] = False
            for slot in group.slots:
                if slot.role == "norm":
                    continue
                allowed = self.allowed[f"{slot.module}.weight"]
                if slot.role in ("out", "dw"):
                    allowed[(index + slot.offset).to(allowed.device)] = False
                else:
                    f = slot.fpc
                    cols = ((index[:, None] + slot.offset) * f + torch.arange(f)[None, :]).flatten()
                    allowed[:, cols.to(allowed.device)] = False
            total += len(channels)
        if total:
            self.rebalance(grads)
        return total

    # ------------------------------------------------------------------ slim model
    def removed_channels(self) -> dict[str, torch.Tensor]:
        return {p: k.clone() for p, k in self.keep.items() if not bool(k.all())}

    @torch.no_grad()
    def finalize(
        self,
        calibration: Iterable[Any] | None = None,
        max_batches: int = 50,
        drop_dead: bool = True,
        round_to: int = 1,
    ) -> nn.Module:
        """Return the slim model (a copy with the removed channels sliced away).

        With ``drop_dead`` also the *dead* channels go: surviving channels whose every outgoing
        weight (all consumer columns) is pruned contribute nothing, so slicing them is exact and
        saves their stored zeros (``self.dead_removed`` counts them). With ``round_to`` > 1 each
        group keeps a multiple of ``round_to`` channels (oneDNN's CPU kernels and tensor cores
        run odd widths slowly) by keeping back the best-scored removed or dead channels: their
        consumer weights are all masked, so this is exact too (``self.slim_keep`` holds the
        channels the slim model has).

        The slim model's outputs on the stored example input are compared with the masked
        model's (both in eval mode) before anything else happens; a disagreement beyond
        ``equivalence_tolerance`` raises RuntimeError instead of returning a wrong model. With
        ``calibration`` batches the slim model's BatchNorm statistics are then recomputed.
        Finalizing twice is refused.
        """
        if isinstance(round_to, bool) or not isinstance(round_to, int):
            raise TypeError(f"round_to must be an int >= 1, got {round_to!r}")
        if round_to < 1:
            raise ValueError(f"round_to must be >= 1 (1: no rounding), got {round_to}")
        if self.finalized:
            raise RuntimeError("Chase.finalize() was already called; the slim model exists")
        self.maskset.apply(self.model)
        keep = self._drop_dead_channels() if drop_dead else self.removed_channels()
        if round_to > 1:
            keep = self._round_widths(keep, round_to)
        self.slim_keep = {g.name: keep.get(g.name, torch.ones(g.size, dtype=torch.bool)) for g in self.groups}
        slim = remove_channels(self.model, keep, self.groups)
        self.equivalence_error = self.check_equivalence(slim)
        self.slim_masks = self._slim_maskset(slim, keep)
        if calibration is not None:
            recalibrate_batchnorm(slim, calibration, max_batches=max_batches)
        self.finalized = True
        self.handle.remove()
        return slim

    def dead_channels(self) -> dict[str, torch.Tensor]:
        """Per group: alive channels none of whose consumer columns holds an active weight."""
        out = {}
        for g in self.groups:
            used = torch.zeros(g.size, dtype=torch.bool)
            for slot in g.slots:
                if slot.role != "in":
                    continue
                mask = self.masks[f"{slot.module}.weight"]
                cols = mask.reshape(mask.shape[0], mask.shape[1], -1).any(dim=2).any(dim=0).cpu()
                window = cols[slot.offset * slot.fpc : (slot.offset + g.size) * slot.fpc]
                used |= window.reshape(g.size, slot.fpc).any(dim=1)
            out[g.name] = self.keep[g.name] & ~used
        return out

    def _drop_dead_channels(self) -> dict[str, torch.Tensor]:
        keep, self.dead_removed = {}, 0
        for name, dead in self.dead_channels().items():
            vector = self.keep[name] & ~dead
            if not bool(vector.any()):  # keep one channel so the group survives
                vector[self.keep[name].nonzero().flatten()[0]] = True
            self.dead_removed += int(self.keep[name].sum() - vector.sum())
            if not bool(vector.all()):
                keep[name] = vector
        return keep

    def _round_widths(self, keep: dict[str, torch.Tensor], multiple: int) -> dict[str, torch.Tensor]:
        """Round every group's kept count up to a multiple of ``multiple`` (at most the group
        size), keeping back the best-scored of the channels that would go. They are removed or
        dead channels: their consumer weights are all masked, so the slim model stays exact."""
        scores = self.channel_scores()
        out = {}
        for g in self.groups:
            vector = keep.get(g.name, torch.ones(g.size, dtype=torch.bool)).clone()
            kept = int(vector.sum())
            missing = min(g.size, -(-kept // multiple) * multiple) - kept
            if missing > 0:
                ranked = scores[g.name].detach().cpu().float().masked_fill(vector, float("-inf"))
                vector[ranked.argsort(descending=True, stable=True)[:missing]] = True
            if int(vector.sum()) != min(g.size, -(-kept // multiple) * multiple):
                raise RuntimeError(f"rounding {g.name} to a multiple of {multiple} kept {int(vector.sum())}")
            if not bool(vector.all()):
                out[g.name] = vector
        return out

    @torch.no_grad()
    def check_equivalence(self, slim: nn.Module) -> float:
        """Relative max difference of slim vs masked outputs; RuntimeError above the tolerance."""
        modes = {m: m.training for m in self.model.modules()}
        self.model.eval()
        slim_mode = slim.training
        slim.eval()
        try:
            device = next(self.model.parameters()).device
            x = self.example_input.to(device)
            masked, small = self.model(x), slim(x)
        finally:
            for m, mode in modes.items():
                m.training = mode
            slim.train(slim_mode)
        if masked.shape != small.shape:
            raise RuntimeError(
                f"slim model output shape {tuple(small.shape)} != masked {tuple(masked.shape)}"
            )
        scale = float(masked.abs().max()) + 1e-12
        error = float((masked - small).abs().max()) / scale
        if not error <= self.config.equivalence_tolerance:
            raise RuntimeError(
                f"the slim model disagrees with the masked model (relative max difference {error:.3g} > "
                f"{self.config.equivalence_tolerance}); this is a bug in the channel analysis, please report it"
            )
        return error

    def _slim_maskset(self, slim: nn.Module, keep: dict[str, torch.Tensor]) -> MaskSet:
        """The masks restricted to the surviving rows and columns (matches the slim model)."""
        rows, cols = module_index_masks(self.model, keep, self.groups)
        out = {}
        slim_params = dict(slim.named_parameters())
        for n, mask in self.masks.items():
            module = n.rsplit(".", 1)[0]
            m = mask
            if module in rows:
                m = m[rows[module].to(m.device)]
            if module in cols:
                m = m[:, cols[module].to(m.device)]
            if tuple(m.shape) != tuple(slim_params[n].shape):
                raise RuntimeError(
                    f"slim mask {n} has shape {tuple(m.shape)}, slim weight {tuple(slim_params[n].shape)}"
                )
            out[n] = m.clone()
        return MaskSet(out)

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        tensors, meta = super().state_dict()
        tensors |= {f"keep/{p}": k for p, k in self.keep.items()}
        meta |= {"finalized": self.finalized, "channel_history": copy.deepcopy(self.channel_history)}
        return tensors, meta

    def load_state_dict(self, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        super().load_state_dict(tensors, meta)
        for p in self.keep:
            self.keep[p] = tensors[f"keep/{p}"].to(torch.bool).clone()
        self.finalized = bool(meta.get("finalized", False))
        self.channel_history = list(meta.get("channel_history", []))
