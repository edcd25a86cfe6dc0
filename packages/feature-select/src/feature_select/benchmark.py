"""The comparison harness: methods x data sets x K x seeds, resumable JSONL, summary tables, plots."""

from __future__ import annotations

import logging
import os
import pathlib
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from feature_select.baselines import METHODS
from feature_select.data import load_dataset, split_and_scale
from feature_select.evaluation import CLASSIFIERS, evaluate_subset, ranking_scores
from research_systems_core.logs import progress
from research_systems_core.results import JsonlWriter, plot_curves, read_jsonl
from research_systems_core.validation import check_choice, check_int

__all__ = ["GridConfig", "plot_accuracy_vs_k", "plot_ranking_scores", "run_grid", "summarize"]

log = logging.getLogger(__name__)


@dataclass
class GridConfig:
    """What to run; ``method_params`` overrides a method's defaults (e.g. NeuroFS' size)."""

    datasets: list[str] = field(default_factory=lambda: ["madelon"])
    ks: list[int] = field(default_factory=lambda: [25, 50, 100])
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    methods: list[str] = field(default_factory=lambda: METHODS.names())
    method_params: dict[str, dict] = field(default_factory=dict)
    split_seed: int = 42  # split of seed s uses random_state split_seed + s
    test_size: float = 0.2

    def validate(self) -> None:
        for method in self.methods:
            check_choice("method", method, METHODS.names())
        for k in self.ks:
            check_int("k", k, minimum=1)
        for seed in self.seeds:
            check_int("seed", seed, minimum=0)
        if not (self.datasets and self.ks and self.seeds and self.methods):
            raise ValueError("datasets, ks, seeds and methods must each list at least one value")


def run_grid(
    cfg: GridConfig,
    results_path: str | os.PathLike[str],
    data_dir: str | os.PathLike[str] | None = None,
) -> list[dict]:
    """Run every missing (data set, method, K, seed) cell, appending one JSON row per cell.

    Rows already in ``results_path`` are kept and skipped, so an interrupted run resumes.
    """
    cfg.validate()
    writer = JsonlWriter(results_path)
    rows = read_jsonl(results_path)
    done = {(r["dataset"], r["method"], r["k"], r["seed"]) for r in rows}
    total = len(cfg.datasets) * len(cfg.methods) * len(cfg.ks) * len(cfg.seeds)
    bar = progress(total=total, desc="benchmark")
    bar.update(len(done))
    for dataset_name in cfg.datasets:
        todo = [
            (m, k, s)
            for m in cfg.methods
            for k in cfg.ks
            for s in cfg.seeds
            if (dataset_name, m, k, s) not in done
        ]
        if not todo:
            continue
        dataset = load_dataset(dataset_name, data_dir)
        d = dataset.x.shape[1]
        for seed in cfg.seeds:
            # the paper's protocol: a stratified split per seed, scaler fitted on its training part
            split = split_and_scale(dataset, cfg.test_size, cfg.split_seed + seed)
            for method_name in cfg.methods:
                method = METHODS.create(method_name)
                ks = [k for k in cfg.ks if (dataset_name, method_name, k, seed) not in done]
                bad = [k for k in ks if k > d]
                if bad:
                    raise ValueError(f"K={bad} exceeds the {d} features of {dataset_name}")
                params = cfg.method_params.get(method_name, {})
                ranking, rank_seconds, info = None, 0.0, {}
                for k in ks:
                    if ranking is None or not method.nested:
                        start = time.perf_counter()
                        ranking, info = method.rank_with_info(
                            split.x_train, split.y_train, k if not method.nested else max(ks), seed, **params
                        )
                        rank_seconds = time.perf_counter() - start
                    features = ranking[:k]
                    scores = evaluate_subset(
                        split.x_train, split.y_train, split.x_test, split.y_test, features, seed
                    )
                    row = {
                        "dataset": dataset_name,
                        "method": method_name,
                        "k": k,
                        "seed": seed,
                        **scores,
                        "select_seconds": rank_seconds,
                        "nested": method.nested,
                        "split_seed": cfg.split_seed + seed,
                        "fit_info": info,
                        "features": [int(f) for f in features],
                    }
                    writer.append(row)
                    rows.append(row)
                    bar.update(1)
                    log.info(
                        "%s %s K=%d seed=%d svc=%.3f (%.1fs)",
                        dataset_name,
                        method_name,
                        k,
                        seed,
                        scores["svc"],
                        rank_seconds,
                    )
    bar.close()
    return rows


def summarize(rows: Sequence[dict], metrics: Sequence[str] = CLASSIFIERS) -> dict:
    """Mean/std accuracy per (data set, K, method) and the ranking score for every classifier."""
    groups: dict[tuple, list[dict]] = defaultdict(list)
    for row in rows:
        groups[(row["dataset"], row["k"], row["method"])].append(row)
    table = []
    for (dataset, k, method), group in sorted(groups.items()):
        entry = {"dataset": dataset, "k": k, "method": method, "n_seeds": len(group)}
        for metric in metrics:
            values = [g[metric] for g in group]
            entry[metric] = round(float(np.mean(values)), 4)
            entry[f"{metric}_std"] = round(float(np.std(values)), 4)
        entry["select_seconds"] = round(float(np.mean([g["select_seconds"] for g in group])), 3)
        table.append(entry)
    scores = {metric: ranking_scores(rows, metric) for metric in metrics}
    return {"table": table, "ranking_scores": scores}


def plot_accuracy_vs_k(
    rows: Sequence[dict], out_dir: str | os.PathLike[str], metric: str = "svc"
) -> list[str]:
    """One PNG per data set: accuracy (mean ± std over seeds) against K, one curve per method."""
    out_dir = pathlib.Path(out_dir)
    by_dataset: dict[str, dict[str, dict[int, list[float]]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(list))
    )
    for row in rows:
        by_dataset[row["dataset"]][row["method"]][row["k"]].append(row[metric])
    paths = []
    for dataset, methods in sorted(by_dataset.items()):
        curves = {}
        for method, per_k in sorted(methods.items()):
            ks = sorted(per_k)
            curves[method] = (
                ks,
                [float(np.mean(per_k[k])) for k in ks],
                [float(np.std(per_k[k])) for k in ks],
            )
        path = out_dir / f"accuracy_{dataset}_{metric}.png"
        plot_curves(path, curves, "K (selected features)", f"{metric} test accuracy", title=dataset)
        paths.append(path.name)
    return paths


def plot_ranking_scores(scores: dict[str, dict[str, float]], path: str | os.PathLike[str]) -> str:
    """Grouped bar chart of ranking scores (methods x classifiers)."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    path = pathlib.Path(path)
    metrics = list(scores)
    methods = list(next(iter(scores.values())))
    fig, ax = plt.subplots(figsize=(7.5, 4.2), dpi=110)
    width = 0.8 / len(metrics)
    for i, metric in enumerate(metrics):
        ax.bar(
            np.arange(len(methods)) + i * width,
            [scores[metric].get(m, 0.0) for m in methods],
            width,
            label=metric,
        )
    ax.set_xticks(np.arange(len(methods)) + width * (len(metrics) - 1) / 2, methods, rotation=30, ha="right")
    ax.set_ylabel("ranking-based score (higher is better)")
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path.name
