"""A classification task that needs the encoder, with a trained head and its no-model floors (issue 16).

The task: the operation type of each SVAMP word problem (``Type``: Addition, Subtraction,
Multiplication, Common-Division; the one misspelt "Common-Divison" record is merged) from the
problem's text (body + question).

Two heads:

- ``probe`` (the CPU default): the (pruned) encoder is frozen; a trained attention-pooling head
  (a learned softmax weighting of the tokens, then a one-hidden-layer MLP) reads the token states
  of its last ``layers`` layers. One forward pass per pruned model, so whole curves fit a CPU;
- ``finetune`` (the Essential Sparsity protocol, for a GPU): a linear head on the mean-pooled last
  hidden states, fine-tuned together with the encoder (AdamW, seeded batches, pruned weights kept at
  zero by the ``sparse`` transfer mode, checked afterwards).

Floors, each trained on the same training rows (and the same fraction of them) and scored on
the same test rows:

- ``chance``: always the most frequent training class (majority);
- ``word_overlap``: TF-IDF of word 1-2-grams + logistic regression (scikit-learn);
- ``mean_input_embeddings``: the encoder's input embedding table, no position embeddings and no
  transformer block, pooled by the same trained attention head (a learned weighted mean).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llm_sparsity.models import mean_pool
from llm_sparsity.transfer import attach_transfer
from research_systems_core.masks import MaskSet
from research_systems_core.validation import check_int, check_positive, check_range

__all__ = [
    "AttentionHead",
    "ClassifierConfig",
    "HeadConfig",
    "LabelledTexts",
    "TokenFeatures",
    "accuracy",
    "finetune_classifier",
    "head_accuracy",
    "load_svamp_types",
    "new_head",
    "no_model_floors",
    "split_indices",
    "subsample",
    "token_states",
    "train_head",
]

_TYPO = {"Common-Divison": "Common-Division"}


@dataclass(frozen=True)
class LabelledTexts:
    """Texts, integer labels and the class names (``labels[i]`` indexes ``classes``)."""

    name: str
    texts: list[str]
    labels: np.ndarray
    classes: list[str]

    def __post_init__(self) -> None:
        if len(self.texts) != len(self.labels) or not self.texts:
            raise ValueError(f"{self.name}: {len(self.texts)} texts but {len(self.labels)} labels")


def load_svamp_types(data_dir: str | Path) -> LabelledTexts:
    """SVAMP problems (``arithmetic/SVAMP.json``) labelled with their operation ``Type``."""
    path = Path(data_dir) / "arithmetic" / "SVAMP.json"
    if not path.is_file():
        raise FileNotFoundError(f"SVAMP not found at {path} (set --data-dir or RESEARCH_DATA_DIR)")
    records = json.loads(path.read_text())
    for i, r in enumerate(records):
        missing = [k for k in ("Body", "Question", "Type") if k not in r]
        if missing:
            raise ValueError(f"{path}: record {i} has no {missing[0]!r} (keys: {sorted(r)})")
    types = [_TYPO.get(r["Type"], r["Type"]) for r in records]
    classes = sorted(set(types))
    texts = [f"{r['Body'].strip()} {r['Question'].strip()}" for r in records]
    return LabelledTexts("svamp-type", texts, np.array([classes.index(t) for t in types]), classes)


def split_indices(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A stratified seeded train/test split of the row indices."""
    from sklearn.model_selection import train_test_split

    check_range("test_fraction", test_fraction, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
    idx = np.arange(len(labels))
    train, test = train_test_split(idx, test_size=test_fraction, stratify=labels, random_state=seed)
    return np.sort(train), np.sort(test)


def subsample(train: np.ndarray, labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A seeded stratified ``fraction`` of the training rows (all of them for 1.0; >= 1 per class)."""
    check_range("fraction", fraction, 0.0, 1.0, low_inclusive=False)
    if fraction >= 1.0:
        return train
    from sklearn.model_selection import train_test_split

    n_classes = len(np.unique(labels[train]))
    keep = max(n_classes, round(fraction * len(train)))
    part, _ = train_test_split(train, train_size=keep, stratify=labels[train], random_state=seed)
    return np.sort(part)


# --------------------------------------------------------------------------- probe: features, head
@dataclass(frozen=True)
class TokenFeatures:
    """Token states (n, tokens, dim) in fp16 (half the memory) and the (n, tokens) attention mask."""

    states: torch.Tensor
    mask: torch.Tensor


@torch.no_grad()
def token_states(encoder: torch.nn.Module, tokenizer: Any, texts: Sequence[str], layers: int = 3,
                 max_length: int = 64, batch_size: int = 64) -> TokenFeatures:  # fmt: skip
    """The last ``layers`` hidden states of every token, concatenated; ``layers=0``: the input
    embedding table's rows only (no position embeddings, no block: the floor)."""
    check_int("layers", layers, minimum=0)
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    ids, mask = enc["input_ids"], enc["attention_mask"]
    if layers == 0:
        return TokenFeatures(encoder.get_input_embeddings().weight.detach()[ids].half(), mask)
    was_training = encoder.training
    encoder.eval()
    device = next(encoder.parameters()).device
    parts = []
    for i in range(0, len(ids), batch_size):
        out = encoder(input_ids=ids[i : i + batch_size].to(device), attention_mask=mask[i : i + batch_size].to(device),
                      output_hidden_states=True)  # fmt: skip
        parts.append(torch.cat(out.hidden_states[-layers:], dim=-1).half().cpu())
    encoder.train(was_training)
    return TokenFeatures(torch.cat(parts), mask)


class AttentionHead(torch.nn.Module):
    """Softmax attention pooling over the tokens (one learned score per token), then an MLP."""

    def __init__(self, dim: int, n_classes: int, hidden: int = 256, dropout: float = 0.1) -> None:
        super().__init__()
        self.score = torch.nn.Linear(dim, 1)
        self.mlp = torch.nn.Sequential(torch.nn.Dropout(dropout), torch.nn.Linear(dim, hidden), torch.nn.GELU(),
                                       torch.nn.Linear(hidden, n_classes))  # fmt: skip

    def forward(self, states: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        weights = self.score(states).squeeze(-1).masked_fill(mask == 0, float("-inf")).softmax(-1)
        return self.mlp((weights.unsqueeze(-1) * states).sum(1))


@dataclass(frozen=True)
class HeadConfig:
    epochs: int = 15
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.01
    hidden: int = 256

    def __post_init__(self) -> None:
        check_int("epochs", self.epochs, minimum=1)
        check_int("batch_size", self.batch_size, minimum=1)
        check_positive("lr", self.lr)


def train_head(features: TokenFeatures, labels: np.ndarray, rows: np.ndarray, n_classes: int, config: HeadConfig,
               seed: int) -> AttentionHead:  # fmt: skip
    """A fresh attention head trained ``config.epochs`` epochs on ``rows`` (seeded; global RNG untouched)."""
    if len(rows) == 0:
        raise ValueError("no training rows for the head")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        head = AttentionHead(features.states.shape[-1], n_classes, config.hidden)
        opt = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        x, m = features.states[rows].float(), features.mask[rows]
        y = torch.as_tensor(labels[rows])
        head.train()
        for _ in range(config.epochs):
            perm = torch.randperm(len(rows))
            for i in range(0, len(rows), config.batch_size):
                b = perm[i : i + config.batch_size]
                loss = torch.nn.functional.cross_entropy(head(x[b], m[b]), y[b])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    return head.eval()


@torch.no_grad()
def head_accuracy(
    head: AttentionHead, features: TokenFeatures, labels: np.ndarray, rows: np.ndarray
) -> float:
    """Test accuracy of the head's argmax on ``rows``."""
    if len(rows) == 0:
        raise ValueError("no rows to evaluate")
    pred = head(features.states[rows].float(), features.mask[rows]).argmax(-1)
    return float((pred.numpy() == labels[rows]).mean())


# ------------------------------------------------------------------------------------------ floors
def _tfidf_accuracy(texts: Sequence[str], labels: np.ndarray, train: np.ndarray, test: np.ndarray) -> float:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    clf = make_pipeline(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True), LogisticRegression(C=10.0, max_iter=3000)
    )
    clf.fit([texts[i] for i in train], labels[train])
    return float(clf.score([texts[i] for i in test], labels[test]))


def no_model_floors(data: LabelledTexts, train: np.ndarray, test: np.ndarray,
                    embeddings: TokenFeatures | None = None, head: HeadConfig | None = None,
                    seed: int = 0) -> dict[str, float]:  # fmt: skip
    """Test accuracy of each floor trained on ``train`` (see the module docstring); ``best_floor``.
    ``embeddings``: the input token embeddings (``token_states(..., layers=0)``)."""
    if len(train) == 0 or len(test) == 0:
        raise ValueError("the floors need training and test rows")
    majority = np.bincount(data.labels[train], minlength=len(data.classes)).argmax()
    out = {
        "chance": float((data.labels[test] == majority).mean()),
        "word_overlap": _tfidf_accuracy(data.texts, data.labels, train, test),
    }
    if embeddings is not None:
        net = train_head(embeddings, data.labels, train, len(data.classes), head or HeadConfig(), seed)
        out["mean_input_embeddings"] = head_accuracy(net, embeddings, data.labels, test)
    out["best_floor"] = max(out.values())
    return out


# ------------------------------------------------------------------------------ model and training
@dataclass(frozen=True)
class ClassifierConfig:
    steps: int = 60
    batch_size: int = 16
    lr: float = 1e-4
    max_length: int = 64

    def __post_init__(self) -> None:
        check_int("steps", self.steps, minimum=0)
        check_int("batch_size", self.batch_size, minimum=1)
        check_positive("lr", self.lr)
        check_int("max_length", self.max_length, minimum=8)


def new_head(hidden: int, n_classes: int, seed: int) -> torch.nn.Linear:
    """A freshly initialised linear head (seeded, global RNG untouched)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torch.nn.Linear(hidden, n_classes)


def _logits(encoder: torch.nn.Module, head: torch.nn.Module, tokenizer: Any, texts: Sequence[str], max_length: int
            ) -> torch.Tensor:  # fmt: skip
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    device = head.weight.device
    batch = {"input_ids": enc["input_ids"].to(device), "attention_mask": enc["attention_mask"].to(device)}
    return head(mean_pool(encoder, batch).float())


def finetune_classifier(encoder: torch.nn.Module, head: torch.nn.Module, tokenizer: Any, data: LabelledTexts,
                        train: np.ndarray, masks: MaskSet | None, config: ClassifierConfig, seed: int
                        ) -> dict[str, float]:  # fmt: skip
    """``config.steps`` AdamW steps on seeded batches of ``train`` rows, encoder and head together;
    with ``masks`` the pruned weights stay zero (checked afterwards). Returns steps, seconds, losses."""
    if len(train) == 0:
        raise ValueError("no training rows to fine-tune on")
    start = time.perf_counter()
    rng = random.Random(seed)
    params = list(encoder.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
    handle = attach_transfer(encoder, masks, opt, "sparse") if masks is not None else None
    encoder.train()
    losses = []
    try:
        for _ in range(config.steps):
            rows = rng.sample(list(train), min(config.batch_size, len(train)))
            logits = _logits(encoder, head, tokenizer, [data.texts[i] for i in rows], config.max_length)
            loss = torch.nn.functional.cross_entropy(
                logits, torch.as_tensor(data.labels[rows], device=logits.device)
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.detach())
    finally:
        if handle is not None:
            handle.remove()
        encoder.eval()
    if masks is not None:
        _check_mask_kept(encoder, masks)
    loss_values = torch.stack(losses).tolist() if losses else []
    return {"steps": config.steps, "seconds": time.perf_counter() - start,
            "first_loss": loss_values[0] if loss_values else float("nan"),
            "last_loss": loss_values[-1] if loss_values else float("nan")}  # fmt: skip


def _check_mask_kept(encoder: torch.nn.Module, masks: MaskSet) -> None:
    """Invariant: after sparse fine-tuning every pruned weight is still exactly zero."""
    params = dict(encoder.named_parameters())
    for name, keep in masks.masks.items():
        revived = int(params[name].detach()[~keep.to(params[name].device)].ne(0).sum())
        if revived:
            raise RuntimeError(f"sparse fine-tuning revived {revived} pruned weights of {name}")


@torch.no_grad()
def accuracy(encoder: torch.nn.Module, head: torch.nn.Module, tokenizer: Any, data: LabelledTexts,
             rows: np.ndarray, max_length: int = 64, batch_size: int = 128) -> float:  # fmt: skip
    """Test accuracy of argmax(head(mean-pooled encoder output)) on ``rows``."""
    if len(rows) == 0:
        raise ValueError("no rows to evaluate")
    was_training = encoder.training
    encoder.eval()
    order = sorted(rows, key=lambda i: len(data.texts[i]))  # length-sorted batches: less padding
    hits = torch.zeros((), dtype=torch.long)
    for i in range(0, len(order), batch_size):
        chunk = order[i : i + batch_size]
        pred = _logits(encoder, head, tokenizer, [data.texts[j] for j in chunk], max_length).argmax(-1).cpu()
        hits += (pred == torch.as_tensor(data.labels[chunk])).sum()
    encoder.train(was_training)
    return int(hits) / len(rows)
