"""robust-at benchmarks, side by side with torchattacks (a peer installed only in the bench venv).

1. PGD-10 throughput: ``robust_at.attacks.pgd`` vs ``torchattacks.PGD`` on the same model, batch
   and device (process CPU time on CPU, CUDA events on GPU; interleaved repeats, medians), at
   3x32x32 (goal >= 1.0x) and on 1x8x8 digits; plus their robust accuracy on an adversarially
   trained model (equal attack strength: the same images fooled, to within one binomial std).
2. WOT overhead at the reference's ratio of WOT work to training (``robust_at.overhead``):
   one AT step, one weight-learning pass over 1000 PGD-10-attacked validation images, BatchNorm
   recalibration on 401 batches and a snapshot are timed separately, then combined as one
   reference window (1600 AT steps, 10 passes, 1 recalibration, 5 snapshots; goal <= 5%); the
   share over the reference's whole 200-epoch schedule is reported beside it.

Usage: python benchmarks/bench.py --out DIR [--quick | --smoke]
"""

from __future__ import annotations

import argparse
import logging
import pathlib
import time

import torch

from research_systems_core.bench import bench_environment, ratio_row, write_bench_json
from research_systems_core.timing import compare_calls
from robust_at.attacks import AttackConfig, pgd
from robust_at.data import batches, load_dataset
from robust_at.methods import MadryAT
from robust_at.models import create_model
from robust_at.overhead import REFERENCE_WINDOW, measure_wot_overhead

log = logging.getLogger("bench")
EPS, STEP, STEPS = 0.1, 0.025, 10
SIZES = {  # mode -> (batch, width, repeats, trained epochs, WOT passes timed, AT steps timed)
    "smoke": (16, 8, 2, 1, 1, 4),
    "quick": (128, 32, 5, 3, 2, 20),
    "full": (128, 32, 9, 8, 10, 50),
}


def _torchattacks():
    try:
        import torchattacks
    except ImportError:
        return None
    return torchattacks


def _adversarially_trained_digits_model(width: int, epochs: int):
    data = load_dataset("digits", val_size=200, train_size=1000, seed=0)
    torch.manual_seed(0)
    model = create_model("small-cnn", 10, 1, width=width, depth=4)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    method = MadryAT(AttackConfig(eps=EPS, step_size=STEP, steps=STEPS))
    for epoch in range(epochs):
        gen = torch.Generator().manual_seed(epoch)
        for x, y in batches(data.x_train, data.y_train, 128, shuffle=True, generator=gen):
            loss, _ = method.loss(model.train(), x, y, epoch)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval(), data


def _throughput_row(name: str, net, x, y, ta, repeats: int) -> dict:
    atk = ta.PGD(net, eps=EPS, alpha=STEP, steps=STEPS, random_start=True)
    timings = compare_calls(
        {
            "ours": lambda: pgd(net, x, y, eps=EPS, step_size=STEP, steps=STEPS),
            "torchattacks": lambda: atk(x, y),
        },
        warmup=1,
        repeats=repeats,
    )
    ours, peer = len(y) / timings["ours"].median_s, len(y) / timings["torchattacks"].median_s
    ratio = ours / peer
    log.info("%s: %.1f vs %.1f img/s (%.3fx)", name, ours, peer, ratio)
    return ratio_row(
        name, ours, peer, unit="images/s", goal=">= 1.0x", met=ratio >= 1.0, batch=len(y), repeats=repeats
    )


def _strength_row(net, data, ta) -> dict:
    atk = ta.PGD(net, eps=EPS, alpha=STEP, steps=STEPS, random_start=True)
    x_all, y_all = data.x_test.float(), data.y_test
    torch.manual_seed(0)
    x_ours = torch.cat(
        [pgd(net, xb, yb, eps=EPS, step_size=STEP, steps=STEPS) for xb, yb in batches(x_all, y_all, 128)]
    )
    torch.manual_seed(0)
    x_peer = torch.cat([atk(xb, yb) for xb, yb in batches(x_all, y_all, 128)])
    with torch.no_grad():
        ours = float((net(x_ours).argmax(1) == y_all).float().mean())
        peer = float((net(x_peer).argmax(1) == y_all).float().mean())
    n = len(y_all)
    std = max((ours * (1 - ours) / n) ** 0.5, 1 / n)
    return ratio_row(
        "PGD-10 robust accuracy, adversarially trained small-cnn on digits (597 test images)",
        ours, peer, unit="accuracy", goal="equal within one binomial std", higher_is_better=False,
        met=abs(ours - peer) <= std, ratio=1.0 + (ours - peer), binomial_std=std,
    )  # fmt: skip


