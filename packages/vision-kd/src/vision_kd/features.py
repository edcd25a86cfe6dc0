"""Feature taps through timm's ``forward_intermediates`` (no hooks, no monkey-patching)."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["feature_channels", "final_feature_map", "forward_with_features", "num_taps"]


def num_taps(model: nn.Module) -> int:
    """How many intermediate outputs (stages or blocks) ``forward_intermediates`` can return."""
    info = getattr(model, "feature_info", None)
    if not info or not hasattr(model, "forward_intermediates"):
        raise ValueError(
            f"{type(model).__name__} has no forward_intermediates/feature_info; it cannot be tapped"
        )
    return len(info)


def _resolve(model: nn.Module, index: int) -> int:
    n = num_taps(model)
    if not -n <= index < n:
        raise ValueError(
            f"feature tap {index} out of range for {type(model).__name__} with {n} taps (use 0..{n - 1} or -1)"
        )
    return index % n


def forward_with_features(model: nn.Module, x: torch.Tensor, index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One forward pass returning (logits, the NCHW feature map at tap ``index``)."""
    final, intermediates = model.forward_intermediates(x, indices=[_resolve(model, index)], output_fmt="NCHW")
    return model.forward_head(final), intermediates[0]


def final_feature_map(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The last tap as an NCHW map (ViT tokens reshaped to their grid); used for the ERF."""
    return model.forward_intermediates(
        x, indices=[num_taps(model) - 1], output_fmt="NCHW", intermediates_only=True
    )[0]


@torch.no_grad()
def feature_channels(model: nn.Module, input_shape: tuple[int, int, int], index: int) -> tuple[int, int, int]:
    """(C, H, W) of the tap ``index`` for inputs of ``input_shape`` (C, H, W), by a dummy forward."""
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        _, feat = forward_with_features(model, torch.zeros(1, *input_shape, device=device), index)
    finally:
        model.train(was_training)
    if feat.ndim != 4:
        raise ValueError(
            f"tap {index} of {type(model).__name__} is not a feature map: shape {tuple(feat.shape)}"
        )
    return int(feat.shape[1]), int(feat.shape[2]), int(feat.shape[3])
