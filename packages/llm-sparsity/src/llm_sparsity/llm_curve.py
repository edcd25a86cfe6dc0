"""Sparsity-performance curves of any language model on a user's evaluation file.

``--eval`` specs: ``ppl:FILE`` (perplexity, score = dense ppl / ppl, so 1.0 is dense and a drop
of 0.01 is 1% worse perplexity), ``mc:FILE`` (log-likelihood multiple choice accuracy),
``cls:FILE`` (accuracy of the model's own classification head on ``text``/``label`` columns),
and the SMC-style scores of :mod:`llm_sparsity.task_scores` on ``input``/``target`` columns:
``gen:FILE`` (arithmetic by generation, exact numeric match), ``reg:FILE`` (Spearman of a
one-output regression head), ``bleu:FILE`` (sacrebleu BLEU of a seq2seq model).
Every grid point restores the targeted weights from one saved copy (the only extra memory,
whatever the grid length: global magnitude streams its threshold and writes the zeros in place, so
no mask tensors are held; other methods hold one point's boolean masks), prunes with the method,
and evaluates.

With fine-tuning (:func:`make_trainer`, ``curve --finetune STEPS --train FILE``) each point follows
the Essential Sparsity protocol: prune, fine-tune the sparse model on the task's training rows with
the mask kept, evaluate; the dense point gets the same fine-tuning. All trainable weights change
then, so the saved copy is of the whole model's parameters.
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
from llm_sparsity.streaming import prune_magnitude_in_place
from llm_sparsity.targets import Targets
from llm_sparsity.userdata import column, read_records
from research_systems_core.errors import UserError

__all__ = [
    "EVAL_KINDS",
    "classification_accuracy",
    "llm_curve",
    "make_evaluator",
    "make_trainer",
    "parse_eval_spec",
]

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


def classification_loss(
    model: torch.nn.Module, tokenizer: Any, items: Sequence[tuple[str, int]]
) -> torch.Tensor:
    """Cross-entropy of the model's sequence-classification head."""
    enc = tokenizer([t for t, _ in items], padding=True, truncation=True, return_tensors="pt")
    device = next(model.parameters()).device
    logits = model(
        input_ids=enc["input_ids"].to(device), attention_mask=enc["attention_mask"].to(device)
    ).logits
    return torch.nn.functional.cross_entropy(
        logits.float(), torch.tensor([y for _, y in items], device=device)
    )


def lm_window_loss(model: torch.nn.Module, tokenizer: Any, items: Sequence[torch.Tensor]) -> torch.Tensor:
    """Language-modelling loss of token windows (all of the same length)."""
    ids = torch.stack(list(items)).to(next(model.parameters()).device)
    return model(input_ids=ids, labels=ids).loss


def _training_items(
    kind: str, source: str, tokenizer: Any, columns: dict[str, str], seq_len: int
) -> tuple[list, Callable]:
    from llm_sparsity import smc_tasks, task_scores
    from llm_sparsity.smc_causal import answer_lm_loss

    if kind == "ppl":
        from llm_sparsity.calibration import load_calibration

        windows = load_calibration(source, tokenizer, n_samples=64, seq_len=seq_len, seed=0,
                                   text_column=columns["text_column"])  # fmt: skip
        return list(windows), lm_window_loss
    if kind == "mc":
        examples = read_mc_file(source, context_column=columns["context_column"],
                                choices_column=columns["choices_column"], label_column=columns["label_column"])  # fmt: skip
        return [(ex.context, " " + ex.choices[ex.label]) for ex in examples], answer_lm_loss
    if kind == "cls":
        return list(
            zip(*_cls_data(source, columns["text_column"], columns["label_column"]), strict=True)
        ), classification_loss
    inputs, targets = task_scores.read_pairs(source, columns["input_column"], columns["target_column"],
                                             numeric=kind != "bleu")  # fmt: skip
    if kind == "gen":
        return [(q, f" {a:g}") for q, a in zip(inputs, targets, strict=True)], answer_lm_loss
    loss = smc_tasks.regression_loss if kind == "reg" else smc_tasks.seq2seq_loss
    return list(zip(inputs, targets, strict=True)), loss


