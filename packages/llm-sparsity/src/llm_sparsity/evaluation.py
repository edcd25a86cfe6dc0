"""Evaluation of (pruned) language models: perplexity, log-likelihood multiple choice, lm-eval.

- Perplexity, the protocol of the Wanda/SparseGPT references (``lib/eval.py``): the text is
  tokenized once, cut into non-overlapping windows of ``seq_len`` tokens (the model's context by
  default; the tail shorter than a window is dropped), and perplexity = exp(mean NLL of every
  predicted token).
- Multiple choice as lm-evaluation-harness scores it: the log-likelihood of the continuation
  ``" " + choice`` given the context (continuation tokens = tokens of context+continuation after
  the context's tokens), ``acc`` = argmax of the sums, ``acc_norm`` = argmax of the sums divided by
  the choice's length in characters.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from llm_sparsity.userdata import column, read_records
from research_systems_core.errors import UserError

__all__ = [
    "MCExample",
    "choice_loglikelihoods",
    "context_length",
    "mc_accuracy",
    "perplexity",
    "read_mc_file",
    "run_lm_eval",
]


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def context_length(model: torch.nn.Module) -> int:
    """The model's context length from its config (``max_position_embeddings`` / ``n_positions``)."""
    cfg = getattr(model, "config", None)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(cfg, key, None)
        if isinstance(value, int) and value > 0:
            return value
    raise ValueError(f"cannot read the context length of {type(model).__name__}; pass seq_len")


def _require_causal(model: torch.nn.Module, what: str) -> None:
    from llm_sparsity.models import model_task

    if model_task(model) != "causal-lm":
        raise ValueError(f"{what} needs a causal language model, got {type(model).__name__}")


@torch.no_grad()
def perplexity(
    model: torch.nn.Module,
    tokenizer: Any,
    text: str,
    *,
    seq_len: int | None = None,
    max_windows: int | None = None,
    progress: bool = False,
) -> dict[str, float]:
    """Perplexity of ``text`` (see the module docstring); returns ppl, mean NLL and token counts."""
    _require_causal(model, "perplexity")
    seq_len = seq_len or context_length(model)
    if seq_len < 2:
        raise ValueError(f"seq_len must be >= 2, got {seq_len}")
    ids = torch.tensor(
        tokenizer(text, verbose=False)["input_ids"], dtype=torch.long
    )  # long text: windows follow
    n_windows = ids.numel() // seq_len
    if max_windows is not None:
        n_windows = min(n_windows, max_windows)
    if n_windows == 0:
        raise UserError(
            f"evaluation text has {ids.numel()} tokens, shorter than one window of seq_len={seq_len}"
        )
    device = _device(model)
    nll = torch.zeros((), dtype=torch.float64, device=device)
    for j in tqdm(range(n_windows), desc="perplexity", disable=not progress):
        window = ids[j * seq_len : (j + 1) * seq_len].to(device)[None]
        logits = model(input_ids=window).logits[0, :-1].float()
        nll += torch.nn.functional.cross_entropy(logits, window[0, 1:], reduction="sum").double()
    n_tokens = n_windows * (seq_len - 1)
    mean = float(nll) / n_tokens
    return {
        "perplexity": math.exp(mean),
        "nll": mean,
        "windows": n_windows,
        "seq_len": seq_len,
        "tokens": n_tokens,
    }


@dataclass(frozen=True)
class MCExample:
    """One multiple-choice item: context, the answer options and the index of the correct one."""

    context: str
    choices: tuple[str, ...]
    label: int


def _parse_choices(value: Any, row: int, path: str | Path) -> tuple[str, ...]:
    if isinstance(value, list):
        out = tuple(str(v) for v in value)
    elif isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            import json

            try:
                out = tuple(str(v) for v in json.loads(text))
            except json.JSONDecodeError:
                raise UserError(f"{path}, row {row}: choices {value!r} is not a JSON list") from None
        else:
            out = tuple(c.strip() for c in text.split("|"))
    else:
        raise UserError(
            f"{path}, row {row}: choices must be a list or '|'-separated text, got {type(value).__name__}"
        )
    if len(out) < 2:
        raise UserError(f"{path}, row {row}: needs at least 2 choices, got {len(out)}")
    return out


def _parse_label(value: Any, choices: tuple[str, ...], row: int, path: str | Path) -> int:
    if isinstance(value, str) and value.strip() in choices:
        return choices.index(value.strip())
    try:
        label = int(value)
    except (TypeError, ValueError):
        raise UserError(
            f"{path}, row {row}: label {value!r} is neither a choice index nor one of the choices"
        ) from None
    if not 0 <= label < len(choices):
        raise UserError(f"{path}, row {row}: label {label} is out of range for {len(choices)} choices")
    return label


