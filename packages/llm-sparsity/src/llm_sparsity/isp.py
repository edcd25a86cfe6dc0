"""Instant Soup Pruning (ISP): many cheap weak masks, superposed into one, instead of IMP's long stages.

Each round (following ``instant_soup/clip_assets/code/isp_all.py``, fixed and generalised): the
main model trains briefly with its current mask; ``n_masks`` auxiliary copies start from the main
model's weights and mask, train a few steps each with their own data subset, seed and jittered
learning rate, and are pruned by magnitude to the round's sparsity; the weak masks are
aggregated (union, intersection, k-of-n vote, or score averaging) into the main model's new mask.
When the target is near (or after the last round), one-shot magnitude pruning reaches the target
and the main model is fine-tuned sparsely. Every training step is counted.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from llm_sparsity.pruning import check_sparsity, make_masks, rewind
from llm_sparsity.targets import Targets
from research_systems_core.masks import MaskSet
from research_systems_core.validation import check_choice, check_int, check_range

__all__ = [
    "AGGREGATIONS",
    "Cost",
    "ISPConfig",
    "ISPResult",
    "aggregate_masks",
    "instant_soup_pruning",
    "mask_cosine",
    "mask_similarity",
    "masked_magnitude",
]

log = logging.getLogger(__name__)
AGGREGATIONS = ("union", "intersection", "vote", "score_average")


class Trainer(Protocol):
    """What ISP and IMP need from a training loop (``RetrievalTrainer`` fits)."""

    def train(
        self,
        model: torch.nn.Module,
        masks: MaskSet | None,
        steps: int,
        *,
        seed: int = 0,
        lr: float | None = None,
        subset: Sequence[int] | None = None,
    ) -> Any: ...

    def train_items(self, seed: int) -> Sequence[Any]: ...


@dataclass
class Cost:
    """Training steps (weak, main, final) and wall time spent by a pruning method."""

    weak_steps: int = 0
    main_steps: int = 0
    final_steps: int = 0
    seconds: float = 0.0

    @property
    def total_steps(self) -> int:
        return self.weak_steps + self.main_steps + self.final_steps

    def as_dict(self) -> dict[str, float]:
        return {
            "weak_steps": self.weak_steps,
            "main_steps": self.main_steps,
            "final_steps": self.final_steps,
            "total_steps": self.total_steps,
            "seconds": self.seconds,
        }


def masked_magnitude(
    model: torch.nn.Module, targets: Targets, masks: MaskSet | None
) -> dict[str, torch.Tensor]:
    """|w| with already pruned positions scored -1, so they are pruned first and never revived."""
    out = {}
    for n, p in targets.parameters(model).items():
        s = p.detach().abs().clone()
        if masks is not None:
            s[~masks.masks[n]] = -1.0
        out[n] = s
    return out


def aggregate_masks(
    masks: Sequence[MaskSet],
    rule: str,
    *,
    k: int | None = None,
    scores: Sequence[dict[str, torch.Tensor]] | None = None,
    sparsity: float | None = None,
    within: MaskSet | None = None,
) -> MaskSet:
    """Superpose weak masks. ``union`` keeps what any mask keeps, ``intersection`` what all keep,
    ``vote`` what at least ``k`` keep (default: a strict majority), ``score_average`` averages the
    weak models' scores and keeps the top (1 - ``sparsity``), never reviving weights outside ``within``."""
    check_choice("aggregation", rule, AGGREGATIONS)
    if rule == "score_average":
        if not scores:
            raise ValueError("score_average needs the weak models' scores")
        if sparsity is None:
            raise ValueError("score_average needs the round's sparsity")
        avg = {n: torch.stack([s[n].float() for s in scores]).mean(0) for n in scores[0]}
        if within is not None:
            avg = {n: torch.where(within.masks[n], v, torch.full_like(v, -math.inf)) for n, v in avg.items()}
        return make_masks(avg, sparsity, "global")
    if not masks:
        raise ValueError("no weak masks to aggregate (need at least 1)")
    n = len(masks)
    if rule == "union":
        return MaskSet.union(list(masks))
    if rule == "intersection":
        return MaskSet.intersection(list(masks))
    k = n // 2 + 1 if k is None else check_int("vote k", k, minimum=1, maximum=n)
    return MaskSet.vote(list(masks), k)


