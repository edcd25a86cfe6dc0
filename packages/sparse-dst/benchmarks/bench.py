"""Benchmarks of sparse-dst, side by side with rigl-torch and torch-pruning (one thread).

1. Inference throughput (images/s, batch 64 and 1) of dense vs masked-unstructured vs
   Chase-slim models.
2. Mask-update overhead: time per RigL topology update vs rigl-torch's RigLScheduler on the
   same 784-300-100-10 MLP, and the share of training wall time spent in updates.
3. Channel surgery vs torch-pruning's dependency-graph pruner: slim-model speedups on the same
   VGG-style CNN at the same widths.

Usage: python bench.py --out DIR [--quick]
"""

from __future__ import annotations

import argparse
import copy
import logging
import pathlib
import statistics
import sys
import time
import types
from typing import Any

import torch
from torch import nn

from research_systems_core.masks import MaskSet, erk_densities
from research_systems_core.metadata import run_metadata
from research_systems_core.results import write_json
from sparse_dst.chase import Chase, ChaseConfig
from sparse_dst.masking import DSTConfig, Masking, prunable_weights
from sparse_dst.models import create_model
from sparse_dst.speed import compare_throughput
from sparse_dst.surgery import conv_linear_macs, count_parameters, remove_channels
from sparse_dst.tracing import find_channel_groups

log = logging.getLogger("sparse_dst.bench")


def _random_batches(shape: tuple[int, ...], classes: int, n: int, batch: int, seed: int = 0) -> list[tuple]:
    gen = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(batch, *shape, generator=gen), torch.randint(0, classes, (batch,), generator=gen))
        for _ in range(n)
    ]


def _chase_slim(
    name: str, kwargs: dict[str, Any], shape: tuple[int, ...], sc: float = 0.5
) -> tuple[nn.Module, nn.Module]:
    """Run Chase's channel schedule for a few steps on random data; return (masked, slim)."""
    torch.manual_seed(0)
    model = create_model(name, **kwargs)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    steps = 8
    cfg = ChaseConfig(
        density=0.1, channel_sparsity=sc, channel_interval=1, channel_end_fraction=0.5, update_frequency=2
    )
    chase = Chase(model, optimizer, cfg, total_steps=steps)
    for x, y in _random_batches(shape, 10, steps, 8):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        chase.step()
    model.eval()
    return model, chase.finalize()


def _masked(model: nn.Module, density: float = 0.1) -> nn.Module:
    masked = copy.deepcopy(model)
    shapes = {n: tuple(p.shape) for n, p in prunable_weights(masked).items()}
    MaskSet.random(shapes, erk_densities(shapes, density), torch.Generator().manual_seed(0)).apply(masked)
    return masked


def _speed_rows(models: dict[str, nn.Module], shape: tuple[int, ...], seconds: float) -> list[dict[str, Any]]:
    """Interleaved throughput of several models (batch 64 and 1), with size and MACs."""
    example = torch.randn(2, *shape)
    fast = compare_throughput(models, shape, 64, seconds)
    single = compare_throughput(models, shape, 1, seconds)
    names = list(models)
    rows = []
    for name in names:
        rows.append({
            "model": name,
            "batch64_images_per_s": round(fast[name], 1),
            "batch1_images_per_s": round(single[name], 1),
            "speedup_batch64": round(fast[name] / fast[names[0]], 3),
            "speedup_batch1": round(single[name] / single[names[0]], 3),
            "params": count_parameters(models[name]),
            "nonzero_params": count_parameters(models[name], nonzero=True),
            "macs": conv_linear_macs(models[name], example),
        })  # fmt: skip
    return rows


def bench_throughput(quick: bool) -> list[dict[str, Any]]:
    seconds = 0.2 if quick else 0.5
    setups = [("vgg11", {"width": 0.5, "in_channels": 3}, (3, 32, 32))]
    if not quick:
        setups.append(("small_cnn", {"in_channels": 1}, (1, 28, 28)))
    out = []
    for name, kwargs, shape in setups:
        masked_chase, slim = _chase_slim(name, kwargs, shape)
        dense = create_model(name, **kwargs).eval()
        models = {"dense": dense, "masked_unstructured_90pct": _masked(dense), "chase_slim_sc0.5": slim}
        rows = _speed_rows(models, shape, seconds)
        x = torch.randn(4, *shape)
        with torch.no_grad():
            diff = float((masked_chase(x) - slim(x)).abs().max())
        widths = {n: m.out_channels for n, m in slim.named_modules() if isinstance(m, nn.Conv2d)}
        out.append(
            {
                "network": name,
                "input": list(shape),
                "rows": rows,
                "slim_vs_masked_max_abs_diff": diff,
                "slim_conv_widths": widths,
            }
        )
        log.info("throughput %s: %s", name, rows)
    return out


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return create_model("mlp", in_features=784, hidden=(300, 100), num_classes=10)


