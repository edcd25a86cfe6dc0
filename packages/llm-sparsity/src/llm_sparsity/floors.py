"""No-model floors of a multiple-choice retrieval task (issue 16): what a score means.

- ``word_overlap``: the candidate with the highest Jaccard overlap of lower-cased word sets with
  the question (no model at all);
- ``mean_input_embeddings``: cosine of the mean *input* token embeddings (the model's embedding
  table, no transformer block, no position embeddings);
- ``chance``: 1 / number of candidates.
Ties count 1/k (as the model's own scoring does), so a floor is never flattered by tie-breaking.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch

from llm_sparsity.probe import episode_accuracy
from llm_sparsity.tasks import MCItem

__all__ = ["jaccard", "no_model_floors"]

_WORDS = re.compile(r"[a-z0-9]+")


def jaccard(a: str, b: str) -> float:
    """|A and B| / |A or B| of the lower-cased word sets (0 when both are empty)."""
    wa, wb = set(_WORDS.findall(a.lower())), set(_WORDS.findall(b.lower()))
    union = wa | wb
    return len(wa & wb) / len(union) if union else 0.0


@torch.no_grad()
def _mean_embeddings(model: torch.nn.Module, tokenizer: Any, texts: Sequence[str]) -> torch.Tensor:
    table = model.get_input_embeddings()
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=128, return_tensors="pt")
    emb = table(enc["input_ids"].to(table.weight.device)).float()
    mask = enc["attention_mask"].to(emb.device).unsqueeze(-1).float()
    return torch.nn.functional.normalize((emb * mask).sum(1) / mask.sum(1).clamp_min(1.0), dim=-1)


def no_model_floors(items: Sequence[MCItem], model: torch.nn.Module | None = None, tokenizer: Any = None
                    ) -> dict[str, float]:  # fmt: skip
    """Accuracy of the floors on ``items`` (``mean_input_embeddings`` only with a model)."""
    if not items:
        raise ValueError("no items to score the floors on")
    golds = [it.gold for it in items]
    overlap = [torch.tensor([jaccard(it.question, c) for c in it.candidates]) for it in items]
    out = {
        "chance": sum(1.0 / len(it.candidates) for it in items) / len(items),
        "word_overlap": episode_accuracy(overlap, golds),
    }
    if model is not None:
        scores = []
        for it in items:
            e = _mean_embeddings(model, tokenizer, [it.question, *it.candidates])
            scores.append(e[1:] @ e[0])
        out["mean_input_embeddings"] = episode_accuracy(scores, golds)
    out["best_floor"] = max(v for k, v in out.items())
    return out
