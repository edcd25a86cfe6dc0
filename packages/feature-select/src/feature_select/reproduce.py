"""Small-scale reproduction of NeuroFS' main claim on real data (this CPU, minutes).

Claim (arXiv 2303.07200): NeuroFS achieves the highest ranking-based score among supervised
feature selection methods across data sets and K. We run NeuroFS (shrunk network and epochs) and
the baselines on scikit-feature data sets, K in {25, 50, 100}, 3 seeds, with the paper's
classifiers, plus recovery of the true informative features of a synthetic problem.
"""

from __future__ import annotations

import logging
import os
import pathlib
import time
from dataclasses import dataclass, field

import numpy as np

from feature_select.baselines import METHODS
from feature_select.benchmark import GridConfig, plot_accuracy_vs_k, plot_ranking_scores, run_grid, summarize
from feature_select.data import make_synthetic
from feature_select.evaluation import recovery_rate
from research_systems_core.logs import progress
from research_systems_core.metadata import run_metadata
from research_systems_core.results import JsonlWriter, plot_curves, read_jsonl, write_json

__all__ = ["ReproConfig", "full_config", "quick_config", "reproduce"]

log = logging.getLogger(__name__)

PAPER = "Atashgahi et al., Supervised Feature Selection with Neuron Evolution in Sparse Neural Networks (TMLR 2023, arXiv:2303.07200)"
CLAIM = (
    "NeuroFS achieves the highest ranking-based score (classification accuracy on the selected "
    "features, ranked per data set and K) among the compared supervised feature selection methods."
)

# NeuroFS in the full protocol: the reference README's command (the paper's runs: zeta_in 0.2,
# zeta_hid 0.3, epsilon 30, lr 0.01, tanh, L2 1e-5, removal until 65 % of the epochs, batch 100 /
# 20 for the small sets = our clip(n // 8, 16, 100)) with the network and epochs shrunk to fit this
# CPU (reference: 1000-1000-1000, 100 epochs).
PAPER_NEUROFS = {"zeta_in": 0.2, "zeta_hid": 0.3, "epsilon": 30.0}
NEUROFS_SMALL = {**PAPER_NEUROFS, "hidden": (200, 200, 200), "epochs": 30}
SCIKIT_FEATURE_ALL = ["ALLAML", "BASEHOCK", "COIL20", "Isolet", "PCMAC", "Prostate_GE", "arcene", "madelon"]
# Caps that make the slow baselines fit the 15-minute budget (measured, see README): the method
# sees the PREFILTER best columns by the F-test (the rest follow in F-test order) and a stratified
# subset of MAX_SAMPLES training rows. Their own settings stay the documented defaults.
PREFILTER = 500
MAX_SAMPLES = 300
SLOW_BASELINE_CAPS = {
    "relieff": {"prefilter": PREFILTER, "max_samples": MAX_SAMPLES},
    "hsic_lasso": {"prefilter": PREFILTER, "max_samples": MAX_SAMPLES},
    "mutual_info": {"prefilter": PREFILTER},  # every training row
}
# Left out of the timed protocol (README): lassonet (at its documented settings one fit takes
# minutes: its automatic lambda_start alone runs up to 10,000 proximal steps per candidate; it is
# compared head to head in benchmarks/bench.py), mrmr (36 s for K = 5 on 80 x 3000 here), stg
# (0.1.2, its last release, uses collections.Sequence, removed in Python 3.10).
PROTOCOL_METHODS = [
    "neurofs",
    "relieff",
    "hsic_lasso",
    "f_classif",
    "mutual_info",
    "sfm_extratrees",
    "sfm_l1",
    "random",
]


@dataclass
class ReproConfig:
    grid: GridConfig
    synthetic_features: int = 500
    synthetic_informative: int = 20
    synthetic_samples: int = 1000
    synthetic_methods: list[str] = field(
        default_factory=lambda: ["neurofs", "f_classif", "sfm_extratrees", "random"]
    )
    quick: bool = False


