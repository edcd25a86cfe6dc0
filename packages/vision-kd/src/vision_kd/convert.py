"""Convert reference SLaK checkpoints (VITA-Group/SLaK ``models/SLaK.py``) into this package's format.

Reference layout (``state_dict`` under ``"model"`` or ``"model_ema"`` of the ``.pth`` file written
by ``main.py``; a ``module.`` prefix from DDP is stripped):

==================================================  ===================================================
reference key                                        this package
==================================================  ===================================================
``downsample_layers.0.{0,1}.*`` (stem conv, LN)      ``stem.{0,1}.*``
``downsample_layers.i.{0,1}.*`` (LN, 2x2 conv)       ``stages.i.0.{0,1}.*``
``stages.i.j.large_kernel.LoRA1.{conv,bn}.*``        ``stages.i.{j+1}.large_kernel.branches.vertical.*``
``stages.i.j.large_kernel.LoRA2.{conv,bn}.*``        ``...branches.horizontal.*``
``stages.i.j.large_kernel.lkb_origin.{conv,bn}.*``   ``...branches.large.*``
``stages.i.j.large_kernel.small_conv.{conv,bn}.*``   ``...branches.small.*``
``stages.i.j.large_kernel.lkb_reparam.*``            ``...merged.*`` (a re-parameterised model)
``stages.i.j.{norm,pwconv1,pwconv2,gamma}``          ``stages.i.{j+1}.{...}``
``norm.*``, ``head.*``                               the same
==================================================  ===================================================

(older reference versions name the decomposed branches ``Decom1``/``Decom2``; both are accepted).
The architecture (depths, widths, kernel sizes, small kernel, decomposition, patch size, classes)
is read from the tensor shapes. ``.pth`` files are read with ``torch.load(weights_only=True)``
(no arbitrary unpickling; the ``argparse.Namespace`` of the training arguments is allowed);
``.safetensors`` files holding the bare state dict work too.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import re
from typing import Any

import torch
from torch import nn

from research_systems_core.errors import UserError

__all__ = ["SLaKConversion", "convert_slak_checkpoint", "read_reference_state_dict", "slak_from_reference"]

_BRANCHES = {"LoRA1": "vertical", "Decom1": "vertical", "LoRA2": "horizontal", "Decom2": "horizontal",
             "lkb_origin": "large", "small_conv": "small"}  # fmt: skip
_BLOCK = re.compile(r"^stages\.(\d+)\.(\d+)\.(.*)$")
_DOWN = re.compile(r"^downsample_layers\.(\d+)\.(\d+)\.(weight|bias)$")
_VARIANTS = {  # (depths, base dims) of the registered variants
    "slak_tiny": ((3, 3, 9, 3), (96, 192, 384, 768)),
    "slak_small": ((3, 3, 27, 3), (96, 192, 384, 768)),
    "slak_base": ((3, 3, 27, 3), (128, 256, 512, 1024)),
}


class SLaKConversion(dict):
    """``{"model": name, "model_kwargs": {...}, "state_dict": {...}, "reparameterized": bool}``."""


def read_reference_state_dict(
    path: str | os.PathLike[str], key: str | None = None
) -> dict[str, torch.Tensor]:
    """The model state dict inside a reference checkpoint (``key``: model, model_ema, ...; default: model)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SLaK checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise UserError(f"SLaK checkpoint {path} is empty (0 bytes)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return dict(load_file(str(path)))
        except Exception as exc:  # safetensors' own header errors
            raise UserError(f"SLaK checkpoint {path} is not a readable safetensors file: {exc}") from None
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # the unpickler raises many types on junk (IndexError, KeyError, ...)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UserError(
            f"SLaK checkpoint {path} cannot be read safely as a torch checkpoint (truncated, corrupt, or it "
            f"holds objects other than tensors and training arguments): {first}"
        ) from None
    return _pick_state_dict(obj, key, path)


