"""Small torch helpers every package needs: thread count and device choice."""

from __future__ import annotations

import torch

from research_systems_core.validation import check_int

__all__ = ["available_devices", "resolve_device", "set_torch_threads"]


def set_torch_threads(n: int = 1) -> None:
    """Use ``n`` intra-op threads (1 in tests: on few cores oversubscription costs several x)."""
    torch.set_num_threads(check_int("threads", n, minimum=1))


def available_devices() -> list[str]:
    """Names of the devices usable here, e.g. ``['auto', 'cpu', 'cuda:0']``."""
    names = ["auto", "cpu"]
    if torch.cuda.is_available():
        names += [f"cuda:{i}" for i in range(torch.cuda.device_count())]
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        names.append("mps")
    return names


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; explicit names are checked for availability."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError):
        device = None
    if device is None or device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {name!r} asked for, but CUDA is not available here; available: {', '.join(available_devices())}"
        )
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(
            f"device {name!r} asked for, but only {torch.cuda.device_count()} CUDA device(s) exist; "
            f"available: {', '.join(available_devices())}"
        )
    if device.type == "mps" and not (
        getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()
    ):
        raise ValueError(
            f"device {name!r} asked for, but MPS is not available here; available: {', '.join(available_devices())}"
        )
    return device