def mask_cosine(a: MaskSet, b: MaskSet) -> float:
    """Cosine similarity of the two keep-masks as 0/1 vectors: |a and b| / sqrt(|a| |b|)."""
    inter = sum(int((m & b.masks[n]).sum()) for n, m in a.masks.items())
    denom = math.sqrt(a.n_active * b.n_active)
    return inter / denom if denom else 1.0


def mask_similarity(masks: Sequence[MaskSet], reference: MaskSet | None = None) -> dict[str, float]:
    """Mean pairwise IoU and cosine among ``masks``, and their mean IoU/cosine with ``reference``."""
    out: dict[str, float] = {}
    pairs = [(i, j) for i in range(len(masks)) for j in range(i + 1, len(masks))]
    if pairs:
        out["pairwise_iou"] = sum(masks[i].iou(masks[j]) for i, j in pairs) / len(pairs)
        out["pairwise_cosine"] = sum(mask_cosine(masks[i], masks[j]) for i, j in pairs) / len(pairs)
    if reference is not None and masks:
        out["iou_with_reference"] = sum(m.iou(reference) for m in masks) / len(masks)
        out["cosine_with_reference"] = sum(mask_cosine(m, reference) for m in masks) / len(masks)
    return out


@dataclass(frozen=True)
class ISPConfig:
    target_sparsity: float = 0.7
    rounds: int = 3
    n_masks: int = 5
    weak_steps: int = 4
    main_steps: int = 4
    final_steps: int = 20
    aggregation: str = "union"
    vote_k: int | None = None
    lr_jitter: float = 2.0  # each weak learner's lr is lr * jitter**u, u ~ U(-1, 1)
    subset_fraction: float = 0.5  # each weak learner sees this share of the training items
    stop_gap: float = 0.05  # stop the rounds when the mask is within this of the target
    lr: float = 5e-5
    seed: int = 0
    inherit_optimizer: bool = True  # auxiliary copies start from the main model's AdamW state
    weight_soup: bool = False  # also average the auxiliary weights into the main model (paper's soup variant)

    def __post_init__(self) -> None:
        check_sparsity(self.target_sparsity, "target_sparsity")
        check_int("rounds", self.rounds, minimum=1)
        check_int("n_masks (weak-mask count)", self.n_masks, minimum=1)
        check_int("weak_steps", self.weak_steps, minimum=0)
        check_int("main_steps", self.main_steps, minimum=0)
        check_int("final_steps", self.final_steps, minimum=0)
        check_choice("aggregation", self.aggregation, AGGREGATIONS)
        check_range("lr_jitter", self.lr_jitter, 1.0)
        check_range("subset_fraction", self.subset_fraction, 0.0, 1.0, low_inclusive=False)


@dataclass
class ISPResult:
    masks: MaskSet
    cost: Cost
    history: list[dict[str, Any]] = field(default_factory=list)
    weak_masks_last_round: list[MaskSet] = field(default_factory=list)


def _steps(stats: Any, fallback: int) -> int:
    return int(getattr(stats, "steps", fallback))


def _train(
    trainer: Trainer, model: torch.nn.Module, masks: MaskSet, steps: int, *, state: dict | None, **kwargs: Any
) -> Any:
    """``trainer.train`` handing over an optimizer state when the trainer accepts one."""
    if state is not None:
        kwargs["optimizer_state"] = state
    try:
        return trainer.train(model, masks, steps, **kwargs)
    except TypeError as exc:
        if "optimizer_state" not in str(exc):
            raise
        kwargs.pop("optimizer_state")
        return trainer.train(model, masks, steps, **kwargs)


