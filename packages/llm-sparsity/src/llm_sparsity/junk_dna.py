"""The Junk DNA study: sparsity curves per task-difficulty level, normalised to chance and dense.

A level's normalised score is (accuracy - chance) / (dense accuracy - chance): 1 means no loss
from pruning, 0 means chance. The hypothesis predicts the normalised drop grows with difficulty
and that sparse-to-dense fine-tuning recovers easy levels but not hard ones. The quantization
control applies round-to-nearest weight quantization to the same weights instead of pruning.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from llm_sparsity.finetune import RetrievalTrainer
from llm_sparsity.probe import MCSuite, RetrievalSuite
from llm_sparsity.pruning import check_sparsity, prune, rewind
from llm_sparsity.targets import Targets
from research_systems_core.logs import progress
from research_systems_core.validation import check_int

__all__ = [
    "difficulty_rank",
    "difficulty_trend",
    "finetune_recovery",
    "normalise",
    "quantization_control",
    "quantize_weights",
    "run_difficulty_curves",
]

log = logging.getLogger(__name__)
Suite = MCSuite | RetrievalSuite


def difficulty_rank(axis: str, value: float) -> float:
    """Larger = harder: more options, more similar distractors, more operators, less training data,
    fewer in-context shots, shorter query context (``context`` value 0 means the full question)."""
    if axis in ("train_data", "train_fraction", "k_shot"):
        return -value
    if axis == "context":
        return 0.0 if value == 0 else 1.0 / value
    return value


def _pruned_encoding(
    model: torch.nn.Module,
    targets: Targets,
    suite: Suite,
    method: str,
    sparsity: float,
    seed: int,
    score_kwargs: Mapping[str, Any],
) -> tuple[torch.Tensor, float]:
    masks = prune(
        model, targets, sparsity, method, generator=torch.Generator().manual_seed(seed), **score_kwargs
    )
    return suite.encode(model), masks.sparsity()


def run_difficulty_curves(
    model: torch.nn.Module,
    targets: Targets,
    suite: Suite,
    sparsities: Sequence[float],
    methods: Sequence[str] = ("magnitude", "random"),
    *,
    score_kwargs: Mapping[str, Any] | None = None,
    deterministic_methods: Sequence[str] = ("magnitude", "wanda", "snip"),
    on_row: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Rows (seed, method, sparsity, level, accuracy, chance, ...) for every grid point; a fresh
    copy of the pre-trained weights per point. Methods in ``deterministic_methods`` give one mask for
    all seeds, so their encoder is run once per sparsity; random pruning is redrawn per seed."""
    if not sparsities:
        raise ValueError("the sparsity grid is empty")
    for s in sparsities:
        check_sparsity(s)
    pretrained = {k: v.detach().clone() for k, v in model.state_dict().items()}
    rows: list[dict[str, Any]] = []
    cells = []
    for method in methods:
        for s in sparsities:
            if s == 0.0 and method != methods[0]:
                continue  # dense is the same for every method
            seed_groups = [None] if (method in deterministic_methods or s == 0.0) else list(suite.seeds)
            cells += [(method, s, g) for g in seed_groups]
    try:
        for method, s, seed in progress(cells, desc="difficulty curves"):
            rewind(model, pretrained)
            encoded, actual = _pruned_encoding(
                model, targets, suite, method, s, seed or 0, score_kwargs or {}
            )
            seeds = suite.seeds if seed is None else [seed]
            for row in suite.evaluate_encoded(encoded, seeds=seeds):
                row = {
                    "method": "dense" if s == 0.0 else method,
                    "sparsity": float(s),
                    "actual_sparsity": actual,
                    **row,
                }
                rows.append(row)
                if on_row is not None:
                    on_row(row)
    finally:
        rewind(model, pretrained)
    return normalise(rows)


def normalise(rows: list[dict[str, Any]], dense_method: str = "dense") -> list[dict[str, Any]]:
    """Add ``normalised`` = (acc - chance) / (dense acc - chance) and ``drop`` = 1 - normalised, per
    seed and level, the dense reference being the row of ``dense_method`` (or sparsity 0)."""
    refs = [r for r in rows if r["method"] == dense_method] or [r for r in rows if r["sparsity"] == 0.0]
    dense = {(r["seed"], r["level"]): r["accuracy"] for r in refs}
    out = []
    for r in rows:
        ref = dense.get((r["seed"], r["level"]))
        r = dict(r)
        if ref is not None and ref - r["chance"] > 1e-9:
            r["normalised"] = (r["accuracy"] - r["chance"]) / (ref - r["chance"])
            r["drop"] = 1.0 - r["normalised"]
        else:
            r["normalised"] = r["drop"] = None
        out.append(r)
    return out


