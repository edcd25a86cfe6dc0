"""SMC-Bench tasks that need their own model family: protein regression and translation.

Each reads ``<data-dir>/<task>/`` with a ``model/`` directory (a Hugging Face checkpoint with
its tokenizer: a one-output sequence regressor such as an ESM protein LM for ``protein``, a
seq2seq model such as mBART/T5 for ``translation``) and ``train``/``test`` files (CSV or JSONL;
``protein``: ``sequence``, ``target``; ``translation``: ``source``, ``target``). Scored as the
benchmark scores them: Spearman correlation (protein thermostability) and sacrebleu BLEU.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from llm_sparsity.finetune import FinetuneConfig, RetrievalTrainer
from llm_sparsity.task_scores import read_pairs, spearman_regression, translation_bleu

__all__ = ["OwnModelBundle", "PairTrainer", "build_pair_task"]

Pair = tuple[str, Any]


class PairTrainer(RetrievalTrainer):
    """The fine-tuning loop of :class:`RetrievalTrainer` (AdamW, masks kept by the transfer
    mode, seeded batches, optimizer state in and out) with a task's own loss on (input, target) pairs."""

    def __init__(self, items: Sequence[Pair], tokenizer: Any, loss: Callable[..., torch.Tensor],
                 config: FinetuneConfig) -> None:  # fmt: skip
        super().__init__(list(items), tokenizer, config)
        self._loss = loss

    def loss(self, model: torch.nn.Module, items: Sequence[Pair]) -> torch.Tensor:
        return self._loss(model, self.tokenizer, items)


def regression_loss(model: torch.nn.Module, tokenizer: Any, items: Sequence[Pair]) -> torch.Tensor:
    """Mean squared error of the one-output head."""
    enc = tokenizer([s for s, _ in items], padding=True, truncation=True, return_tensors="pt")
    out = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits[:, 0]
    return torch.nn.functional.mse_loss(out.float(), torch.tensor([float(t) for _, t in items]))


def seq2seq_loss(model: torch.nn.Module, tokenizer: Any, items: Sequence[Pair]) -> torch.Tensor:
    """Teacher-forced cross-entropy of the target sentences (padding ignored)."""
    enc = tokenizer([s for s, _ in items], padding=True, truncation=True, return_tensors="pt")
    labels = tokenizer([str(t) for _, t in items], padding=True, truncation=True, return_tensors="pt")[
        "input_ids"
    ]
    pad = tokenizer.pad_token_id
    labels = labels.masked_fill(labels == pad, -100) if pad is not None else labels
    return model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], labels=labels).loss


@dataclass
class OwnModelBundle:
    """A task ready to run on its own model (the runner prunes and fine-tunes that model)."""

    name: str
    trainer: PairTrainer
    eval_pairs: list[Pair]
    tokenizer: Any
    model: torch.nn.Module
    score: Callable[..., float]

    def evaluate(self, model: torch.nn.Module) -> float:
        return self.score(
            model, self.tokenizer, [s for s, _ in self.eval_pairs], [t for _, t in self.eval_pairs]
        )


def _split_file(folder: Path, split: str) -> Path:
    for suffix in (".csv", ".jsonl", ".json"):
        if (folder / f"{split}{suffix}").is_file():
            return folder / f"{split}{suffix}"
    raise FileNotFoundError(f"{folder} has no {split}.csv or {split}.jsonl")


def build_pair_task(name: str, data_dir: Path, *, n_train: int, n_eval: int, batch_size: int, lr: float
                    ) -> OwnModelBundle:  # fmt: skip
    """``protein`` or ``translation`` from ``<data_dir>/<name>/`` (see the module docstring)."""
    from llm_sparsity.models import load_model

    folder = Path(data_dir) / name
    if not (folder / "model").is_dir():
        raise FileNotFoundError(
            f"task {name!r} needs {folder}/model (a Hugging Face checkpoint: "
            f"{'a one-output ESM regressor' if name == 'protein' else 'a seq2seq model such as mBART or T5'}) "
            f"and {folder}/train.csv|jsonl, {folder}/test.csv|jsonl"
        )
    columns = ("sequence", "target") if name == "protein" else ("source", "target")
    numeric = name == "protein"
    train = list(zip(*read_pairs(_split_file(folder, "train"), *columns, numeric=numeric), strict=True))[
        :n_train
    ]
    test = list(zip(*read_pairs(_split_file(folder, "test"), *columns, numeric=numeric), strict=True))[
        :n_eval
    ]
    task = "sequence-classification" if name == "protein" else "seq2seq"
    model, tok = load_model(str(folder / "model"), task, device="cpu", dtype="fp32")
    loss = regression_loss if name == "protein" else seq2seq_loss
    trainer = PairTrainer(train, tok, loss, FinetuneConfig(batch_size=batch_size, lr=lr))
    score = spearman_regression if name == "protein" else translation_bleu
    return OwnModelBundle(name, trainer, test, tok, model, score)
