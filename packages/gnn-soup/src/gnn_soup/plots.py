"""Plots of ingredient vs soup accuracy."""

from __future__ import annotations

import pathlib
from collections.abc import Mapping, Sequence

METHOD_LABELS = {
    "ingredient_mean": "ingredient mean",
    "best_ingredient": "best ingredient",
    "uniform": "uniform soup",
    "greedy": "greedy soup",
    "greedy_interpolation": "greedy interp. soup",
    "ensemble": "logit ensemble",
}


def plot_soup_bars(
    path: str | pathlib.Path,
    groups: Mapping[str, Mapping[str, tuple[float, float]]],
    ingredient_points: Mapping[str, Sequence[float]] | None = None,
    title: str = "",
    ylabel: str = "test accuracy",
) -> pathlib.Path:
    """Grouped bars ``groups[group][method] = (mean, std)``; ingredient accuracies as dots."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    from research_systems_core.files import atomic_write

    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    methods = [m for m in METHOD_LABELS if any(m in g for g in groups.values())]
    width = 0.8 / max(len(groups), 1)
    fig, ax = plt.subplots(figsize=(8.0, 4.2), dpi=110)
    lows = []
    for gi, (group, values) in enumerate(groups.items()):
        xs = [i + (gi - (len(groups) - 1) / 2) * width for i in range(len(methods))]
        means = [values.get(m, (float("nan"), 0.0))[0] for m in methods]
        stds = [values.get(m, (float("nan"), 0.0))[1] for m in methods]
        lows.extend(v for v in means if v == v)
        ax.bar(xs, means, width=width, yerr=stds, capsize=3, label=group, alpha=0.85)
        if ingredient_points and group in ingredient_points and "ingredient_mean" in methods:
            x0 = xs[methods.index("ingredient_mean")]
            pts = list(ingredient_points[group])
            ax.scatter([x0] * len(pts), pts, s=6, color="black", alpha=0.4, zorder=3)
            lows.extend(pts)
    ax.set_xticks(range(len(methods)))
    ax.set_xticklabels([METHOD_LABELS[m] for m in methods], rotation=20, ha="right", fontsize=8)
    if lows:
        ax.set_ylim(max(0.0, min(lows) - 0.05), min(1.0, max(lows) + 0.03))
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png")
    plt.close(fig)
    return path


def plot_scaling(summary: Mapping, path: str | pathlib.Path) -> pathlib.Path:
    """Two panels of the scaling run: peak pool memory (PSS) and test accuracy."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    memory = summary["memory"]
    soups = summary["soups"]
    fig, (ax_mem, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8))
    k = len(summary["ingredients"])
    labels = ["1 full-graph model", f"{k} ingredients"]
    totals = [memory["full_graph_model"]["peak_total_pss_mib"], memory["ingredients"]["peak_total_pss_mib"]]
    idle = [memory["full_graph_model"]["idle_total_pss_mib"], memory["ingredients"]["idle_total_pss_mib"]]
    ax_mem.bar(labels, idle, color="#bbbbbb", label="started pool (interpreter, mapped graph)")
    ax_mem.bar(
        labels,
        [t - i for t, i in zip(totals, idle, strict=True)],
        bottom=idle,
        color="#4477aa",
        label="training",
    )
    ax_mem.set_ylabel("peak PSS of the pool (MiB)")
    ax_mem.legend(fontsize=7)
    names = ["full_graph", "best_ingredient", "ensemble", "uniform", "greedy", "greedy_interpolation"]
    values = [summary["full_graph"]["test"]] + [soups[n]["test"] for n in names[1:]]
    ax_acc.bar(["full-graph"] + [METHOD_LABELS[n] for n in names[1:]], values, color="#66aa55")
    ax_acc.scatter([1] * k, [i["test"] for i in summary["ingredients"]], color="black", s=10, zorder=3)
    ax_acc.set_ylim(max(0.0, min(values) - 0.1), min(1.0, max(values) + 0.05))
    ax_acc.set_ylabel("test accuracy")
    ax_acc.tick_params(axis="x", rotation=30, labelsize=7)
    fig.suptitle(
        f"{summary['data']['name']}: {summary['data']['nodes']:,} nodes, "
        f"{summary['data']['edges'] // 2:,} undirected edges"
    )
    fig.tight_layout()
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
