"""Precision, autocast, memory layout, compilation and determinism: one place for every package.

``precision`` is one of ``fp32`` (no autocast), ``bf16`` or ``fp16`` (autocast to that dtype; fp16
training also needs the grad scaler from :func:`grad_scaler`, which is a no-op otherwise).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from research_systems_core.seeding import seed_everything
from research_systems_core.validation import check_choice

__all__ = [
    "PRECISIONS",
    "autocast",
    "check_precision",
    "configure_determinism",
    "grad_scaler",
    "maybe_compile",
    "to_channels_last",
    "torch_dtype",
]

PRECISIONS = ("fp32", "bf16", "fp16")
_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(name: str) -> str:
    """Return ``name`` if it is a known precision, else a ValueError naming the allowed ones."""
    return check_choice("precision", name, PRECISIONS)


def torch_dtype(precision: str) -> torch.dtype:
    """The torch dtype of a precision name (``bf16`` -> ``torch.bfloat16``)."""
    return _DTYPES[check_precision(precision)]


@contextlib.contextmanager
def autocast(device: torch.device | str, precision: str = "fp32") -> Iterator[None]:
    """Autocast to the precision's dtype on ``device`` (nothing happens for ``fp32``)."""
    precision = check_precision(precision)
    device = torch.device(device)
    if precision == "fp32":
        yield
        return
    if device.type == "mps" and precision == "bf16":
        raise ValueError("precision 'bf16' is not supported on MPS; use fp16 or fp32")
    with torch.autocast(device_type=device.type, dtype=_DTYPES[precision]):
        yield


def grad_scaler(device: torch.device | str, precision: str = "fp32") -> torch.amp.GradScaler:
    """A GradScaler that is enabled only for fp16 on CUDA (bf16 and fp32 need no loss scaling).

    Use it unconditionally: ``scaler.scale(loss).backward(); scaler.step(opt); scaler.update()``
    reduces to a plain step when it is disabled."""
    device = torch.device(device)
    enabled = check_precision(precision) == "fp16" and device.type == "cuda"
    return torch.amp.GradScaler(device.type if device.type == "cuda" else "cpu", enabled=enabled)


def to_channels_last(model: nn.Module, device: torch.device | str) -> nn.Module:
    """Convert a convolutional model to channels_last on CUDA, where tensor cores prefer it; a no-op
    elsewhere (on CPU it rarely helps and changes which kernels run)."""
    if torch.device(device).type == "cuda" and any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return model.to(memory_format=torch.channels_last)
    return model


def maybe_compile(model: nn.Module, enabled: bool = False, **kwargs: object) -> nn.Module:
    """``torch.compile(model)`` when ``enabled`` (opt-in: compilation costs minutes up front)."""
    return torch.compile(model, **kwargs) if enabled else model  # type: ignore[return-value]


def configure_determinism(seed: int, deterministic: bool = False) -> int:
    """Seed python/numpy/torch and set cuDNN flags in one place.

    ``deterministic=True`` asks for deterministic kernels (slower; bit-exact reruns on one GPU);
    otherwise cuDNN autotuning (``benchmark``) is on, which is fastest for fixed input shapes."""
    seed = seed_everything(seed, deterministic=deterministic)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic
    if not deterministic:
        torch.use_deterministic_algorithms(False)
    return seed
