"""robust-at benchmarks, side by side with torchattacks (installed only in the benchmark venv).

1. PGD-10 throughput: robust_at.attacks.pgd vs torchattacks.PGD on the same model, batch and
   device (interleaved repeats, median), and their robust accuracy on an adversarially trained
   model (equal attack strength).
2. WOT overhead: wall time of AT training with WOT vs without, (a) measured directly over whole
   epochs in the digits setting of the reproduction (gap 8, 4 deltas, 3 passes over 200 images)
   and (b) at the reference's settings (gap 400 steps, 4 deltas, 10 passes over 1000 PGD-10
   attacked validation images, BatchNorm recalibration on 400 batches): one refinement is timed
   directly and amortised over the 1600 training steps it follows, whose cost is measured too.

Usage: python bench.py --out DIR [--quick]
"""

from __future__ import annotations

import argparse
import logging
import pathlib
import statistics
import time

import torch

from research_systems_core.metadata import run_metadata
from research_systems_core.results import write_json
from robust_at.attacks import AttackConfig, pgd
from robust_at.data import batches, load_dataset
from robust_at.evaluate import clean_accuracy
from robust_at.methods import MadryAT
from robust_at.models import create_model
from robust_at.train import build_config, train
from robust_at.wot import WOT, WOTConfig

log = logging.getLogger("bench")
EPS, STEP, STEPS = 0.1, 0.025, 10


def _time(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def _adversarially_trained_model(width: int, epochs: int):
    data = load_dataset("digits", val_size=200, train_size=1000, seed=0)
    torch.manual_seed(0)
    model = create_model("small-cnn", 10, 1, width=width, depth=4)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    method = MadryAT(AttackConfig(eps=EPS, step_size=STEP, steps=STEPS))
    for epoch in range(epochs):
        model.train()
        gen = torch.Generator().manual_seed(epoch)
        for x, y in batches(data.x_train, data.y_train, 128, shuffle=True, generator=gen):
            loss, _ = method.loss(model, x, y, epoch)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval(), data


def bench_pgd(quick: bool) -> dict:
    try:
        import torchattacks
    except ImportError:
        return {"skipped": "torchattacks is not installed (run through `nox -s 'bench(robust-at)'`)"}
    results = {"torchattacks_version": torchattacks.__version__, "cases": []}
    model, data = _adversarially_trained_model(width=32, epochs=3 if quick else 8)
    cases = [("small-cnn w32, digits 1x8x8", model, data.x_test.float(), data.y_test)]
    torch.manual_seed(1)
    big = create_model("small-cnn", 10, 3, width=32, depth=4).eval()
    g = torch.Generator().manual_seed(0)
    cases.append(
        (
            "small-cnn w32, random 3x32x32",
            big,
            torch.rand(256, 3, 32, 32, generator=g),
            torch.randint(0, 10, (256,), generator=g),
        )
    )
    repeats = 3 if quick else 7
    for name, net, x_all, y_all in cases:
        x, y = x_all[:128].contiguous(), y_all[:128].contiguous()
        atk = torchattacks.PGD(net, eps=EPS, alpha=STEP, steps=STEPS, random_start=True)

        def ours(net=net, x=x, y=y):
            return pgd(net, x, y, eps=EPS, step_size=STEP, steps=STEPS)

        def theirs(atk=atk, x=x, y=y):
            return atk(x, y)

        ours(), theirs()  # warm-up
        t_ours, t_theirs = [], []
        for _ in range(repeats):  # interleaved so drifting machine load hits both alike
            t_ours += _time(ours, 1)
            t_theirs += _time(theirs, 1)
        m_ours, m_theirs = statistics.median(t_ours), statistics.median(t_theirs)
        case = {
            "case": name,
            "batch": len(y),
            "steps": STEPS,
            "eps": EPS,
            "robust_at_seconds_median": m_ours,
            "torchattacks_seconds_median": m_theirs,
            "robust_at_images_per_s": len(y) / m_ours,
            "torchattacks_images_per_s": len(y) / m_theirs,
            "speed_ratio_robust_at_over_torchattacks": m_theirs / m_ours,
            "repeats": repeats,
        }
        if name.startswith("small-cnn w32, digits"):
            torch.manual_seed(0)
            x_ours = torch.cat(
                [
                    pgd(net, xb, yb, eps=EPS, step_size=STEP, steps=STEPS)
                    for xb, yb in batches(x_all, y_all, 128)
                ]
            )
            torch.manual_seed(0)
            x_theirs = torch.cat([atk(xb, yb) for xb, yb in batches(x_all, y_all, 128)])
            with torch.no_grad():
                acc_ours = float((net(x_ours).argmax(1) == y_all).float().mean())
                acc_theirs = float((net(x_theirs).argmax(1) == y_all).float().mean())
            n = len(y_all)
            case.update(
                {
                    "n_eval": n,
                    "clean_acc": clean_accuracy(net, x_all, y_all)["acc"],
                    "robust_acc_robust_at": acc_ours,
                    "robust_acc_torchattacks": acc_theirs,
                    "robust_acc_difference": acc_ours - acc_theirs,
                    "binomial_std_error": (acc_ours * (1 - acc_ours) / n) ** 0.5,
                }
            )
        log.info("%s: ratio %.3f", name, case["speed_ratio_robust_at_over_torchattacks"])
        results["cases"].append(case)
    return results


def bench_wot_direct(out: pathlib.Path, quick: bool) -> dict:
    """Whole AT epochs in the reproduction's digits setting, with and without WOT."""
    epochs = 4 if quick else 8
    common = {
        "width": 32,
        "epochs": epochs,
        "milestones": [1],
        "eval_size": 50,
        "eval_steps": 1,
        "val_size": 200,
    }
    times = {}
    for name, wot in (("at", False), ("at+wot", True)):
        cfg = build_config("digits-pilot", {**common, "wot": {"enabled": wot, "start_epoch": 0}})
        result = train(cfg, out / f"wot_direct_{name}", resume=False)
        rows = _read_history(out / f"wot_direct_{name}")
        times[name] = {
            "train_seconds_per_epoch": statistics.fmean(r["train_seconds"] for r in rows),
            "wot_seconds_per_epoch": statistics.fmean(r["wot_seconds"] for r in rows),
            "refinements": result.get("wot", {}).get("refinements", 0),
        }
    overhead = times["at+wot"]["train_seconds_per_epoch"] / times["at"]["train_seconds_per_epoch"] - 1
    return {
        "setting": "digits, small-cnn w32, batch 128, 8 steps/epoch, WOT gap 8, 4 deltas, 3 passes over 200 val images",
        "epochs": epochs,
        **times,
        "overhead_fraction": overhead,
    }


def _read_history(run_dir: pathlib.Path) -> list[dict]:
    import json

    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines() if line.strip()]


