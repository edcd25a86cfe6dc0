"""Small CPU reproduction of WOT's main claim: it reduces robust overfitting of PGD-AT.

The setting is chosen so that plain AT visibly overfits on this CPU (found with a short
exploration, README): scikit-learn digits with a small training set (200 images, 30% of the
labels flipped), 100 clean held-out validation images (WOT's weights and early stopping's epoch
choice; never the test set), 597 test images; a 4-conv CNN of width 32, L-inf eps 0.1, PGD-10
training, SGD lr 0.1 (batch 32) decayed x0.1 at epoch 15 and trained 30 epochs past it. Per seed
three runs: PGD-AT (with a passive SWA average of its trajectory from the LR decay and its
best-validation epoch for early stopping), PGD-AT + WOT-B and PGD-AT + WOT-W. WOT uses the
reference's settings (``cifar10-preact18`` preset: 4 deltas, 10 passes, SGD lr 0.1 momentum 0.9
with the reference's per-tensor momentum, zero init, optimizer reset), with the step counts
scaled to this data set: gap = one epoch of steps and BatchNorm recalibration on one epoch of
batches (the reference: 400 steps and 401 batches, about one CIFAR-10 epoch), the gap doubling and
BatchNorm train mode at 75% of the epochs (reference: epoch 150 of 200), WOT from the LR decay.
Final models are evaluated with PGD-20 on the whole test split and with AutoAttack (official
code; APGD-CE + APGD-T) on a test subset.

Verdict rule, fixed before the runs (``_verdict``): robust overfitting is present when AT's
best-epoch minus last-epoch PGD-20 accuracy (mean over seeds) is at least 3 points; otherwise
the claim cannot be tested here. WOT-B's claim is "reproduced" when its last-epoch PGD-20
accuracy beats AT's last epoch by more than two standard errors of the per-seed difference
(at least 1 point), closes at least half of AT's gap, and is not below early stopping or SWA
by more than one standard error; "partly" when it beats AT's last epoch by more than one
standard error; else "not reproduced". When the learned weights average below 0.05 the reason
says that WOT acted as a reset to each window's start.
"""

from __future__ import annotations

import json
import logging
import math
import pathlib
import shutil
import statistics
import time
from dataclasses import dataclass, field

import torch

from research_systems_core.config import config_to_dict
from research_systems_core.metadata import run_metadata
from research_systems_core.results import plot_curves, write_json
from robust_at.data import load_dataset
from robust_at.evaluate import autoattack_accuracy, clean_accuracy, pgd_accuracy
from robust_at.presets import PRESETS
from robust_at.train import TrainConfig, build_config, build_model, load_weights, train

__all__ = ["ReproConfig", "reproduce"]

log = logging.getLogger(__name__)

PAPER = (
    "Huang et al., Enhancing Adversarial Training via Reweighting Optimization Trajectory (WOT), ECML 2023"
)
CLAIM = (
    "WOT (learned per-block weights on the recent optimization trajectory, fitted on a held-out split) "
    "reduces robust overfitting of PGD adversarial training: its last-epoch robust accuracy stays near "
    "the best-epoch value, above plain AT and on par with or above early stopping and SWA."
)


@dataclass
class ReproConfig:
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    train_size: int = 200  # a small training set: robust overfitting grows as data shrinks
    val_size: int = 100  # clean held-out images: WOT's weights and early stopping's choice
    label_noise: float = 0.3
    eps: float = 0.1
    epochs: int = 45
    milestone: int = 15  # LR decay; training runs 30 epochs past it
    lr: float = 0.1
    batch_size: int = 32
    width: int = 32
    eval_steps: int = 3  # PGD steps of the per-epoch curves (and of early stopping's validation)
    final_steps: int = 20  # PGD steps of the final table
    autoattack_n: int = 50  # test images for AutoAttack (APGD-CE + APGD-T), on AUTOATTACK_ARMS
    eval_size: int | None = 100  # test images per epoch for the curves (None: all 597)
    swa_eval_every: int = 5
    final_n: int | None = 400  # test images for the PGD-20 table (None: all 597)
    wot_lr: float = 0.1  # the reference's (hard-coded) weight learning rate
    wot_passes: int = 10  # the reference's passes over the validation split per refinement
    runs: tuple[str, ...] = ("at", "wot", "wotw")  # AT (+ SWA, early stopping), WOT-B, WOT-W