def _pick_state_dict(obj: Any, key: str | None, path: pathlib.Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        if key is not None:
            raise UserError(f"{path} holds a bare state dict; drop --key {key!r}")
        state = obj
    elif isinstance(obj, dict):
        keys = [key] if key is not None else ["model", "state_dict", "module", "model_ema"]
        found = next((k for k in keys if isinstance(obj.get(k), dict)), None)
        if found is None:
            raise UserError(
                f"{path} has no model state dict under {'/'.join(keys)}; it has keys {sorted(map(str, obj))[:8]}"
            )
        state = obj[found]
    else:
        raise UserError(f"{path} holds a {type(obj).__name__}, not a checkpoint dict")
    return {k.removeprefix("module."): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def _rename(key: str) -> str:
    """One reference key -> this package's key (UserError for keys outside the reference layout)."""
    if m := _DOWN.match(key):
        i, j, leaf = int(m.group(1)), m.group(2), m.group(3)
        return f"stem.{j}.{leaf}" if i == 0 else f"stages.{i}.0.{j}.{leaf}"
    if m := _BLOCK.match(key):
        i, j, rest = m.group(1), int(m.group(2)), m.group(3)
        if rest.startswith("large_kernel."):
            part, _, leaf = rest.removeprefix("large_kernel.").partition(".")
            if part == "lkb_reparam":
                return f"stages.{i}.{j + 1}.large_kernel.merged.{leaf}"
            if part not in _BRANCHES:
                raise UserError(f"unknown large-kernel branch {part!r} in reference key {key!r}")
            return f"stages.{i}.{j + 1}.large_kernel.branches.{_BRANCHES[part]}.{leaf}"
        return f"stages.{i}.{j + 1}.{rest}"
    if key.split(".")[0] in ("norm", "head"):
        return key
    raise UserError(f"key {key!r} is not part of the reference SLaK layout (is this a SLaK checkpoint?)")


def _architecture(state: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Model kwargs read from the shapes of a reference state dict."""
    if "downsample_layers.0.0.weight" not in state or "head.weight" not in state:
        raise UserError(
            "not a reference SLaK state dict: downsample_layers.0.0.weight or head.weight is missing"
        )
    stem = state["downsample_layers.0.0.weight"]
    depths, dims, kernels = [], [], []
    small, decompose = None, None
    for i in range(4):
        blocks = sorted({int(m.group(2)) for k in state if (m := _BLOCK.match(k)) and m.group(1) == str(i)})
        if not blocks:
            raise UserError(f"reference SLaK state dict has no blocks in stage {i}")
        depths.append(len(blocks))
        prefix = f"stages.{i}.0.large_kernel."
        dims.append(int(state[f"stages.{i}.0.pwconv2.weight"].shape[0]))
        if f"{prefix}LoRA1.conv.weight" in state or f"{prefix}Decom1.conv.weight" in state:
            w = state.get(f"{prefix}LoRA1.conv.weight", state.get(f"{prefix}Decom1.conv.weight"))
            kernels.append(int(w.shape[2]))
            small, decompose = int(w.shape[3]), True
        elif f"{prefix}lkb_origin.conv.weight" in state:
            kernels.append(int(state[f"{prefix}lkb_origin.conv.weight"].shape[2]))
            decompose = False if decompose is None else decompose
            if f"{prefix}small_conv.conv.weight" in state:
                small = int(state[f"{prefix}small_conv.conv.weight"].shape[2])
        elif f"{prefix}lkb_reparam.weight" in state:
            kernels.append(int(state[f"{prefix}lkb_reparam.weight"].shape[2]))
        else:
            raise UserError(f"reference SLaK state dict: no large-kernel weights in {prefix}")
    if decompose and any(k <= small for k in kernels):
        raise UserError(f"decomposed kernels {kernels} must all exceed the small kernel {small}")
    return {
        "in_chans": int(stem.shape[1]),
        "num_classes": int(state["head.weight"].shape[0]),
        "depths": tuple(depths),
        "dims": tuple(dims),
        "width_factor": 1.0,
        "kernel_sizes": tuple(kernels),
        "small_kernel": small if small is not None else kernels[0],
        "decompose": bool(decompose),
        "patch_size": int(stem.shape[-1]),
    }


def _variant(kwargs: dict[str, Any]) -> str:
    for name, (depths, base) in _VARIANTS.items():
        if tuple(kwargs["depths"]) == depths and tuple(kwargs["dims"]) == tuple(int(d * 1.3) for d in base):
            return name
        if tuple(kwargs["depths"]) == depths and tuple(kwargs["dims"]) == base:
            return name
    return "slak_tiny"  # any registered name works: the kwargs override its defaults


def slak_from_reference(state: dict[str, torch.Tensor]) -> SLaKConversion:
    """Rename a reference state dict and read its architecture (no model is built)."""
    kwargs = _architecture(state)
    renamed = {_rename(k): v for k, v in state.items()}
    reparameterized = any(".large_kernel.merged." in k for k in renamed)
    return SLaKConversion(model=_variant(kwargs), model_kwargs=kwargs, state_dict=renamed,
                          reparameterized=reparameterized)  # fmt: skip


def build_converted(conv: SLaKConversion) -> nn.Module:
    """Build the model of a conversion and load its weights strictly (eval mode)."""
    from vision_kd.models import create_model, reparameterize_model

    model = create_model(conv["model"], **conv["model_kwargs"]).eval()
    if conv["reparameterized"]:
        reparameterize_model(model)
    missing, unexpected = model.load_state_dict(conv["state_dict"], strict=False)
    if missing or unexpected:
        raise UserError(
            f"converted SLaK weights do not fit the inferred architecture: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}"
        )
    return model


def convert_slak_checkpoint(
    path: str | os.PathLike[str], out: str | os.PathLike[str], key: str | None = None
) -> tuple[pathlib.Path, SLaKConversion]:
    """Read a reference checkpoint, build and check the model, save it with :func:`vision_kd.weights.save_model`."""
    from vision_kd.weights import save_model

    conv = slak_from_reference(read_reference_state_dict(path, key))
    model = build_converted(conv)
    saved = save_model(out, model, conv["model"], conv["model_kwargs"], source=str(path),
                       reparameterized=conv["reparameterized"])  # fmt: skip
    return saved, conv
