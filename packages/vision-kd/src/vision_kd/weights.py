"""Save and load trained models as safetensors checkpoints that remember how to rebuild the model."""

from __future__ import annotations

import os
import pathlib
from typing import Any

from torch import nn

from research_systems_core.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from vision_kd.models import create_model

__all__ = ["load_model", "save_model"]


def save_model(
    directory: str | os.PathLike[str], model: nn.Module, name: str, kwargs: dict[str, Any], **info: Any
) -> pathlib.Path:
    """Write ``model``'s weights (safetensors) plus its timm name and constructor kwargs."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"model": name, "model_kwargs": kwargs, **info}
    return save_checkpoint(directory, 0, tensors, meta)


def load_model(path: str | os.PathLike[str]) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild and load a model saved by :func:`save_model` (a checkpoint file or its directory)."""
    path = pathlib.Path(path)
    if path.is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise FileNotFoundError(f"no checkpoint found in {path}")
        path = found
    tensors, meta = load_checkpoint(path)
    if "model" not in meta:
        raise ValueError(
            f"{path} was not written by vision_kd.weights.save_model (no model name in its metadata)"
        )
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in meta.get("model_kwargs", {}).items()}
    model = create_model(meta["model"], **kwargs)
    model.load_state_dict(tensors)
    model.eval()
    return model, meta
