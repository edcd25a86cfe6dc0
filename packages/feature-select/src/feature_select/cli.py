"""Command-line interface of feature-select."""

from __future__ import annotations

import logging
import pathlib
import time

import typer

from feature_select import __version__
from research_systems_core.cli import create_app

app = create_app(
    "feature-select",
    "NeuroFS: supervised feature selection by neuron evolution in sparse neural networks.",
    __version__,
    default_threads=1,
)
log = logging.getLogger("feature_select")


def _ints(text: str, name: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{name} must be comma-separated integers, got {text!r}") from None


def _hidden(text: str) -> tuple[int, ...]:
    return tuple(_ints(text, "--hidden"))


@app.command()
def datasets(
    data_dir: str = typer.Option(None, "--data-dir", help="Data directory (default: $RESEARCH_DATA_DIR)."),
) -> None:
    """List the data sets known by name: registered ones and every .mat/.csv/.npz file in the data directory."""
    from feature_select.data import DATASETS, find_data_files

    files = find_data_files(data_dir)
    for name in sorted(set(DATASETS.names()) | set(files)):
        typer.echo(f"{name}\t{files[name]}" if name in files else name)


@app.command()
def run(
    dataset: str = typer.Option(
        "madelon",
        "--dataset",
        help="A .mat (X, Y) / .csv (label column) / .npz (X, y) path, or a name from `feature-select datasets`.",
    ),
    k: int = typer.Option(50, "--k", help="Number of features to select."),
    data_dir: str = typer.Option(None, "--data-dir", help="Data directory (default: $RESEARCH_DATA_DIR)."),
    out: pathlib.Path = typer.Option(
        pathlib.Path("results/run/feature-select"), "--out", help="Output directory."
    ),
    epochs: int = typer.Option(100, "--epochs", help="Training epochs (reference: 100)."),
    hidden: str = typer.Option(
        "1000,1000,1000", "--hidden", help="Hidden layer sizes, comma separated (reference: 1000,1000,1000)."
    ),
    epsilon: float = typer.Option(
        13.0, "--epsilon", help="Erdős–Rényi sparsity parameter (reference README command: 30)."
    ),
    zeta_in: float = typer.Option(
        0.4, "--zeta-in", help="Input-layer prune/swap fraction (reference README command: 0.2)."
    ),
    zeta_hid: float = typer.Option(
        0.2, "--zeta-hid", help="Hidden-layer prune fraction (reference README command: 0.3)."
    ),
    lr: float = typer.Option(0.01, "--lr", help="SGD learning rate (reference: 0.01)."),
    batch_size: int = typer.Option(
        None, "--batch-size", help="Mini-batch size (default: clip(n_train // 8, 16, 100))."
    ),
    backend: str = typer.Option("auto", "--backend", help="sparse, dense or auto (by density)."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when present), cpu, cuda, cuda:N, mps."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
) -> None:
    """Run NeuroFS on one data set: complete ranking, classifier accuracies, weights (safetensors)."""
    from feature_select.data import load_dataset, split_and_scale
    from feature_select.evaluation import evaluate_subset
    from feature_select.selector import NeuroFS
    from feature_select.training import NeuroFSConfig
    from research_systems_core.checkpoint import save_checkpoint
    from research_systems_core.metadata import run_metadata
    from research_systems_core.results import write_json
    from research_systems_core.seeding import seed_everything
    from research_systems_core.torch_utils import resolve_device
    from research_systems_core.validation import check_int

    params = dict(
        hidden=_hidden(hidden),
        epochs=epochs,
        epsilon=epsilon,
        zeta_in=zeta_in,
        zeta_hid=zeta_hid,
        lr=lr,
        batch_size=batch_size,
        backend=backend,
    )
    check_int("--k", k, minimum=1)
    NeuroFSConfig(k=k, **params).validate(k)  # options checked before any data is read
    resolve_device(device)
    seed_everything(seed)
    data = load_dataset(dataset, data_dir)
    if k > data.x.shape[1]:
        raise ValueError(f"--k must be <= the {data.x.shape[1]} features of {dataset}, got {k}")
    split = split_and_scale(data)
    start = time.perf_counter()
    selector = NeuroFS(n_features_to_select=k, random_state=seed, scale=None, device=device, **params)
    selector.fit(split.x_train, split.y_train)
    seconds = time.perf_counter() - start
    scores = evaluate_subset(
        split.x_train, split.y_train, split.x_test, split.y_test, selector.selected_features_, seed
    )
    out.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for i, layer in enumerate(selector.model_.sparse_layers):
        rows, cols, values = layer.connections()
        tensors |= {
            f"layer{i}.rows": rows,
            f"layer{i}.cols": cols,
            f"layer{i}.values": values,
            f"layer{i}.bias": layer.bias.detach(),
        }
    tensors |= {
        "output.weight": selector.model_.output.weight.detach(),
        "output.bias": selector.model_.output.bias.detach(),
    }
    save_checkpoint(
        out / "model",
        epochs,
        tensors,
        {"dataset": dataset, "k": k, **{k_: str(v) for k_, v in params.items()}},
    )
    result = {
        "dataset": dataset,
        "k": k,
        "selected_features": selector.selected_features_.tolist(),
        "ranking": selector.ranking_.tolist(),
        "last_active_epoch": selector.last_active_epoch_.tolist(),
        "batch_size": selector.batch_size_,
        "device": selector.device_,
        "accuracy": scores,
        "fit_seconds": seconds,
        "history": selector.history_,
        "metadata": run_metadata(
            seed=seed, config={**params, "hidden": list(params["hidden"]), "k": k, "dataset": dataset}
        ),
    }
    write_json(out / "result.json", result)
    typer.echo(
        f"{dataset} K={k}: knn={scores['knn']:.3f} extratrees={scores['extratrees']:.3f} svc={scores['svc']:.3f} "
        f"({seconds:.1f}s) -> {out / 'result.json'}"
    )


@app.command()
def benchmark(
    datasets: str = typer.Option("madelon", "--datasets", help="Comma-separated data set names."),
    ks: str = typer.Option("25,50,100", "--ks", help="Comma-separated K values."),
    seeds: str = typer.Option("0,1,2", "--seeds", help="Comma-separated seeds."),
    methods: str = typer.Option(
        "neurofs,f_classif,mutual_info,rfe_svm,sfm_extratrees,sfm_l1,lassonet,random",
        "--methods",
        help="Comma-separated methods.",
    ),
    out: pathlib.Path = typer.Option(
        pathlib.Path("results/benchmark/feature-select"), "--out", help="Output directory."
    ),
    data_dir: str = typer.Option(None, "--data-dir", help="Data directory (default: $RESEARCH_DATA_DIR)."),
    epochs: int = typer.Option(40, "--epochs", help="NeuroFS training epochs."),
    hidden: str = typer.Option("300,300", "--hidden", help="NeuroFS hidden layer sizes."),
) -> None:
    """Methods x data sets x K x seeds: results.jsonl (resumable), summary.json with the ranking table, plots."""
    from feature_select.benchmark import (
        GridConfig,
        plot_accuracy_vs_k,
        plot_ranking_scores,
        run_grid,
        summarize,
    )
    from feature_select.reproduce import NEUROFS_SMALL
    from research_systems_core.results import write_json

    cfg = GridConfig(
        datasets=[d for d in datasets.split(",") if d],
        ks=_ints(ks, "--ks"),
        seeds=_ints(seeds, "--seeds"),
        methods=[m for m in methods.split(",") if m],
        method_params={"neurofs": {**NEUROFS_SMALL, "epochs": epochs, "hidden": _hidden(hidden)}},
    )
    out.mkdir(parents=True, exist_ok=True)
    rows = run_grid(cfg, out / "results.jsonl", data_dir)
    summary = summarize(rows)
    pngs = plot_accuracy_vs_k(rows, out, "svc")
    pngs.append(plot_ranking_scores(summary["ranking_scores"], out / "ranking_scores.png"))
    write_json(out / "summary.json", {**summary, "pngs": pngs})
    for metric, scores in summary["ranking_scores"].items():
        typer.echo(f"ranking score ({metric}): " + ", ".join(f"{m}={s:.1f}" for m, s in scores.items()))


@app.command()
def reproduce(
    out: pathlib.Path = typer.Option(
        pathlib.Path("results/reproduce/feature-select"), "--out", help="Output directory."
    ),
    data_dir: str = typer.Option(None, "--data-dir", help="Data directory (default: $RESEARCH_DATA_DIR)."),
    quick: bool = typer.Option(False, "--quick", help="Small version (<= 2.5 min on one core)."),
) -> None:
    """Reproduce the paper's ranking-score claim at small scale; writes summary.json last."""
    from feature_select.reproduce import reproduce as run_reproduction

    result = run_reproduction(out, data_dir, quick)
    typer.echo(
        f"{result['verdict']}: {result['verdict_reason']} ({result['seconds']}s) -> {out / 'summary.json'}"
    )
