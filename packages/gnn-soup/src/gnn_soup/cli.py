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


DATASET_HELP = (
    "Cora, CiteSeer, PubMed, Flickr, Reddit, synthetic; ogbn-arxiv / ogbn-products / ogbn-papers100M "
    "(any ogbn-*, needs ogb); pyg:CLASS or pyg:CLASS/NAME (any torch_geometric data set, e.g. pyg:Amazon/Computers); "
    "store:DIR (a saved memory-mapped graph); files:EDGES,FEATURES,LABELS or files:EDGES,FEATURES,LABELS,MASKS."
)


def dataset_spec(
    dataset: str, edges: str | None, features: str | None, labels: str | None, masks: str | None
) -> str:
    """``--edges/--features/--labels[/--masks]`` become a ``files:`` data set name (stored in the plan)."""
    given = [x is not None for x in (edges, features, labels)]
    if any(given) or masks is not None:
        if not all(given):
            raise ValueError("--edges, --features and --labels must be given together (--masks is optional)")
        paths = [str(pathlib.Path(x).resolve()) for x in (edges, features, labels) if x is not None]
        if masks is not None:
            paths.append(str(pathlib.Path(masks).resolve()))
        for path in paths:
            if not pathlib.Path(path).is_file():
                raise FileNotFoundError(f"no such file: {path}")
        return "files:" + ",".join(paths)
    return dataset


@app.command("train-ingredients")
def train_ingredients(
    out: pathlib.Path = typer.Option(
        ..., "--out", help="Run directory (ingredients, plan.json); reruns resume."
    ),
    dataset: str = typer.Option("Cora", "--dataset", help=DATASET_HELP),
    edges: str | None = typer.Option(
        None, "--edges", help="Edge list file (.npy [2,E]/[E,2] or text 'u v')."
    ),
    features: str | None = typer.Option(None, "--features", help="Node feature file (.npy or text)."),
    labels: str | None = typer.Option(None, "--labels", help="Node label file (.npy or text)."),
    masks: str | None = typer.Option(
        None, "--masks", help=".npz with train/val/test (else random 60/20/20)."
    ),
    data_dir: str | None = typer.Option(None, "--data-dir", help="Data directory (else $RESEARCH_DATA_DIR)."),
    cache_dir: str | None = typer.Option(None, "--cache-dir", help="Writable cache for processed data."),
    download: bool = typer.Option(False, "--download", help="Download the data set if it is not local."),
    num_ingredients: int = typer.Option(4, "-k", "--num-ingredients", help="Number of ingredients K."),
    sampler: list[str] = typer.Option(
        ["full"],
        "--sampler",
        help="Sampler(s), cycled over ingredients: full, cluster, saint_node, saint_edge, saint_rw, neighbor, "
        "fastgcn (gcn only). Repeat the option for several.",
    ),
    sampler_option: list[str] = typer.Option(
        [], "--sampler-option", help="Sampler setting 'sampler.key=value', e.g. cluster.num_parts=16."
    ),
    init: str = typer.Option("shared", "--init", help="'shared' (one initialisation) or 'independent'."),
    seed: int = typer.Option(0, "--seed", help="Base seed; ingredient k uses seed*1000+k."),
    model: str = typer.Option("gcn", "--model", help="gcn, sage, gat, sgc or sign."),
    hidden_dim: int = typer.Option(64, "--hidden", help="Hidden width."),
    num_layers: int = typer.Option(2, "--layers", help="Number of GNN layers (SGC/SIGN: propagation hops)."),
    dropout: float = typer.Option(0.5, "--dropout", help="Dropout on the input and hidden layers."),
    lr: float = typer.Option(0.01, "--lr", help="Adam learning rate."),
    weight_decay: float = typer.Option(5e-4, "--weight-decay", help="Adam weight decay."),
    steps: int = typer.Option(200, "--steps", help="Optimiser steps (batches) per ingredient."),
    eval_every: int = typer.Option(5, "--eval-every", help="Validate every N steps."),
    eval_method: str = typer.Option(
        "auto",
        "--eval-method",
        help="auto (full-batch up to 200k nodes, else layer-wise), full or layerwise.",
    ),
    eval_nodes: int = typer.Option(
        0, "--eval-nodes", help="Validate on N fixed random validation nodes (0: all)."
    ),
    checkpoint_every: int = typer.Option(
        0, "--checkpoint-every", help="Checkpoint an unfinished ingredient every N steps (0: off)."
    ),
    executor: str = typer.Option(
        "process", "--executor", help="process (local workers), ray, or sequential."
    ),
    workers: int = typer.Option(2, "--workers", help="Parallel workers (processes, or Ray CPUs when local)."),
    ray_address: str | None = typer.Option(None, "--ray-address", help="Address of a running Ray cluster."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto (one GPU per worker)."),
    precision: str = typer.Option("fp32", "--precision", help="fp32, bf16 or fp16 (autocast on CUDA)."),
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
    from research_systems_core.validation import check_int

    check_int("max_retries", max_retries, minimum=0)
    config = TrainConfig(
        model=model,
        hidden_dim=hidden_dim,
        num_layers=num_layers,
        dropout=dropout,
        lr=lr,
        weight_decay=weight_decay,
        steps=steps,
        eval_every=eval_every,
        eval_method=eval_method,
        eval_nodes=eval_nodes,
        checkpoint_every=checkpoint_every,
    ).validate()
    name = dataset_spec(dataset, edges, features, labels, masks)
    plan = make_plan(
        name,
        num_ingredients,
        config,
        samplers=sampler,
        sampler_kwargs=parse_sampler_options(sampler_option),
        init=init,
        seed=seed,
    )
    try:
        runner = create_executor(
            executor, workers=workers, ray_address=ray_address, device=device, precision=precision
        )
    except ImportError as exc:  # the ray extra is missing
        fail(exc)
    try:
        data = load_dataset(name, data_dir=data_dir, cache_dir=cache_dir, download=download)
        metas = train_plan(plan, data, runner, IngredientStore(out), max_retries=max_retries)
    except IngredientFailure as exc:
        typer.echo(f"error: {exc}; finished ingredients are saved, rerun to retry the rest", err=True)
        raise typer.Exit(code=1) from None
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
    device: str = typer.Option("cpu", "--device", help="cpu, cuda, cuda:N or auto."),
    precision: str = typer.Option("fp32", "--precision", help="fp32, bf16 or fp16 (autocast on CUDA)."),
) -> None:
    """Build uniform, greedy and greedy-interpolation soups (and the ensemble) from saved ingredients."""
    _threads()
    from gnn_soup.data import load_dataset
    from gnn_soup.ingredients import IngredientStore
    from gnn_soup.plots import plot_soup_bars
    from gnn_soup.soup import make_evaluators, run_soups
    from gnn_soup.training import TrainingContext, build_model
    from research_systems_core.checkpoint import save_checkpoint
    from research_systems_core.precision import check_precision
    from research_systems_core.results import write_json
    from research_systems_core.torch_utils import resolve_device
    from research_systems_core.validation import check_int

    out = out or run / "soup"
    check_int("grid", grid, minimum=2)
    torch_device = resolve_device(device)
    check_precision(precision)
    store = IngredientStore(run)
    plan = store.load_plan()
    states, metas = store.load_all()
    if not states:
        raise FileNotFoundError(f"no finished ingredients in {run}; run train-ingredients first")
    data = load_dataset(plan.dataset, data_dir=data_dir, cache_dir=cache_dir)
    context = TrainingContext(data, torch_device, precision)
    evaluators = make_evaluators(build_model(plan.config, data), context, plan.config)
    results = run_soups(evaluators, states, [m["val_acc"] for m in metas], grid=grid)
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
        "ensemble",
        "uniform",
        "greedy",
        "greedy_interpolation",
    ):
        entry = results[name]
        verdict = f"  [{entry['verdict']}]" if "verdict" in entry else ""
        typer.echo(f"{name:22s} val {entry['val']:.4f}  test {entry['test']:.4f}{verdict}")
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
    per_sampler: bool = typer.Option(
        True,
        "--per-sampler/--no-per-sampler",
        help="Also the table of each sampler alone (K=4, 120 more ingredients).",
    ),
) -> None:
    """Reproduce the main effect on Cora (5 seeds; shared vs independent init); writes summary.json last."""
    _threads()
    from gnn_soup.executors import create_executor
    from gnn_soup.reproduce import ReproduceConfig, reproduce

    try:
        config = ReproduceConfig.quick() if quick else ReproduceConfig()
        config.dataset = dataset
        config.per_sampler = config.per_sampler and per_sampler
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