FULL = ReproConfig()
# quick: seed 0 of the full run without WOT-W (the same AT and WOT-B runs, so the full run can
# reuse them) and a smaller final evaluation; the overfitting needs the 30 epochs past the decay
QUICK = ReproConfig(seeds=[0], autoattack_n=30, final_n=200, runs=("at", "wot"))
ARMS = {  # table row -> (run, weights file)
    "AT (last epoch)": ("at", "last"),
    "AT (best epoch, test-selected oracle)": ("at", "best_test"),
    "AT + early stopping (val-selected)": ("at", "best_val"),
    "AT + SWA": ("at", "swa"),
    "AT + WOT-B (last epoch)": ("wot", "last"),
    "AT + WOT-W (last epoch)": ("wotw", "last"),
    "AT + WOT-B (best epoch, test-selected oracle)": ("wot", "best_test"),
}
# AutoAttack costs about 10 s of CPU per model here whatever the image count (1,000 small
# APGD iterations); the oracle rows get PGD-20 only (and --quick also skips WOT-W)
AUTOATTACK_ARMS = (
    "AT (last epoch)",
    "AT + early stopping (val-selected)",
    "AT + SWA",
    "AT + WOT-B (last epoch)",
    "AT + WOT-W (last epoch)",
)


def wot_settings(rc: ReproConfig) -> dict:
    """The reference's WOT options with its step counts scaled to this data set (module docstring)."""
    steps_per_epoch = math.ceil(rc.train_size / rc.batch_size)
    late = round(0.75 * rc.epochs)  # the reference's epoch 150 of 200
    return {
        **PRESETS["cifar10-preact18"]["wot"], "gap": steps_per_epoch, "bn_batches": steps_per_epoch,
        "start_epoch": rc.milestone, "train_mode_epoch": late, "times_epoch": late, "lr": rc.wot_lr,
        "passes": rc.wot_passes, "save_trajectory": True,
    }  # fmt: skip


def run_configs(rc: ReproConfig, seed: int) -> dict[str, TrainConfig]:
    common = {
        "seed": seed, "width": rc.width, "epochs": rc.epochs, "milestones": [rc.milestone], "lr": rc.lr,
        "batch_size": rc.batch_size, "eval_steps": rc.eval_steps, "eval_size": rc.eval_size,
        "train_size": rc.train_size, "val_size": rc.val_size, "label_noise": rc.label_noise, "eps": rc.eps,
        "step_size": rc.eps / 4, "device": "cpu",
    }  # fmt: skip
    wot = wot_settings(rc)
    cfgs = {
        "at": build_config("digits-pilot", {**common, "swa": True, "swa_eval_every": rc.swa_eval_every}),
        "wot": build_config("digits-pilot", {**common, "wot": {**wot, "grouping": "block"}}),
        "wotw": build_config("digits-pilot", {**common, "wot": {**wot, "grouping": "model"}}),
    }
    return {run: cfgs[run] for run in rc.runs}


def arms(rc: ReproConfig) -> dict[str, tuple[str, str]]:
    """The table rows whose run is part of ``rc.runs``."""
    return {arm: spec for arm, spec in ARMS.items() if spec[0] in rc.runs}


