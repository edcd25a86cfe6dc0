"""PNG plots: paths over the current field (quiver) and obstacles; GP current estimates; bar charts."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Mapping, Sequence

import numpy as np

from research_systems_core.checkpoint import atomic_write
from usv_planner.currents import CurrentField
from usv_planner.environment import Environment

__all__ = ["plot_bars", "plot_gp_estimate", "plot_paths"]


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | os.PathLike[str]) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png")
    return path


def _background(ax, env: Environment, current: CurrentField | None, t: float, arrows: int = 24) -> None:
    occ = env.occupancy
    xmin, xmax, ymin, ymax = env.bounds
    if current is not None:
        xs = np.linspace(xmin, xmax, 160)
        ys = np.linspace(ymin, ymax, max(2, int(160 * (ymax - ymin) / (xmax - xmin))))
        xx, yy = np.meshgrid(xs, ys)
        c, _ = current.velocity(np.stack([xx.ravel(), yy.ravel()], 1), t)
        speed = np.linalg.norm(c, axis=1).reshape(xx.shape)
        im = ax.imshow(
            speed, origin="lower", extent=(xmin, xmax, ymin, ymax), cmap="Blues", alpha=0.75, aspect="equal"
        )
        ax.figure.colorbar(im, ax=ax, fraction=0.03, pad=0.01, label="current speed [m/s]")
        qx = np.linspace(xmin, xmax, arrows)
        qy = np.linspace(ymin, ymax, max(2, int(arrows * (ymax - ymin) / (xmax - xmin))))
        qxx, qyy = np.meshgrid(qx, qy)
        qc, _ = current.velocity(np.stack([qxx.ravel(), qyy.ravel()], 1), t)
        ax.quiver(qxx.ravel(), qyy.ravel(), qc[:, 0], qc[:, 1], color="0.3", width=0.002, scale=None)
    land = np.ma.masked_where(~occ.occupied, occ.occupied.astype(float))
    ax.imshow(
        land, origin="lower", extent=(xmin, xmax, ymin, ymax), cmap="copper", vmin=0, vmax=1.5, aspect="equal"
    )
    ax.set_xlim(xmin, xmax)
    ax.set_ylim(ymin, ymax)
    ax.set_xlabel("x [m]")
    ax.set_ylabel("y [m]")


def plot_paths(
    path: str | os.PathLike[str],
    env: Environment,
    current: CurrentField | None,
    paths: Mapping[str, np.ndarray],
    title: str = "",
    t: float = 0.0,
) -> pathlib.Path:
    """Paths ``{label: (K, 2)}`` over the current speed, its quiver at time ``t`` and the obstacles."""
    plt = _plt()
    xmin, xmax, ymin, ymax = env.bounds
    fig, ax = plt.subplots(figsize=(9.0, 9.0 * (ymax - ymin) / (xmax - xmin) + 1.2), dpi=100)
    try:
        _background(ax, env, current, t)
        for label, pts in paths.items():
            pts = np.asarray(pts)
            ax.plot(pts[:, 0], pts[:, 1], lw=2, label=label)
        first = np.asarray(next(iter(paths.values())))
        ax.plot(*first[0], "go", ms=8)
        ax.plot(*first[-1], "r*", ms=12)
        ax.legend(fontsize=8, loc="best")
        ax.set_title(title or f"paths over the current at t = {t:.0f} s")
        fig.tight_layout()
        return _save(fig, path)
    finally:
        plt.close(fig)


def plot_gp_estimate(
    path: str | os.PathLike[str],
    env: Environment,
    truth: CurrentField,
    estimate: CurrentField,
    observations: np.ndarray,
    t: float,
) -> pathlib.Path:
    """Three panels at time ``t``: true field, GP mean (with observation sites), GP one-sigma."""
    plt = _plt()
    xmin, xmax, ymin, ymax = env.bounds
    fig, axes = plt.subplots(1, 3, figsize=(16, 16 / 3 * (ymax - ymin) / (xmax - xmin) + 1.2), dpi=90)
    try:
        _background(axes[0], env, truth, t)
        axes[0].set_title(f"true current, t = {t:.0f} s")
        _background(axes[1], env, estimate, t)
        axes[1].plot(observations[:, 0], observations[:, 1], "k.", ms=3)
        axes[1].set_title(f"GP mean from {len(observations)} noisy observations")
        xs = np.linspace(xmin, xmax, 120)
        ys = np.linspace(ymin, ymax, 60)
        xx, yy = np.meshgrid(xs, ys)
        s, _ = estimate.std(np.stack([xx.ravel(), yy.ravel()], 1), t)
        im = axes[2].imshow(
            s.reshape(xx.shape), origin="lower", extent=(xmin, xmax, ymin, ymax), cmap="magma", aspect="equal"
        )
        fig.colorbar(im, ax=axes[2], fraction=0.03, pad=0.01, label="GP std [m/s]")
        axes[2].plot(observations[:, 0], observations[:, 1], "c.", ms=3)
        axes[2].set_title("GP uncertainty")
        fig.tight_layout()
        return _save(fig, path)
    finally:
        plt.close(fig)


def plot_bars(
    path: str | os.PathLike[str],
    groups: Sequence[str],
    series: Mapping[str, Sequence[float]],
    ylabel: str,
    title: str,
) -> pathlib.Path:
    """Grouped bar chart: one group per scenario, one bar per planner."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8.0, 4.2), dpi=100)
    try:
        width = 0.8 / max(len(series), 1)
        x = np.arange(len(groups))
        for k, (label, values) in enumerate(series.items()):
            ax.bar(x + (k - (len(series) - 1) / 2) * width, values, width, label=label)
        ax.set_xticks(x, groups)
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.legend(fontsize=8)
        ax.grid(axis="y", alpha=0.3)
        fig.tight_layout()
        return _save(fig, path)
    finally:
        plt.close(fig)
