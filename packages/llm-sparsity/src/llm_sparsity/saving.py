"""Saving and loading a pruned model: Hugging Face directory (safetensors) plus its mask."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from research_systems_core.files import atomic_write
from research_systems_core.masks import MaskSet

__all__ = ["export_semi_structured", "load_pruned", "save_pruned"]

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


def load_pruned(
    directory: str | Path, task: str | None = None, *, device: str = "cpu", dtype: str = "auto"
) -> tuple[torch.nn.Module, MaskSet, dict[str, Any]]:
    """Load what :func:`save_pruned` wrote, with the head its config names (or ``task``); checks
    that every masked weight is zero."""
    from llm_sparsity.models import load_model

    directory = Path(directory)
    if not (directory / MASK_FILE).is_file():
        raise FileNotFoundError(
            f"{directory} holds no {MASK_FILE}; is it a directory written by save_pruned?"
        )
    model, _ = load_model(str(directory), task, device=device, dtype=dtype, with_tokenizer=False)
    masks = MaskSet.load(directory / MASK_FILE)
    params = dict(model.named_parameters())
    for name, mask in masks.masks.items():
        if name not in params:
            raise ValueError(f"{directory}: mask names {name!r}, which the saved model does not have")
        if bool(params[name].detach()[~mask.to(params[name].device)].ne(0).any()):
            raise ValueError(f"{directory}: weight {name!r} is non-zero where its mask prunes it")
    meta_path = directory / META_FILE
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return model, masks, meta


def export_semi_structured(model: torch.nn.Module, masks: MaskSet) -> list[str]:
    """Swap the 2:4-sparse ``nn.Linear`` weights for ``torch.sparse.to_sparse_semi_structured``
    tensors (CUDA, fp16/bf16): real speed-ups on Ampere and newer. Returns the converted names."""
    if not torch.cuda.is_available():
        raise ValueError(
            "2:4 semi-structured export needs a CUDA GPU (torch.sparse.to_sparse_semi_structured)"
        )
    from torch.sparse import to_sparse_semi_structured

    modules = dict(model.named_modules())
    done = []
    for name, mask in masks.masks.items():
        module = modules.get(name.rsplit(".", 1)[0])
        if not isinstance(module, torch.nn.Linear) or not name.endswith(".weight"):
            continue
        w = module.weight
        if w.device.type != "cuda" or w.dtype not in (torch.float16, torch.bfloat16):
            raise ValueError(
                f"{name}: semi-structured export needs fp16/bf16 weights on CUDA, got {w.dtype} on {w.device}"
            )
        groups = mask.reshape(mask.shape[0], -1, 4).sum(-1)
        if not bool((groups <= 2).all()):
            raise ValueError(f"{name}: the mask is not 2:4 (some group of 4 keeps more than 2 weights)")
        module.weight = torch.nn.Parameter(to_sparse_semi_structured(w.detach()), requires_grad=False)
        done.append(name)
    return done