def bench_wot_reference(quick: bool) -> dict:
    """One refinement at the reference's settings, amortised over its 1600 training steps."""
    gap, num_gaps, passes, n_val, bn_batches, batch = 400, 4, 10, 1000, 400, 128
    if quick:
        passes = 2
    torch.manual_seed(0)
    model = create_model("small-cnn", 10, 1, width=32, depth=4)
    g = torch.Generator().manual_seed(0)
    x_train, y_train = (
        torch.rand(bn_batches * batch // 8, 1, 8, 8, generator=g),
        torch.randint(0, 10, (bn_batches * batch // 8,), generator=g),
    )
    x_val, y_val = torch.rand(n_val, 1, 8, 8, generator=g), torch.randint(0, 10, (n_val,), generator=g)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    method = MadryAT(AttackConfig(eps=EPS, step_size=STEP, steps=STEPS))
    cfg = WOTConfig(enabled=True, gap=gap, num_gaps=num_gaps, passes=passes, bn_batches=bn_batches)
    wot = WOT(model, cfg)
    wot.start()
    n_steps = 20 if quick else 50
    step_batches = list(batches(x_train, y_train, batch, shuffle=True, generator=g))

    def train_steps() -> float:
        t = time.perf_counter()
        for i in range(n_steps):
            x, y = step_batches[i % len(step_batches)]
            loss, _ = method.loss(model, x, y, 0)
            opt.zero_grad()
            loss.backward()
            opt.step()
            wot.record_step()  # a counter, plus a parameter snapshot every `gap` steps
        return (time.perf_counter() - t) / n_steps

    train_steps()
    t_step = statistics.median([train_steps() for _ in range(3)])
    t_snapshot = statistics.median(_time(lambda: [p.detach().clone() for p in wot.params], 5))
    wot.snapshots = [[p.detach().clone() for p in wot.params] for _ in range(num_gaps + 1)]
    attack = AttackConfig(eps=EPS, step_size=STEP, steps=STEPS)
    bn_gen = torch.Generator().manual_seed(1)
    # BN recalibration cycles through the (smaller) synthetic training set to reach 400 batches

    def bn_source():
        return (b for _ in range(8) for b in batches(x_train, y_train, batch, shuffle=True, generator=bn_gen))

    t = time.perf_counter()
    wot.refine(
        model, lambda: batches(x_val, y_val, batch), lambda m, xb, yb: attack.run(m, xb, yb), bn_source
    )
    t_refine = time.perf_counter() - t
    if quick:  # scale the timed 2 passes to the reference's 10 (BN part measured once, kept)
        t_refine *= 10 / passes
    steps_between = gap * num_gaps
    overhead = (t_refine + (num_gaps + 1) * t_snapshot) / (steps_between * t_step)
    return {
        "setting": "small-cnn w32 on 1x8x8 inputs, batch 128, PGD-10 training; WOT gap 400, 4 deltas, "
        "10 passes over 1000 PGD-10 attacked validation images, BN recalibration 400 batches",
        "train_step_seconds": t_step,
        "snapshot_seconds": t_snapshot,
        "refinement_seconds": t_refine,
        "refinement_passes_timed": passes,
        "steps_between_refinements": steps_between,
        "overhead_fraction": overhead,
        "note": "overhead = (refinement + 5 parameter snapshots) / (1600 AT steps); on CIFAR-10 1600 steps are ~4 epochs",
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--quick", action="store_true", help="fewer repeats and passes (about a minute)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    report = {
        "pgd_throughput": bench_pgd(args.quick),
        "wot_overhead_reference_settings": bench_wot_reference(args.quick),
        "wot_overhead_digits_setting": bench_wot_direct(args.out, args.quick),
        "quick": args.quick,
        "seconds": time.perf_counter() - start,
        "metadata": run_metadata(packages=("robust-at", "torch", "torchattacks")),
    }
    path = write_json(args.out / "bench.json", report)
    log.info("wrote %s", path)


if __name__ == "__main__":
    main()
