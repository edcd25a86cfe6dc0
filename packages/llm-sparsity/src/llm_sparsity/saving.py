"""Saving and loading a pruned model: Hugging Face directory (safetensors) plus its mask."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from research_systems_core.files import atomic_write
from research_systems_core.masks import MaskSet

__all__ = ["load_pruned", "save_pruned"]

MASK_FILE = "mask.safetensors"
META_FILE = "pruning.json"


def save_pruned(
    model: torch.nn.Module,
    masks: MaskSet,
    directory: str | Path,
    tokenizer: Any = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write the model (``save_pretrained``, safetensors), ``mask.safetensors`` and ``pruning.json``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    masks.apply(model)
    model.save_pretrained(str(directory), safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(directory))
    masks.save(directory / MASK_FILE)
    info = {"sparsity": masks.sparsity(), "n_targeted": masks.n_total, "targets": masks.names, **(meta or {})}
    with atomic_write(directory / META_FILE) as fh:
        json.dump(info, fh, indent=2)
    return directory


def load_pruned(directory: str | Path) -> tuple[torch.nn.Module, MaskSet, dict[str, Any]]:
    """Load what :func:`save_pruned` wrote; checks that every masked weight is zero."""
    from transformers import AutoModel

    directory = Path(directory)
    if not (directory / MASK_FILE).is_file():
        raise FileNotFoundError(
            f"{directory} holds no {MASK_FILE}; is it a directory written by save_pruned?"
        )
    model = AutoModel.from_pretrained(str(directory)).eval()
    masks = MaskSet.load(directory / MASK_FILE)
    params = dict(model.named_parameters())
    for name, mask in masks.masks.items():
        if name not in params:
            raise ValueError(f"{directory}: mask names {name!r}, which the saved model does not have")
        if bool(params[name].detach()[~mask].ne(0).any()):
            raise ValueError(f"{directory}: weight {name!r} is non-zero where its mask prunes it")
    meta_path = directory / META_FILE
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return model, masks, meta
