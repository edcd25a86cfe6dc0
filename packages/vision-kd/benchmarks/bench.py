"""vision-kd benchmarks -> ``bench.json`` through ``research_systems_core.bench``.

1. Distillation epoch cost on the reproduction's student (``kd_resnet_micro``) and data
   (``mnist-cue`` canvases; random images when MNIST is absent): student alone, logit KD with
   cached teacher logits (goal: <= 1.05x the student-only epoch), KD with the live SLaK teacher, and
   the same KD built from torchdistill's ``ForwardHookManager`` + ``KDLoss`` (the peer, when
   installed; its alpha weighs the hard-label term, so alpha_torchdistill = 1 - alpha_ours; the two
   losses are checked to agree). Interleaved repeats, medians of process CPU time.
2. Inference throughput of large-kernel layers and SLaK models, branched vs re-parameterised
   (max abs difference recorded).
3. Cost of one SLaK prune-and-regrow update (every prunable weight of ``slak_pico``) against one
   optimizer step, i.e. the overhead of dynamic sparsity per update.

Usage: ``python benchmarks/bench.py --out DIR [--quick | --smoke]`` (``nox -s "bench(vision-kd)"``).
"""

from __future__ import annotations

import argparse
import copy
import logging
import pathlib
import time
from typing import Any

import torch

from research_systems_core.bench import bench_environment, ratio_row, write_bench_json
from research_systems_core.logs import setup_logging
from research_systems_core.seeding import seed_everything
from research_systems_core.timing import compare_calls
from research_systems_core.vision import ImageDataset
from vision_kd.data import TensorImages, load_data
from vision_kd.losses import create_loss, kd_loss
from vision_kd.models import LargeKernelConv, create_model, reparameterize_model
from vision_kd.reproduce import ReproConfig
from vision_kd.sparse import DynamicSparsity, SparseConfig, layer_densities
from vision_kd.train import TrainConfig, cache_teacher_outputs, freeze, train

log = logging.getLogger("vision_kd.bench")
MODES = {
    "smoke": (128, 1, 1),
    "quick": (640, 2, 3),
    "full": (3200, 3, 5),
}  # images, epoch repeats, fwd repeats


def _data(n: int) -> ImageDataset:
    try:
        return load_data("mnist-cue", n_train=n, n_test=64)
    except FileNotFoundError:
        gen = torch.Generator().manual_seed(0)
        train = TensorImages(
            torch.rand(n, 1, 32, 64, generator=gen), torch.randint(0, 10, (n,), generator=gen)
        )
        return ImageDataset(train, train, 10, 1, 32, (0.5,), (0.5,), "random")


