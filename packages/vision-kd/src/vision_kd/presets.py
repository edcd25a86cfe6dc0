"""The paper's recipes as presets: what they train, the reported numbers, the exact commands (not run here).

Numbers are the ones reported by the authors (VITA-Group/SLaK README; arXiv 2305.19412). The
reference trains with an effective batch of 4096 (GPUs x per-GPU batch x ``--update_freq``
gradient accumulation); this package has no gradient accumulation, so the commands below use 32
processes x 128 (``torchrun --nnodes 4 --nproc_per_node 8``) for 4096, or scale ``--lr`` linearly
with a smaller total batch (lr = 4e-3 x batch / 4096).
"""

from __future__ import annotations

from research_systems_core.validation import UnknownNameError

__all__ = ["PRESETS", "get_preset"]

_RUN = "torchrun --nnodes 4 --nproc_per_node 8 -m vision_kd.cli"
_DATA = "--dataset imagenet --data-dir /path/to/data --workers 10 --precision bf16"
_RECIPE = (
    "--epochs 300 --batch-size 128 --lr 4e-3 --weight-decay 0.05 --mixup 0.8 --cutmix 1.0 --smoothing 0.1"
)

PRESETS: dict[str, dict[str, str]] = {
    "slak-tiny-imagenet": {
        "what": "SLaK-T teacher: kernels 51-49-47-13 + 5, width x1.3, 40% sparse (SNIP, -u 2000, prune rate 0.5)",
        "reported": "82.5% ImageNet-1K top-1, 30M parameters, 5.0 GFLOPs (300 epochs)",
        "command": f"{_RUN} train-teacher --model slak_tiny --model-arg drop_path_rate=0.1 --sparsity 0.4 "
        f"--sparse-init snip --prune-rate 0.5 --update-frequency 2000 --ema-decay 0.9999 {_RECIPE} {_DATA} "
        "--out runs/slak_tiny",
    },
    "slak-small-imagenet": {
        "what": "SLaK-S teacher: depths 3-3-27-3, 40% sparse (SNIP, -u 100, prune rate 0.3)",
        "reported": "83.8% ImageNet-1K top-1, 55M parameters, 9.8 GFLOPs (300 epochs)",
        "command": f"{_RUN} train-teacher --model slak_small --model-arg drop_path_rate=0.4 --sparsity 0.4 "
        f"--sparse-init snip --prune-rate 0.3 --update-frequency 100 --ema-decay 0.9999 {_RECIPE} {_DATA} "
        "--out runs/slak_small",
    },
    "convnext-tiny-from-slak-tiny": {
        "what": "ConvNeXt-T (7x7) student of a SLaK-T teacher: the paper's best pure ConvNet under 30M parameters",
        "reported": "83.1% ImageNet-1K top-1, 29M parameters, 4.5 GFLOPs (300 epochs; ConvNeXt-T alone: 82.1%)",
        "command": f"{_RUN} distill --teacher /path/to/SLaK_tiny_checkpoint.pth --student convnext_tiny "
        f"--loss nkd --student-arg drop_path_rate=0.1 --no-cache-teacher {_RECIPE} {_DATA} --out runs/convnext_t_l2s",
    },
    "resnet50-from-slak-tiny": {
        "what": "ResNet-50 student of a SLaK-T teacher, logit KD (the paper's 120-epoch comparison vs ViT/Swin teachers)",
        "reported": "see Table 2 of arXiv 2305.19412 (ResNet-50 students of SLaK-T / ConvNeXt-T / Swin-T / ViT-S)",
        "command": f"{_RUN} distill --teacher /path/to/SLaK_tiny_checkpoint.pth --student resnet50 --loss kd "
        "--no-cache-teacher --epochs 120 --batch-size 128 --lr 4e-3 --mixup 0.8 --cutmix 1.0 --smoothing 0.1 "
        f"{_DATA} --out runs/resnet50_kd",
    },
    "convnext-tiny-from-swin-tiny": {
        "what": "the transformer-teacher baseline: ConvNeXt-T student of a pretrained Swin-T (timm weights)",
        "reported": "see Table 2 of arXiv 2305.19412 (the paper's claim: below the SLaK-T-taught student)",
        "command": f"{_RUN} distill --teacher timm:swin_tiny_patch4_window7_224.ms_in1k --teacher-pretrained "
        "--student convnext_tiny --loss kd --no-cache-teacher --epochs 120 --batch-size 128 --lr 4e-3 "
        f"--mixup 0.8 --cutmix 1.0 --smoothing 0.1 {_DATA} --out runs/convnext_t_from_swin",
    },
}


def get_preset(name: str) -> dict[str, str]:
    if name not in PRESETS:
        raise UnknownNameError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)}")
    return PRESETS[name]
