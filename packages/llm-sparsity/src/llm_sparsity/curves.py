"""Sparsity-performance curves and the essential sparsity (tolerance rule and knee detectors)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from llm_sparsity.pruning import check_sparsity, prune, rewind
from llm_sparsity.targets import Targets
from research_systems_core.logs import progress
from research_systems_core.masks import MaskSet
from research_systems_core.validation import check_choice, check_finite, check_positive

__all__ = [
    "KNEE_METHODS",
    "EssentialSparsity",
    "essential_sparsity",
    "knee_kneedle",
    "knee_two_segment",
    "sparsity_curve",
    "tolerance_sparsity",
]

log = logging.getLogger(__name__)
KNEE_METHODS = ("two_segment", "kneedle")


def _xy(sparsities: Sequence[float], scores: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(sparsities, dtype=float)
    y = np.asarray(scores, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"sparsities and scores must be 1-D of the same length, got {x.shape} and {y.shape}")
    if len(x) < 3:
        raise ValueError(f"a curve needs at least 3 points, got {len(x)}")
    check_finite("scores", y)
    order = np.argsort(x, kind="stable")
    return x[order], y[order]


def tolerance_sparsity(sparsities: Sequence[float], scores: Sequence[float], delta: float = 0.01) -> float:
    """Largest sparsity such that every point up to it stays within ``delta`` of the dense score
    (the score at the lowest sparsity, normally 0)."""
    check_positive("delta", delta, strict=False)
    x, y = _xy(sparsities, scores)
    best = x[0]
    for xi, yi in zip(x, y, strict=True):
        if yi < y[0] - delta:
            break
        best = xi
    return float(best)


def knee_two_segment(sparsities: Sequence[float], scores: Sequence[float], resolution: int = 200) -> float:
    """Knee as the breakpoint of the best continuous two-segment linear fit (least squares)
    y = a + b x + c max(0, x - k), searched over a fine grid strictly inside the sparsity range."""
    x, y = _xy(sparsities, scores)
    candidates = np.unique(np.concatenate([x[1:-1], np.linspace(x[0], x[-1], resolution)[1:-1]]))
    best_k, best_sse = float(x[1]), np.inf
    for k in candidates:
        design = np.stack([np.ones_like(x), x, np.maximum(0.0, x - k)], axis=1)
        coef, *_ = np.linalg.lstsq(design, y, rcond=None)
        sse = float(((design @ coef - y) ** 2).sum())
        if sse < best_sse - 1e-15:
            best_k, best_sse = float(k), sse
    return best_k


def knee_kneedle(sparsities: Sequence[float], scores: Sequence[float]) -> float:
    """Kneedle (Satopaa et al. 2011) for a decreasing curve: normalise both axes to [0, 1] and take
    the grid point furthest above the chord, i.e. maximising y_n - (1 - x_n)."""
    x, y = _xy(sparsities, scores)
    span_y = y.max() - y.min()
    if span_y == 0:
        return float(x[-1])
    xn = (x - x[0]) / (x[-1] - x[0])
    yn = (y - y.min()) / span_y
    return float(x[int(np.argmax(yn - (1.0 - xn)))])


@dataclass(frozen=True)
class EssentialSparsity:
    tolerance: float
    knee: float
    knee_method: str
    delta: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "tolerance": self.tolerance,
            "knee": self.knee,
            "knee_method": self.knee_method,
            "delta": self.delta,
        }


def essential_sparsity(
    sparsities: Sequence[float], scores: Sequence[float], delta: float = 0.01, knee: str = "two_segment"
) -> EssentialSparsity:
    """Both estimates of the dropping point of a sparsity-performance curve."""
    check_choice("knee method", knee, KNEE_METHODS)
    finder = knee_two_segment if knee == "two_segment" else knee_kneedle
    return EssentialSparsity(
        tolerance_sparsity(sparsities, scores, delta), finder(sparsities, scores), knee, float(delta)
    )


def sparsity_curve(
    model: torch.nn.Module,
    targets: Targets,
    sparsities: Sequence[float],
    evaluate: Callable[[torch.nn.Module, MaskSet], dict[str, float]],
    *,
    methods: Sequence[str] = ("magnitude", "random"),
    allocation: str = "global",
    finetune: Callable[[torch.nn.Module, MaskSet], None] | None = None,
    seed: int = 0,
    score_kwargs: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """One row per (method, sparsity): restore the pre-trained weights (a fresh copy for every
    point), prune one-shot, optionally fine-tune, and evaluate. ``evaluate`` returns a dict of
    metrics. The model is left holding its pre-trained weights."""
    if not sparsities:
        raise ValueError("the sparsity grid is empty")
    for s in sparsities:
        check_sparsity(s)
    pretrained = {k: v.detach().clone() for k, v in model.state_dict().items()}
    rows = []
    cells = [(m, s) for m in methods for s in sparsities]
    try:
        for method, sparsity in progress(cells, desc="sparsity curve"):
            rewind(model, pretrained)
            generator = torch.Generator().manual_seed(seed)
            masks = prune(
                model, targets, sparsity, method, allocation, generator=generator, **(score_kwargs or {})
            )
            if finetune is not None:
                finetune(model, masks)
            metrics = evaluate(model, masks)
            rows.append(
                {
                    "method": method,
                    "sparsity": float(sparsity),
                    "actual_sparsity": masks.sparsity(),
                    **metrics,
                }
            )
            log.info("%s sparsity %.2f: %s", method, sparsity, metrics)
    finally:
        rewind(model, pretrained)
    return rows