def make_trainer(kind: str, source: str, tokenizer: Any, *, batch_size: int = 8, lr: float = 5e-5,
                 seq_len: int = 128, **columns: str) -> Any:  # fmt: skip
    """A trainer (``.train(model, masks, steps, seed=...)``, AdamW, masks kept) on the training rows of
    ``source`` in the same format as the ``--eval`` kind: ppl text windows (LM loss), mc rows (LM
    loss of the correct option), cls rows (head cross-entropy), gen pairs (LM loss of the answer),
    reg (MSE), bleu (teacher-forced cross-entropy)."""
    from llm_sparsity.finetune import FinetuneConfig
    from llm_sparsity.smc_tasks import PairTrainer

    defaults = {"text_column": "text", "label_column": "label", "context_column": "question",
                "choices_column": "choices", "input_column": "input", "target_column": "target"}  # fmt: skip
    items, loss = _training_items(kind, source, tokenizer, {**defaults, **columns}, seq_len)
    if not items:
        raise UserError(f"training file {source} has no rows")
    return PairTrainer(items, tokenizer, loss, FinetuneConfig(batch_size=batch_size, lr=lr))


def _finetuned_score(model, evaluate, finetune, masks, seed):
    if finetune is not None:
        trainer, steps = finetune
        trainer.train(model, masks, steps, seed=seed, mode="sparse")
        model.eval()
    return evaluate(model)


def _prune_point(model: torch.nn.Module, targets: Targets, method: str, sparsity: float, need_masks: bool,
                 **kwargs: Any) -> Any:  # fmt: skip
    """Prune one grid point; global magnitude without fine-tuning streams the threshold and zeroes
    in place (no mask tensors: the zeros are the mask), every other case returns the MaskSet."""
    if method == "magnitude" and not need_masks:
        prune_magnitude_in_place(model, targets, sparsity)
        return None
    return prune_llm(model, targets, PruneSpec(method, sparsity), **kwargs)


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
    finetune: tuple[Any, int] | None = None,
) -> list[dict[str, Any]]:
    """Rows (method, sparsity, score); the dense point first. The model ends dense again.

    ``finetune=(trainer, steps)``: every point (dense included) is fine-tuned ``steps`` with its
    mask kept before it is evaluated."""
    for method in methods:
        PruneSpec(method, 0.5)  # validate every method before any work
    params = dict(model.named_parameters()) if finetune is not None else targets.parameters(model)
    saved = {n: p.detach().clone() for n, p in params.items()}
    rows = []
    try:
        rows.append(
            {
                "method": "dense",
                "sparsity": 0.0,
                "score": _finetuned_score(model, evaluate, finetune, None, seed),
            }
        )
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(saved[n])
        for method in methods:
            for s in grid:
                if s == 0:
                    continue
                masks = _prune_point(model, targets, method, s, finetune is not None, calibration=calibration,
                                     tokenizer=tokenizer, device=device, seed=seed)  # fmt: skip
                score = _finetuned_score(model, evaluate, finetune, masks, seed)
                if masks is not None:  # invariant: fine-tuning kept the mask
                    kept = masks.sparsity()
                    zeros = sum(int(p.eq(0).sum()) for p in targets.parameters(model).values())
                    if zeros < round(kept * targets.n_weights(model)):
                        raise RuntimeError(f"fine-tuning at sparsity {s} regrew pruned weights")
                del masks  # the next point's masks never coexist with these
                rows.append({"method": method, "sparsity": s, "score": score})
                log.info("%s at %.2f: %.4f", method, s, rows[-1]["score"])
                with torch.no_grad():
                    for n, p in params.items():
                        p.copy_(saved[n])
    finally:
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(saved[n])
    return rows
