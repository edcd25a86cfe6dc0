"""Which parameters get pruned: name patterns over any Hugging Face transformer.

Two presets follow the references:

- ``essential`` (Essential Sparsity, ``bert_sparseland/pruner.py``): the Linear weights of every
  transformer block, i.e. query, key, value, attention output, intermediate and output for BERT
  (the six per block), and the equivalent projections of GPT-2, OPT and Llama-style blocks.
- ``junk_dna`` (Junk DNA Hypothesis, ``sparse_core.Masking.add_module``): every 2-D weight except
  embeddings, biases and norms (the pooler is kept, as in the reference); the task head is left
  out unless asked for.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from research_systems_core.validation import check_choice

__all__ = ["BLOCK_LINEAR_PATTERNS", "PRESETS", "Targets", "find_blocks", "select_targets", "tied_aliases"]

# The Linear weights inside transformer blocks, per architecture family.
BLOCK_LINEAR_PATTERNS: dict[str, str] = {
    "bert": r"(^|\.)layer\.\d+\.(attention\.self\.(query|key|value)|attention\.output\.dense"
    r"|intermediate\.dense|output\.dense)\.weight$",
    "gpt2": r"(^|\.)h\.\d+\.(attn\.(c_attn|c_proj)|mlp\.(c_fc|c_proj))\.weight$",
    "opt": r"(^|\.)layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|out_proj)|fc1|fc2)\.weight$",
    "llama": r"(^|\.)layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|o_proj)"
    r"|mlp\.(gate_proj|up_proj|down_proj))\.weight$",  # also Mistral, Qwen2, Gemma
    "phi": r"(^|\.)layers\.\d+\.(self_attn\.(q_proj|k_proj|v_proj|dense)|mlp\.(fc1|fc2))\.weight$",
    "phi3": r"(^|\.)layers\.\d+\.(self_attn\.(qkv_proj|o_proj)|mlp\.(gate_up_proj|down_proj))\.weight$",
}
EMBEDDING_PATTERN = r"(embed|(^|\.)wte\.|(^|\.)wpe\.|shared\.weight$)"
NORM_PATTERN = r"(norm|(^|\.)ln_\w*\.|(^|\.)ln_f\.)"
HEAD_PATTERN = r"(^|\.)(classifier|lm_head|qa_outputs|score|head|cls)(\.|$)"
PRESETS = ("essential", "junk_dna", "all_linear")


@dataclass(frozen=True)
class Targets:
    """The pruned parameter names and which of them store (in, out) instead of (out, in)."""

    names: tuple[str, ...]
    transposed: frozenset[str] = frozenset()  # GPT-2 Conv1D weights are stored (in, out)

    def shapes(self, model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
        params = dict(model.named_parameters())
        return {n: tuple(params[n].shape) for n in self.names}

    def parameters(self, model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
        params = dict(model.named_parameters())
        return {n: params[n] for n in self.names}

    def n_weights(self, model: torch.nn.Module) -> int:
        return sum(p.numel() for p in self.parameters(model).values())

    def __len__(self) -> int:
        return len(self.names)


def _conv1d_weights(model: torch.nn.Module) -> set[str]:
    names = set()
    for mod_name, mod in model.named_modules():
        if type(mod).__name__ == "Conv1D" and hasattr(mod, "weight"):
            names.add(f"{mod_name}.weight" if mod_name else "weight")
    return names


def tied_aliases(model: torch.nn.Module) -> dict[str, str]:
    """``{alias: canonical}`` for parameters shared under several names (an ``lm_head`` tied to the
    input embedding): ``named_parameters()`` lists each tensor once, under its canonical name."""
    canonical: dict[int, str] = {}
    aliases: dict[str, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in canonical:
            aliases[name] = canonical[id(p)]
        else:
            canonical[id(p)] = name
    return aliases


def find_blocks(model: torch.nn.Module) -> tuple[str, torch.nn.ModuleList]:
    """The transformer's list of blocks (``model.layers``, ``transformer.h``, ``encoder.layer``,
    ``model.decoder.layers``): the ModuleList holding the most parameters."""
    best: tuple[int, str, torch.nn.ModuleList] | None = None
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.ModuleList) and len(mod) > 0:
            size = sum(p.numel() for p in mod.parameters())
            if best is None or size > best[0]:
                best = (size, name, mod)
    if best is None:
        raise ValueError(f"{type(model).__name__} has no list of transformer blocks (no ModuleList)")
    return best[1], best[2]


def _listing(names: Sequence[str], limit: int = 12) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in total)" if len(names) > limit else "")


def select_targets(
    model: torch.nn.Module,
    preset: str | None = "essential",
    *,
    patterns: Iterable[str] = (),
    exclude: Iterable[str] = (),
    include_embeddings: bool = False,
    include_head: bool = False,
) -> Targets:
    """Names of the parameters to prune, in model order.

    ``preset`` is one of :data:`PRESETS` (or None to use only ``patterns``); ``patterns`` are extra
    regular expressions (``re.search`` over parameter names) whose matches are added; every one must
    match at least one parameter. ``exclude`` patterns remove matches. Embeddings and the task head
    are added only when asked for.
    """
    params = dict(model.named_parameters())
    all_names = list(params)
    two_d = [n for n in all_names if params[n].dim() == 2]
    chosen: set[str] = set()
    if preset is not None:
        check_choice("target preset", preset, PRESETS)
        if preset == "essential":
            block = re.compile("|".join(f"(?:{p})" for p in BLOCK_LINEAR_PATTERNS.values()))
            chosen |= {n for n in two_d if block.search(n)}
        else:  # junk_dna / all_linear: every 2-D weight but embeddings, biases, norms, head
            chosen |= {
                n
                for n in two_d
                if not re.search(EMBEDDING_PATTERN, n)
                and not re.search(NORM_PATTERN, n, re.IGNORECASE)
                and "bias" not in n
                and not re.search(HEAD_PATTERN, n)
            }
        if not chosen:
            raise ValueError(
                f"target preset {preset!r} matched no parameter of {type(model).__name__}; "
                f"its 2-D parameters are: {_listing(two_d)}. Pass patterns=[...] (regular expressions) "
                "to choose the weights to prune."
            )
    for pattern in patterns:
        hits = {n for n in all_names if re.search(pattern, n)}
        if not hits:
            raise ValueError(
                f"target pattern {pattern!r} matched no parameter of {type(model).__name__}; "
                f"parameters are: {_listing(all_names)}"
            )
        chosen |= hits
    if include_embeddings:
        chosen |= {n for n in two_d if re.search(EMBEDDING_PATTERN, n)}
    if include_head:  # a head tied to the embedding is listed (and pruned) once, as the embedding
        aliases = tied_aliases(model)
        heads = {n for n, _ in model.named_parameters(remove_duplicate=False) if re.search(HEAD_PATTERN, n)}
        chosen |= {aliases.get(n, n) for n in heads if params[aliases.get(n, n)].dim() >= 2}
    for pattern in exclude:
        chosen = {n for n in chosen if not re.search(pattern, n)}
    if not chosen:
        raise ValueError(f"no parameter left to prune in {type(model).__name__} after exclusions")
    names = tuple(n for n in all_names if n in chosen)
    return Targets(names=names, transposed=frozenset(_conv1d_weights(model) & chosen))
