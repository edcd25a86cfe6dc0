"""Weight averaging: uniform/weighted averages, interpolation, greedy and greedy-interpolation soups.

Soup candidates are evaluated with ``torch.func.functional_call`` on one module, never by
reloading state dicts into fresh modules.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from research_systems_core.validation import check_int, check_range

__all__ = [
    "SoupResult",
    "average_state_dicts",
    "functional_evaluator",
    "greedy_interpolation_soup",
    "greedy_soup",
    "interpolate_state_dicts",
]

StateDict = Mapping[str, torch.Tensor]
Evaluate = Callable[[StateDict], float]


def _check_compatible(state_dicts: Sequence[StateDict]) -> None:
    if not state_dicts:
        raise ValueError("need at least one state dict")
    first = state_dicts[0]
    for i, sd in enumerate(state_dicts[1:], 1):
        missing = [k for k in first if k not in sd]
        extra = [k for k in sd if k not in first]
        if missing or extra:
            key = (missing or extra)[0]
            where = "missing from" if missing else "only in"
            raise ValueError(f"state dicts disagree: key {key!r} is {where} state dict #{i}")
        for key, t in first.items():
            if sd[key].shape != t.shape:
                raise ValueError(
                    f"state dicts disagree on {key!r}: shape {tuple(t.shape)} in #0, {tuple(sd[key].shape)} in #{i}"
                )


def _is_float(t: torch.Tensor) -> bool:
    return t.is_floating_point() or t.is_complex()


@torch.no_grad()
def average_state_dicts(
    state_dicts: Sequence[StateDict], weights: Sequence[float] | None = None
) -> dict[str, torch.Tensor]:
    """Weighted average of floating tensors (weights normalised to sum 1; uniform by default).

    Integer and boolean buffers (BatchNorm's ``num_batches_tracked``...) are copied from the first.
    """
    state_dicts = list(state_dicts)
    _check_compatible(state_dicts)
    if weights is None:
        weights = [1.0] * len(state_dicts)
    weights = [check_range(f"weights[{i}]", w, 0.0) for i, w in enumerate(weights)]
    if len(weights) != len(state_dicts):
        raise ValueError(f"got {len(weights)} weights for {len(state_dicts)} state dicts")
    total = sum(weights)
    if total <= 0:
        raise ValueError("weights must not all be zero")
    coeffs = [w / total for w in weights]
    out: dict[str, torch.Tensor] = {}
    for key, ref in state_dicts[0].items():
        if not _is_float(ref):
            out[key] = ref.detach().clone()
            continue
        acc_dtype = torch.float64 if ref.dtype == torch.float64 else torch.float32
        acc = torch.zeros(ref.shape, dtype=acc_dtype, device=ref.device)
        for c, sd in zip(coeffs, state_dicts, strict=True):
            if c:
                acc.add_(sd[key].detach().to(acc_dtype), alpha=c)
        out[key] = acc.to(ref.dtype)
    return out


@torch.no_grad()
def interpolate_state_dicts(a: StateDict, b: StateDict, alpha: float) -> dict[str, torch.Tensor]:
    """``(1 - alpha) * a + alpha * b`` for floating tensors; other tensors copied from ``a``."""
    alpha = check_range("alpha", alpha, 0.0, 1.0)
    _check_compatible([a, b])
    out: dict[str, torch.Tensor] = {}
    for key, ta in a.items():
        tb = b[key]
        if not _is_float(ta) or alpha == 0.0:
            out[key] = ta.detach().clone()
        elif alpha == 1.0:
            out[key] = tb.detach().clone().to(ta.dtype)
        else:
            out[key] = ta.detach().mul(1.0 - alpha).add_(tb.detach().to(ta.dtype), alpha=alpha)
    return out


def functional_evaluator(module: nn.Module, metric_fn: Callable[[Callable[..., Any]], float]) -> Evaluate:
    """Turn ``metric_fn(forward) -> float`` into ``evaluate(state_dict) -> float``.

    ``forward(*args, **kwargs)`` runs ``module`` with the given state dict through
    ``torch.func.functional_call`` under ``torch.no_grad()``; the module's own weights are untouched.
    """

    def evaluate(state_dict: StateDict) -> float:
        def forward(*args: Any, **kwargs: Any) -> Any:
            return torch.func.functional_call(module, dict(state_dict), args, kwargs)

        with torch.no_grad():
            value = float(metric_fn(forward))
        if math.isnan(value):
            raise ValueError("the evaluation function returned NaN")
        return value

    return evaluate


@dataclasses.dataclass
class SoupResult:
    """The soup's weights and score, which ingredients went in, and every decision taken."""

    state_dict: dict[str, torch.Tensor]
    score: float
    accepted: list[int]
    history: list[dict[str, Any]]
    ingredient_scores: list[float]


def _ranked(
    ingredients: Sequence[StateDict], evaluate: Evaluate, scores: Sequence[float] | None
) -> tuple[list[float], list[int]]:
    if not ingredients:
        raise ValueError("need at least one ingredient")
    _check_compatible(list(ingredients))
    if scores is None:
        scores = [evaluate(sd) for sd in ingredients]
    elif len(scores) != len(ingredients):
        raise ValueError(f"got {len(scores)} scores for {len(ingredients)} ingredients")
    scores = [float(s) for s in scores]
    order = sorted(range(len(ingredients)), key=lambda i: (-scores[i], i))
    return scores, order


def greedy_soup(
    ingredients: Sequence[StateDict], evaluate: Evaluate, scores: Sequence[float] | None = None
) -> SoupResult:
    """Model-soups greedy rule: in order of own score, add an ingredient to the uniform average
    only if the soup's score strictly improves."""
    scores, order = _ranked(ingredients, evaluate, scores)
    members = [order[0]]
    soup = {k: v.detach().clone() for k, v in ingredients[order[0]].items()}
    best = scores[order[0]]
    history: list[dict[str, Any]] = [{"ingredient": order[0], "score": best, "accepted": True}]
    for i in order[1:]:
        candidate = interpolate_state_dicts(soup, ingredients[i], 1.0 / (len(members) + 1))
        score = evaluate(candidate)
        accepted = score > best
        history.append({"ingredient": i, "score": score, "accepted": accepted})
        if accepted:
            soup, best = candidate, score
            members.append(i)
    return SoupResult(soup, best, members, history, scores)


def greedy_interpolation_soup(
    ingredients: Sequence[StateDict],
    evaluate: Evaluate,
    grid: int | Sequence[float] = 11,
    scores: Sequence[float] | None = None,
) -> SoupResult:
    """Graph Ladling's greedy interpolation soup.

    Ingredients in order of own score; for each next one, search ``alpha`` on the grid for
    ``(1 - alpha) * soup + alpha * ingredient`` (alpha > 0); the best alpha (ties: the smaller) is
    accepted if its score is not below the current soup's, so the soup's score never drops.
    """
    if isinstance(grid, int):
        grid = check_int("grid", grid, minimum=2)
        alphas = [i / (grid - 1) for i in range(grid)]
    else:
        alphas = sorted({check_range("grid value", float(a), 0.0, 1.0) for a in grid})
        if len(alphas) < 2:
            raise ValueError(f"grid needs at least 2 distinct points in [0, 1], got {list(grid)}")
    scores, order = _ranked(ingredients, evaluate, scores)
    members = [order[0]]
    soup = {k: v.detach().clone() for k, v in ingredients[order[0]].items()}
    best = scores[order[0]]
    history: list[dict[str, Any]] = [{"ingredient": order[0], "alpha": 1.0, "score": best, "accepted": True}]
    for i in order[1:]:
        curve: list[tuple[float, float]] = [(0.0, best)]
        top_alpha, top_score, top_sd = 0.0, -math.inf, soup
        for alpha in alphas:
            if alpha == 0.0:
                continue
            candidate = interpolate_state_dicts(soup, ingredients[i], alpha)
            score = evaluate(candidate)
            curve.append((alpha, score))
            if score > top_score:
                top_alpha, top_score, top_sd = alpha, score, candidate
        accepted = top_score >= best
        history.append(
            {"ingredient": i, "alpha": top_alpha, "score": top_score, "accepted": accepted, "curve": curve}
        )
        if accepted:
            soup, best = top_sd, top_score
            members.append(i)
    return SoupResult(soup, best, members, history, scores)
