"""CPU-sized teachers and students registered in timm (for quick runs on small images).

- ``kd_convnext_micro``: timm ConvNeXt, dims 16-32-64-128, one block per stage, kernel 3 (the
  small-kernel student; pass ``kernel_sizes=31`` etc. for a dense large-kernel ConvNeXt).
- ``kd_resnet_micro``: timm ResNet with basic blocks, channels 16-32-64-128, one block per stage
  (3x3 kernels; a CPU-sized stand-in for the paper's ResNet-50 student).
- ``kd_vit_micro``: timm VisionTransformer, patch 4, width 64, depth 4, 4 heads (the transformer
  teacher).

Both take every keyword their timm class takes (``in_chans``, ``num_classes``, ``img_size``,
``kernel_sizes``, ``patch_size``, ...).
"""

from __future__ import annotations

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.convnext import ConvNeXt
from timm.models.resnet import BasicBlock, ResNet
from timm.models.vision_transformer import VisionTransformer

__all__ = ["kd_convnext_micro", "kd_resnet_micro", "kd_vit_micro"]


def _cfg(**kwargs: object) -> dict:
    return {
        "url": "",
        "num_classes": 10,
        "input_size": (3, 32, 32),
        "crop_pct": 1.0,
        "interpolation": "bilinear",
        "mean": (0.5, 0.5, 0.5),
        "std": (0.5, 0.5, 0.5),
        "license": "mit",
        **kwargs,
    }


default_cfgs = generate_default_cfgs(
    {
        "kd_convnext_micro.untrained": _cfg(first_conv="stem.0", classifier="head.fc"),
        "kd_resnet_micro.untrained": _cfg(first_conv="conv1", classifier="fc"),
        "kd_vit_micro.untrained": _cfg(first_conv="patch_embed.proj", classifier="head"),
    }
)


def _no_pretrained(variant: str, pretrained: bool) -> None:
    if pretrained:
        raise ValueError(f"{variant} has no pretrained weights; pass pretrained=False")


@register_model
def kd_convnext_micro(pretrained: bool = False, **kwargs: object) -> ConvNeXt:
    """Tiny ConvNeXt (dims 16-32-64-128, depths 1-1-1-1, kernel 3, patch 2) for CPU distillation runs."""
    _no_pretrained("kd_convnext_micro", pretrained)
    args = {
        "depths": (1, 1, 1, 1),
        "dims": (16, 32, 64, 128),
        "kernel_sizes": 3,
        "patch_size": 2,
        "conv_mlp": False,
    }
    return build_model_with_cfg(
        ConvNeXt,
        "kd_convnext_micro",
        pretrained,
        feature_cfg={"out_indices": (0, 1, 2, 3), "flatten_sequential": True},
        **{**args, **kwargs},
    )


@register_model
def kd_vit_micro(pretrained: bool = False, **kwargs: object) -> VisionTransformer:
    """Tiny ViT (patch 4, width 64, depth 4, 4 heads, 32x32 input by default) as a transformer teacher."""
    _no_pretrained("kd_vit_micro", pretrained)
    args = {"img_size": 32, "patch_size": 4, "embed_dim": 64, "depth": 4, "num_heads": 4, "mlp_ratio": 2.0}
    return build_model_with_cfg(
        VisionTransformer,
        "kd_vit_micro",
        pretrained,
        feature_cfg={"out_indices": 3, "feature_cls": "getter"},
        **{**args, **kwargs},
    )


@register_model
def kd_resnet_micro(pretrained: bool = False, **kwargs: object) -> ResNet:
    """Tiny ResNet (basic blocks, channels 16-32-64-128, layers 1-1-1-1, 3x3 kernels) for CPU runs."""
    _no_pretrained("kd_resnet_micro", pretrained)
    args = {"block": BasicBlock, "layers": (1, 1, 1, 1), "channels": (16, 32, 64, 128)}
    return build_model_with_cfg(ResNet, "kd_resnet_micro", pretrained, **{**args, **kwargs})