def _time_our_updates(dense_first: bool, steps: int, frequency: int) -> dict[str, float]:
    model = _mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    cfg = DSTConfig(
        density=0.1,
        distribution="uniform",
        update_frequency=frequency,
        update_rate=0.3,
        dense_first=dense_first,
    )
    masking = Masking(model, optimizer, cfg, total_steps=steps * 10)
    plain = []
    started = time.perf_counter()
    for x, y in _random_batches((784,), 10, steps, 128):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        due = (masking.step_count + 1) % frequency == 0
        t = time.perf_counter()
        masking.step()
        if not due:
            plain.append(time.perf_counter() - t)
    wall = time.perf_counter() - started
    return {"sgd_step_ms": 1e3 * statistics.median(plain), "update_ms": 1e3 * masking.update_seconds / masking.n_updates,
            "updates": masking.n_updates, "overhead_fraction_of_training": masking.update_seconds / wall}  # fmt: skip


def _time_rigl_torch(steps: int, frequency: int) -> dict[str, Any]:
    try:
        import torchvision  # noqa: F401
    except ImportError:
        # rigl-torch imports torchvision only for isinstance checks against torchvision's ResNet
        # blocks (both branches recurse identically); an empty stand-in keeps its behaviour.
        stub = types.ModuleType("torchvision")
        stub.models = types.ModuleType("torchvision.models")
        stub.models.resnet = types.ModuleType("torchvision.models.resnet")
        stub.models.resnet.BasicBlock = type("BasicBlock", (), {})
        stub.models.resnet.Bottleneck = type("Bottleneck", (), {})
        sys.modules["torchvision"] = stub
        sys.modules["torchvision.models"] = stub.models
        sys.modules["torchvision.models.resnet"] = stub.models.resnet
        stubbed = True
    else:
        stubbed = False
    try:
        from rigl_torch.RigL import RigLScheduler
    except Exception as error:  # not installed (outside the bench venv)
        return {"available": False, "error": f"{type(error).__name__}: {error}"}
    model = _mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    pruner = RigLScheduler(
        model, optimizer, dense_allocation=0.1, sparsity_distribution="uniform", T_end=steps * 10,
        delta=frequency, alpha=0.3, ignore_linear_layers=False,
    )  # fmt: skip
    plain, update = [], []
    for x, y in _random_batches((784,), 10, steps, 128):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        t = time.perf_counter()
        if pruner():
            optimizer.step()
            plain.append(time.perf_counter() - t)
        else:
            update.append(time.perf_counter() - t)
    dense = [i for i, s in enumerate(pruner.S) if s <= 0]
    return {"available": True, "torchvision_stand_in": stubbed, "sgd_step_ms": 1e3 * statistics.median(plain),
            "update_ms": 1e3 * statistics.median(update), "updates": len(update), "dense_layers": dense}  # fmt: skip


