"""SLaK: sparse large-kernel ConvNet (Liu et al., ICLR 2023), a pure-PyTorch port registered in timm.

The reference (VITA-Group/SLaK, ``models/SLaK.py``) needs a CUDA cutlass extension and SyncBN.
This port uses ``nn.Conv2d`` depthwise convolutions and plain BatchNorm, so it runs anywhere.

A large K x K depthwise kernel is *decomposed* into two parallel rectangular branches
(K x k and k x K) plus a small k x k branch, each followed by BatchNorm and summed. Structural
re-parameterisation (:meth:`LargeKernelConv.reparameterize`) folds every BatchNorm into its
kernel, zero-pads all kernels to K x K and sums them into one biased convolution: the output is
unchanged (in eval mode) and inference runs a single convolution. The reference's
``merge_kernel`` only handles the undecomposed case and pads the rectangular branches with
``K // 2`` on both axes (changing the output size with ``nn.Conv2d``); both are fixed here.

Sparsity: SLaK trains sparse (40% of every 2-D/4-D weight zero, SNIP layer densities, magnitude
prune + random regrowth during training) and widens the network by ``width_factor`` 1.3 to spend
the saved parameters. The model itself is dense; :mod:`vision_kd.sparse` applies and adapts the
masks during training (``vision-kd train-teacher --sparsity 0.4``), so pruned weights are exact
zeros in the parameters and re-parameterisation stays exact.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.layers import DropPath, LayerNorm2d, trunc_normal_
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models._features import feature_take_indices
from torch import nn

from research_systems_core.validation import check_int, check_range

__all__ = ["SLAK_SPARSITY", "LargeKernelConv", "SLaK", "SLaKBlock", "reparameterize_model"]


def _fuse_bn(kernel: torch.Tensor, bn: nn.BatchNorm2d) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold an eval-mode BatchNorm that follows a bias-free conv into (kernel, bias)."""
    std = (bn.running_var + bn.eps).sqrt()
    scale = bn.weight / std
    return kernel * scale.reshape(-1, 1, 1, 1), bn.bias - bn.running_mean * scale


def _pad_to(kernel: torch.Tensor, size: int) -> torch.Tensor:
    """Zero-pad a (C, 1, kh, kw) kernel symmetrically to (C, 1, size, size)."""
    kh, kw = kernel.shape[-2:]
    ph, pw = (size - kh) // 2, (size - kw) // 2
    return F.pad(kernel, [pw, pw, ph, ph])


