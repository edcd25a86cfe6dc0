"""SMC-Bench-style task scores for any model family (issue 16), from a user's JSONL/CSV file.

- ``gen`` arithmetic reasoning: greedy generation by a causal LM, the first number in the
  generated text compared with the numeric answer (exact match up to 1e-4 relative).
- ``reg`` protein thermostability-style regression: a sequence-classification model with one
  output (``num_labels=1``), Spearman correlation of its predictions with the targets (scipy).
- ``bleu`` translation: a seq2seq model's greedy translations scored with sacrebleu's corpus BLEU.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from llm_sparsity.userdata import column, read_records
from research_systems_core.errors import UserError

__all__ = ["arithmetic_exact_match", "first_number", "read_pairs", "spearman_regression", "translation_bleu"]

_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")


def first_number(text: str) -> float | None:
    """The first number in ``text`` (thousands separators allowed), or None."""
    match = _NUMBER.search(text)
    return float(match.group().replace(",", "")) if match else None


def read_pairs(
    path: str | Path, input_column: str, target_column: str, *, numeric: bool
) -> tuple[list[str], list[Any]]:
    """(inputs, targets) of a task file; numeric targets must parse as numbers (else one clear line)."""
    rows = read_records(path)
    inputs = [str(v) for v in column(rows, input_column, path, "--input-column")]
    targets = column(rows, target_column, path, "--target-column")
    if not numeric:
        return inputs, [str(t) for t in targets]
    out = []
    for i, t in enumerate(targets, 1):
        try:
            out.append(float(str(t).replace(",", "")))
        except ValueError:
            raise UserError(
                f"{path}, row {i}: answer column {target_column!r} is not numeric ({t!r})"
            ) from None
    return inputs, out


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def _generate(
    model: torch.nn.Module, tokenizer: Any, prompts: Sequence[str], max_new_tokens: int
) -> list[str]:
    outs = []
    for prompt in prompts:  # one at a time: no padding side questions, exact greedy decoding
        enc = tokenizer(prompt, return_tensors="pt")
        ids = enc["input_ids"].to(_device(model))
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=pad)  # fmt: skip
        new = gen[0] if model.config.is_encoder_decoder else gen[0, ids.shape[1] :]
        outs.append(tokenizer.decode(new, skip_special_tokens=True))
    return outs


def arithmetic_exact_match(
    model: torch.nn.Module,
    tokenizer: Any,
    questions: Sequence[str],
    answers: Sequence[float],
    max_new_tokens: int = 16,
) -> float:
    """Share of questions whose generated answer's first number equals the reference."""
    hits = 0
    for text, gold in zip(_generate(model, tokenizer, questions, max_new_tokens), answers, strict=True):
        pred = first_number(text)
        hits += int(pred is not None and abs(pred - gold) <= 1e-4 * max(1.0, abs(gold)))
    return hits / len(questions)


@torch.no_grad()
def spearman_regression(
    model: torch.nn.Module,
    tokenizer: Any,
    sequences: Sequence[str],
    targets: Sequence[float],
    batch_size: int = 16,
) -> float:
    """Spearman correlation of a one-output model's predictions with the targets."""
    from scipy.stats import spearmanr

    if getattr(model.config, "num_labels", None) != 1:
        raise ValueError(
            f"regression needs a model with one output (num_labels=1), got {model.config.num_labels}"
        )
    preds = []
    for i in range(0, len(sequences), batch_size):
        enc = tokenizer(
            list(sequences[i : i + batch_size]), padding=True, truncation=True, return_tensors="pt"
        )
        batch = {k: v.to(_device(model)) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        preds.append(model(**batch).logits[:, 0].float().cpu())
    rho = spearmanr(torch.cat(preds).numpy(), list(targets)).statistic
    return float(rho) if rho == rho else 0.0  # constant predictions: no correlation


def translation_bleu(
    model: torch.nn.Module,
    tokenizer: Any,
    sources: Sequence[str],
    references: Sequence[str],
    max_new_tokens: int = 32,
) -> float:
    """sacrebleu corpus BLEU of greedy translations against one reference each."""
    import sacrebleu

    if not getattr(model.config, "is_encoder_decoder", False):
        raise ValueError(f"translation needs a seq2seq (encoder-decoder) model, got {type(model).__name__}")
    hyps = _generate(model, tokenizer, sources, max_new_tokens)
    return float(sacrebleu.corpus_bleu(hyps, [list(references)]).score)