def _chase_training_overhead(quick: bool) -> dict[str, float]:
    """Share of wall time in topology updates + channel removal for Chase on small_cnn (MNIST shape)."""
    steps = 60 if quick else 200
    torch.manual_seed(0)
    model = create_model("small_cnn", in_channels=1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    cfg = ChaseConfig(density=0.1, update_frequency=25, channel_interval=25, channel_end_fraction=0.6)
    chase = Chase(model, optimizer, cfg, total_steps=steps)
    spent = 0.0
    started = time.perf_counter()
    for x, y in _random_batches((1, 14, 14), 10, steps, 128):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        due = chase._update_due(chase.step_count + 1) or chase._channel_due(chase.step_count + 1)
        t = time.perf_counter()
        chase.step()
        if due:
            spent += time.perf_counter() - t
    wall = time.perf_counter() - started
    return {"steps": steps, "wall_s": wall, "update_and_removal_s": spent, "overhead_fraction": spent / wall}


def bench_overhead(quick: bool) -> dict[str, Any]:
    steps, frequency = (120, 10) if quick else (400, 10)
    ours_all = _time_our_updates(False, steps, frequency)
    ours_first_dense = _time_our_updates(True, steps, frequency)
    peer = _time_rigl_torch(steps, frequency)
    realistic = _time_our_updates(False, steps, 100)
    result = {
        "mlp": "784-300-100-10, density 0.1 (uniform), batch 128, SGD momentum",
        "ours_every_layer_sparse": ours_all,
        "ours_first_layer_dense": ours_first_dense,
        "rigl_torch": peer,
        "ours_overhead_at_update_frequency_100": realistic,
        "chase_small_cnn": _chase_training_overhead(quick),
    }
    if peer.get("available"):
        result["update_time_ratio_ours_over_rigl_torch"] = ours_first_dense["update_ms"] / peer["update_ms"]
    log.info("overhead: %s", result)
    return result


def bench_surgery(quick: bool) -> dict[str, Any]:
    seconds = 0.2 if quick else 0.5
    shape = (3, 32, 32)
    torch.manual_seed(0)
    dense = create_model("vgg11", width=0.5).eval()
    example = torch.randn(1, *shape)
    result: dict[str, Any] = {"network": "vgg11 width 0.5 (CIFAR-style, 32x32)", "pruned_fraction": 0.5}
    try:
        import torch_pruning as tp
    except Exception as error:
        tp = None
        result["torch_pruning"] = {"available": False, "error": f"{type(error).__name__}: {error}"}
    widths: dict[str, int]
    if tp is not None:
        theirs = copy.deepcopy(dense)
        pruner_cls = getattr(tp.pruner, "BasePruner", None) or tp.pruner.MetaPruner
        started = time.perf_counter()
        pruner = pruner_cls(
            theirs, example, importance=tp.importance.MagnitudeImportance(p=1), pruning_ratio=0.5,
            ignored_layers=[theirs.classifier],
        )  # fmt: skip
        pruner.step()
        their_seconds = time.perf_counter() - started
        theirs.eval()
        widths = {n: m.out_channels for n, m in theirs.named_modules() if isinstance(m, nn.Conv2d)}
        result["torch_pruning"] = {
            "available": True,
            "version": getattr(tp, "__version__", "?"),
            "prune_seconds": their_seconds,
        }
    else:
        widths = {n: m.out_channels // 2 for n, m in dense.named_modules() if isinstance(m, nn.Conv2d)}
        theirs = None
    groups, _ = find_channel_groups(dense)
    keep = {}
    for g in groups:
        weight = dense.get_submodule(g.producer).weight
        order = weight.detach().abs().reshape(weight.shape[0], -1).mean(1).argsort(descending=True)
        vector = torch.zeros(weight.shape[0], dtype=torch.bool)
        vector[order[: widths[g.producer]]] = True
        keep[g.producer] = vector
    started = time.perf_counter()
    ours = remove_channels(dense, keep, groups)
    our_seconds = time.perf_counter() - started
    models = {"dense": dense, "sparse_dst_slim": ours.eval()}
    if theirs is not None:
        models["torch_pruning_slim"] = theirs
    rows = _speed_rows(models, shape, seconds)
    result |= {"rows": rows, "widths": widths, "our_surgery_seconds": our_seconds}
    if theirs is not None:
        result["our_speedup_over_theirs_batch64"] = round(
            rows[1]["speedup_batch64"] / rows[2]["speedup_batch64"], 3
        )
        result["our_speedup_over_theirs_batch1"] = round(
            rows[1]["speedup_batch1"] / rows[2]["speedup_batch1"], 3
        )
    log.info("surgery: %s", rows)
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, required=True, help="output directory for JSON")
    parser.add_argument("--quick", action="store_true", help="shorter timings, fewer models")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result = {
        "threads": torch.get_num_threads(),
        "throughput": bench_throughput(args.quick),
        "overhead": bench_overhead(args.quick),
        "surgery": bench_surgery(args.quick),
        "quick": args.quick,
    }
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["metadata"] = run_metadata(packages=["sparse-dst", "rigl-torch", "torch-pruning"])
    write_json(args.out / "bench.json", result)
    log.info("wrote %s in %.0fs", args.out / "bench.json", result["seconds"])
    return result


if __name__ == "__main__":
    main()