def train_seed(cfgs: dict[str, TrainConfig], seed_dir: pathlib.Path, data, milestone: int) -> dict:
    """The three runs of a seed. The WOT runs continue from the AT run's checkpoint at the end of
    epoch ``milestone - 1`` (WOT starts at the decay; until then the runs are the same computation:
    same seed, data, batches and steps), which saves their first epochs."""
    fork = seed_dir / "fork_checkpoints"
    if not fork.is_dir() and not (seed_dir / "at" / "result.json").is_file():
        train(cfgs["at"], seed_dir / "at", data=data, stop_after_epoch=milestone - 1)
        shutil.copytree(seed_dir / "at" / "checkpoints", fork)
    results = {}
    for run, cfg in cfgs.items():
        t = time.perf_counter()
        ckpts = seed_dir / run / "checkpoints"
        if run != "at" and fork.is_dir() and not ckpts.is_dir():
            shutil.copytree(fork, ckpts)
        results[run] = train(cfg, seed_dir / run, data=data)
        log.info("%s %s: %.0f s", seed_dir.name, run, time.perf_counter() - t)
    return results


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _evaluate_final(
    cfg: TrainConfig, run_dir: pathlib.Path, which: str, data, rc: ReproConfig, seed: int, autoattack: bool
) -> dict:
    model = build_model(cfg, data)
    model.load_state_dict(load_weights(run_dir / f"model_{which}.safetensors"))
    model.eval()
    n_test = rc.final_n or len(data.y_test)  # quick mode: a subset; full: all 597
    x_test, y_test = data.x_test[:n_test], data.y_test[:n_test]
    pgd = pgd_accuracy(
        model, x_test, y_test, eps=cfg.eps, step_size=cfg.step_size, steps=rc.final_steps, restarts=1
    )
    clean = clean_accuracy(model, x_test, y_test)
    row = {"clean": clean["acc"], "pgd": pgd["acc"], "autoattack": None, "aa_seconds": 0.0}
    if autoattack:
        n = min(rc.autoattack_n, len(data.y_test))
        aa = autoattack_accuracy(
            model, data.x_test[:n], data.y_test[:n], eps=cfg.eps, version="custom", seed=seed
        )
        row.update(autoattack=aa["robust_acc"], aa_seconds=aa["seconds"])
    return row


def reproduce(
    out: pathlib.Path, data_dir: str | None = None, quick: bool = False, seeds: list[int] | None = None
) -> dict:
    """Run the reproduction into ``out`` (resumable: finished runs are reused) and write
    ``summary.json`` last."""
    torch.set_num_threads(1)
    rc = QUICK if quick else FULL
    if seeds:
        rc = ReproConfig(**{**config_to_dict(rc), "seeds": list(seeds)})
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").unlink(missing_ok=True)
    start = time.perf_counter()
    per_seed: dict[int, dict] = {}
    histories: dict[str, list[list[dict]]] = {run: [] for run in rc.runs}
    for seed in rc.seeds:
        cfgs = run_configs(rc, seed)
        data = load_dataset(
            "digits",
            data_dir,
            val_size=rc.val_size,
            train_size=rc.train_size,
            label_noise=rc.label_noise,
            seed=seed,
        )  # identical for all runs of a seed
        results = train_seed(cfgs, out / f"seed{seed}", data, rc.milestone)
        for run in cfgs:
            histories[run].append(_history(out / f"seed{seed}" / run))
        cached = out / f"seed{seed}" / "final_eval.json"
        if cached.is_file():  # evaluation of finished runs is reused as well
            per_seed[seed] = json.loads(cached.read_text())
        else:
            per_seed[seed] = {
                arm: _evaluate_final(
                    cfgs[run], out / f"seed{seed}" / run, which, data, rc, seed, arm in AUTOATTACK_ARMS
                )
                for arm, (run, which) in arms(rc).items()
            }
        per_seed[seed]["_epochs"] = {
            "at_best_test_epoch": results["at"]["best_test"]["epoch"],
            "at_best_val_epoch": results["at"].get("early_stopping", {}).get("epoch"),
            "wot_best_test_epoch": results["wot"]["best_test"]["epoch"],
            "wot_refinements": results["wot"]["wot"]["refinements"],
            "wot_b_mean_weight": _mean_weight(results["wot"]),
            "wot_w_mean_weight": _mean_weight(results["wotw"]) if "wotw" in results else None,
        }
        write_json(cached, per_seed[seed])
        write_json(out / "per_seed.json", per_seed)

    table = []
    for arm in arms(rc):
        row: dict = {"method": arm}
        for metric in ("clean", "pgd", "autoattack"):
            values = [per_seed[seed][arm][metric] for seed in rc.seeds]
            if any(v is None for v in values):
                row[f"{metric}_mean"] = row[f"{metric}_std"] = None
                continue
            m, s = _mean_std(values)
            row[f"{metric}_mean"], row[f"{metric}_std"] = round(m, 4), round(s, 4)
        table.append(row)
    pngs = _plots(out, rc, histories)
    verdict, reason, numbers = _verdict(table, per_seed, rc)
    summary = {
        "paper": PAPER,
        "claim": CLAIM,
        "verdict": verdict,
        "verdict_reason": reason,
        "setting": _setting(rc, quick),
        "numbers": numbers,
        "table": table,
        "seeds": rc.seeds,
        "per_seed": {str(k): v for k, v in per_seed.items()},
        "pngs": pngs,
        "seconds": round(time.perf_counter() - start, 1),
        "metadata": run_metadata(config=config_to_dict(rc), packages=("robust-at", "torch", "pyautoattack")),
    }
    write_json(out / "summary.json", summary)
    return summary


