"""Benchmarks of sparse-dst, side by side with torch-pruning and rigl-torch (one CPU thread).

1. Chase slim vs dense throughput (images/s, batch 64) on CIFAR-style VGG-11, ResNet-18 and
   ResNet-50 at the reference's CIFAR channel removal (``--start_layer_rate 0.5``: Sc = 0.5; beta
   0.2 for VGG as in ``Cifar/scripts/vgg19.sh``, 0.5 for the ResNets as in ``ResNet50.sh``), slim
   widths rounded up to multiples of 8 (exact): the realised speedup against the MAC ratio after
   rounding (goal >= 0.85 of it) and >= 1.5x on VGG-11. Goal rows use the CPU inference setting
   (channels_last and freed memory reused, :mod:`sparse_dst.speed`), the same for dense and slim;
   the plain setting (NCHW, glibc's default allocator, measured first) and frozen TorchScript
   (BatchNorm folded, oneDNN fusions; the deployment form of the export) are reported beside it.
2. Channel surgery vs torch-pruning at equal widths on the same three networks: torch-pruning's
   dependency-graph pruner at ratio 0.5, then this package's surgery at exactly the widths it chose
   (goal: our speedup >= 0.95x of theirs).
3. RigL topology update time vs rigl-torch's RigLScheduler on the same MLP (goal <= 0.5x).

Timings use the shared ``research_systems_core.timing`` (process CPU time, interleaved repeats,
medians). Output: ``bench.json`` through ``research_systems_core.bench``.

Usage: python bench.py --out DIR [--quick | --smoke]
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

from research_systems_core.bench import bench_environment, ratio_row, write_bench_json
from sparse_dst.chase import Chase, ChaseConfig, group_channel_scores
from sparse_dst.masking import DSTConfig, Masking
from sparse_dst.models import create_model
from sparse_dst.speed import compare_throughput, frozen_for_inference, reuse_freed_memory
from sparse_dst.surgery import conv_linear_macs, count_parameters, remove_channels
from sparse_dst.tracing import analyse

log = logging.getLogger("sparse_dst.bench")
SHAPE = (3, 32, 32)
# The reference's CIFAR channel removal per network: (Sc, beta).
REFERENCE_REMOVAL = {"vgg11": (0.5, 0.2), "resnet18": (0.5, 0.5), "resnet50": (0.5, 0.5)}
ROUND_TO = 8
MODES = {  # network -> width, per mode; batch, timing seconds per call, rounds
    "smoke": {
        "widths": {"vgg11": 0.125, "resnet18": 0.125, "resnet50": 0.0625},
        "batch": 8,
        "seconds": 0.02,
        "rounds": 1,
        "rigl_steps": 40,
        "frozen": False,  # tracing and freezing six models would take a third of the 30 s
    },
    "quick": {
        "widths": {"vgg11": 1.0, "resnet18": 1.0, "resnet50": 0.5},
        "batch": 64,
        "seconds": 0.3,
        "rounds": 3,
        "rigl_steps": 120,
        "frozen": True,
    },
    "full": {
        "widths": {"vgg11": 1.0, "resnet18": 1.0, "resnet50": 0.5},
        "batch": 64,
        "seconds": 1.0,
        "rounds": 5,
        "rigl_steps": 400,
        "frozen": True,
    },
}


def _random_batches(shape: tuple[int, ...], classes: int, n: int, batch: int, seed: int = 0) -> list[tuple]:
    gen = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(batch, *shape, generator=gen), torch.randint(0, classes, (batch,), generator=gen))
        for _ in range(n)
    ]


def chase_slim(
    name: str, width: float, sc: float = 0.5, beta: float = 0.5, round_to: int = ROUND_TO
) -> tuple[nn.Module, nn.Module]:
    """Chase's channel schedule for a few steps on random data: (dense copy, slim model)."""
    torch.manual_seed(0)
    model = create_model(name, width=width)
    dense = copy.deepcopy(model).eval()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    steps = 8
    cfg = ChaseConfig(density=0.1, channel_sparsity=sc, beta=beta, channel_interval=1, channel_end_fraction=0.5,
                      update_frequency=2)  # fmt: skip
    chase = Chase(model, optimizer, cfg, total_steps=steps, example_input=torch.randn(2, *SHAPE))
    for x, y in _random_batches(SHAPE, 10, steps, 8):
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        chase.step()
    model.eval()
    return dense, chase.finalize(round_to=round_to)