def _ranks(values: Sequence[float]) -> np.ndarray:
    """Ranks with ties sharing their average rank."""
    v = np.asarray(values, dtype=float)
    order = np.argsort(v, kind="stable")
    ranks = np.empty(len(v))
    ranks[order] = np.arange(len(v), dtype=float)
    for value in np.unique(v):
        tied = v == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def _spearman(x: Sequence[float], y: Sequence[float]) -> float:
    rx, ry = _ranks(x), _ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def difficulty_trend(
    rows: Sequence[Mapping[str, Any]], method: str, sparsity_range: tuple[float, float]
) -> dict[str, dict[str, Any]]:
    """Per axis: mean drop per level (over seeds and sparsities in the range, both inclusive), the
    levels ordered from easy to hard, and the Spearman correlation of drop with difficulty."""
    lo, hi = sparsity_range
    acc: dict[str, dict[float, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r["method"] == method and lo - 1e-9 <= r["sparsity"] <= hi + 1e-9 and r.get("drop") is not None:
            acc[r["axis"]][float(r["value"])].append(float(r["drop"]))
    out = {}
    for axis, by_value in acc.items():
        values = sorted(by_value, key=lambda v: difficulty_rank(axis, v))
        drops = [float(np.mean(by_value[v])) for v in values]
        out[axis] = {
            "levels_easy_to_hard": values,
            "mean_drop": drops,
            "spearman_drop_vs_difficulty": _spearman(list(range(len(values))), drops),
            "hardest_minus_easiest": drops[-1] - drops[0],
        }
    return out


def quantize_weights(model: torch.nn.Module, targets: Targets, bits: int) -> None:
    """Symmetric round-to-nearest quantization per output row (``bits`` incl. sign), in place."""
    check_int("bits", bits, minimum=2, maximum=16)
    levels = 2 ** (bits - 1) - 1
    with torch.no_grad():
        for name, p in targets.parameters(model).items():
            w = p.t() if name in targets.transposed else p
            scale = w.abs().amax(dim=1, keepdim=True).clamp_min(1e-12) / levels
            q = torch.round(w / scale).clamp(-levels, levels) * scale
            (p.copy_(q.t()) if name in targets.transposed else p.copy_(q))


def quantization_control(
    model: torch.nn.Module, targets: Targets, suite: Suite, bits: Sequence[int] = (8, 6, 4, 3)
) -> list[dict[str, Any]]:
    """The same difficulty rows for weight quantization instead of pruning (dense = 32-bit)."""
    pretrained = {k: v.detach().clone() for k, v in model.state_dict().items()}
    rows = [{"method": "dense", "bits": 32, "sparsity": 0.0, **r} for r in suite.evaluate(model)]
    try:
        for b in progress(list(bits), desc="quantization"):
            rewind(model, pretrained)
            quantize_weights(model, targets, b)
            rows += [{"method": f"quant{b}", "bits": b, "sparsity": 0.0, **r} for r in suite.evaluate(model)]
    finally:
        rewind(model, pretrained)
    return normalise(rows)


def finetune_recovery(
    model: torch.nn.Module,
    targets: Targets,
    suite: Suite,
    trainer: RetrievalTrainer,
    sparsities: Sequence[float],
    modes: Sequence[str] = ("sparse", "sparse_to_dense"),
    *,
    steps: int = 20,
    seed: int = 0,
    evaluate_before: bool = True,
) -> list[dict[str, Any]]:
    """Prune (global magnitude), fine-tune ``steps`` in each transfer mode, evaluate every level.
    The dense model gets the same fine-tuning, as the reference point for normalisation."""
    pretrained = {k: v.detach().clone() for k, v in model.state_dict().items()}
    pre_targets = {n: pretrained[n] for n in targets.names}
    cells = [(0.0, "dense")] + [(s, m) for s in sparsities if s > 0 for m in modes]
    rows = []
    try:
        for s, mode in progress(cells, desc="fine-tuning recovery"):
            rewind(model, pretrained)
            masks = prune(model, targets, s) if s > 0 else None
            before = suite.evaluate(model, seeds=[seed]) if evaluate_before else None
            stats = trainer.train(model, masks, steps, seed=seed, mode=mode, pretrained=pre_targets)
            after = suite.evaluate(model, seeds=[seed])
            density = float(
                np.mean([float(p.ne(0).float().mean()) for p in targets.parameters(model).values()])
            )
            for b, a in zip(before or [{"accuracy": None}] * len(after), after, strict=True):
                rows.append(
                    {
                        **a,
                        "method": "dense" if s == 0 else mode,
                        "mode": mode,
                        "sparsity": float(s),
                        "accuracy_before": b["accuracy"],
                        "final_density": density,
                        "steps": stats.steps,
                        "seconds": stats.seconds,
                        "final_loss": stats.losses[-1] if stats.losses else None,
                    }
                )
    finally:
        rewind(model, pretrained)
    return normalise(rows)
