"""vision-kd benchmarks (JSON into --out): distillation epoch cost and large-kernel re-parameterisation.

Times are process CPU time (one thread), which stays meaningful when other jobs share the
machine; wall-clock medians are stored as well.

1. Time of one training epoch of the reproduction's student (kd_resnet_micro) on the
   reproduction's data: student alone (cross-entropy), logit KD with cached teacher logits
   (goal <= 1.15x the student-only epoch; the one-off caching pass is reported apart), KD with a
   live SLaK teacher, FD with a live teacher, and the same KD step built from torchdistill's
   ForwardHookManager + KDLoss (when torchdistill is installed; its alpha weighs the hard-label
   term, so alpha_torchdistill = 1 - alpha_ours). The losses of both are checked to agree.
2. Inference throughput (images/s) of SLaK models and single large-kernel layers, branched vs
   re-parameterised, in one run.

Usage: python benchmarks/bench.py --out DIR [--quick]
"""

from __future__ import annotations

import argparse
import json
import logging
import pathlib
import platform
import statistics
import time
from typing import Any

import torch

from research_systems_core.data import resolve_data_dir
from research_systems_core.logs import setup_logging
from research_systems_core.results import write_json
from research_systems_core.seeding import seed_everything
from vision_kd.data import ImageData, load_dataset
from vision_kd.losses import create_loss, kd_loss
from vision_kd.models import LargeKernelConv, create_model, reparameterize_model
from vision_kd.reproduce import ReproConfig
from vision_kd.train import TrainConfig, cache_teacher_outputs, freeze, train

log = logging.getLogger("vision_kd.bench")


def _data(n: int) -> tuple[ImageData, str]:
    try:
        return load_dataset("mnist-cue", resolve_data_dir(), train=True, n=n), "mnist-cue"
    except FileNotFoundError:
        gen = torch.Generator().manual_seed(0)
        images = torch.randn(n, 1, 32, 64, generator=gen)
        return ImageData(
            images, torch.randint(0, 10, (n,), generator=gen), 10, "random"
        ), "random (MNIST not found)"


def _round_robin(fns: dict[str, Any], repeats: int) -> dict[str, dict[str, float]]:
    """Time every epoch function ``repeats`` times, interleaved (load spikes hit all of them alike)."""
    wall: dict[str, list[float]] = {name: [] for name in fns}
    cpu: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            t0, c0 = time.perf_counter(), time.process_time()
            fn()
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    return {
        n: {
            "median_s": statistics.median(cpu[n]),
            "min_s": min(cpu[n]),
            "wall_median_s": statistics.median(wall[n]),
            "runs": repeats,
        }
        for n in fns
    }


def bench_distillation(n: int, repeats: int) -> dict[str, Any]:
    cfg = ReproConfig()
    data, source = _data(n)
    common = {"in_chans": 1, "num_classes": 10}
    seed_everything(0)
    teacher = freeze(create_model(cfg.lk_teacher, **common, **cfg.lk_kwargs))
    tcfg = TrainConfig(epochs=1, batch_size=cfg.batch_size, lr=1e-3)

    def student():
        seed_everything(0)
        return create_model(cfg.student, **common)

    t0 = time.perf_counter()
    cache = cache_teacher_outputs(teacher, data)
    cache_seconds = time.perf_counter() - t0
    t0 = time.perf_counter()
    feat_cache = cache_teacher_outputs(teacher, data, tap=cfg.teacher_tap)
    feat_cache_seconds = time.perf_counter() - t0
    s_ch = student().feature_info[cfg.student_tap]["num_chs"]
    t_ch = feat_cache.features.shape[1]
    kd = {"temperature": cfg.kd_temperature, "alpha": cfg.kd_alpha}

    fd_args = {"student_channels": s_ch, "teacher_channels": t_ch}
    fns: dict[str, Any] = {
        "student_only": lambda: train(student(), data, None, tcfg),
        "kd_cached_logits": lambda: train(student(), data, None, tcfg, create_loss("kd", **kd), teacher_cache=cache),
        "kd_live_teacher": lambda: train(student(), data, None, tcfg, create_loss("kd", **kd), teacher=teacher),
        "fd_cached_features": lambda: train(
            student(), data, None, tcfg, create_loss("fd", **fd_args), teacher_cache=feat_cache,
            student_tap=cfg.student_tap,
        ),
        "fd_live_teacher": lambda: train(
            student(), data, None, tcfg, create_loss("fd", **fd_args), teacher=teacher,
            student_tap=cfg.student_tap, teacher_tap=cfg.teacher_tap,
        ),
    }  # fmt: skip
    peer = _torchdistill_epoch(student, teacher, data, tcfg, kd)
    if peer is not None:
        fns["torchdistill_kd_live_teacher"] = peer[0]
    rows: dict[str, Any] = _round_robin(fns, repeats)
    if peer is not None:
        rows["torchdistill_kd_live_teacher"].update(peer[1])
    base = rows["student_only"]["median_s"]
    for row in rows.values():
        row["x_student_only"] = row["median_s"] / base
    return {
        "data": source,
        "n_images": len(data),
        "batch_size": tcfg.batch_size,
        "student": cfg.student,
        "teacher": {"name": cfg.lk_teacher, **cfg.lk_kwargs},
        "teacher_logit_cache_seconds": cache_seconds,
        "teacher_feature_cache_seconds": feat_cache_seconds,
        "epochs": rows,
        "goal_kd_cached_le_1.15x": rows["kd_cached_logits"]["x_student_only"] <= 1.15,
    }