def _setting(rc: ReproConfig, quick: bool) -> dict:
    wot = wot_settings(rc)
    return {
        "data": f"sklearn digits 8x8: {rc.train_size} train ({rc.label_noise:.0%} labels flipped), "
        f"{rc.val_size} clean validation, 597 test",
        "model": f"small-cnn, 4 convs, width {rc.width}",
        "attack": f"L-inf eps {rc.eps:g}, PGD-10 step {rc.eps / 4:g} for training; PGD-{rc.final_steps} on "
        f"{rc.final_n or 597} test images and AutoAttack (APGD-CE + APGD-T) on the first {rc.autoattack_n} "
        "(last-epoch, early-stopping and SWA models; PGD-20 only for the test-selected oracles)",
        "schedule": f"SGD lr {rc.lr:g} momentum 0.9, x0.1 at epoch {rc.milestone}, {rc.epochs} epochs, "
        f"batch {rc.batch_size}, no weight decay",
        "wot": {k: wot[k] for k in ("gap", "num_gaps", "passes", "lr", "momentum", "init", "bn_batches",
                                    "start_epoch", "train_mode_epoch", "times", "times_epoch",
                                    "momentum_per_tensor", "reset_momentum_each_pass", "reset_optimizer")},
        "wot_groups": "WOT-B: stem, 3 conv stages, head (5 groups); WOT-W: one group",
        "runs": list(rc.runs),
        "autoattack_images": min(rc.autoattack_n, 597),
        "quick": quick,
    }  # fmt: skip


def _mean_weight(result: dict) -> float:
    weights = [w for h in result["wot"]["history"] for row in h["weights"] for w in row]
    return round(statistics.fmean(weights), 4) if weights else float("nan")


def _history(run_dir: pathlib.Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines() if line.strip()]


def _plots(out: pathlib.Path, rc: ReproConfig, histories: dict[str, list[list[dict]]]) -> list[str]:
    def curve(run: str, key: str):
        rows = histories[run]
        epochs = [r["epoch"] for r in rows[0]]
        per_epoch = [[h[i][key] for h in rows] for i in range(len(epochs))]
        means = [statistics.fmean(v) for v in per_epoch]
        errs = [statistics.stdev(v) if len(v) > 1 else 0.0 for v in per_epoch]
        return (epochs, means, errs) if len(rows) > 1 else (epochs, means)

    vlines = {"LR decay (WOT / SWA start)": rc.milestone}
    robust = plot_curves(
        out / "robust_accuracy.png",
        {
            "AT: test robust": curve("at", "test_robust_acc"),
            "AT + WOT-B: test robust": curve("wot", "test_robust_acc"),
            **({"AT + WOT-W: test robust": curve("wotw", "test_robust_acc")} if "wotw" in histories else {}),
        },
        "epoch",
        f"test robust accuracy (PGD-{rc.eval_steps}, eps {rc.eps:g})",
        title=f"Robust overfitting on digits ({rc.train_size} images, {rc.label_noise:.0%} label noise), {len(rc.seeds)} seed(s)",
        vlines=vlines,
    )
    train = plot_curves(
        out / "train_vs_test.png",
        {
            "AT: train robust (noisy labels)": curve("at", "train_robust_acc"),
            "AT: test robust": curve("at", "test_robust_acc"),
            "AT + WOT-B: train robust (noisy labels)": curve("wot", "train_robust_acc"),
            "AT + WOT-B: test robust": curve("wot", "test_robust_acc"),
            **({"AT + WOT-W: test robust": curve("wotw", "test_robust_acc")} if "wotw" in histories else {}),
        },
        "epoch",
        "robust accuracy (PGD)",
        title="Train (memorising noisy labels) vs test robust accuracy",
        vlines=vlines,
    )
    return [robust.name, train.name]


