"""Command-line interface of sparse-dst: train, finalize, reproduce."""

from __future__ import annotations

import json
import logging
import pathlib
from typing import Any

import typer

from research_systems_core.cli import create_app
from sparse_dst import __version__

app = create_app(
    "sparse-dst",
    "Chase: channel-aware dynamic sparse training (plus RigL, SET and MEST-style DST).",
    __version__,
)
log = logging.getLogger("sparse_dst")


def _fail(message: str) -> None:
    typer.echo(f"Error: {message}", err=True)
    raise typer.Exit(2)


@app.command()
def train(
    out: pathlib.Path = typer.Option(..., "--out", help="Run directory (results, checkpoints, weights)."),
    method: str | None = typer.Option(None, help="dense, rigl, set, mest or chase (default chase)."),
    dataset: str | None = typer.Option(
        None, help="digits (bundled with sklearn) or mnist (needs --data-dir)."
    ),
    data_dir: str | None = typer.Option(None, "--data-dir", help="Data directory holding MNIST/raw."),
    model: str | None = typer.Option(None, help="mlp, small_cnn, vgg11, vgg16, resnet18, resnet50."),
    epochs: int | None = typer.Option(None, help="Training epochs."),
    density: float | None = typer.Option(None, help="Fraction of weights kept, in (0, 1]."),
    channel_sparsity: float | None = typer.Option(None, "--channel-sparsity", help="Chase's Sc in [0, 1)."),
    channel_score: str | None = typer.Option(None, "--channel-score", help="umm (default) or mmm."),
    update_frequency: int | None = typer.Option(
        None, "--update-frequency", help="Steps between topology updates."
    ),
    seed: int | None = typer.Option(None, help="Random seed."),
    config: pathlib.Path | None = typer.Option(
        None, "--config", help="YAML/TOML file of TrainConfig values."
    ),
    overrides: list[str] = typer.Option(
        [], "--set", help="Override a config value, e.g. --set sparse.beta=0.4."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue from the latest checkpoint in --out."),
) -> None:
    """Train a model with dense, RigL, SET, MEST-style or Chase sparse training."""
    import torch
    from safetensors.torch import save_file

    from research_systems_core.config import load_config
    from research_systems_core.masks import MaskSet
    from research_systems_core.metadata import run_metadata
    from research_systems_core.results import plot_curves, write_json
    from sparse_dst.chase import Chase
    from sparse_dst.data import load_data
    from sparse_dst.train import TrainConfig
    from sparse_dst.train import train as run_training

    torch.set_num_threads(1)
    try:
        cfg = load_config(TrainConfig, config, overrides)
        explicit: dict[str, Any] = {
            "method": method, "dataset": dataset, "model": model, "epochs": epochs, "seed": seed,
        }  # fmt: skip
        for key, value in explicit.items():
            if value is not None:
                setattr(cfg, key, value)
        sparse = {"density": density, "channel_sparsity": channel_sparsity, "channel_score": channel_score}
        sparse["update_frequency"] = update_frequency
        for key, value in sparse.items():
            if value is not None:
                setattr(cfg.sparse, key, value)
        cfg.validate()
        data = load_data(cfg.dataset, data_dir, cfg.image_size, cfg.train_limit or None, cfg.seed)
        result = run_training(cfg, data, checkpoint_dir=out / "checkpoints", resume=resume)
    except (ValueError, FileNotFoundError) as error:
        _fail(str(error))
    out.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.contiguous() for k, v in result.model.state_dict().items()}, str(out / "model.safetensors")
    )
    summary: dict[str, Any] = {
        "test_accuracy": result.test_accuracy, "train_seconds": result.train_seconds, "history": result.history,
        "metadata": run_metadata(seed=cfg.seed, config=cfg, packages=["sparse-dst"]),
    }  # fmt: skip
    masking = result.masking
    if masking is not None:
        MaskSet(masking.masks).save(out / "masks.safetensors")
        summary["layer_density"] = masking.layer_density()
        summary["channel_density"] = {n: d.tolist() for n, d in masking.channel_density().items()}
        summary["update_overhead"] = masking.update_overhead()
        curves = {}
        for n, d in masking.channel_density().items():
            if d.numel() > 1 and float(d.mean()) < 1.0:
                rel = (d / d.mean().clamp_min(1e-12)).sort().values
                curves[n] = ([i / (len(rel) - 1) for i in range(len(rel))], rel.tolist())
        if curves:
            plot_curves(
                out / "channel_density.png", curves, "channel (sorted, normalised index)",
                "channel density / layer density", title=f"{cfg.method}: per-channel density", hline=1.0,
            )  # fmt: skip
        if isinstance(masking, Chase):
            summary["alive_channels"] = masking.alive_channels()
            summary["channel_widths"] = {p: int(k.sum()) for p, k in masking.keep.items()}
    write_json(out / "result.json", summary)
    typer.echo(f"test accuracy {result.test_accuracy:.2f}%; results in {out}")


