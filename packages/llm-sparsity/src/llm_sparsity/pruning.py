"""Masks from scores and the pruning schedules: one-shot, gradual (cubic) and iterative with rewinding."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import torch

from llm_sparsity.scores import compute_scores
from llm_sparsity.targets import Targets, tied_aliases
from research_systems_core.masks import MaskSet
from research_systems_core.validation import check_choice, check_int, check_range

__all__ = [
    "ALLOCATIONS",
    "cubic_sparsity",
    "gradual_magnitude_pruning",
    "iterative_magnitude_pruning",
    "make_masks",
    "parse_nm",
    "prune",
    "rewind",
]

log = logging.getLogger(__name__)
ALLOCATIONS = ("global", "layer", "row", "nm")
TrainFn = Callable[[torch.nn.Module, MaskSet, int], None]  # (model, masks, steps) -> trains in place


def check_sparsity(value: float, name: str = "sparsity") -> float:
    """Sparsity must be in [0, 1)."""
    return check_range(name, value, 0.0, 1.0, high_inclusive=False)


def parse_nm(nm: str | tuple[int, int]) -> tuple[int, int]:
    """``"2:4"`` or ``(2, 4)`` -> (n kept, m group size), with 0 < n < m."""
    if isinstance(nm, str):
        parts = nm.split(":")
        if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
            raise ValueError(f"N:M pattern must look like '2:4', got {nm!r}")
        n, m = int(parts[0]), int(parts[1])
    else:
        n, m = (int(v) for v in nm)
    if not 0 < n < m:
        raise ValueError(f"N:M pattern needs 0 < N < M (keep N of every M weights), got {n}:{m}")
    return n, m


def _t(x: torch.Tensor) -> torch.Tensor:
    return x.t().contiguous()


def make_masks(
    scores: Mapping[str, torch.Tensor],
    sparsity: float | None = None,
    allocation: str = "global",
    *,
    nm: str | tuple[int, int] | None = None,
    transposed: frozenset[str] | set[str] = frozenset(),
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> MaskSet:
    """Keep the highest scores. ``global``/``layer``/``row``: exactly round(s*n) pruned per
    allocation unit (all targets / each tensor / each output row); ``nm``: keep N of every M
    consecutive weights along the input dimension. ``transposed`` names weights stored (in, out);
    ``transform`` (e.g. ``torch.abs``) is applied to one tensor at a time, so raw weights can be
    passed without a copy of all scores."""
    check_choice("allocation", allocation, ALLOCATIONS)
    if allocation == "nm":
        if nm is None:
            raise ValueError("allocation 'nm' needs nm='N:M', for example '2:4'")
        n, m = parse_nm(nm)
        oriented = {k: (_t(v) if k in transposed else v) for k, v in scores.items()}
        for k, v in oriented.items():
            if v.shape[-1] % m:
                raise ValueError(
                    f"N:M with M={m} needs the input dimension of {k} ({v.shape[-1]}) divisible by {m}"
                )
        masks = MaskSet.from_nm(oriented, n, m, transform=transform)
    else:
        if sparsity is None:
            raise ValueError(f"allocation {allocation!r} needs a sparsity in [0, 1)")
        check_sparsity(sparsity)
        if allocation == "row":
            oriented = {k: (_t(v) if k in transposed else v) for k, v in scores.items()}
            masks = MaskSet.from_scores(oriented, sparsity, allocation="row", transform=transform)
        else:
            return MaskSet.from_scores(dict(scores), sparsity, allocation=allocation, transform=transform)
    return MaskSet({k: (_t(v) if k in transposed else v) for k, v in masks.masks.items()})


def prune(
    model: torch.nn.Module,
    targets: Targets,
    sparsity: float | None,
    method: str = "magnitude",
    allocation: str = "global",
    *,
    nm: str | tuple[int, int] | None = None,
    **score_kwargs: Any,
) -> MaskSet:
    """One-shot pruning in place: score, build the masks, zero the pruned weights; returns the masks."""
    if method == "magnitude":  # memory-light: rank |w| tensor by tensor, no copy of all magnitudes
        scores = {n: p.detach() for n, p in targets.parameters(model).items()}
        transform = torch.abs
    else:
        scores = compute_scores(method, model, targets, **score_kwargs)
        transform = None
    masks = make_masks(
        scores, sparsity, allocation, nm=nm, transposed=targets.transposed, transform=transform
    )
    masks.apply(model)
    return masks


def cubic_sparsity(step: int, *, final: float, start: int, end: int, initial: float = 0.0) -> float:
    """Zhu & Gupta's gradual schedule s_t = s_f + (s_i - s_f) (1 - (t - t0) / (t1 - t0))^3, clamped."""
    if end <= start:
        return final if step >= start else initial
    progress = min(max((step - start) / (end - start), 0.0), 1.0)
    return final + (initial - final) * (1.0 - progress) ** 3