def _speedups(
    pairs: dict[str, tuple[nn.Module, nn.Module]],
    mode: dict[str, Any],
    channels_last: bool,
    frozen: bool = False,
) -> dict[str, dict[str, float]]:
    """Dense and slim images/s per network (interleaved rounds), optionally as frozen TorchScript."""
    out = {}
    for name, (dense, slim) in pairs.items():
        if frozen:
            x = torch.randn(mode["batch"], *SHAPE).contiguous(memory_format=torch.channels_last)
            dense, slim = (frozen_for_inference(copy.deepcopy(m).to(memory_format=torch.channels_last), x)
                           for m in (dense, slim))  # fmt: skip
        rates = compare_throughput({"dense": dense, "slim": slim}, SHAPE, mode["batch"], mode["seconds"],
                                   mode["rounds"], channels_last=channels_last)  # fmt: skip
        out[name] = {**rates, "speedup": rates["slim"] / rates["dense"]}
    return out


def _chase_pairs(mode: dict[str, Any]) -> tuple[dict[str, tuple[nn.Module, nn.Module]], dict[str, Any]]:
    example = torch.randn(2, *SHAPE)
    pairs, details = {}, {}
    for name, width in mode["widths"].items():
        sc, beta = REFERENCE_REMOVAL[name]
        dense, slim = chase_slim(name, width, sc, beta)
        pairs[name] = (dense, slim)
        details[name] = {"width": width, "channel_sparsity": sc, "beta": beta, "round_to": ROUND_TO,
                         "mac_ratio": conv_linear_macs(dense, example) / conv_linear_macs(slim, example),
                         "params": [count_parameters(dense), count_parameters(slim)],
                         "slim_widths": {n: m.out_channels for n, m in slim.named_modules() if isinstance(m, nn.Conv2d)}}  # fmt: skip
    return pairs, details


