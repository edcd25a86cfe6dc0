"""Command-line interface of gnn-soup."""

from __future__ import annotations

import ast
import logging
import pathlib
from typing import Any

import typer

from gnn_soup import __version__
from research_systems_core.cli import create_app, fail

app = create_app("gnn-soup", "Graph Ladling: data-centric model soups for GNNs.", __version__)

log = logging.getLogger("gnn_soup")


def _threads() -> None:
    from research_systems_core.torch_utils import set_torch_threads

    set_torch_threads(1)


def parse_sampler_options(options: list[str]) -> dict[str, dict[str, Any]]:
    """``["cluster.num_parts=16", "neighbor.fanouts=[10,5]"]`` -> ``{"cluster": {"num_parts": 16}, ...}``."""
    out: dict[str, dict[str, Any]] = {}
    for item in options:
        key, sep, raw = item.partition("=")
        sampler, dot, name = key.partition(".")
        if not sep or not dot or not sampler or not name:
            raise ValueError(f"sampler option must look like 'sampler.key=value', got {item!r}")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        out.setdefault(sampler, {})[name] = value
    return out


@app.command("train-ingredients")
def train_ingredients(
    out: pathlib.Path = typer.Option(
        ..., "--out", help="Run directory (ingredients, plan.json); reruns resume."
    ),
    dataset: str = typer.Option(
        "Cora", "--dataset", help="Cora, CiteSeer, PubMed, Flickr, Reddit, ogbn-arxiv, ..."
    ),
    data_dir: str | None = typer.Option(None, "--data-dir", help="Data directory (else $RESEARCH_DATA_DIR)."),
    cache_dir: str | None = typer.Option(None, "--cache-dir", help="Writable cache for processed data."),
    download: bool = typer.Option(False, "--download", help="Download the data set if it is not local."),
    num_ingredients: int = typer.Option(4, "-k", "--num-ingredients", help="Number of ingredients K."),
    sampler: list[str] = typer.Option(
        ["full"],
        "--sampler",
        help="Sampler(s), cycled over ingredients: full, cluster, saint_node, "
        "saint_edge, saint_rw, neighbor. Repeat the option for several.",
    ),
    sampler_option: list[str] = typer.Option(
        [], "--sampler-option", help="Sampler setting 'sampler.key=value', e.g. cluster.num_parts=16."
    ),
    init: str = typer.Option("shared", "--init", help="'shared' (one initialisation) or 'independent'."),
    seed: int = typer.Option(0, "--seed", help="Base seed; ingredient k uses seed*1000+k."),
    model: str = typer.Option("gcn", "--model", help="gcn, sage or gat."),
    hidden_dim: int = typer.Option(64, "--hidden", help="Hidden width."),
    num_layers: int = typer.Option(2, "--layers", help="Number of GNN layers."),
    dropout: float = typer.Option(0.5, "--dropout", help="Dropout on the input and hidden layers."),
    lr: float = typer.Option(0.01, "--lr", help="Adam learning rate."),
    weight_decay: float = typer.Option(5e-4, "--weight-decay", help="Adam weight decay."),
    steps: int = typer.Option(200, "--steps", help="Optimiser steps (batches) per ingredient."),
    executor: str = typer.Option(
        "process", "--executor", help="process (local workers), ray, or sequential."
    ),
    workers: int = typer.Option(2, "--workers", help="Parallel workers (processes, or Ray CPUs when local)."),
    ray_address: str | None = typer.Option(None, "--ray-address", help="Address of a running Ray cluster."),
    max_retries: int = typer.Option(
        1, "--max-retries", help="Retries of a failed ingredient before reporting it."
    ),
) -> None:
    """Train K soup ingredients in parallel, without communication; each saved as safetensors."""
    _threads()
    from gnn_soup.data import load_dataset
    from gnn_soup.executors import IngredientFailure, create_executor
    from gnn_soup.ingredients import IngredientStore, make_plan, train_plan
    from gnn_soup.training import TrainConfig

    try:
        config = TrainConfig(
            model=model,
            hidden_dim=hidden_dim,
            num_layers=num_layers,
            dropout=dropout,
            lr=lr,
            weight_decay=weight_decay,
            steps=steps,
        ).validate()
        plan = make_plan(
            dataset,
            num_ingredients,
            config,
            samplers=sampler,
            sampler_kwargs=parse_sampler_options(sampler_option),
            init=init,
            seed=seed,
        )
        data = load_dataset(dataset, data_dir=data_dir, cache_dir=cache_dir, download=download)
        runner = create_executor(executor, workers=workers, ray_address=ray_address)
    except (ValueError, TypeError, FileNotFoundError, ImportError) as exc:
        fail(exc)
    store = IngredientStore(out)
    try:
        metas = train_plan(plan, data, runner, store, max_retries=max_retries)
    except IngredientFailure as exc:
        typer.echo(f"error: {exc}; finished ingredients are saved, rerun to retry the rest", err=True)
        raise typer.Exit(code=1) from None
    except ValueError as exc:
        fail(exc)
    finally:
        runner.close()
    for meta in metas:
        typer.echo(f"ingredient {meta['index']}: val {meta['val_acc']:.4f} test {meta['test_acc']:.4f}")


