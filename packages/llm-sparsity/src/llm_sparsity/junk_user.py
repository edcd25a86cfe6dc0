"""Junk DNA (2310.02277) on a user's own multiple-choice data, along the paper's difficulty axes.

One axis per study, each level a harder or easier version of the same task:

- ``train_fraction``: the share of the target-task training rows the (pruned) model is fine-tuned
  on (mask kept) before evaluation; less data = harder. Needs fine-tuning steps.
- ``options``: the number of answer options per question (the correct one plus the first
  ``n - 1`` distractors of a seeded shuffle); more options = harder.
- ``k_shot``: ``k`` solved training examples put before each question (causal LMs only; the
  in-context setting of the paper's LLM experiments); fewer shots = harder.
- ``context``: the share of each context's words kept (the last ones, so a question at the end
  stays); a shorter context = harder.

Fine-tuning after pruning uses one of the paper's transfer modes (``sparse``: mask kept,
``sparse_to_dense``: pruned weights start at zero and may regrow, ``frozen``: pruned weights back
at their pre-trained values and not updated). ``quant_bits`` adds the quantization control
(round-to-nearest weights of the same layers instead of pruning, zero-shot).

Scores: a causal LM by log-likelihood multiple choice (``acc`` of :func:`evaluation.mc_accuracy`),
an encoder by cosine similarity of mean-pooled embeddings (:func:`finetune.mc_accuracy`). Every
row carries its chance level (mean of 1/options) and, through :func:`junk_dna.normalise`, the
drop normalised to chance and to the dense model at the same level and seed.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from llm_sparsity.evaluation import MCExample
from llm_sparsity.evaluation import mc_accuracy as loglik_mc_accuracy
from llm_sparsity.finetune import FinetuneConfig, RetrievalTrainer
from llm_sparsity.finetune import mc_accuracy as cosine_mc_accuracy
from llm_sparsity.junk_dna import normalise, quantize_weights
from llm_sparsity.pruning import check_sparsity, prune, rewind
from llm_sparsity.targets import Targets
from llm_sparsity.tasks import MCItem
from research_systems_core.logs import progress
from research_systems_core.validation import check_int

__all__ = ["AXES", "MODES", "UserStudy", "check_levels", "level_items", "run_user_junk_dna"]

AXES = ("train_fraction", "options", "k_shot", "context")
MODES = ("sparse", "sparse_to_dense", "frozen")


@dataclass
class UserStudy:
    """The user's data and the study's settings."""

    train: list[MCExample]
    test: list[MCExample]
    axis: str
    levels: list[float]
    causal: bool
    finetune_steps: int = 0
    batch_size: int = 8
    lr: float = 5e-5
    mode: str = "sparse"
    quant_bits: tuple[int, ...] = ()


def check_levels(study: UserStudy) -> None:
    """Every level valid for its axis and the data (ValueError naming the level and what is allowed)."""
    if study.axis not in AXES:
        raise ValueError(f"axis must be one of {', '.join(AXES)}, got {study.axis!r}")
    if not study.levels:
        raise ValueError("--levels is empty")
    if not study.test:
        raise ValueError("no evaluation rows")
    check_int("finetune_steps", study.finetune_steps, minimum=0)
    if study.mode not in MODES:
        raise ValueError(f"transfer mode must be one of {', '.join(MODES)}, got {study.mode!r}")
    for b in study.quant_bits:
        check_int("quant_bits", b, minimum=2, maximum=16)
    if study.quant_bits and study.finetune_steps:
        raise ValueError("the quantization control is zero-shot: give --quant-bits without --finetune-steps")
    for v in study.levels:
        if study.axis == "train_fraction":
            if not 0.0 < v <= 1.0:
                raise ValueError(f"train_fraction level {v} must be in (0, 1]")
            if study.finetune_steps < 1:
                raise ValueError(
                    "axis train_fraction fine-tunes on each fraction: give --finetune-steps >= 1"
                )
            if not study.train:
                raise ValueError("axis train_fraction needs training rows (--train)")
        elif study.axis == "context":
            if not 0.0 < v <= 1.0:
                raise ValueError(f"context level {v} must be in (0, 1] (the share of context words kept)")
        elif study.axis == "options":
            fewest = min(len(ex.choices) for ex in study.test)
            if v != int(v) or not 2 <= v <= fewest:
                raise ValueError(
                    f"options level {v} must be an integer in [2, {fewest}] (the fewest options of a test row)"
                )
        else:
            if not study.causal:
                raise ValueError("axis k_shot (in-context examples) needs a causal language model")
            if v != int(v) or v < 0:
                raise ValueError(f"k_shot level {v} must be a non-negative integer")
            if v > len(study.train):
                raise ValueError(
                    f"k_shot level {int(v)} is larger than the training pool of {len(study.train)} rows"
                )


def _restrict_options(ex: MCExample, n: int, rng: random.Random) -> MCExample:
    distractors = [i for i in range(len(ex.choices)) if i != ex.label]
    rng.shuffle(distractors)
    keep = sorted([ex.label, *distractors[: n - 1]])
    return MCExample(ex.context, tuple(ex.choices[i] for i in keep), keep.index(ex.label))


def _with_shots(ex: MCExample, shots: Sequence[MCExample]) -> MCExample:
    demo = "".join(f"{s.context} {s.choices[s.label]}\n\n" for s in shots)
    return replace(ex, context=demo + ex.context)


def level_items(study: UserStudy, value: float, seed: int) -> list[MCExample]:
    """The evaluation rows at one level (seeded distractor / shot choice)."""
    rng = random.Random(seed)
    if study.axis == "options":
        return [_restrict_options(ex, int(value), rng) for ex in study.test]
    if study.axis == "k_shot":
        return [_with_shots(ex, rng.sample(study.train, int(value))) for ex in study.test]
    if study.axis == "context":
        return [_truncate_context(ex, value) for ex in study.test]
    return list(study.test)


def _truncate_context(ex: MCExample, share: float) -> MCExample:
    words = ex.context.split()
    keep = max(1, round(share * len(words)))
    return replace(ex, context=" ".join(words[len(words) - keep :]))


def _chance(items: Sequence[MCExample]) -> float:
    return sum(1.0 / len(ex.choices) for ex in items) / len(items)


def _score(model: torch.nn.Module, tokenizer: Any, items: Sequence[MCExample], causal: bool) -> float:
    was_training = model.training
    model.eval()
    try:
        if causal:
            return float(loglik_mc_accuracy(model, tokenizer, items)["acc"])
        mc = [MCItem(ex.context, ex.choices, ex.label) for ex in items]
        return float(cosine_mc_accuracy(model, tokenizer, mc))
    finally:
        model.train(was_training)


def _trainer(study: UserStudy, tokenizer: Any) -> RetrievalTrainer:
    cfg = FinetuneConfig(batch_size=study.batch_size, lr=study.lr)
    if study.causal:
        from llm_sparsity.smc_causal import answer_lm_loss
        from llm_sparsity.smc_tasks import PairTrainer

        pairs = [(ex.context, " " + ex.choices[ex.label]) for ex in study.train]
        return PairTrainer(pairs, tokenizer, answer_lm_loss, cfg)
    return RetrievalTrainer([MCItem(ex.context, ex.choices, ex.label) for ex in study.train], tokenizer, cfg)


def _subset(n: int, fraction: float, seed: int) -> list[int]:
    k = max(1, round(fraction * n))
    return sorted(random.Random(seed).sample(range(n), k))


def _cell(model, tokenizer, targets, study, method, sparsity, seed, fraction, pretrained):
    """Prune (or quantize: ``method`` ``quantN``) one copy, fine-tune if asked (on ``fraction`` of
    the training rows, in the study's transfer mode); returns the masks."""
    masks = None
    if method.startswith("quant"):
        quantize_weights(model, targets, int(method[5:]))
        return None
    if sparsity > 0:
        masks = prune(model, targets, sparsity, method, generator=torch.Generator().manual_seed(seed))
    if study.finetune_steps and study.train:
        subset = _subset(len(study.train), fraction, seed)
        pre = {n: pretrained[n] for n in targets.names}
        _trainer(study, tokenizer).train(model, masks, study.finetune_steps, seed=seed, subset=subset,
                                         mode=study.mode, pretrained=pre)  # fmt: skip
    return masks


def run_user_junk_dna(
    model: torch.nn.Module,
    tokenizer: Any,
    targets: Targets,
    study: UserStudy,
    sparsities: Sequence[float],
    method: str = "magnitude",
    seeds: Sequence[int] = (0,),
) -> list[dict[str, Any]]:
    """Rows (axis, value, level, method, sparsity, seed, accuracy, chance, normalised, drop) for
    every sparsity (0 = dense reference) x level x seed, each on a fresh copy of the weights."""
    check_levels(study)
    for s in sparsities:
        check_sparsity(s)
    grid = sorted({0.0, *map(float, sparsities)})
    per_level = study.axis == "train_fraction"
    pretrained = {k: v.detach().clone() for k, v in model.state_dict().items()}
    points = [(method, s) for s in grid] + [(f"quant{b}", 0.0) for b in study.quant_bits]
    level_groups = study.levels if per_level else [None]
    cells = [(seed, m, s, v) for seed in seeds for m, s in points for v in level_groups]
    rows: list[dict[str, Any]] = []
    try:
        for seed, m, s, v in progress(cells, desc="junk-dna (user data)"):
            rewind(model, pretrained)
            masks = _cell(model, tokenizer, targets, study, m, s, seed, v if per_level else 1.0, pretrained)
            for value in [v] if per_level else study.levels:
                items = level_items(study, value, seed)
                rows.append(
                    {
                        "axis": study.axis,
                        "value": float(value),
                        "level": f"{study.axis}={value:g}",
                        "method": "dense" if s == 0 and m == method else m,
                        "sparsity": s,
                        "actual_sparsity": masks.sparsity() if masks is not None else 0.0,
                        "seed": seed,
                        "accuracy": _score(model, tokenizer, items, study.causal),
                        "chance": _chance(items),
                        "n": len(items),
                        "finetune_steps": study.finetune_steps,
                        "mode": study.mode,
                    }
                )
    finally:
        rewind(model, pretrained)
    return normalise(rows)