def read_mc_file(
    path: str | Path,
    *,
    context_column: str = "question",
    choices_column: str = "choices",
    label_column: str = "label",
) -> list[MCExample]:
    """Multiple-choice items from JSONL/JSON/CSV: a context column, a choices column (a JSON list,
    or text with ``|`` between options) and a label column (index or the correct choice's text)."""
    rows = read_records(path)
    contexts = column(rows, context_column, path, "--context-column")
    choices = column(rows, choices_column, path, "--choices-column")
    labels = column(rows, label_column, path, "--label-column")
    out = []
    for i, (ctx, ch, lab) in enumerate(zip(contexts, choices, labels, strict=True), 1):
        opts = _parse_choices(ch, i, path)
        out.append(MCExample(str(ctx), opts, _parse_label(lab, opts, i, path)))
    return out


def _continuation_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """lm-eval's ``_encode_pair``: trailing context spaces move to the continuation; the
    continuation's tokens are those of context+continuation after the context's tokens."""
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        continuation = context[-n_spaces:] + continuation
        context = context[:-n_spaces]
    whole = tokenizer(context + continuation, add_special_tokens=False)["input_ids"]
    ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
    cont = whole[len(ctx) :]
    if not ctx:
        bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
        ctx = [bos]
    return ctx, cont


@torch.no_grad()
def choice_loglikelihoods(
    model: torch.nn.Module, tokenizer: Any, context: str, choices: Sequence[str], delimiter: str = " "
) -> list[float]:
    """Sum of log p(continuation tokens | context) for each choice (one padded batch)."""
    pairs = [_continuation_pair(tokenizer, context, delimiter + c) for c in choices]
    seqs = [(ctx + cont)[:-1] for ctx, cont in pairs]
    width = max(len(s) for s in seqs)
    device = _device(model)
    ids = torch.zeros(len(seqs), width, dtype=torch.long)
    attn = torch.zeros(len(seqs), width, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        attn[i, : len(s)] = 1
    logp = torch.log_softmax(
        model(input_ids=ids.to(device), attention_mask=attn.to(device)).logits.float(), -1
    )
    out = []
    for i, (ctx, cont) in enumerate(pairs):
        if not cont:
            raise UserError(f"choice {choices[i]!r} tokenizes to nothing after its context")
        pos = torch.arange(len(ctx) - 1, len(ctx) - 1 + len(cont), device=device)
        out.append(logp[i, pos, torch.tensor(cont, device=device)].sum())
    return [float(v) for v in torch.stack(out).cpu()]


def mc_accuracy(
    model: torch.nn.Module, tokenizer: Any, examples: Sequence[MCExample], *, progress: bool = False
) -> dict[str, float]:
    """``acc`` and ``acc_norm`` (log-likelihood / choice length in characters) over ``examples``."""
    _require_causal(model, "log-likelihood multiple choice")
    if not examples:
        raise ValueError("no multiple-choice examples to score")
    acc = acc_norm = 0
    for ex in tqdm(examples, desc="multiple choice", disable=not progress):
        lls = choice_loglikelihoods(model, tokenizer, ex.context, ex.choices)
        acc += int(max(range(len(lls)), key=lls.__getitem__) == ex.label)
        normed = [ll / max(len(c), 1) for ll, c in zip(lls, ex.choices, strict=True)]
        acc_norm += int(max(range(len(normed)), key=normed.__getitem__) == ex.label)
    n = len(examples)
    return {"acc": acc / n, "acc_norm": acc_norm / n, "n": n}


def run_lm_eval(
    model: torch.nn.Module,
    tokenizer: Any,
    tasks: Sequence[str],
    *,
    num_fewshot: int | None = None,
    limit: int | float | None = None,
    batch_size: int = 1,
) -> dict[str, Any]:
    """lm-evaluation-harness tasks on the in-memory model (``lm_eval.simple_evaluate`` with an
    ``HFLM`` wrapping the model object), so a pruned model is scored without saving it."""
    if not tasks:
        raise ValueError("lm-eval tasks: give at least one task name")
    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
    except ImportError:
        raise UserError("lm-eval tasks need the 'eval' extra: pip install 'llm-sparsity[eval]'") from None
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
    out = lm_eval.simple_evaluate(model=lm, tasks=list(tasks), num_fewshot=num_fewshot, limit=limit)
    return dict(out["results"])