def bench_pgd(mode: str) -> list[dict]:
    ta = _torchattacks()
    if ta is None:
        raise SystemExit("torchattacks is not installed: run `uv run nox -s 'bench(robust-at)'`")
    batch, width, repeats, epochs, _, _ = SIZES[mode]
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(1)
    big = create_model("small-cnn", 10, 3, width=width, depth=4).eval()
    x32, y32 = torch.rand(batch, 3, 32, 32, generator=g), torch.randint(0, 10, (batch,), generator=g)
    rows = [_throughput_row(f"PGD-10 small-cnn w{width}, 3x32x32, batch {batch}", big, x32, y32, ta, repeats)]
    net, data = _adversarially_trained_digits_model(width, epochs)
    xd, yd = data.x_test[:batch].float().contiguous(), data.y_test[:batch].contiguous()
    rows.append(
        _throughput_row(f"PGD-10 small-cnn w{width}, digits 1x8x8, batch {batch}", net, xd, yd, ta, repeats)
    )
    rows.append(_strength_row(net, data, ta))
    return rows


def bench_wot_overhead(mode: str, device: torch.device = torch.device("cpu")) -> dict:
    """Each WOT component timed separately, combined at the reference's ratio of WOT work to
    training steps (``robust_at.overhead``): one window is 1600 AT steps, then 10 passes over
    1000 attacked validation images, BatchNorm recalibration on 401 batches and 5 snapshots."""
    _, width, _, _, passes, n_steps = SIZES[mode]
    ref = dict(REFERENCE_WINDOW)
    n_val, bn_batches, batch = ref["val_images"], ref["bn_batches"], ref["batch"]
    if mode == "smoke":
        n_val, bn_batches = 128, 4
    torch.manual_seed(0)
    model = create_model("small-cnn", 10, 1, width=width, depth=4).to(device)
    g = torch.Generator().manual_seed(0)
    x_train = torch.rand(50 * batch, 1, 8, 8, generator=g)
    y_train = torch.randint(0, 10, (50 * batch,), generator=g)
    x_val, y_val = torch.rand(n_val, 1, 8, 8, generator=g), torch.randint(0, 10, (n_val,), generator=g)
    step_batches = list(batches(x_train, y_train, batch, shuffle=True, generator=g, device=device))
    cost = measure_wot_overhead(
        model, step_batches, lambda: batches(x_val, y_val, batch, device=device),
        AttackConfig(eps=EPS, step_size=STEP, steps=STEPS), bn_batches=bn_batches, passes_timed=passes,
        steps_timed=n_steps, device=device,
    )  # fmt: skip
    parts = cost.components_percent(ref)
    overhead = cost.window_percent(ref)
    log.info("WOT overhead %.2f%% of a window (%s); %.2f%% of the reference schedule", overhead,
             ", ".join(f"{k} {v:.2f}%" for k, v in parts.items()), cost.schedule_percent(ref))  # fmt: skip
    return ratio_row(
        f"WOT overhead per window at the reference ratio (1600 AT steps : 10 passes over {n_val} PGD-10 "
        f"images + BN {bn_batches} batches + 5 snapshots)",
        overhead, None, unit="% of AT training time", goal="<= 5%", higher_is_better=False, met=overhead <= 5.0,
        **{k: v for k, v in cost.as_dict(ref).items() if k != "window_percent"}, passes_timed=passes,
        attack_floor_percent=100 * ref["passes"] * n_val / (ref["gap"] * ref["num_gaps"] * batch),
    )  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=pathlib.Path, required=True)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="fewer repeats and WOT passes (about 2 minutes)")
    group.add_argument("--smoke", action="store_true", help="every section on tiny sizes (under 30 s)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(1)
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    ta = _torchattacks()
    env = bench_environment({"torchattacks": getattr(ta, "__version__", None)})
    start = time.perf_counter()
    rows = [*bench_pgd(mode), bench_wot_overhead(mode)]
    path = write_bench_json(
        args.out / "bench.json", package="robust-at", mode=mode, environment=env, rows=rows,
        extra={"seconds": time.perf_counter() - start},
    )  # fmt: skip
    log.info("wrote %s", path)


if __name__ == "__main__":
    main()
