"""Channel scores: UMM (Chase's default) and MMM (its ablation)."""

from __future__ import annotations

import torch

SCORE_METHODS = ("umm", "mmm")


def channel_scores(
    weight: torch.Tensor, mask: torch.Tensor | None = None, method: str = "umm"
) -> torch.Tensor:
    """One score per output channel (row) of a conv/linear ``weight``.

    - ``umm`` (unmasked mean magnitude): mean of |w| over the whole filter, the masked zeros
      included, so a channel with few active weights scores low.
    - ``mmm`` (masked mean magnitude): mean of |w| over the active entries only; a channel
      without active weights scores 0.
    """
    if method not in SCORE_METHODS:
        raise ValueError(f"channel score method must be one of {list(SCORE_METHODS)}, got {method!r}")
    magnitude = weight.detach().abs().reshape(weight.shape[0], -1)
    if mask is None:
        mask = torch.ones_like(magnitude, dtype=torch.bool)
    active = mask.reshape(weight.shape[0], -1).to(magnitude.dtype)
    masked = magnitude * active
    if method == "umm":
        return masked.mean(dim=1)
    count = active.sum(dim=1)
    return torch.where(count > 0, masked.sum(dim=1) / count.clamp_min(1), torch.zeros_like(count))


def channel_density(mask: torch.Tensor) -> torch.Tensor:
    """Fraction of active weights of every output channel (row) of a mask."""
    return mask.reshape(mask.shape[0], -1).float().mean(dim=1)
