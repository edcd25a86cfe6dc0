"""``create_model``: timm's factory with a clear error for unknown names."""

from __future__ import annotations

from typing import Any

import timm
from torch import nn

from research_systems_core.validation import UnknownNameError

__all__ = ["create_model", "num_classes_of"]


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build any timm model (including this package's ``slak_*`` and ``kd_*``) by name.

    An unknown name raises :class:`UnknownNameError` listing close matches and this package's models.
    """
    if not timm.is_model(name):
        ours = sorted(timm.list_models("slak_*") + timm.list_models("kd_*"))
        stem = name.split("_")[0] if name else ""
        close = timm.list_models(f"{stem}*")[:12] if stem else []
        raise UnknownNameError(
            f"unknown model {name!r}; this package adds {', '.join(ours)}"
            + (f"; timm models starting with {stem!r}: {', '.join(close)}" if close else "")
            + " (see timm.list_models())"
        )
    return timm.create_model(name, **kwargs)


def num_classes_of(model: nn.Module) -> int:
    """Number of output classes of a timm classifier."""
    n = getattr(model, "num_classes", None)
    if not isinstance(n, int) or n <= 0:
        raise ValueError(f"model {type(model).__name__} has no classifier head (num_classes={n!r})")
    return n
