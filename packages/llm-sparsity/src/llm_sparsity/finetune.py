"""A short contrastive fine-tuning loop for the equation-retrieval tasks (the whole encoder learns).

Loss: cross-entropy over the cosine similarities (divided by a temperature) between a question and
the candidate equations of its training episode. Pruned weights are handled by the transfer mode.
"""

from __future__ import annotations

import copy
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from llm_sparsity.models import embed, mean_pool, tokenize
from llm_sparsity.probe import episode_accuracy
from llm_sparsity.tasks import BodyLevel, BodyRetrievalTask, Level, MCItem, RetrievalTask
from llm_sparsity.transfer import attach_transfer
from research_systems_core.masks import MaskSet
from research_systems_core.validation import check_int, check_positive

__all__ = ["FinetuneConfig", "FinetuneStats", "MCItem", "RetrievalTrainer", "items_from_task", "mc_accuracy"]

DEFAULT_TRAIN_LEVEL = Level("train", 0.5, n_candidates=4, near_miss=0.5)


def items_from_task(task: RetrievalTask, level: Level, seed: int, split: str = "train") -> list[MCItem]:
    """The task's episodes at ``level`` as multiple-choice items (``split``: train or eval problems)."""
    problems = task.train if split == "train" else task.eval
    return [
        MCItem(problems[e.question].question, e.candidates, e.gold)
        for e in task.episodes(level, seed, problems=problems)
    ]


def mc_accuracy(
    model: torch.nn.Module,
    tokenizer: Any,
    items: Sequence[MCItem],
    batch_size: int = 64,
    max_length: int = 96,
) -> float:
    """Accuracy of picking the candidate most cosine-similar to the question (ties split evenly)."""
    if not items:
        raise ValueError("no multiple-choice items to evaluate")
    strings = sorted({c for it in items for c in it.candidates})
    index = {s: i for i, s in enumerate(strings)}
    q = embed(model, tokenize(tokenizer, [it.question for it in items], batch_size, max_length))
    c = embed(model, tokenize(tokenizer, strings, batch_size, max_length))
    scores = [c[[index[s] for s in it.candidates]] @ q[i] for i, it in enumerate(items)]
    return episode_accuracy(scores, [it.gold for it in items])


@dataclass(frozen=True)
class FinetuneConfig:
    batch_size: int = 8
    lr: float = 5e-5
    temperature: float = 0.05
    weight_decay: float = 0.0
    max_length: int = 128
    train_level: Level | BodyLevel = DEFAULT_TRAIN_LEVEL

    def __post_init__(self) -> None:
        check_int("batch_size", self.batch_size, minimum=1)
        check_positive("lr", self.lr)
        check_positive("temperature", self.temperature)


@dataclass
class FinetuneStats:
    steps: int = 0
    seconds: float = 0.0
    losses: list[float] = field(default_factory=list)
    optimizer_state: dict[str, Any] | None = None  # AdamW state after the last step

    def add(self, other: FinetuneStats) -> None:
        self.steps += other.steps
        self.seconds += other.seconds
        self.losses += other.losses


class RetrievalTrainer:
    """Fine-tunes an encoder on multiple-choice items; ``train(model, masks, steps, ...)``.

    ``items`` is a list of :class:`MCItem`, or a :class:`BodyRetrievalTask` / :class:`RetrievalTask`
    (its training items at ``config.train_level``, redrawn per seed)."""

    def __init__(
        self,
        items: Sequence[MCItem] | RetrievalTask | BodyRetrievalTask,
        tokenizer: Any,
        config: FinetuneConfig | None = None,
    ) -> None:
        self.source, self.tokenizer = items, tokenizer
        self.config = config or FinetuneConfig()
        if not isinstance(items, (RetrievalTask, BodyRetrievalTask)) and not items:
            raise ValueError("no training items")

    def train_items(self, seed: int) -> list[MCItem]:
        if isinstance(self.source, RetrievalTask):
            return items_from_task(self.source, self.config.train_level, seed, "train")
        if isinstance(self.source, BodyRetrievalTask):
            return self.source.items(self.config.train_level, seed, "train")
        return list(self.source)

    def _encode(self, model: torch.nn.Module, texts: Sequence[str]) -> torch.Tensor:
        enc = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.config.max_length, return_tensors="pt"
        )
        batch = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
        return torch.nn.functional.normalize(mean_pool(model, batch), dim=-1)

    def loss(self, model: torch.nn.Module, items: Sequence[MCItem]) -> torch.Tensor:
        """Cross-entropy over temperature-scaled cosines of each question with its candidates."""
        strings = sorted({c for it in items for c in it.candidates})
        index = {s: i for i, s in enumerate(strings)}
        q = self._encode(model, [it.question for it in items])
        c = self._encode(model, strings)
        logits = [
            c[[index[s] for s in it.candidates]] @ q[i] / self.config.temperature
            for i, it in enumerate(items)
        ]
        return torch.stack(
            [
                torch.nn.functional.cross_entropy(lg[None], torch.tensor([it.gold]))
                for lg, it in zip(logits, items, strict=True)
            ]
        ).mean()

    def train(
        self,
        model: torch.nn.Module,
        masks: MaskSet | None,
        steps: int,
        *,
        seed: int = 0,
        mode: str = "sparse",
        pretrained: Mapping[str, torch.Tensor] | None = None,
        lr: float | None = None,
        subset: Sequence[int] | None = None,
        optimizer_state: dict[str, Any] | None = None,
    ) -> FinetuneStats:
        """``steps`` AdamW steps on seeded random batches of training episodes (``subset``: indices
        of the training items to draw from). ``masks`` with ``mode`` (see :mod:`transfer`)."""
        check_int("steps", steps, minimum=0)
        stats = FinetuneStats()
        if steps == 0:
            return stats
        start = time.perf_counter()
        items = self.train_items(seed)
        if subset is not None:
            items = [items[i] for i in subset]
        rng = random.Random(seed)
        opt = torch.optim.AdamW(
            model.parameters(), lr=lr or self.config.lr, weight_decay=self.config.weight_decay
        )
        if optimizer_state is not None:  # a copy: several learners may start from the same state
            opt.load_state_dict(copy.deepcopy(optimizer_state))
            for group in opt.param_groups:
                group["lr"] = lr or self.config.lr
        handle = attach_transfer(model, masks, opt, mode, pretrained) if masks is not None else None
        was_training = model.training
        model.train()
        try:
            for _ in range(steps):
                batch = rng.sample(items, min(self.config.batch_size, len(items)))
                loss = self.loss(model, batch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                stats.losses.append(float(loss.detach()))
                stats.steps += 1
        finally:
            if handle is not None:
                handle.remove()
            model.train(was_training)
        stats.seconds = time.perf_counter() - start
        stats.optimizer_state = opt.state_dict()
        return stats
