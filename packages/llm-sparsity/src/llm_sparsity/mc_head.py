"""Encoder multiple choice through a trained multiple-choice head (SMC-Bench's protocol for encoders).

Each (context, option) pair is encoded jointly (``[CLS] context [SEP] option [SEP]``) by the
encoder of ``transformers.AutoModelForMultipleChoice`` (e.g. ``BertForMultipleChoice``: pooled
[CLS] -> dropout -> one linear score); the options' scores go through a softmax and the head and
encoder are fine-tuned with cross-entropy on the task's training rows (masks kept by the transfer
mode of the shared fine-tuning loop). Accuracy = argmax of the scores. Items may have different
numbers of options: missing options are padded and their scores set to -inf.
This replaces the cosine-similarity scoring of encoders on ``csqa``/``race``/``winogrande``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from llm_sparsity.evaluation import MCExample
from llm_sparsity.finetune import FinetuneConfig
from llm_sparsity.smc_tasks import PairTrainer

__all__ = [
    "MCHeadBundle",
    "build_mc_head_task",
    "load_mc_model",
    "mc_head_accuracy",
    "mc_head_loss",
    "mc_logits",
]

MC_TASKS = ("csqa", "race", "winogrande")


def load_mc_model(name_or_path: str, seed: int = 0) -> tuple[torch.nn.Module, Any]:
    """``AutoModelForMultipleChoice`` on the encoder's weights (the head freshly initialised with
    ``seed``, the global RNG untouched) and its tokenizer."""
    from transformers import AutoModelForMultipleChoice

    from llm_sparsity.models import load_tokenizer, resolve_source

    source, _ = resolve_source(name_or_path)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForMultipleChoice.from_pretrained(source)
    return model.eval(), load_tokenizer(name_or_path)


def _encode(
    tokenizer: Any, items: Sequence[MCExample], max_length: int
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Inputs of shape (items, options, tokens) and a (items, options) mask of real options."""
    n_opt = max(len(it.choices) for it in items)
    firsts, seconds, real = [], [], []
    for it in items:
        pad = n_opt - len(it.choices)
        firsts += [it.context] * n_opt
        seconds += list(it.choices) + [""] * pad
        real.append([True] * len(it.choices) + [False] * pad)
    enc = tokenizer(
        firsts, seconds, padding=True, truncation="longest_first", max_length=max_length, return_tensors="pt"
    )
    inputs = {
        k: v.view(len(items), n_opt, -1)
        for k, v in enc.items()
        if k in ("input_ids", "attention_mask", "token_type_ids")
    }
    return inputs, torch.tensor(real)


def mc_logits(
    model: torch.nn.Module, tokenizer: Any, items: Sequence[MCExample], max_length: int = 128
) -> torch.Tensor:
    """(items, options) scores; padded options get -inf."""
    if not items:
        raise ValueError("no multiple-choice items to score")
    inputs, real = _encode(tokenizer, items, max_length)
    device = next(model.parameters()).device
    logits = model(**{k: v.to(device) for k, v in inputs.items()}).logits.float()
    return logits.masked_fill(~real.to(logits.device), float("-inf"))


def mc_head_loss(model: torch.nn.Module, tokenizer: Any, items: Sequence[MCExample]) -> torch.Tensor:
    """Cross-entropy of the softmax over each item's option scores."""
    labels = torch.tensor([it.label for it in items])
    logits = mc_logits(model, tokenizer, items)
    return torch.nn.functional.cross_entropy(logits, labels.to(logits.device))


@torch.no_grad()
def mc_head_accuracy(model: torch.nn.Module, tokenizer: Any, items: Sequence[MCExample], batch_size: int = 16
                     ) -> float:  # fmt: skip
    """Share of items whose highest-scoring option is the right one (the model left in its mode)."""
    if not items:
        raise ValueError("no multiple-choice items to evaluate")
    was_training = model.training
    model.eval()
    hits = torch.zeros((), dtype=torch.long)
    try:
        for i in range(0, len(items), batch_size):
            chunk = items[i : i + batch_size]
            pred = mc_logits(model, tokenizer, chunk).argmax(-1).cpu()
            hits += (pred == torch.tensor([it.label for it in chunk])).sum()
    finally:
        model.train(was_training)
    return int(hits) / len(items)


class _MCPairs(PairTrainer):
    """The shared fine-tuning loop over :class:`MCExample` rows with the multiple-choice loss."""

    def __init__(self, items: Sequence[MCExample], tokenizer: Any, config: FinetuneConfig) -> None:
        super().__init__(list(items), tokenizer, mc_head_loss, config)


@dataclass
class MCHeadBundle:
    """An SMC task on its own multiple-choice model (the runner prunes and fine-tunes that model)."""

    name: str
    trainer: PairTrainer
    eval_items: list[MCExample]
    tokenizer: Any
    model: torch.nn.Module

    def evaluate(self, model: torch.nn.Module) -> float:
        return mc_head_accuracy(model, self.tokenizer, self.eval_items)


def _filled(item: Any) -> MCExample:
    """A WinoGrande row as options = the sentence with its blank filled by each option."""
    return MCExample("", tuple(item.sentence.replace("_", o, 1) for o in item.options), item.label)


def _examples(
    name: str, data_dir: Path, n_train: int, n_eval: int
) -> tuple[list[MCExample], list[MCExample]]:
    from llm_sparsity.smc_causal import _mc_examples, _winogrande_items

    if name == "winogrande":  # the dataset's own format: each option fills the blank of the sentence
        wino = _winogrande_items(Path(data_dir), n_train, n_eval)
        if wino is not None:
            return [_filled(it) for it in wino[0]], [_filled(it) for it in wino[1]]
    return _mc_examples(name, Path(data_dir), n_train, n_eval)


def build_mc_head_task(name: str, data_dir: Path, model: str, *, n_train: int, n_eval: int, batch_size: int,
                       lr: float) -> MCHeadBundle:  # fmt: skip
    """``csqa``/``race``/``winogrande`` for an encoder ``model`` (directory or hub id) through a
    trained multiple-choice head; rows as for causal LMs (``<data-dir>/<task>/train|test`` with
    ``question``, ``choices``, ``label``, or the saved / hub dataset)."""
    from llm_sparsity.smc_bench import TaskUnavailable

    if name not in MC_TASKS:
        raise ValueError(f"task {name!r} has no multiple-choice head; choose one of {', '.join(MC_TASKS)}")
    train, test = _examples(name, Path(data_dir), n_train, n_eval)
    if not train or not test:
        raise TaskUnavailable(f"task {name!r}: no training or no evaluation items")
    net, tok = load_mc_model(model)
    trainer = _MCPairs(train, tok, FinetuneConfig(batch_size=batch_size, lr=lr))
    return MCHeadBundle(name, trainer, list(test), tok, net)