def quick_config() -> ReproConfig:
    """< 3 minutes here: every scikit-feature set, 1 split, K in {25, 50}, the fast methods."""
    grid = GridConfig(
        datasets=list(SCIKIT_FEATURE_ALL),
        ks=[25, 50],
        seeds=[0],
        methods=["neurofs", "f_classif", "sfm_extratrees", "random"],  # L1-saga: ~11 s per 10k-feature set
        # measured in docs/quick with the package defaults (the reference's argument defaults)
        method_params={"neurofs": {"hidden": (200, 200), "epochs": 20}},
    )
    return ReproConfig(grid, synthetic_features=300, synthetic_samples=600, quick=True)


def full_config() -> ReproConfig:
    """The paper's protocol on the 8 scikit-feature sets: 3 stratified splits, K in {25, 50, 100};
    every method is fitted once per split at K = 100 and serves K = 25, 50 from its ranking."""
    grid = GridConfig(
        datasets=list(SCIKIT_FEATURE_ALL),
        ks=[25, 50, 100],
        seeds=[0, 1, 2],
        methods=list(PROTOCOL_METHODS),
        method_params={"neurofs": dict(NEUROFS_SMALL), **SLOW_BASELINE_CAPS},
    )
    return ReproConfig(grid)


def _synthetic_recovery(cfg: ReproConfig, out: pathlib.Path) -> list[dict]:
    """Fraction of the K = n_informative selected features that are truly informative."""
    path = out / "synthetic.jsonl"
    writer = JsonlWriter(path)
    rows = read_jsonl(path)
    done = {(r["method"], r["seed"]) for r in rows}
    k = cfg.synthetic_informative
    params = cfg.grid.method_params
    cells = [(m, s) for s in cfg.grid.seeds for m in cfg.synthetic_methods if (m, s) not in done]
    for method_name, seed in progress(cells, desc="synthetic"):
        data = make_synthetic(cfg.synthetic_samples, cfg.synthetic_features, k, seed=seed)
        x = (data.x - data.x.mean(0)) / data.x.std(0)
        start = time.perf_counter()
        ranking = METHODS.create(method_name)(
            x.astype(np.float32), data.y, k, seed, **params.get(method_name, {})
        )
        row = {
            "method": method_name,
            "seed": seed,
            "k": k,
            "n_features": cfg.synthetic_features,
            "recovery": recovery_rate(ranking[:k], data.informative),
            "chance": k / cfg.synthetic_features,
            "seconds": time.perf_counter() - start,
        }
        writer.append(row)
        rows.append(row)
    return rows


def _verdict(scores: dict[str, float], synthetic: dict[str, float], chance: float) -> tuple[str, str]:
    ordered = list(scores)
    position = ordered.index("neurofs") + 1
    recovered = synthetic.get("neurofs", 0.0)
    reason = (
        f"NeuroFS is #{position} of {len(ordered)} methods by the SVC ranking-based score "
        f"({scores['neurofs']:.1f} vs best {ordered[0]} {scores[ordered[0]]:.1f}); it recovers "
        f"{recovered:.0%} informative features on synthetic data (chance {chance:.0%})."
    )
    if position == 1:
        return "reproduced", reason
    if position <= (len(ordered) + 1) // 2 and recovered > 2 * chance:
        return "partly", reason
    return "not reproduced at this scale", reason