def _torchdistill_epoch(student_fn, teacher, data, tcfg, kd) -> tuple[Any, dict[str, Any]] | None:
    """One epoch of the same KD built from torchdistill's hooks and KDLoss, plus loss agreement."""
    try:
        from torchdistill.core.forward_hook import ForwardHookManager
        from torchdistill.losses.mid_level import KDLoss as TDKDLoss
    except ImportError as err:
        log.warning("torchdistill not importable (%s); skipping the peer comparison", err)
        return None
    import torchdistill

    t_cls = "head" if hasattr(teacher, "head") and isinstance(teacher.head, torch.nn.Linear) else "fc"
    td_loss = TDKDLoss(
        "fc", "output", t_cls, "output", temperature=kd["temperature"], alpha=1.0 - kd["alpha"]
    )

    # The two KD formulations agree (ours: alpha on the KL term; theirs: alpha on CE).
    s_logits, t_logits = torch.randn(8, 10), torch.randn(8, 10)
    y = torch.randint(0, 10, (8,))
    ours = kd_loss(s_logits, t_logits, y, kd["temperature"], kd["alpha"])
    theirs = td_loss({"fc": {"output": s_logits}}, {t_cls: {"output": t_logits}}, y)
    agreement = float((ours - theirs).abs())

    def epoch() -> None:
        student = student_fn()
        student.train()
        s_hooks, t_hooks = ForwardHookManager("cpu"), ForwardHookManager("cpu")
        s_hooks.add_hook(student, "fc", requires_input=False, requires_output=True)
        t_hooks.add_hook(teacher, t_cls, requires_input=False, requires_output=True)
        optimizer = torch.optim.AdamW(student.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
        order = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
        for i in range(0, len(data) - tcfg.batch_size + 1, tcfg.batch_size):
            idx = order[i : i + tcfg.batch_size]
            x, y = data.images[idx], data.labels[idx]
            with torch.no_grad():
                teacher(x)
            student(x)
            loss = td_loss(s_hooks.pop_io_dict(), t_hooks.pop_io_dict(), y)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

    return epoch, {"version": getattr(torchdistill, "__version__", "?"), "loss_agreement_abs_diff": agreement}


def _throughput(model: torch.nn.Module, x: torch.Tensor, repeats: int) -> float:
    """Images per CPU-second (process time: robust to other jobs on a shared machine)."""
    with torch.no_grad():
        model(x)
        times = []
        for _ in range(repeats):
            c0 = time.process_time()
            model(x)
            times.append(time.process_time() - c0)
    return len(x) / statistics.median(times)


def bench_reparam(repeats: int, quick: bool) -> list[dict[str, Any]]:
    rows = []
    layer_cases = [(64, 31, 5, True, 28), (64, 31, 5, False, 28)]
    if not quick:
        layer_cases += [(64, 51, 5, True, 28), (64, 51, 5, False, 28)]
    for channels, k, small, decompose, size in layer_cases:
        seed_everything(0)
        layer = LargeKernelConv(channels, k, small, decompose).eval()
        x = torch.randn(16, channels, size, size)
        branched = _throughput(layer, x, repeats)
        before = layer(x)
        layer.reparameterize()
        err = float((layer(x) - before).abs().max())
        rows.append(
            {
                "what": f"LargeKernelConv C={channels} K={k} k={small} {'decomposed' if decompose else 'dense'} @ {size}x{size}",
                "batch": len(x),
                "branched_img_s": branched,
                "reparam_img_s": _throughput(layer, x, repeats),
                "max_abs_diff": err,
            }
        )
    cfg = ReproConfig()
    for name, kwargs, shape in [
        (cfg.lk_teacher, {**cfg.lk_kwargs, "in_chans": 1, "num_classes": 10}, (64, 1, 32, 64)),
        ("slak_pico", {"in_chans": 3, "num_classes": 10}, (32, 3, 32, 32)),
    ]:
        seed_everything(0)
        model = create_model(name, **kwargs).eval()
        x = torch.randn(*shape)
        branched = _throughput(model, x, repeats)
        before = model(x)
        reparameterize_model(model)
        rows.append(
            {
                "what": f"{name} {json.dumps({k: v for k, v in kwargs.items() if k not in ('in_chans', 'num_classes')})} input {list(shape[1:])}",
                "batch": shape[0],
                "branched_img_s": branched,
                "reparam_img_s": _throughput(model, x, repeats),
                "max_abs_diff": float((model(x) - before).abs().max()),
            }
        )
    for row in rows:
        row["speedup"] = row["reparam_img_s"] / row["branched_img_s"]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=pathlib.Path, help="output directory for bench.json")
    parser.add_argument("--quick", action="store_true", help="fewer images and repeats (about a minute)")
    args = parser.parse_args()
    setup_logging("INFO")
    torch.set_num_threads(1)
    n, repeats = (640, 2) if args.quick else (3200, 3)
    t0 = time.perf_counter()
    result = {
        "package": "vision-kd",
        "quick": args.quick,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.platform(),
        "distillation_epoch": bench_distillation(n, repeats),
        "reparameterisation": bench_reparam(5 if args.quick else 10, args.quick),
    }
    result["seconds"] = time.perf_counter() - t0
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "bench.json", result)
    epochs = result["distillation_epoch"]["epochs"]
    for name, row in epochs.items():
        log.info("%-30s %.2f CPU-s/epoch  %.2fx student-only", name, row["median_s"], row["x_student_only"])
    for row in result["reparameterisation"]:
        log.info(
            "%s: branched %.0f img/s, reparam %.0f img/s (x%.2f)",
            row["what"],
            row["branched_img_s"],
            row["reparam_img_s"],
            row["speedup"],
        )


if __name__ == "__main__":
    main()