def _verdict(table: list[dict], per_seed: dict, rc: ReproConfig) -> tuple[str, str, dict]:
    """The rule fixed before the runs (module docstring)."""
    rows = {r["method"]: r for r in table}
    at_last = rows["AT (last epoch)"]["pgd_mean"]
    at_best = rows["AT (best epoch, test-selected oracle)"]["pgd_mean"]
    wot_last = rows["AT + WOT-B (last epoch)"]["pgd_mean"]
    es, swa = rows["AT + early stopping (val-selected)"]["pgd_mean"], rows["AT + SWA"]["pgd_mean"]
    gaps = [
        per_seed[s]["AT + WOT-B (last epoch)"]["pgd"] - per_seed[s]["AT (last epoch)"]["pgd"]
        for s in rc.seeds
    ]
    gain, gain_std = _mean_std(gaps)
    overfit = at_best - at_last
    noise = max(gain_std / len(gaps) ** 0.5, 0.01)  # standard error of the difference, at least 1 point
    weights = [per_seed[s]["_epochs"]["wot_b_mean_weight"] for s in rc.seeds]
    numbers = {
        "robust_overfitting_gap_at": round(overfit, 4),
        "robust_overfitting_gap_at_per_seed": {
            str(s): round(per_seed[s]["AT (best epoch, test-selected oracle)"]["pgd"]
                          - per_seed[s]["AT (last epoch)"]["pgd"], 4) for s in rc.seeds},
        "robust_overfitting_gap_at_autoattack": _round(rows["AT (best epoch, test-selected oracle)"]["autoattack_mean"],
                                                       rows["AT (last epoch)"]["autoattack_mean"]),
        "wot_minus_at_last_pgd": round(gain, 4),
        "wot_minus_at_last_pgd_std": round(gain_std, 4),
        "wot_minus_early_stopping_pgd": round(wot_last - es, 4),
        "wot_minus_swa_pgd": round(wot_last - swa, 4),
        "wot_w_minus_at_last_pgd": round(rows["AT + WOT-W (last epoch)"]["pgd_mean"] - at_last, 4)
        if "AT + WOT-W (last epoch)" in rows
        else None,
        "wot_minus_at_last_autoattack": _round(rows["AT + WOT-B (last epoch)"]["autoattack_mean"],
                                               rows["AT (last epoch)"]["autoattack_mean"]),
        "wot_b_mean_weight": round(statistics.fmean(weights), 4),
        "standard_error_used": round(noise, 4),
    }  # fmt: skip
    if overfit < 0.03:
        return (
            "not reproduced at this scale",
            f"plain AT barely overfits here (best-epoch minus last-epoch PGD-20 accuracy {overfit:+.3f} < 0.03), "
            "so there is no robust-overfitting gap for WOT to close",
            numbers,
        )
    closed = gain / overfit
    numbers["fraction_of_gap_closed"] = round(closed, 3)
    if gain > 2 * noise and closed >= 0.5 and wot_last >= max(es, swa) - noise:
        verdict = "reproduced"
    elif gain > noise:
        verdict = "partly"
    else:
        verdict = "not reproduced at this scale"
    reason = (
        f"AT overfits (best {at_best:.3f} vs last {at_last:.3f} PGD-20 test accuracy); WOT-B's last epoch is "
        f"{wot_last:.3f} ({gain:+.3f} ± {gain_std:.3f} over {len(gaps)} seed(s) vs AT last, {closed:.0%} of the gap), "
        f"early stopping {es:.3f}, SWA {swa:.3f}"
    )
    if numbers["wot_b_mean_weight"] < 0.05:
        reason += (
            f"; caveat: the learned WOT-B weights average {numbers['wot_b_mean_weight']:.3f}, so each refinement "
            "moved the model back to (near) its window's start: WOT acted as a reset, not as a reweighting"
        )
    return verdict, reason, numbers


def _round(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 4)