def gradual_magnitude_pruning(
    model: torch.nn.Module,
    targets: Targets,
    final_sparsity: float,
    train: TrainFn,
    *,
    total_steps: int,
    prune_every: int = 10,
    start_fraction: float = 0.0,
    end_fraction: float = 0.75,
) -> tuple[MaskSet, list[dict[str, float]]]:
    """Gradual magnitude pruning: train ``prune_every`` steps at a time, raising the sparsity along
    the cubic schedule between ``start_fraction`` and ``end_fraction`` of ``total_steps``; pruned
    weights stay at zero (``train`` must keep ``masks``). Returns the final masks and the schedule."""
    check_sparsity(final_sparsity, "final_sparsity")
    check_int("total_steps", total_steps, minimum=1)
    check_int("prune_every", prune_every, minimum=1)
    start, end = int(start_fraction * total_steps), int(end_fraction * total_steps)
    masks = MaskSet.ones(targets.shapes(model))
    history = []
    step = 0
    while step < total_steps:
        target = cubic_sparsity(step, final=final_sparsity, start=start, end=end)
        if target > masks.sparsity() + 1e-12:
            masks = _magnitude_within(model, targets, masks, target)
            masks.apply(model)
        history.append({"step": step, "sparsity": masks.sparsity()})
        n = min(prune_every, total_steps - step)
        train(model, masks, n)
        step += n
    if masks.sparsity() < final_sparsity - 1e-9:
        masks = _magnitude_within(model, targets, masks, final_sparsity)
        masks.apply(model)
    history.append({"step": step, "sparsity": masks.sparsity()})
    return masks, history


def _magnitude_within(model: torch.nn.Module, targets: Targets, masks: MaskSet, sparsity: float) -> MaskSet:
    """Global magnitude masks at ``sparsity`` that never revive an already pruned weight."""
    scores = compute_scores("magnitude", model, targets)
    scores = {n: torch.where(masks.masks[n], s, torch.full_like(s, -1.0)) for n, s in scores.items()}
    return make_masks(scores, sparsity, "global")


def rewind(model: torch.nn.Module, state: Mapping[str, torch.Tensor], masks: MaskSet | None = None) -> None:
    """Copy ``state`` (pre-trained values) back into the model, then re-apply ``masks``.

    Tied parameters (an ``lm_head`` that is the input embedding) are written once, through their
    canonical name, whichever of their names ``state`` uses."""
    params = dict(model.named_parameters(remove_duplicate=False))
    buffers = dict(model.named_buffers(remove_duplicate=False))
    aliases = tied_aliases(model)
    done: set[str] = set()
    with torch.no_grad():
        for name, value in state.items():
            target = params.get(name, buffers.get(name))
            if target is None:
                raise KeyError(f"rewind state names {name!r}, which the model does not have")
            canonical = aliases.get(name, name)
            if canonical in done:
                continue
            done.add(canonical)
            target.copy_(value)
    if masks is not None:
        masks.apply(model)


def iterative_magnitude_pruning(
    model: torch.nn.Module,
    targets: Targets,
    target_sparsity: float,
    train: TrainFn,
    *,
    rounds: int,
    steps_per_round: int,
    rewind_state: Mapping[str, torch.Tensor] | None = None,
) -> tuple[MaskSet, list[dict[str, float]]]:
    """IMP / lottery tickets with rewinding: each round trains ``steps_per_round`` steps with the
    current mask, prunes the same fraction of the remaining weights (global magnitude, reaching
    ``target_sparsity`` after ``rounds``), and rewinds the survivors to ``rewind_state`` (default: the
    weights at the start, i.e. the pre-trained model). Returns the final masks and per-round log."""
    check_sparsity(target_sparsity, "target_sparsity")
    check_int("rounds", rounds, minimum=1)
    check_int("steps_per_round", steps_per_round, minimum=0)
    if rewind_state is None:
        rewind_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    masks = MaskSet.ones(targets.shapes(model))
    history = []
    for r in range(1, rounds + 1):
        train(model, masks, steps_per_round)
        sparsity = 1.0 - (1.0 - target_sparsity) ** (r / rounds)
        masks = _magnitude_within(model, targets, masks, sparsity)
        rewind(model, rewind_state, masks)
        history.append({"round": r, "sparsity": masks.sparsity(), "train_steps": steps_per_round})
        log.info("IMP round %d/%d: sparsity %.3f", r, rounds, masks.sparsity())
    return masks, history