@app.command("soup")
def soup(
    run: pathlib.Path = typer.Option(..., "--run", help="Run directory written by train-ingredients."),
    data_dir: str | None = typer.Option(None, "--data-dir", help="Data directory (else $RESEARCH_DATA_DIR)."),
    cache_dir: str | None = typer.Option(None, "--cache-dir", help="Writable cache for processed data."),
    grid: int = typer.Option(11, "--grid", help="Interpolation grid points in [0, 1] (>= 2)."),
    out: pathlib.Path | None = typer.Option(
        None, "--out", help="Where to write soup.json, the plot, weights."
    ),
) -> None:
    """Build uniform, greedy and greedy-interpolation soups (and the ensemble) from saved ingredients."""
    _threads()
    from gnn_soup.data import load_dataset
    from gnn_soup.ingredients import IngredientStore
    from gnn_soup.plots import plot_soup_bars
    from gnn_soup.soup import make_evaluators, run_soups
    from gnn_soup.training import build_model
    from research_systems_core.checkpoint import save_checkpoint
    from research_systems_core.results import write_json
    from research_systems_core.validation import check_int

    out = out or run / "soup"
    try:
        check_int("grid", grid, minimum=2)
        store = IngredientStore(run)
        plan = store.load_plan()
        states, metas = store.load_all()
        if not states:
            raise FileNotFoundError(f"no finished ingredients in {run}; run train-ingredients first")
        data = load_dataset(plan.dataset, data_dir=data_dir, cache_dir=cache_dir)
        evaluators = make_evaluators(build_model(plan.config, data), data, plan.config)
        results = run_soups(evaluators, states, [m["val_acc"] for m in metas], grid=grid)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        fail(exc)
    soup_states = results.pop("_states")
    for name, state in soup_states.items():
        save_checkpoint(out / "weights" / name, 0, state, {"method": name, "run": str(run)})
    results["ingredients"] = [
        {"index": m["index"], "val": m["val_acc"], "test": m["test_acc"]} for m in metas
    ]
    write_json(out / "soup.json", results)
    plot_soup_bars(
        out / "soup.png",
        {
            plan.dataset: {
                k: (v["test"], 0.0) for k, v in results.items() if isinstance(v, dict) and "test" in v
            }
        },
        ingredient_points={plan.dataset: [m["test_acc"] for m in metas]},
        title=f"{plan.dataset}: {len(states)} ingredients",
    )
    for name in (
        "ingredient_mean",
        "best_ingredient",
        "uniform",
        "greedy",
        "greedy_interpolation",
        "ensemble",
    ):
        typer.echo(f"{name:22s} val {results[name]['val']:.4f}  test {results[name]['test']:.4f}")
    typer.echo(f"wrote {out / 'soup.json'}")


@app.command("reproduce")
def reproduce_cmd(
    out: pathlib.Path = typer.Option(
        pathlib.Path("results/reproduce/gnn-soup"), "--out", help="Output directory."
    ),
    data_dir: str | None = typer.Option(
        None, "--data-dir", help="Data directory holding planetoid/Cora/raw."
    ),
    dataset: str = typer.Option("Cora", "--dataset", help="Planetoid data set (Cora, CiteSeer, PubMed)."),
    quick: bool = typer.Option(
        False, "--quick", help="3 seeds, K=4, 150 steps: about 1-2 minutes on one core."
    ),
    executor: str = typer.Option("process", "--executor", help="process, ray or sequential."),
    workers: int = typer.Option(1, "--workers", help="Parallel workers (1 = one core)."),
    ray_address: str | None = typer.Option(None, "--ray-address", help="Address of a running Ray cluster."),
) -> None:
    """Reproduce the main effect on Cora (5 seeds; shared vs independent init); writes summary.json last."""
    _threads()
    from gnn_soup.executors import create_executor
    from gnn_soup.reproduce import ReproduceConfig, reproduce

    try:
        config = ReproduceConfig.quick() if quick else ReproduceConfig()
        config.dataset = dataset
        runner = create_executor(executor, workers=workers, ray_address=ray_address)
    except (ValueError, ImportError) as exc:
        fail(exc)
    try:
        summary = reproduce(out, runner, data_dir=data_dir, quick=quick, config=config)
    except (ValueError, FileNotFoundError) as exc:
        fail(exc)
    finally:
        runner.close()
    for row in summary["table"]:
        typer.echo(
            f"{row['init']:12s} {row['method']:22s} test {row['test_mean']:.4f} ± {row['test_std']:.4f}"
        )
    typer.echo(f"verdict: {summary['verdict']} ({summary['verdict_reason']})")


@app.command("list")
def list_cmd() -> None:
    """List the registered data sets, models, samplers and executors."""
    from gnn_soup.data import DATASETS
    from gnn_soup.executors import EXECUTORS
    from gnn_soup.models import MODELS
    from gnn_soup.samplers import SAMPLERS

    for title, registry in (
        ("datasets", DATASETS),
        ("models", MODELS),
        ("samplers", SAMPLERS),
        ("executors", EXECUTORS),
    ):
        typer.echo(f"{title}: {', '.join(registry.names())}")