def bench_chase_speed(mode: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Plain setting first (the allocator change cannot be undone), then the inference settings."""
    pairs, details = _chase_pairs(mode)
    plain = _speedups(pairs, mode, channels_last=False)
    allocator = reuse_freed_memory()
    tuned = _speedups(pairs, mode, channels_last=True)
    frozen = _speedups(pairs, mode, channels_last=True, frozen=True) if mode["frozen"] else {}
    rows, b = [], mode["batch"]
    for name, d in details.items():
        d |= {"plain_nchw_default_allocator": plain[name], "channels_last_reused_memory": tuned[name],
              "frozen_torchscript_channels_last": frozen.get(name), "allocator_changed": allocator}  # fmt: skip
        mac, label = d["mac_ratio"], f"{name} w{d['width']} Chase Sc={d['channel_sparsity']} slim"
        for setting, result, goal in (("channels_last", tuned, ">= 0.85"), ("plain NCHW", plain, None),
                                      ("frozen TorchScript", frozen, None)):  # fmt: skip
            if name not in result:
                continue
            x = result[name]["speedup"]
            rows.append(ratio_row(f"{label} speedup / MAC ratio (b{b}, {setting})", x / mac, None, unit="fraction",
                                  goal=goal, met=(x / mac >= 0.85) if goal else None, speedup=x, mac_ratio=mac))  # fmt: skip
        if name == "vgg11":
            fast = tuned[name]["speedup"]
            rows.append(ratio_row(f"{label} speedup (b{b}, channels_last)", fast, None, unit="x", goal=">= 1.5",
                                  met=fast >= 1.5))  # fmt: skip
        log.info("chase speed %s: %s", name, d)
    return rows, details


def _torch_pruning_slim(tp: Any, dense: nn.Module, classifier: nn.Module) -> nn.Module:
    theirs = copy.deepcopy(dense)
    ignored = [m for m in theirs.modules() if m is not None and isinstance(m, nn.Linear)]
    pruner_cls = getattr(tp.pruner, "MagnitudePruner", None) or tp.pruner.BasePruner
    pruner = pruner_cls(theirs, torch.randn(1, *SHAPE), importance=tp.importance.MagnitudeImportance(p=1),
                        pruning_ratio=0.5, ignored_layers=ignored)  # fmt: skip
    pruner.step()
    return theirs.eval()


def _ours_at_widths(dense: nn.Module, theirs: nn.Module) -> nn.Module:
    """This package's surgery keeping, per channel group, as many channels as torch-pruning kept."""
    groups, _ = analyse(dense, torch.randn(1, *SHAPE))
    params = dict(dense.named_parameters())
    scores = group_channel_scores(params, {}, groups)
    keep = {}
    for g in groups:
        width = theirs.get_submodule(g.name).weight.shape[0]
        vector = torch.zeros(g.size, dtype=torch.bool)
        vector[scores[g.name].argsort(descending=True)[:width]] = True
        keep[g.name] = vector
    return remove_channels(dense, keep, groups).eval()


def bench_vs_torch_pruning(mode: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    try:
        import torch_pruning as tp
    except ImportError as error:
        return [], {"torch_pruning": f"not installed ({error})"}
    rows, details = [], {}
    example = torch.randn(2, *SHAPE)
    for name, width in mode["widths"].items():
        torch.manual_seed(0)
        dense = create_model(name, width=width).eval()
        theirs = _torch_pruning_slim(tp, dense, dense)
        ours = _ours_at_widths(dense, theirs)
        same = [tuple(p.shape) for p in ours.parameters()] == [tuple(p.shape) for p in theirs.parameters()]
        rates = compare_throughput({"dense": dense, "ours": ours, "theirs": theirs}, SHAPE, mode["batch"],
                                   mode["seconds"], mode["rounds"], channels_last=True)  # fmt: skip
        ours_x, theirs_x = rates["ours"] / rates["dense"], rates["theirs"] / rates["dense"]
        details[name] = {"width": width, "images_per_s": rates, "same_architecture": same,
                         "macs": [conv_linear_macs(m, example) for m in (dense, ours, theirs)]}  # fmt: skip
        rows.append(ratio_row(f"{name} w{width} slim speedup at torch-pruning's widths (b{mode['batch']})", ours_x,
                              theirs_x, unit="x", goal=">= 0.95", met=ours_x / theirs_x >= 0.95,
                              same_architecture=same))  # fmt: skip
        log.info("vs torch-pruning %s: %s", name, details[name])
    return rows, details


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


def bench_rigl(mode: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    steps, frequency = mode["rigl_steps"], 10
    ours = _time_our_updates(True, steps, frequency)
    peer = _time_rigl_torch(steps, frequency)
    details = {"mlp": "784-300-100-10, density 0.1 (uniform), first layer dense, batch 128, SGD momentum",
               "ours": ours, "rigl_torch": peer}  # fmt: skip
    if not peer.get("available"):
        return [], details
    ratio = ours["update_ms"] / peer["update_ms"]
    row = ratio_row("RigL topology update time (ms, MLP)", ours["update_ms"], peer["update_ms"], unit="ms",
                    higher_is_better=False, goal="ours <= 0.5x rigl-torch", met=ratio <= 0.5)  # fmt: skip
    return [row], details


def _peers() -> dict[str, str]:
    found = {}
    for module, dist in (("torch_pruning", "torch-pruning"), ("rigl_torch", "rigl-torch")):
        try:
            __import__(module)
        except Exception:
            continue
        found[dist] = dist
    return found


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, required=True, help="output directory for bench.json")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="the full networks, shorter timings")
    group.add_argument(
        "--smoke", action="store_true", help="tiny sizes, every section, peers included (<= 30 s)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    torch.set_num_threads(1)
    name = "smoke" if args.smoke else "quick" if args.quick else "full"
    mode = MODES[name]
    environment = bench_environment(list(_peers()))
    started = time.perf_counter()
    rows, extra = [], {}
    for section, fn in (("chase_speed", bench_chase_speed), ("vs_torch_pruning", bench_vs_torch_pruning),
                        ("rigl_update", bench_rigl)):  # fmt: skip
        section_rows, extra[section] = fn(mode)
        rows += section_rows
    extra["seconds"] = round(time.perf_counter() - started, 1)
    path = write_bench_json(args.out / "bench.json", package="sparse-dst", mode=name, environment=environment,
                            rows=rows, extra=extra)  # fmt: skip
    log.info("wrote %s in %.0fs", path, extra["seconds"])
    for row in rows:
        log.info("%s: ours %.3g peer %s ratio %s goal %s met %s", row["name"], row["ours"], row["peer"],
                 row["ratio"], row["goal"], row["met"])  # fmt: skip
    return {"rows": rows, **extra}


if __name__ == "__main__":
    main()