def reproduce(
    out: str | os.PathLike[str], data_dir: str | os.PathLike[str] | None = None, quick: bool = False
) -> dict:
    """Run the reproduction into ``out``; ``summary.json`` is written last."""
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = quick_config() if quick else full_config()
    start = time.perf_counter()
    rows = run_grid(cfg.grid, out / "results.jsonl", data_dir)
    synthetic_rows = _synthetic_recovery(cfg, out)
    summary = summarize(rows)
    synthetic = {
        m: float(np.mean([r["recovery"] for r in synthetic_rows if r["method"] == m]))
        for m in cfg.synthetic_methods
    }
    chance = cfg.synthetic_informative / cfg.synthetic_features
    pngs = plot_accuracy_vs_k(rows, out, "svc")
    pngs.append(plot_ranking_scores(summary["ranking_scores"], out / "ranking_scores.png"))
    pngs.append(_plot_recovery(synthetic, chance, out / "synthetic_recovery.png"))
    verdict, reason = _verdict(summary["ranking_scores"]["svc"], synthetic, chance)
    history_png = _plot_neurofs_history(cfg, out / "neurofs_active_inputs.png", data_dir)
    if history_png:
        pngs.append(history_png)
    result = {
        "paper": PAPER,
        "claim": CLAIM,
        "verdict": verdict,
        "verdict_reason": reason,
        "quick": quick,
        "seeds": cfg.grid.seeds,
        "datasets": cfg.grid.datasets,
        "ks": cfg.grid.ks,
        "methods": cfg.grid.methods,
        "neurofs_params": {
            k: list(v) if isinstance(v, tuple) else v for k, v in cfg.grid.method_params["neurofs"].items()
        },
        "method_params": {
            m: {k: list(v) if isinstance(v, tuple) else v for k, v in p.items()}
            for m, p in cfg.grid.method_params.items()
        },
        "selection_seconds_per_method": _selection_seconds(rows),
        "ranking_scores": summary["ranking_scores"],
        "synthetic_recovery": {
            "k": cfg.synthetic_informative,
            "n_features": cfg.synthetic_features,
            "chance": chance,
            **synthetic,
        },
        "table": summary["table"],
        "neurofs_final_train_accuracy": _neurofs_train_accuracy(rows),
        "pngs": pngs,
        "seconds": round(time.perf_counter() - start, 1),
        "metadata": run_metadata(
            seed=cfg.grid.seeds[0],
            config={"quick": quick},
            packages=("feature-select", "torch", "scikit-learn"),
        ),
    }
    write_json(out / "summary.json", result)
    return result


def _selection_seconds(rows: list[dict]) -> dict[str, float]:
    """Total selection time per method (a nested method's rows of one split share one fit)."""
    fits: dict[tuple, float] = {}
    for row in rows:
        k = None if row.get("nested", True) else row["k"]
        fits[(row["method"], row["dataset"], row["seed"], k)] = row["select_seconds"]
    total: dict[str, float] = {}
    for (method, *_), seconds in fits.items():
        total[method] = total.get(method, 0.0) + seconds
    return {m: round(v, 1) for m, v in sorted(total.items(), key=lambda item: -item[1])}


def _neurofs_train_accuracy(rows: list[dict]) -> dict[str, float]:
    """Mean final training accuracy of the NeuroFS fits per data set (did the network train?)."""
    acc: dict[str, list[float]] = {}
    for row in rows:
        if row["method"] == "neurofs" and "train_acc" in row.get("fit_info", {}):
            acc.setdefault(row["dataset"], []).append(row["fit_info"]["train_acc"])
    return {name: round(float(np.mean(values)), 3) for name, values in sorted(acc.items())}


def _plot_recovery(synthetic: dict[str, float], chance: float, path: pathlib.Path) -> str:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=110)
    ax.bar(list(synthetic), list(synthetic.values()), color="tab:blue")
    ax.axhline(chance, color="k", ls="--", label=f"chance ({chance:.0%})")
    ax.set_ylabel("selected features that are informative")
    ax.set_ylim(0, 1)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path.name


def _plot_neurofs_history(cfg: ReproConfig, path: pathlib.Path, data_dir) -> str | None:
    """Active input neurons and training accuracy per epoch of one NeuroFS run (first data set)."""
    from feature_select.data import load_dataset, split_and_scale
    from feature_select.selector import NeuroFS

    params = dict(cfg.grid.method_params.get("neurofs", {}))
    dataset = cfg.grid.datasets[0]
    split = split_and_scale(load_dataset(dataset, data_dir))
    k = cfg.grid.ks[0]
    selector = NeuroFS(n_features_to_select=k, random_state=0, scale=None, **params).fit(
        split.x_train, split.y_train
    )
    epochs = [h["epoch"] for h in selector.history_]
    d = split.x_train.shape[1]
    plot_curves(
        path,
        {
            "active input neurons / d": (epochs, [h["active_inputs"] / d for h in selector.history_]),
            "train accuracy": (epochs, [h["train_acc"] for h in selector.history_]),
        },
        "epoch",
        "fraction",
        title=f"NeuroFS on {dataset}, K={k}",
    )
    return path.name