@app.command()
def finalize(
    run: pathlib.Path = typer.Option(
        ..., "--run", help="Run directory written by `sparse-dst train --method chase`."
    ),
    data_dir: str | None = typer.Option(
        None, "--data-dir", help="Data directory (to recompute BatchNorm and test)."
    ),
    recalibrate: bool = typer.Option(
        True, help="Recompute BatchNorm statistics of the slim model on training data."
    ),
) -> None:
    """Slice the removed channels out of a Chase run: writes slim.safetensors and slim.json."""
    import torch
    from safetensors.torch import save_file

    from research_systems_core.checkpoint import latest_checkpoint, load_checkpoint
    from research_systems_core.config import config_from_dict
    from research_systems_core.results import write_json
    from sparse_dst.chase import Chase
    from sparse_dst.data import load_data
    from sparse_dst.models import create_model
    from sparse_dst.surgery import conv_linear_macs, count_parameters
    from sparse_dst.train import TrainConfig, build_masking, evaluate

    torch.set_num_threads(1)
    if (run / "slim.safetensors").exists():
        _fail(f"{run} is already finalized ({run / 'slim.safetensors'} exists); finalizing twice is refused")
    path = latest_checkpoint(run / "checkpoints")
    if path is None:
        _fail(
            f"no checkpoint in {run / 'checkpoints'}; train with `sparse-dst train --method chase --out {run}` first"
        )
    tensors, meta = load_checkpoint(path)
    cfg = config_from_dict(TrainConfig, meta["config"])
    if cfg.method != "chase":
        _fail(f"run {run} used method {cfg.method!r}; only a chase run has channels to remove")
    data = load_data(cfg.dataset, data_dir, cfg.image_size, cfg.train_limit or None, cfg.seed)
    model = create_model(
        cfg.model, in_channels=data.in_channels, num_classes=data.num_classes, width=cfg.width,
        in_features=data.in_channels * data.image_size**2,
    )  # fmt: skip
    chase = build_masking(cfg, model, torch.optim.SGD(model.parameters(), lr=0.0), 1)
    assert isinstance(chase, Chase)
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model/")})
    chase.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("dst/")}, meta["dst"])
    masked_accuracy = evaluate(model, data.x_test, data.y_test)
    calibration = (data.x_train[i : i + 256] for i in range(0, 256 * 20, 256)) if recalibrate else None
    slim = chase.finalize(calibration)
    weights = {f"model/{k}": v.contiguous() for k, v in slim.state_dict().items()}
    weights |= {f"keep/{p}": k for p, k in chase.keep.items()}
    save_file(weights, str(run / "slim.safetensors"))
    report = {
        "checkpoint": str(path), "masked_accuracy": masked_accuracy,
        "slim_accuracy": evaluate(slim, data.x_test, data.y_test),
        "params_before": count_parameters(model), "params_after": count_parameters(slim),
        "nonzero_params_after": count_parameters(slim, nonzero=True),
        "macs_before": conv_linear_macs(model, data.x_test[:2]), "macs_after": conv_linear_macs(slim, data.x_test[:2]),
        "channel_widths": {p: int(k.sum()) for p, k in chase.keep.items()},
    }  # fmt: skip
    write_json(run / "slim.json", report)
    typer.echo(json.dumps(report, indent=1))


@app.command()
def reproduce(
    out: pathlib.Path = typer.Option(
        pathlib.Path("results/reproduce/sparse-dst"), "--out", help="Output directory."
    ),
    data_dir: str | None = typer.Option(None, "--data-dir", help="Data directory holding MNIST/raw."),
    quick: bool = typer.Option(
        False, "--quick", help="One seed, smaller subset: about 2 minutes on one core."
    ),
    seeds: str | None = typer.Option(None, help="Comma-separated seeds (default 0,1,2; quick: 0)."),
) -> None:
    """Reproduce Chase's claims on MNIST (or digits); writes JSON, PNGs and summary.json last."""
    from sparse_dst.reproduce import ReproConfig, run

    cfg = ReproConfig.quick() if quick else ReproConfig()
    if seeds:
        try:
            cfg.seeds = [int(s) for s in seeds.split(",")]
        except ValueError:
            _fail(f"--seeds must be comma-separated integers, got {seeds!r}")
    summary = run(cfg, out, data_dir)
    typer.echo(f"{summary['verdict']}: {summary['verdict_reason']}")