def instant_soup_pruning(
    model: torch.nn.Module, targets: Targets, trainer: Trainer, config: ISPConfig
) -> ISPResult:
    """Run ISP in place on ``model`` (weights end fine-tuned and sparse); returns masks, cost, history."""
    cfg = config
    start = time.perf_counter()
    cost = Cost()
    masks = MaskSet.ones(targets.shapes(model))
    aux = copy.deepcopy(model)
    rng = random.Random(cfg.seed)
    n_items = len(trainer.train_items(cfg.seed))
    history: list[dict[str, Any]] = []
    weak: list[MaskSet] = []
    main_opt: dict[str, Any] | None = None
    for r in range(1, cfg.rounds + 1):
        if cfg.target_sparsity - masks.sparsity() < cfg.stop_gap:
            break
        stats = _train(
            trainer, model, masks, cfg.main_steps, seed=cfg.seed * 1000 + r, lr=cfg.lr, state=main_opt
        )
        main_opt = getattr(stats, "optimizer_state", None) or main_opt
        cost.main_steps += _steps(stats, cfg.main_steps)
        round_sparsity = 1.0 - (1.0 - cfg.target_sparsity) ** (r / cfg.rounds)
        main_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        weak, weak_scores = [], []
        soup = (
            {k: torch.zeros_like(v, dtype=torch.float32) for k, v in main_state.items()}
            if cfg.weight_soup
            else None
        )
        for j in range(cfg.n_masks):
            rewind(aux, main_state)
            seed = cfg.seed * 1000 + r * 100 + j + 1
            lr = cfg.lr * cfg.lr_jitter ** rng.uniform(-1.0, 1.0)
            k = max(1, round(cfg.subset_fraction * n_items))
            subset = sorted(random.Random(seed).sample(range(n_items), k)) if k < n_items else None
            inherited = main_opt if cfg.inherit_optimizer else None
            stats = _train(
                trainer, aux, masks, cfg.weak_steps, seed=seed, lr=lr, subset=subset, state=inherited
            )
            cost.weak_steps += _steps(stats, cfg.weak_steps)
            if soup is not None:
                for key, value in aux.state_dict().items():
                    soup[key] += value.float() / cfg.n_masks
            scores = masked_magnitude(aux, targets, masks)
            weak.append(make_masks(scores, round_sparsity, "global"))
            if cfg.aggregation == "score_average":
                weak_scores.append({n: s.clamp_min(0) for n, s in scores.items()})
        new = aggregate_masks(
            weak, cfg.aggregation, k=cfg.vote_k, scores=weak_scores, sparsity=round_sparsity, within=masks
        )
        masks = MaskSet({n: new.masks[n] & masks.masks[n] for n in masks.names})
        if soup is not None:  # weight soup: the main model takes the auxiliaries' mean weights
            model.load_state_dict({k: v.to(main_state[k].dtype) for k, v in soup.items()})
        masks.apply(model)
        sim = mask_similarity(weak)
        history.append(
            {"round": r, "round_sparsity": round_sparsity, "mask_sparsity": masks.sparsity(), **sim}
        )
        log.info(
            "ISP round %d: weak masks at %.3f, aggregated (%s) %.3f",
            r,
            round_sparsity,
            cfg.aggregation,
            masks.sparsity(),
        )
    if masks.sparsity() < cfg.target_sparsity - 1e-9:
        masks = make_masks(masked_magnitude(model, targets, masks), cfg.target_sparsity, "global")
        masks.apply(model)
    stats = _train(trainer, model, masks, cfg.final_steps, seed=cfg.seed, lr=cfg.lr, state=main_opt)
    cost.final_steps += _steps(stats, cfg.final_steps)
    cost.seconds = time.perf_counter() - start
    history.append({"round": "final", "mask_sparsity": masks.sparsity(), "final_steps": cfg.final_steps})
    del aux
    return ISPResult(masks, cost, history, weak)