def _torchdistill_epoch(student_fn, teacher, data, tcfg, kd) -> tuple[Any, dict[str, Any]] | None:
    """One epoch of the same KD from torchdistill's hooks and KDLoss, and the loss agreement."""
    try:
        import torchdistill
        from torchdistill.core.forward_hook import ForwardHookManager
        from torchdistill.losses.mid_level import KDLoss as TDKDLoss
    except ImportError as err:
        log.warning("torchdistill not importable (%s): no peer row", err)
        return None
    td_loss = TDKDLoss(
        "fc", "output", "head", "output", temperature=kd["temperature"], alpha=1.0 - kd["alpha"]
    )
    s_logits, t_logits, y = torch.randn(8, 10), torch.randn(8, 10), torch.randint(0, 10, (8,))
    ours = kd_loss(s_logits, t_logits, y, kd["temperature"], kd["alpha"])
    theirs = td_loss({"fc": {"output": s_logits}}, {"head": {"output": t_logits}}, y)
    images = torch.stack([data.train[i][0] for i in range(len(data.train))])
    labels = torch.stack([torch.as_tensor(data.train[i][1]) for i in range(len(data.train))])

    def epoch() -> None:
        student = student_fn().train()
        s_hooks, t_hooks = ForwardHookManager("cpu"), ForwardHookManager("cpu")
        s_hooks.add_hook(student, "fc", requires_input=False, requires_output=True)
        t_hooks.add_hook(teacher, "head", requires_input=False, requires_output=True)
        optimizer = torch.optim.AdamW(student.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
        order = torch.randperm(len(images), generator=torch.Generator().manual_seed(0))
        for i in range(0, len(order) - tcfg.batch_size + 1, tcfg.batch_size):
            idx = order[i : i + tcfg.batch_size]
            x = (images[idx] - 0.5) / 0.5
            with torch.no_grad():
                teacher(x)
            student(x)
            loss = td_loss(s_hooks.pop_io_dict(), t_hooks.pop_io_dict(), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return epoch, {
        "version": torchdistill.__version__,
        "loss_agreement_abs_diff": float((ours - theirs).abs()),
    }


def bench_distillation(n: int, repeats: int) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    cfg = ReproConfig()
    data = _data(n)
    common = {"in_chans": 1, "num_classes": 10}
    seed_everything(0)
    teacher = freeze(create_model(cfg.lk_teacher, **common, **cfg.lk_kwargs))
    tcfg = TrainConfig(epochs=1, batch_size=cfg.batch_size, lr=1e-3, device="cpu")
    kd = {"temperature": cfg.kd_temperature, "alpha": cfg.kd_alpha}

    def student():
        seed_everything(0)
        return create_model(cfg.student, **common)

    t0 = time.process_time()
    cache = cache_teacher_outputs(teacher, data)
    cache_s = time.process_time() - t0
    run = dict(evaluate_each_epoch=False)
    fns: dict[str, Any] = {
        "student_only": lambda: train(student(), data, tcfg, **run),
        "kd_cached_logits": lambda: train(
            student(), data, tcfg, create_loss("kd", **kd), teacher_cache=cache, **run
        ),
        "kd_live_teacher": lambda: train(
            student(), data, tcfg, create_loss("kd", **kd), teacher=teacher, **run
        ),
    }
    peer = _torchdistill_epoch(student, teacher, data, tcfg, kd)
    if peer is not None:
        fns["torchdistill_kd_live_teacher"] = peer[0]
    timing = {k: v.median_s for k, v in compare_calls(fns, warmup=1, repeats=repeats).items()}
    base = timing["student_only"]
    ratio = timing["kd_cached_logits"] / base
    rows = [
        ratio_row(
            "kd_cached_epoch_vs_student_only",
            timing["kd_cached_logits"],
            base,
            unit="CPU s/epoch",
            goal="<= 1.05x the student-only epoch",
            higher_is_better=False,
            met=ratio <= 1.05,
        ),
        ratio_row(
            "kd_live_epoch_vs_student_only",
            timing["kd_live_teacher"],
            base,
            unit="CPU s/epoch",
            higher_is_better=False,
        ),
    ]
    if peer is not None:
        rows.append(ratio_row("kd_live_epoch_vs_torchdistill", timing["kd_live_teacher"],
                              timing["torchdistill_kd_live_teacher"], unit="CPU s/epoch", higher_is_better=False,
                              goal="<= 1.10x torchdistill", met=timing["kd_live_teacher"]
                              <= 1.10 * timing["torchdistill_kd_live_teacher"]))  # fmt: skip
    extra = {"n_images": n, "batch_size": tcfg.batch_size, "teacher_cache_cpu_s": cache_s, "epoch_cpu_s": timing,
             "torchdistill": peer[1] if peer is not None else None, "kd": kd}  # fmt: skip
    return rows, extra


def _images_per_s(fns: dict[str, Any], batch: int, repeats: int) -> dict[str, float]:
    return {k: batch / v.median_s for k, v in compare_calls(fns, warmup=1, repeats=repeats).items()}


def bench_reparam(repeats: int, smoke: bool) -> list[dict[str, Any]]:
    rows = []
    cases = [(32, 13, 3, True, 16)] if smoke else [(64, 31, 5, True, 28), (64, 51, 5, True, 28)]
    for channels, k, small, decompose, size in cases:
        seed_everything(0)
        branched = LargeKernelConv(channels, k, small, decompose).eval()
        merged = LargeKernelConv(channels, k, small, decompose).eval()
        merged.load_state_dict(branched.state_dict())
        merged.reparameterize()
        x = torch.randn(8, channels, size, size)
        with torch.no_grad():
            diff = float((merged(x) - branched(x)).abs().max())
            speed = _images_per_s(
                {"merged": lambda m=merged, x=x: m(x), "branched": lambda b=branched, x=x: b(x)},
                len(x),
                repeats,
            )
        rows.append(ratio_row(f"reparam_layer_C{channels}_K{k}_k{small}", speed["merged"], speed["branched"],
                              unit="images/CPU-s", max_abs_diff=diff))  # fmt: skip
    seed_everything(0)
    cfg = ReproConfig()
    model = create_model(cfg.lk_teacher, in_chans=1, num_classes=10, **cfg.lk_kwargs).eval()
    merged = reparameterize_model(copy.deepcopy(model).eval())
    x = torch.randn(32, 1, 32, 64)
    with torch.no_grad():
        diff = float((merged(x) - model(x)).abs().max())
        speed = _images_per_s({"merged": lambda: merged(x), "branched": lambda: model(x)}, len(x), repeats)
    rows.append(ratio_row("reparam_slak_pico_17-9-5-3", speed["merged"], speed["branched"], unit="images/CPU-s",
                          max_abs_diff=diff))  # fmt: skip
    return rows


def bench_sparse_update(repeats: int) -> list[dict[str, Any]]:
    seed_everything(0)
    model = create_model("slak_pico", in_chans=3, num_classes=100)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    cfg = SparseConfig(sparsity=0.4, init="erk", update_frequency=1)
    sparse = DynamicSparsity(model, opt, cfg, 1000, layer_densities(model, cfg))
    x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 100, (32,))

    def step() -> None:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    timing = compare_calls({"update": sparse.update, "step": step}, warmup=1, repeats=repeats)
    return [ratio_row("sparse_update_vs_train_step", timing["update"].median_s, timing["step"].median_s,
                      unit="CPU s", higher_is_better=False, prunable_layers=len(sparse.maskset.masks))]  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=pathlib.Path, help="output directory for bench.json")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="fewer images and repeats (about a minute)")
    group.add_argument("--smoke", action="store_true", help="every section on tiny sizes (< 30 s)")
    args = parser.parse_args()
    setup_logging("INFO")
    torch.set_num_threads(1)
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    n, epoch_repeats, fwd_repeats = MODES[mode]
    import importlib.util

    env = bench_environment(["torchdistill"] if importlib.util.find_spec("torchdistill") else [])
    t0 = time.perf_counter()
    rows, extra = bench_distillation(n, epoch_repeats)
    rows += bench_reparam(fwd_repeats, args.smoke)
    rows += bench_sparse_update(fwd_repeats)
    extra["seconds"] = time.perf_counter() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    path = write_bench_json(args.out / "bench.json", package="vision-kd", mode=mode, environment=env, rows=rows,
                            extra={"distillation": extra})  # fmt: skip
    for row in rows:
        log.info("%-40s ours %.4g peer %s ratio %s met %s", row["name"], row["ours"], row["peer"], row["ratio"],
                 row["met"])  # fmt: skip
    log.info("wrote %s (%.0f s)", path, extra["seconds"])


if __name__ == "__main__":
    main()
