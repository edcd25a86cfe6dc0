"""Evaluating an encoder on retrieval tasks: a closed-form ridge head and multiple-choice accuracy.

The head maps question embeddings onto the embedding of their gold equation (ridge regression,
fitted in closed form, so every pruned model gets the same, deterministic head training); a
question then picks the candidate with the highest cosine similarity to its projection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from llm_sparsity.models import TokenizedTexts, embed, tokenize
from llm_sparsity.tasks import Episode, Level, MCItem, RetrievalTask
from research_systems_core.validation import check_positive

__all__ = ["RetrievalSuite", "RidgeProbe", "episode_accuracy"]


@dataclass
class RidgeProbe:
    weight: torch.Tensor  # (d, d)

    @classmethod
    def fit(cls, x: torch.Tensor, y: torch.Tensor, l2: float = 1.0) -> RidgeProbe:
        """argmin_W ||x W - y||^2 + l2 ||W||^2 = (x^T x + l2 I)^-1 x^T y (float64 solve)."""
        check_positive("l2", l2)
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x and y need the same number of rows, got {x.shape[0]} and {y.shape[0]}")
        xd = x.double()
        gram = xd.T @ xd + l2 * torch.eye(x.shape[1], dtype=torch.float64)
        return cls(torch.linalg.solve(gram, xd.T @ y.double()).float())

    def project(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.normalize(x @ self.weight, dim=-1)


def episode_accuracy(scores: Sequence[torch.Tensor], golds: Sequence[int], tol: float = 1e-6) -> float:
    """Mean accuracy with random tie-breaking in expectation: a tie of the gold with k-1 others counts 1/k."""
    if not scores:
        raise ValueError("no episodes to score")
    total = 0.0
    for s, g in zip(scores, golds, strict=True):
        best = s.max()
        if s[g] >= best - tol:
            total += 1.0 / int((s >= best - tol).sum())
    return total / len(scores)


class RetrievalSuite:
    """A retrieval task at several difficulty levels and seeds, tokenized once, evaluated on any encoder.

    ``evaluate(model)`` embeds every question and candidate equation once, then per seed and level
    fits the ridge head (on that level's share of the training problems) and scores that seed's
    episodes; one row per (seed, level)."""

    def __init__(
        self,
        task: RetrievalTask,
        tokenizer: Any,
        levels: Sequence[Level],
        *,
        seeds: Sequence[int] = (0,),
        l2: float = 1.0,
        batch_size: int = 64,
        max_length: int = 96,
    ) -> None:
        if not levels:
            raise ValueError("the difficulty suite needs at least one level")
        if not seeds:
            raise ValueError("the difficulty suite needs at least one seed")
        self.task, self.levels, self.seeds, self.l2 = task, list(levels), list(seeds), l2
        self.episodes: dict[tuple[int, str], list[Episode]] = {
            (seed, lv.name): task.episodes(lv, seed) for seed in self.seeds for lv in self.levels
        }
        empty = sorted({name for (_, name), eps in self.episodes.items() if not eps})
        if empty:
            raise ValueError(f"levels {empty} have no evaluation problems in this task")
        strings = sorted(
            {c for eps in self.episodes.values() for e in eps for c in e.candidates} | set(task.templates)
        )
        self.candidate_index = {c: i for i, c in enumerate(strings)}
        questions = [p.question for p in task.train + task.eval]
        self.questions: TokenizedTexts = tokenize(tokenizer, questions, batch_size, max_length)
        self.candidates: TokenizedTexts = tokenize(tokenizer, strings, batch_size, max_length)

    def encode(self, model: torch.nn.Module) -> torch.Tensor:
        """Embeddings of every question, then every candidate equation."""
        return torch.cat([embed(model, self.questions), embed(model, self.candidates)])

    def evaluate(self, model: torch.nn.Module, seeds: Sequence[int] | None = None) -> list[dict[str, Any]]:
        return self.evaluate_encoded(self.encode(model), seeds=seeds)

    def evaluate_encoded(
        self, encoded: torch.Tensor, seeds: Sequence[int] | None = None
    ) -> list[dict[str, Any]]:
        q, c = encoded[: self.questions.n], encoded[self.questions.n :]
        n_train = len(self.task.train)
        q_train, q_eval = q[:n_train], q[n_train:]
        gold_train = torch.tensor([self.candidate_index[p.template] for p in self.task.train])
        rows = []
        for seed in self.seeds if seeds is None else seeds:
            probes: dict[float, RidgeProbe] = {}
            for level in self.levels:
                if level.train_fraction not in probes:
                    idx = torch.tensor(self.task.train_subset(level.train_fraction, seed))
                    probes[level.train_fraction] = RidgeProbe.fit(q_train[idx], c[gold_train[idx]], self.l2)
                proj = probes[level.train_fraction].project(q_eval)
                eps = self.episodes[(seed, level.name)]
                scores = [c[[self.candidate_index[s] for s in e.candidates]] @ proj[e.question] for e in eps]
                rows.append(
                    {
                        "seed": seed,
                        "level": level.name,
                        "axis": level.axis,
                        "value": level.value,
                        "accuracy": episode_accuracy(scores, [e.gold for e in eps]),
                        "chance": level.chance,
                        "n_eval": len(eps),
                    }
                )
        return rows


class MCSuite:
    """Zero-shot multiple-choice retrieval at several levels and seeds: every distinct text is
    embedded once per model; a question picks the most cosine-similar candidate.

    ``task`` needs ``items(level, seed, split) -> list[MCItem]`` (e.g. ``BodyRetrievalTask``)."""

    def __init__(
        self,
        task: Any,
        tokenizer: Any,
        levels: Sequence[Any],
        *,
        seeds: Sequence[int] = (0,),
        split: str = "eval",
        batch_size: int = 64,
        max_length: int = 128,
    ) -> None:
        if not levels:
            raise ValueError("the difficulty suite needs at least one level")
        if not seeds:
            raise ValueError("the difficulty suite needs at least one seed")
        self.levels, self.seeds = list(levels), list(seeds)
        self.items: dict[tuple[int, str], list[MCItem]] = {
            (seed, lv.name): task.items(lv, seed, split) for seed in self.seeds for lv in self.levels
        }
        strings = sorted(
            {t for its in self.items.values() for it in its for t in (it.question, *it.candidates)}
        )
        self.index = {t: i for i, t in enumerate(strings)}
        self.texts: TokenizedTexts = tokenize(tokenizer, strings, batch_size, max_length)

    def encode(self, model: torch.nn.Module) -> torch.Tensor:
        return embed(model, self.texts)

    def evaluate(self, model: torch.nn.Module, seeds: Sequence[int] | None = None) -> list[dict[str, Any]]:
        return self.evaluate_encoded(self.encode(model), seeds=seeds)

    def evaluate_encoded(
        self, encoded: torch.Tensor, seeds: Sequence[int] | None = None
    ) -> list[dict[str, Any]]:
        rows = []
        for seed in self.seeds if seeds is None else seeds:
            for level in self.levels:
                items = self.items[(seed, level.name)]
                scores = [
                    encoded[[self.index[c] for c in it.candidates]] @ encoded[self.index[it.question]]
                    for it in items
                ]
                rows.append(
                    {
                        "seed": seed,
                        "level": level.name,
                        "axis": level.axis,
                        "value": level.value,
                        "accuracy": episode_accuracy(scores, [it.gold for it in items]),
                        "chance": level.chance,
                        "n_eval": len(items),
                    }
                )
        return rows
