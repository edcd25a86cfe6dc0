"""Sparsity-performance curves of any language model on a user's evaluation file.

``--eval`` specs: ``ppl:FILE`` (perplexity, score = dense ppl / ppl, so 1.0 is dense and a drop
of 0.01 is 1% worse perplexity), ``mc:FILE`` (log-likelihood multiple choice accuracy),
``cls:FILE`` (accuracy of the model's own classification head on ``text``/``label`` columns),
and the SMC-style scores of :mod:`llm_sparsity.task_scores` on ``input``/``target`` columns:
``gen:FILE`` (arithmetic by generation, exact numeric match), ``reg:FILE`` (Spearman of a
one-output regression head), ``bleu:FILE`` (sacrebleu BLEU of a seq2seq model).
Every grid point restores the targeted weights from one saved copy (the only extra memory,
whatever the grid length), prunes with the method, and evaluates.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from llm_sparsity.calibration import load_eval_text
from llm_sparsity.evaluation import mc_accuracy, perplexity, read_mc_file
from llm_sparsity.llm import PruneSpec, prune_llm
from llm_sparsity.targets import Targets
from llm_sparsity.userdata import column, read_records
from research_systems_core.errors import UserError

__all__ = ["EVAL_KINDS", "classification_accuracy", "llm_curve", "make_evaluator", "parse_eval_spec"]

log = logging.getLogger(__name__)
EVAL_KINDS = ("ppl", "mc", "cls", "gen", "reg", "bleu")


def parse_eval_spec(spec: str) -> tuple[str, str]:
    """``"ppl:FILE"`` -> ("ppl", "FILE"); the kind must be one of :data:`EVAL_KINDS`."""
    kind, sep, source = str(spec).partition(":")
    if not sep or kind not in EVAL_KINDS or not source:
        raise ValueError(
            f"--eval must look like ppl:FILE, mc:FILE or cls:FILE (ppl also takes wikitext2), got {spec!r}"
        )
    if not (kind == "ppl" and source in ("wikitext2", "c4")) and not Path(source).is_file():
        raise FileNotFoundError(f"--eval file {source} does not exist")
    return kind, source


@torch.no_grad()
def classification_accuracy(
    model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], labels: Sequence[int], batch_size: int = 32
) -> float:
    """Accuracy of the model's sequence-classification head (argmax of its logits)."""
    device = next(model.parameters()).device
    correct = 0
    for i in range(0, len(texts), batch_size):
        enc = tokenizer(list(texts[i : i + batch_size]), padding=True, truncation=True, return_tensors="pt")
        logits = model(
            **{k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        ).logits
        gold = torch.tensor(labels[i : i + batch_size], device=device)
        correct += int((logits.argmax(-1) == gold).sum())
    return correct / len(texts)


def _cls_data(path: str, text_column: str, label_column: str) -> tuple[list[str], list[int]]:
    rows = read_records(path)
    texts = [str(t) for t in column(rows, text_column, path, "--text-column")]
    raw = column(rows, label_column, path, "--label-column")
    try:
        labels = [int(v) for v in raw]
    except (TypeError, ValueError):
        raise UserError(f"{path}: label column {label_column!r} must hold integer class ids") from None
    return texts, labels


def make_evaluator(
    kind: str,
    source: str,
    tokenizer: Any,
    *,
    text_column: str = "text",
    label_column: str = "label",
    context_column: str = "question",
    choices_column: str = "choices",
    seq_len: int | None = None,
    max_windows: int | None = None,
    input_column: str = "input",
    target_column: str = "target",
) -> Callable[[torch.nn.Module], float]:
    """A function model -> score (higher is better) for one ``--eval`` spec; data read once."""
    if kind == "ppl":
        text = load_eval_text(source, text_column=text_column)
        state: dict[str, float] = {}

        def score_ppl(model: torch.nn.Module) -> float:
            ppl = perplexity(model, tokenizer, text, seq_len=seq_len, max_windows=max_windows)["perplexity"]
            state.setdefault("dense", ppl)
            return state["dense"] / ppl

        return score_ppl
    if kind == "mc":
        examples = read_mc_file(source, context_column=context_column, choices_column=choices_column,
                                label_column=label_column)  # fmt: skip
        return lambda model: mc_accuracy(model, tokenizer, examples)["acc"]
    if kind in ("gen", "reg", "bleu"):
        from llm_sparsity import task_scores

        inputs, targets = task_scores.read_pairs(source, input_column, target_column, numeric=kind != "bleu")
        score = {"gen": task_scores.arithmetic_exact_match, "reg": task_scores.spearman_regression,
                 "bleu": task_scores.translation_bleu}[kind]  # fmt: skip
        return lambda model: score(model, tokenizer, inputs, targets)
    texts, labels = _cls_data(source, text_column, label_column)
    return lambda model: classification_accuracy(model, tokenizer, texts, labels)


def llm_curve(
    model: torch.nn.Module,
    targets: Targets,
    grid: Sequence[float],
    methods: Sequence[str],
    evaluate: Callable[[torch.nn.Module], float],
    *,
    calibration: torch.Tensor | None = None,
    tokenizer: Any = None,
    device: torch.device | str = "cpu",
    seed: int = 0,
) -> list[dict[str, Any]]:
    """Rows (method, sparsity, score); the dense point first. The model ends dense again."""
    for method in methods:
        PruneSpec(method, 0.5)  # validate every method before any work
    saved = {n: p.detach().clone() for n, p in targets.parameters(model).items()}
    rows = [{"method": "dense", "sparsity": 0.0, "score": evaluate(model)}]
    params = targets.parameters(model)
    try:
        for method in methods:
            for s in grid:
                if s == 0:
                    continue
                prune_llm(model, targets, PruneSpec(method, s), calibration=calibration, tokenizer=tokenizer,
                          device=device, seed=seed)  # fmt: skip
                rows.append({"method": method, "sparsity": s, "score": evaluate(model)})
                log.info("%s at %.2f: %.4f", method, s, rows[-1]["score"])
                with torch.no_grad():
                    for n, p in params.items():
                        p.copy_(saved[n])
    finally:
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(saved[n])
    return rows
