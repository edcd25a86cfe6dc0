"""Effective receptive field (ERF), as in RepLKNet / SLaK.

1. For each image, the gradient of the central output unit of the last feature map (ReLU'd,
   summed over channels) with respect to the input pixels; ReLU; summed over input channels.
2. Averaged over images (:func:`erf_map`).
3. ``log10(x + 1)``, divided by the maximum (:func:`normalise_erf`).
4. High-contribution area ratio: the area (over the image area) of the smallest square centred
   on the image centre that holds more than a fraction ``t`` of the total (:func:`area_ratio`), for
   t in 0.2, 0.3, 0.5, 0.99. The reference starts at a 3 x 3 square, divides by a hard-coded
   1024^2 and crashes (returns None) when no in-image square qualifies; here squares start at
   1 x 1, grow until they cover the image (clipped at its border, so a square always qualifies
   at the end) and the ratio uses the real image area.

Computed on trained models only: at timm's default initialisation (ResNet ``zero_init_last``,
ConvNeXt ``ls_init_value=1e-6``) residual branches are silenced and the ERF says nothing.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from research_systems_core.validation import check_int, check_range
from vision_kd.features import final_feature_map

__all__ = ["THRESHOLDS", "area_ratio", "erf_map", "erf_summary", "normalise_erf", "plot_erf"]

THRESHOLDS = (0.2, 0.3, 0.5, 0.99)


def _default_feature_fn(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    if hasattr(model, "forward_intermediates") and getattr(model, "feature_info", None):
        return final_feature_map(model, x)
    return model(x)


def erf_map(
    model: nn.Module,
    images: torch.Tensor,
    batch_size: int = 50,
    feature_fn=None,
) -> np.ndarray:
    """Mean over images of ReLU(d sum_c ReLU(f_c(centre)) / d x), summed over input channels (H x W).

    ``feature_fn(model, x) -> N x C x h x w`` picks the map (default: the last tap of timm's
    ``forward_intermediates``). The model runs in eval mode so images do not interact (BatchNorm).
    """
    if images.ndim != 4:
        raise ValueError(f"images must be N x C x H x W, got shape {tuple(images.shape)}")
    check_int("batch_size", batch_size, minimum=1)
    feature_fn = feature_fn or _default_feature_fn
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total = torch.zeros(images.shape[-2:], dtype=torch.float64)
    try:
        for i in range(0, len(images), batch_size):
            x = images[i : i + batch_size].to(device).clone().requires_grad_(True)
            out = feature_fn(model, x)
            if out.ndim != 4:
                raise ValueError(f"the ERF needs an N x C x H x W feature map, got shape {tuple(out.shape)}")
            centre = F.relu(out[:, :, out.shape[2] // 2, out.shape[3] // 2]).sum()
            (grad,) = torch.autograd.grad(centre, x)
            total += F.relu(grad).sum(dim=(0, 1)).double().cpu()
    finally:
        model.train(was_training)
    return (total / len(images)).numpy()


def normalise_erf(scores: np.ndarray) -> np.ndarray:
    """``log10(x + 1)`` then divide by the maximum (all-zero maps stay zero)."""
    data = np.log10(np.asarray(scores, dtype=np.float64) + 1.0)
    peak = data.max()
    return data / peak if peak > 0 else data


def area_ratio(data: np.ndarray, threshold: float) -> tuple[int, float]:
    """(side, area ratio) of the smallest centred square holding more than ``threshold`` of the mass.

    Squares are centred on (H // 2, W // 2), grow by one pixel per side and are clipped at the image
    border; the ratio is the clipped square's area over H * W. ``threshold`` must be in (0, 1).
    """
    check_range("threshold", threshold, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
    data = np.asarray(data, dtype=np.float64)
    if data.ndim != 2:
        raise ValueError(f"ERF data must be 2-D, got shape {data.shape}")
    h, w = data.shape
    total = data.sum()
    if total <= 0:
        raise ValueError("the ERF map is all zero (an untrained or disconnected network?)")
    ch, cw = h // 2, w // 2
    for r in range(max(h, w)):
        top, bottom = max(0, ch - r), min(h, ch + r + 1)
        left, right = max(0, cw - r), min(w, cw + r + 1)
        if data[top:bottom, left:right].sum() / total > threshold:
            return 2 * r + 1, (bottom - top) * (right - left) / (h * w)
    return max(h, w), 1.0  # only reached through rounding: the whole image holds all the mass


def erf_summary(scores: np.ndarray, thresholds: Sequence[float] = THRESHOLDS) -> dict[str, float]:
    """Area ratios of the normalised map at each threshold, e.g. ``{"area@0.2": 0.05, ...}``."""
    data = normalise_erf(scores)
    return {f"area@{t:g}": area_ratio(data, t)[1] for t in thresholds}


def plot_erf(path: str | os.PathLike[str], maps: Mapping[str, np.ndarray], title: str = "") -> str:
    """Side-by-side heat maps of normalised ERFs (one panel per model)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    n = len(maps)
    cols = min(4, n)
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.4 * cols, 2.2 * rows), dpi=110, squeeze=False)
    flat = axes.ravel().tolist()
    for ax, (name, scores) in zip(flat, maps.items(), strict=False):
        data = normalise_erf(scores)
        im = ax.imshow(data, cmap="magma", vmin=0, vmax=1)
        ax.set_title(name, fontsize=8)
    for ax in flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in flat[n:]:
        ax.axis("off")
    fig.colorbar(im, ax=flat, fraction=0.02)
    if title:
        fig.suptitle(title, fontsize=9)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return str(path)
