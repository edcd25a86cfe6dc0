"""vision-kd GPU checks (random 224 px data, bf16; no download): ``python benchmarks/gpu_check.py --out DIR``.

1. ``slak_tiny_forward``: SLaK-T (kernels 51-49-47-13 + 5, width 1.3) inference images/s with its
   three branches and after re-parameterisation (and their max difference in fp32), against timm's
   ConvNeXt-T, batch 64, bf16 autocast.
2. ``kd_resnet50_from_slak_tiny``: KD training images/s of a timm ResNet-50 student with a SLaK-T
   teacher through :func:`vision_kd.train.train`, teacher online and with cached logits.
3. ``slak_tiny_sparse_update``: one SLaK prune-and-regrow update over every 2-D/4-D weight of SLaK-T
   (40% sparsity) against one training step.
"""

from __future__ import annotations

import copy
import time

import torch

from research_systems_core.gpu_check import gpu_check_main
from research_systems_core.precision import autocast
from research_systems_core.timing import compare_calls
from research_systems_core.vision import ImageDataset

BATCH = 64


def _images_per_s(fns: dict, batch: int, repeats: int = 5) -> dict[str, float]:
    timing = compare_calls(fns, device="cuda", warmup=2, repeats=repeats)
    return {name: round(batch / t.median_s, 1) for name, t in timing.items()}


def slak_tiny_forward() -> dict:
    import timm

    import vision_kd  # noqa: F401
    from vision_kd.models import reparameterize_model

    torch.manual_seed(0)
    branched = timm.create_model("slak_tiny").cuda().eval()
    merged = reparameterize_model(copy.deepcopy(branched).eval())
    convnext = timm.create_model("convnext_tiny").cuda().eval()
    x = torch.randn(BATCH, 3, 224, 224, device="cuda")
    with torch.no_grad():
        diff = float((merged(x[:4]) - branched(x[:4])).abs().max())

        def run(model):
            def fn():
                with autocast("cuda", "bf16"):
                    model(x)

            return fn

        speed = _images_per_s({"slak_tiny_branched": run(branched), "slak_tiny_reparam": run(merged),
                               "convnext_tiny": run(convnext)}, BATCH)  # fmt: skip
    return {"images_per_s": speed, "reparam_max_abs_diff_fp32": diff, "batch": BATCH, "precision": "bf16"}


def _random_images(n: int) -> ImageDataset:
    from vision_kd.data import TensorImages

    gen = torch.Generator().manual_seed(0)
    train = TensorImages(
        torch.rand(n, 3, 224, 224, generator=gen), torch.randint(0, 1000, (n,), generator=gen)
    )
    return ImageDataset(train, train, 1000, 3, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), "random224")


def kd_resnet50_from_slak_tiny() -> dict:
    import timm

    import vision_kd  # noqa: F401
    from vision_kd.losses import create_loss
    from vision_kd.train import TeacherOutputs, TrainConfig, train

    n = BATCH * 8
    data = _random_images(n)
    teacher = timm.create_model("slak_tiny", num_classes=1000)
    cfg = TrainConfig(epochs=2, batch_size=BATCH, lr=1e-3, device="cuda", precision="bf16")
    out = {}
    cache = TeacherOutputs(torch.randn(n, 1000))  # cached logits: the loop indexes them by sample
    for name, kwargs in (("online", {"teacher": teacher}), ("cached_logits", {"teacher_cache": cache})):
        torch.manual_seed(0)
        student = timm.create_model("resnet50", num_classes=1000)
        t0 = time.perf_counter()
        result = train(student, data, cfg, create_loss("kd"), evaluate_each_epoch=False, **kwargs)
        torch.cuda.synchronize()
        out[f"{name}_images_per_s"] = round(n / result["epoch_seconds"][-1], 1)  # epoch 2 (warm)
        out[f"{name}_total_s"] = round(time.perf_counter() - t0, 2)
    out["batch"] = BATCH
    return out


def slak_tiny_sparse_update() -> dict:
    import timm

    import vision_kd  # noqa: F401
    from vision_kd.sparse import DynamicSparsity, SparseConfig, layer_densities

    torch.manual_seed(0)
    model = timm.create_model("slak_tiny", num_classes=1000).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    cfg = SparseConfig(sparsity=0.4, init="erk", update_frequency=1)
    sparse = DynamicSparsity(model, opt, cfg, 1000, layer_densities(model, cfg))
    x, y = torch.randn(32, 3, 224, 224, device="cuda"), torch.randint(0, 1000, (32,), device="cuda")

    def step():
        with autocast("cuda", "bf16"):
            loss = torch.nn.functional.cross_entropy(model(x).float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    timing = compare_calls({"update": sparse.update, "step": step}, device="cuda", warmup=1, repeats=3)
    return {"update_s": round(timing["update"].median_s, 4), "train_step_s": round(timing["step"].median_s, 4),
            "sparsity": round(sparse.sparsity(), 4), "sparse_layers": len(sparse.maskset.masks)}  # fmt: skip


CHECKS = {
    "slak_tiny_forward": slak_tiny_forward,
    "kd_resnet50_from_slak_tiny": kd_resnet50_from_slak_tiny,
    "slak_tiny_sparse_update": slak_tiny_sparse_update,
}

if __name__ == "__main__":
    gpu_check_main("vision-kd", CHECKS, default_budget_s=75.0)
