"""Save and load trained models (safetensors + how to rebuild them), and find a teacher "from anywhere".

A teacher or student spec is one of:

- a directory or ``.safetensors`` file written by this package (``train-teacher``, ``distill``,
  ``convert-slak``);
- a reference SLaK ``.pth`` checkpoint (converted on the fly, see :mod:`vision_kd.convert`);
- a model name: this package's ``slak_*``/``kd_*``, any timm name (``timm:NAME`` or bare), any
  torchvision classifier (``torchvision:NAME``); ``pretrained=True`` downloads the weights where the
  user can (the shared ``create_image_model``).
"""

from __future__ import annotations

import os
import pathlib
from typing import Any

from torch import nn

from research_systems_core.checkpoint import (
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from research_systems_core.errors import UserError
from vision_kd.models import create_model, reparameterize_model

__all__ = ["load_model", "looks_like_path", "resolve_model", "save_model"]


def save_model(
    directory: str | os.PathLike[str], model: nn.Module, name: str, kwargs: dict[str, Any], **info: Any
) -> pathlib.Path:
    """Write ``model``'s weights (safetensors) plus its timm name and constructor kwargs."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"model": name, "model_kwargs": kwargs, **info}
    return save_checkpoint(directory, 0, tensors, meta)


def _checkpoint_file(path: pathlib.Path) -> pathlib.Path:
    if path.is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise CheckpointError(
                f"{path} holds no complete vision-kd checkpoint (expected ckpt-*.safetensors with its .json "
                "from train-teacher/distill/convert-slak)"
            )
        return found
    if not path.exists():
        raise FileNotFoundError(f"model file {path} does not exist")
    return path


def load_model(path: str | os.PathLike[str]) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild and load a model saved by :func:`save_model` (a checkpoint file or its directory)."""
    path = _checkpoint_file(pathlib.Path(path))
    tensors, meta = load_checkpoint(path)
    if "model" not in meta:
        raise UserError(
            f"{path} was not written by vision_kd.weights.save_model (no model name in its metadata)"
        )
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in meta.get("model_kwargs", {}).items()}
    model = create_model(meta["model"], **kwargs).eval()
    if meta.get("reparameterized"):
        reparameterize_model(model)
    try:
        model.load_state_dict(tensors)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise CheckpointError(f"{path}: weights do not fit {meta['model']} {kwargs}: {first}") from None
    return model, meta


def looks_like_path(spec: str) -> bool:
    """A spec that names a file system location (has a separator, a suffix we read, or exists)."""
    return os.sep in spec or spec.startswith(".") or spec.endswith((".safetensors", ".pth", ".pt", ".json")) \
        or pathlib.Path(spec).exists()  # fmt: skip


def resolve_model(
    spec: str,
    *,
    num_classes: int,
    in_chans: int,
    pretrained: bool = False,
    kwargs: dict[str, Any] | None = None,
) -> tuple[nn.Module, dict[str, Any]]:
    """A model from a spec (see the module docstring) -> ``(model, meta)``; meta has ``model`` and ``source``."""
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError(f"model spec must be a path or a model name, got {spec!r}")
    if looks_like_path(spec):
        path = pathlib.Path(spec)
        if not path.exists():
            raise FileNotFoundError(
                f"teacher/student {spec!r} looks like a path but does not exist; give a vision-kd weights "
                "directory or file, a reference SLaK .pth, or a model name (e.g. slak_tiny, timm:resnet50)"
            )
        if path.suffix in (".pth", ".pt"):
            from vision_kd.convert import build_converted, read_reference_state_dict, slak_from_reference

            conv = slak_from_reference(read_reference_state_dict(path))
            return build_converted(conv), {"model": conv["model"], "model_kwargs": conv["model_kwargs"],
                                           "source": str(path)}  # fmt: skip
        model, meta = load_model(path)
        return model, {**meta, "source": str(path)}
    kwargs = dict(kwargs or {})
    if kwargs or spec.startswith(("slak_", "kd_")):
        if pretrained:
            raise ValueError(f"pretrained weights cannot be combined with model arguments for {spec!r}")
        kwargs = {"num_classes": num_classes, "in_chans": in_chans, **kwargs}
        model = create_model(spec, **kwargs)
    else:
        from research_systems_core.vision import create_image_model

        model = create_image_model(spec, num_classes=num_classes, in_chans=in_chans, pretrained=pretrained)
    return model, {"model": spec, "model_kwargs": {"num_classes": num_classes, "in_chans": in_chans, **kwargs},
                   "source": "pretrained" if pretrained else "new"}  # fmt: skip