class _ConvBN(nn.Module):
    """Depthwise bias-free conv (kh x kw, 'same' padding) followed by BatchNorm."""

    def __init__(self, channels: int, kernel: tuple[int, int]) -> None:
        super().__init__()
        self.conv = nn.Conv2d(
            channels, channels, kernel, padding=(kernel[0] // 2, kernel[1] // 2), groups=channels, bias=False
        )
        self.bn = nn.BatchNorm2d(channels)

    def weight(self) -> torch.Tensor:
        return self.conv.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class LargeKernelConv(nn.Module):
    """Depthwise large-kernel convolution with SLaK's decomposition and re-parameterisation.

    Args:
        channels: input = output channels (depthwise).
        kernel_size: the large kernel K (odd).
        small_kernel: the small kernel k (odd, <= K); also the short side of the decomposed branches.
            ``None`` or ``>= K`` gives a single K x K branch.
        decompose: SLaK's K x k + k x K branches instead of one dense K x K branch.
    """

    def __init__(
        self,
        channels: int,
        kernel_size: int,
        small_kernel: int | None = 5,
        decompose: bool = True,
    ) -> None:
        super().__init__()
        check_int("kernel_size", kernel_size, minimum=1)
        if kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd, got {kernel_size}")
        if small_kernel is not None:
            check_int("small_kernel", small_kernel, minimum=1)
            if small_kernel % 2 == 0:
                raise ValueError(f"small_kernel must be odd, got {small_kernel}")
        self.channels = channels
        self.kernel_size = kernel_size
        self.small_kernel = small_kernel
        has_small = small_kernel is not None and small_kernel < kernel_size
        self.decompose = bool(decompose and has_small)

        k, s = kernel_size, small_kernel
        self.branches = nn.ModuleDict()
        if self.decompose:
            self.branches["vertical"] = _ConvBN(channels, (k, s))
            self.branches["horizontal"] = _ConvBN(channels, (s, k))
        else:
            self.branches["large"] = _ConvBN(channels, (k, k))
        if has_small:
            self.branches["small"] = _ConvBN(channels, (s, s))
        self.merged: nn.Conv2d | None = None

    @property
    def reparameterized(self) -> bool:
        return self.merged is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged is not None:
            return self.merged(x)
        out = None
        for branch in self.branches.values():
            y = branch(x)
            out = y if out is None else out + y
        return out

    @torch.no_grad()
    def equivalent_kernel_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The single K x K kernel and bias equal to the sum of the BN-folded branches (eval mode)."""
        kernel = torch.zeros(self.channels, 1, self.kernel_size, self.kernel_size, device=self._device())
        bias = torch.zeros(self.channels, device=kernel.device)
        for branch in self.branches.values():
            k, b = _fuse_bn(branch.weight(), branch.bn)
            kernel += _pad_to(k, self.kernel_size)
            bias += b
        return kernel, bias

    def _device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Replace the branches by one merged K x K depthwise conv with bias (inference only)."""
        if self.merged is not None:
            return
        kernel, bias = self.equivalent_kernel_bias()
        pad = self.kernel_size // 2
        merged = nn.Conv2d(self.channels, self.channels, self.kernel_size, padding=pad, groups=self.channels)
        merged.to(kernel.device)
        merged.weight.copy_(kernel)
        merged.bias.copy_(bias)
        self.merged = merged
        del self.branches
        self.branches = nn.ModuleDict()


class SLaKBlock(nn.Module):
    """ConvNeXt-style block with a large-kernel depthwise conv: LK conv, LN, MLP (4x), layer scale."""

    def __init__(
        self,
        dim: int,
        kernel_size: int,
        small_kernel: int | None,
        decompose: bool,
        drop_path: float = 0.0,
        ls_init_value: float | None = 1e-6,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        self.large_kernel = LargeKernelConv(dim, kernel_size, small_kernel, decompose)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        hidden = int(mlp_ratio * dim)
        self.pwconv1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.pwconv2 = nn.Linear(hidden, dim)
        self.gamma = nn.Parameter(ls_init_value * torch.ones(dim)) if ls_init_value else None
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x
        x = self.large_kernel(x).permute(0, 2, 3, 1)
        x = self.pwconv2(self.act(self.pwconv1(self.norm(x))))
        if self.gamma is not None:
            x = x * self.gamma
        return shortcut + self.drop_path(x.permute(0, 3, 1, 2))


class SLaK(nn.Module):
    """SLaK classifier with timm's model interface (forward_features/head/intermediates, feature_info).

    Args:
        depths, dims: blocks and channels per stage (dims are multiplied by ``width_factor``).
        kernel_sizes: large kernel per stage (the reference's first four ``kernel_size`` entries).
        small_kernel: the small kernel (the reference's last ``kernel_size`` entry, 5).
        decompose: SLaK's K x k + k x K decomposition (``--Decom``); False gives RepLKNet-style
            dense K x K + small kernel.
        width_factor: channel multiplier (1.3 for SLaK).
        patch_size: stem patch size (4 for ImageNet; 1 or 2 for small images).
    """

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 1000,
        depths: Sequence[int] = (3, 3, 9, 3),
        dims: Sequence[int] = (96, 192, 384, 768),
        kernel_sizes: int | Sequence[int] = (51, 49, 47, 13),
        small_kernel: int | None = 5,
        decompose: bool = True,
        width_factor: float = 1.0,
        patch_size: int = 4,
        drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        ls_init_value: float | None = 1e-6,
        head_init_scale: float = 1.0,
        global_pool: str = "avg",
    ) -> None:
        super().__init__()
        if len(depths) != len(dims):
            raise ValueError(f"depths and dims must have the same length, got {len(depths)} and {len(dims)}")
        n_stages = len(depths)
        if isinstance(kernel_sizes, int):
            kernel_sizes = (kernel_sizes,) * n_stages
        if len(kernel_sizes) != n_stages:
            raise ValueError(
                f"kernel_sizes needs one entry per stage ({n_stages}), got {tuple(kernel_sizes)}"
            )
        check_range("width_factor", width_factor, 0.0, low_inclusive=False)
        check_int("patch_size", patch_size, minimum=1)
        if global_pool not in ("avg", ""):
            raise ValueError(f"global_pool must be 'avg' or '', got {global_pool!r}")
        dims = [int(d * width_factor) for d in dims]
        self.num_classes = num_classes
        self.global_pool = global_pool
        self.drop_rate = drop_rate
        self.kernel_sizes = tuple(kernel_sizes)

        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, dims[0], kernel_size=patch_size, stride=patch_size),
            LayerNorm2d(dims[0], eps=1e-6),
        )
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        stages: list[nn.Module] = []
        self.feature_info = []
        reduction, cursor = patch_size, 0
        for i in range(n_stages):
            layers: list[nn.Module] = []
            if i > 0:
                layers += [LayerNorm2d(dims[i - 1], eps=1e-6), nn.Conv2d(dims[i - 1], dims[i], 2, stride=2)]
                reduction *= 2
            downsample = nn.Sequential(*layers) if layers else nn.Identity()
            blocks = [
                SLaKBlock(
                    dims[i],
                    self.kernel_sizes[i],
                    small_kernel,
                    decompose,
                    rates[cursor + j],
                    ls_init_value,
                )
                for j in range(depths[i])
            ]
            cursor += depths[i]
            stages.append(nn.Sequential(downsample, *blocks))
            self.feature_info.append({"num_chs": dims[i], "reduction": reduction, "module": f"stages.{i}"})
        self.stages = nn.Sequential(*stages)
        self.num_features = self.head_hidden_size = dims[-1]
        self.norm = nn.LayerNorm(dims[-1], eps=1e-6)
        self.head_drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)
        if isinstance(self.head, nn.Linear):
            self.head.weight.data.mul_(head_init_scale)
            self.head.bias.data.mul_(head_init_scale)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    # --- timm interface -------------------------------------------------------------------
    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.num_classes = num_classes
        if global_pool is not None:
            self.global_pool = global_pool
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for stage in self.stages:
            x = stage(x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.global_pool == "avg":
            x = x.mean((2, 3))
        x = self.head_drop(self.norm(x))
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def forward_intermediates(
        self,
        x: torch.Tensor,
        indices: int | list[int] | None = None,
        norm: bool = False,
        stop_early: bool = False,
        output_fmt: str = "NCHW",
        intermediates_only: bool = False,
    ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Stage outputs at ``indices`` (timm's convention) and, unless asked not to, the final map."""
        if output_fmt != "NCHW":
            raise ValueError(f"output_fmt must be 'NCHW', got {output_fmt!r}")
        take, max_index = feature_take_indices(len(self.stages), indices)
        intermediates = []
        x = self.stem(x)
        stages = self.stages[: max_index + 1] if stop_early else self.stages
        for i, stage in enumerate(stages):
            x = stage(x)
            if i in take:
                intermediates.append(x)
        if intermediates_only:
            return intermediates
        return x, intermediates


@torch.no_grad()
def reparameterize_model(model: nn.Module) -> nn.Module:
    """Merge every :class:`LargeKernelConv` of ``model`` in place (call after ``model.eval()``)."""
    if model.training:
        raise ValueError("reparameterize_model needs an eval-mode model (BatchNorm statistics are folded)")
    for module in model.modules():
        if isinstance(module, LargeKernelConv):
            module.reparameterize()
    return model


def _cfg(**kwargs: object) -> dict:
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 0.875,
        "interpolation": "bicubic",
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "first_conv": "stem.0",
        "classifier": "head",
        "license": "mit",
        **kwargs,
    }


default_cfgs = generate_default_cfgs(
    {
        "slak_tiny.untrained": _cfg(),
        "slak_small.untrained": _cfg(),
        "slak_base.untrained": _cfg(),
        "slak_pico.untrained": _cfg(input_size=(3, 32, 32), pool_size=(2, 2), num_classes=10),
    }
)


def _create(variant: str, pretrained: bool = False, **kwargs: object) -> SLaK:
    if pretrained:
        raise ValueError(
            f"{variant} has no downloadable weights in this port; convert a reference SLaK checkpoint with "
            "`vision-kd convert-slak FILE` (or pass the .pth as --teacher) and pass pretrained=False"
        )
    return build_model_with_cfg(
        SLaK,
        variant,
        pretrained,
        feature_cfg={"out_indices": (0, 1, 2, 3), "flatten_sequential": True},
        **kwargs,
    )


# The paper's SLaK: kernels (51, 49, 47, 13) + 5, decomposed, width x1.3; trained with 40% sparsity
# (vision_kd.sparse, SLAK_SPARSITY) over every 2-D/4-D weight: 30M / 55M / 95M non-zero parameters.
_PAPER = {
    "kernel_sizes": (51, 49, 47, 13),
    "small_kernel": 5,
    "decompose": True,
    "width_factor": 1.3,
}
SLAK_SPARSITY = 0.4


@register_model
def slak_tiny(pretrained: bool = False, **kwargs: object) -> SLaK:
    """SLaK-T (depths 3-3-9-3, dims 96..768 x1.3)."""
    return _create(
        "slak_tiny", pretrained, **{"depths": (3, 3, 9, 3), "dims": (96, 192, 384, 768), **_PAPER, **kwargs}
    )


@register_model
def slak_small(pretrained: bool = False, **kwargs: object) -> SLaK:
    """SLaK-S (depths 3-3-27-3)."""
    return _create(
        "slak_small", pretrained, **{"depths": (3, 3, 27, 3), "dims": (96, 192, 384, 768), **_PAPER, **kwargs}
    )


@register_model
def slak_base(pretrained: bool = False, **kwargs: object) -> SLaK:
    """SLaK-B (depths 3-3-27-3, dims 128..1024 x1.3)."""
    return _create(
        "slak_base",
        pretrained,
        **{"depths": (3, 3, 27, 3), "dims": (128, 256, 512, 1024), **_PAPER, **kwargs},
    )


@register_model
def slak_pico(pretrained: bool = False, **kwargs: object) -> SLaK:
    """CPU-sized SLaK for small images: dims 16-32-64-128, depths 1-1-2-1, kernels 31-15-7-3 + 3, patch 2."""
    args = {
        "depths": (1, 1, 2, 1),
        "dims": (16, 32, 64, 128),
        "kernel_sizes": (31, 15, 7, 3),
        "small_kernel": 3,
        "decompose": True,
        "width_factor": 1.0,
        "patch_size": 2,
    }
    return _create("slak_pico", pretrained, **{**args, **kwargs})