@app.command("make-sbm")
def make_sbm_cmd(
    out: pathlib.Path = typer.Option(..., "--out", help="Folder of the memory-mappable graph store."),
    num_nodes: int = typer.Option(1_000_000, "--nodes", help="Number of nodes."),
    num_edges: int = typer.Option(
        10_001_000, "--edges", help="Undirected edges to draw (duplicates and loops dropped)."
    ),
    num_classes: int = typer.Option(10, "--classes", help="Number of blocks / classes."),
    num_features: int = typer.Option(16, "--features", help="Feature dimensions (float16)."),
    homophily: float = typer.Option(0.3, "--homophily", help="Probability that an edge stays in its class."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing store."),
) -> None:
    """Write a stochastic block model graph with class-dependent features as a memory-mapped store."""
    from gnn_soup.sbm import write_sbm_store
    from gnn_soup.store import open_graph

    path = write_sbm_store(
        out,
        overwrite=overwrite,
        num_nodes=num_nodes,
        num_edges=num_edges,
        num_classes=num_classes,
        num_features=num_features,
        homophily=homophily,
        seed=seed,
    )
    typer.echo(f"wrote {path}: {open_graph(path).summary()} (use --dataset store:{path})")


@app.command("scale")
def scale_cmd(
    out: pathlib.Path = typer.Option(
        pathlib.Path("results/scaling/gnn-soup"), "--out", help="Output directory."
    ),
    graph_dir: pathlib.Path | None = typer.Option(None, "--graph", help="SBM store to use or create."),
    num_nodes: int = typer.Option(1_000_000, "--nodes", help="SBM nodes."),
    num_edges: int = typer.Option(10_001_000, "--edges", help="SBM undirected edges to draw."),
    num_ingredients: int = typer.Option(4, "-k", "--num-ingredients", help="Ingredients K."),
    workers: int = typer.Option(2, "--workers", help="Worker processes."),
    smoke: bool = typer.Option(False, "--smoke", help="A 20k-node graph, 2 ingredients (about a minute)."),
) -> None:
    """Scaling run: K mini-batch ingredients vs one full-graph model on a generated SBM graph."""
    from gnn_soup.scaling import ScalingConfig, run_scaling
    from research_systems_core.validation import check_int

    check_int("num_ingredients", num_ingredients, minimum=1)
    check_int("workers", workers, minimum=1)
    cfg = ScalingConfig.smoke() if smoke else ScalingConfig(num_nodes=num_nodes, num_edges=num_edges)
    cfg.num_ingredients, cfg.workers = (cfg.num_ingredients if smoke else num_ingredients), workers
    summary = run_scaling(out, cfg, graph_dir)
    typer.echo(summary["verdict_memory"])
    typer.echo(summary["verdict_accuracy"])
    typer.echo(f"verdict: {summary['verdict']}; wrote {out / 'scaling.json'}")


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
