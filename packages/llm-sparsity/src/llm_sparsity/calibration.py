"""Calibration and evaluation text: local files, Hugging Face datasets, the offline word problems.

Calibration follows the Wanda/SparseGPT references (``lib/data.py``): ``n_samples`` windows of
``seq_len`` tokens at seeded random offsets of the tokenized text (C4: one random document of
at least ``seq_len`` tokens per sample, as the reference does).
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from llm_sparsity.userdata import read_texts
from research_systems_core.errors import UserError
from research_systems_core.validation import check_int

__all__ = ["HUB_SOURCES", "load_calibration", "load_eval_text", "sample_windows", "source_texts"]

HUB_SOURCES = ("c4", "wikitext2")
DEFAULT_SOURCE = "word-problems"


def _hub_texts(name: str, split: str) -> list[str]:
    try:
        import datasets
    except ImportError:
        raise UserError(
            f"calibration source {name!r} needs the 'hub' extra: pip install 'llm-sparsity[hub]'"
        ) from None
    try:
        if name == "wikitext2":
            ds = datasets.load_dataset("wikitext", "wikitext-2-raw-v1", split=split)
            return ["\n\n".join(ds["text"])]
        files = {
            "train": "en/c4-train.00000-of-01024.json.gz",
            "validation": "en/c4-validation.00000-of-00008.json.gz",
        }
        ds = datasets.load_dataset("allenai/c4", data_files={split: files[split]}, split=split)
        return list(ds["text"])
    except Exception as exc:  # offline, no such dataset, ...: one clear line
        raise UserError(
            f"dataset {name!r} could not be loaded from the Hugging Face hub (offline? {type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:160] if str(exc) else ''}); pass a local text/JSONL/CSV file instead"
        ) from None


def _word_problems(data_dir: str | Path | None) -> list[str]:
    from llm_sparsity.tasks import load_question_bodies
    from research_systems_core.data import resolve_data_dir

    passages = load_question_bodies(resolve_data_dir(data_dir), "svamp")
    return [f"{p.body} {p.question}" for p in passages]


def source_texts(
    source: str | Path | None,
    *,
    split: str = "train",
    text_column: str = "text",
    data_dir: str | Path | None = None,
) -> list[str]:
    """Texts of a calibration/evaluation source: a file path, ``c4``, ``wikitext2`` or
    ``word-problems`` (the offline SVAMP stories, the default)."""
    if source is None or str(source) == DEFAULT_SOURCE:
        return _word_problems(data_dir)
    if str(source) in HUB_SOURCES:
        return _hub_texts(str(source), split)
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(
            f"text source {str(source)!r} is neither a file nor one of {', '.join((*HUB_SOURCES, DEFAULT_SOURCE))}"
        )
    return read_texts(path, text_column)


def sample_windows(
    token_ids: torch.Tensor, n_samples: int, seq_len: int, seed: int, what: str = "calibration text"
) -> torch.Tensor:
    """``n_samples`` windows of ``seq_len`` tokens at seeded random offsets of one token stream."""
    check_int("n_samples", n_samples, minimum=1)
    check_int("seq_len", seq_len, minimum=2)
    total = token_ids.numel()
    if total < seq_len:
        raise UserError(f"{what} has {total} tokens, shorter than one window of seq_len={seq_len} tokens")
    rng = random.Random(seed)
    starts = [rng.randint(0, total - seq_len) for _ in range(n_samples)]
    return torch.stack([token_ids[s : s + seq_len] for s in starts])


def _encode(tokenizer: object, text: str) -> torch.Tensor:
    return torch.tensor(
        tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"], dtype=torch.long
    )


def load_calibration(
    source: str | Path | None,
    tokenizer: object,
    *,
    n_samples: int = 128,
    seq_len: int = 2048,
    seed: int = 0,
    text_column: str = "text",
    data_dir: str | Path | None = None,
) -> torch.Tensor:
    """(n_samples, seq_len) token ids for calibration, seeded."""
    check_int("n_samples", n_samples, minimum=1)
    check_int("seq_len", seq_len, minimum=2)
    texts = source_texts(source, split="train", text_column=text_column, data_dir=data_dir)
    if str(source) == "c4":  # reference: a random document with more than seq_len tokens per sample
        rng = random.Random(seed)
        out = []
        for _ in range(n_samples):
            for _attempt in range(10_000):
                ids = _encode(tokenizer, texts[rng.randint(0, len(texts) - 1)])
                if ids.numel() > seq_len:
                    start = rng.randint(0, ids.numel() - seq_len - 1)
                    out.append(ids[start : start + seq_len])
                    break
            else:
                raise UserError(f"no c4 document longer than seq_len={seq_len} tokens was found")
        return torch.stack(out)
    return sample_windows(_encode(tokenizer, "\n\n".join(texts)), n_samples, seq_len, seed)


def load_eval_text(
    source: str | Path, *, text_column: str = "text", data_dir: str | Path | None = None
) -> str:
    """The evaluation text of a perplexity run: a file, ``wikitext2`` (test split) or ``c4``
    (validation), joined with blank lines as the references do."""
    split = "validation" if str(source) == "c4" else "test"
    return "\n\n".join(source_texts(source, split=split, text_column=text_column, data_dir=data_dir))
