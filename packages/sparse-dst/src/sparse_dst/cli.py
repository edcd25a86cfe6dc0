"""Command-line interface of sparse-dst: train, finalize, presets, reproduce.

Errors in options or data are one ``error: ...`` line and exit code 2 (the shared CLI boundary);
options are validated before a model or data set is loaded.
"""

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
    "Chase: channel-aware dynamic sparse training (plus RigL, SET and MEST DST) on any timm/torchvision CNN.",
    __version__,
    default_threads=1,
)
log = logging.getLogger("sparse_dst")


def _build_config(
    config: pathlib.Path | None, preset: str | None, overrides: list[str], explicit: dict[str, Any]
) -> Any:
    from research_systems_core.config import load_config
    from sparse_dst.presets import preset_overrides
    from sparse_dst.train import TrainConfig

    if config is not None and not config.is_file():
        raise FileNotFoundError(f"--config {config} does not exist")
    base = preset_overrides(preset) if preset else []
    cfg = load_config(TrainConfig, config, [*base, *overrides])
    for key, value in explicit.items():
        if value is None:
            continue
        target, _, field = key.rpartition(".")
        setattr(cfg.sparse if target == "sparse" else cfg, field, value)
    return cfg.validate()


def _check_before_loading(cfg: Any, data_dir: str | None) -> None:
    """Device, data-set spec and model name, checked before anything heavy is loaded."""
    from research_systems_core.torch_utils import resolve_device
    from sparse_dst.models import MODELS
    from sparse_dst.train import IN_MEMORY

    resolve_device(cfg.device)
    if cfg.dataset not in IN_MEMORY:
        from research_systems_core.vision import parse_dataset_spec

        parse_dataset_spec(cfg.dataset)
    if cfg.model not in MODELS:
        from research_systems_core.vision import image_model_names

        bare = cfg.model.partition(":")[2] or cfg.model
        if bare not in image_model_names():
            from research_systems_core.vision import create_image_model

            create_image_model(cfg.model, num_classes=2)  # raises with the closest names
    if data_dir is not None and not pathlib.Path(data_dir).is_dir():
        raise FileNotFoundError(f"--data-dir {data_dir} is not a directory")


@app.command()
def train(
    out: pathlib.Path = typer.Option(..., "--out", help="Run directory (results, checkpoints, weights)."),
    method: str | None = typer.Option(None, help="dense, rigl, set, mest or chase (default chase)."),
    preset: str | None = typer.Option(
        None,
        help="rigl-layer, reference, cifar100-vgg19, cifar100-resnet50, imagenet-resnet50 (see `presets`).",
    ),
    dataset: str | None = typer.Option(
        None, help="digits (offline), mnist, cifar10, cifar100, svhn, tiny-imagenet, imagenet or folder:PATH."
    ),
    data_dir: str | None = typer.Option(
        None, "--data-dir", help="Data directory (default $RESEARCH_DATA_DIR)."
    ),
    model: str | None = typer.Option(
        None, help="Package model (small_cnn, vgg11, resnet18, ...) or any timm/torchvision name."
    ),
    epochs: int | None = typer.Option(None, help="Training epochs."),
    batch_size: int | None = typer.Option(None, "--batch-size", help="Batch size (per process under DDP)."),
    lr: float | None = typer.Option(None, help="Peak learning rate."),
    image_size: int | None = typer.Option(
        None, "--image-size", help="Image size (0: the data set's default)."
    ),
    density: float | None = typer.Option(None, help="Fraction of weights kept, in (0, 1]."),
    channel_sparsity: float | None = typer.Option(None, "--channel-sparsity", help="Chase's Sc in [0, 1)."),
    channel_score: str | None = typer.Option(None, "--channel-score", help="umm (default) or mmm."),
    update_frequency: int | None = typer.Option(
        None, "--update-frequency", help="Steps between topology updates."
    ),
    device: str | None = typer.Option(None, help="auto (default), cpu, cuda, cuda:N or mps."),
    precision: str | None = typer.Option(None, help="fp32 (default), bf16 or fp16."),
    workers: int | None = typer.Option(None, help="DataLoader workers."),
    seed: int | None = typer.Option(None, help="Random seed."),
    config: pathlib.Path | None = typer.Option(
        None, "--config", help="YAML/TOML file of TrainConfig values."
    ),
    overrides: list[str] = typer.Option(
        [], "--set", help="Override a config value, e.g. --set sparse.beta=0.4."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue from the latest checkpoint in --out."),
) -> None:
    """Train with dense, RigL, SET, MEST or Chase sparse training (DDP under torchrun)."""
    explicit = {
        "method": method, "dataset": dataset, "model": model, "epochs": epochs, "batch_size": batch_size,
        "lr": lr, "image_size": image_size, "device": device, "precision": precision, "workers": workers,
        "seed": seed, "sparse.density": density, "sparse.channel_sparsity": channel_sparsity,
        "sparse.channel_score": channel_score, "sparse.update_frequency": update_frequency,
    }  # fmt: skip
    cfg = _build_config(config, preset, overrides, explicit)
    _check_before_loading(cfg, data_dir)
    from sparse_dst.train import load_train_data
    from sparse_dst.train import train as run_training

    data = load_train_data(cfg, data_dir)
    result = run_training(cfg, data, checkpoint_dir=out / "checkpoints", resume=resume)
    from research_systems_core.distributed import is_main_process

    if is_main_process():
        _write_train_outputs(out, cfg, result)
    typer.echo(f"test accuracy {result.test_accuracy:.2f}%; results in {out}")


def _write_train_outputs(out: pathlib.Path, cfg: Any, result: Any) -> None:
    from safetensors.torch import save_file

    from research_systems_core.masks import MaskSet
    from research_systems_core.metadata import run_metadata
    from research_systems_core.results import write_json
    from sparse_dst.chase import Chase

    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in result.model.state_dict().items()}
    save_file(state, str(out / "model.safetensors"))
    summary: dict[str, Any] = {
        "test_accuracy": result.test_accuracy, "train_seconds": result.train_seconds, "history": result.history,
        "metadata": run_metadata(seed=cfg.seed, config=cfg, packages=["sparse-dst"]),
    }  # fmt: skip
    masking = result.masking
    if masking is not None:
        MaskSet({n: m.cpu() for n, m in masking.masks.items()}).save(out / "masks.safetensors")
        summary["layer_density"] = masking.layer_density()
        summary["channel_density"] = {n: d.tolist() for n, d in masking.channel_density().items()}
        summary["update_overhead"] = masking.update_overhead()
        _plot_channel_density(out, cfg, masking)
        if isinstance(masking, Chase):
            summary["alive_channels"] = masking.alive_channels()
            summary["channel_widths"] = {p: int(k.sum()) for p, k in masking.keep.items()}
            summary["unremovable"] = masking.skipped
    write_json(out / "result.json", summary)


def _plot_channel_density(out: pathlib.Path, cfg: Any, masking: Any) -> None:
    from research_systems_core.results import plot_curves

    curves = {}
    for n, d in masking.channel_density().items():
        d = d.cpu()
        if d.numel() > 1 and float(d.mean()) < 1.0:
            rel = (d / d.mean().clamp_min(1e-12)).sort().values
            curves[n] = ([i / (len(rel) - 1) for i in range(len(rel))], rel.tolist())
    if curves:
        plot_curves(
            out / "channel_density.png", curves, "channel (sorted, normalised index)",
            "channel density / layer density", title=f"{cfg.method}: per-channel density", hline=1.0,
        )  # fmt: skip


@app.command()
def finalize(
    run: pathlib.Path = typer.Option(
        ..., "--run", help="Run directory written by `sparse-dst train --method chase`."
    ),
    data_dir: str | None = typer.Option(
        None, "--data-dir", help="Data directory (BatchNorm recalibration, test)."
    ),
    recalibrate: bool = typer.Option(
        True, help="Recompute BatchNorm statistics of the slim model on training data."
    ),
    export: bool = typer.Option(
        True, help="Also write TorchScript (slim.torchscript.pt) and torch.export (slim.pt2)."
    ),
    device: str = typer.Option("auto", help="auto, cpu, cuda, cuda:N or mps."),
    round_to: int = typer.Option(
        8,
        "--round-to",
        help="Keep a multiple of this many channels per group (exact: kept-back channels are masked); "
        "1 = no rounding. Odd widths run slowly on oneDNN and tensor cores.",
    ),
) -> None:
    """Slice the removed channels out of a Chase run: slim.safetensors, slim.json and exports."""
    import torch
    from safetensors.torch import save_file

    from research_systems_core.checkpoint import latest_checkpoint, load_checkpoint
    from research_systems_core.config import config_from_dict
    from research_systems_core.results import write_json
    from research_systems_core.torch_utils import resolve_device
    from sparse_dst.chase import Chase
    from sparse_dst.train import TrainConfig

    if round_to < 1:
        raise ValueError(f"--round-to must be >= 1 (1: no rounding), got {round_to}")
    dev = resolve_device(device)
    if (run / "slim.safetensors").exists():
        raise ValueError(
            f"{run} is already finalized ({run / 'slim.safetensors'} exists); finalizing twice is refused"
        )
    path = latest_checkpoint(run / "checkpoints")
    if path is None:
        raise FileNotFoundError(
            f"no checkpoint in {run / 'checkpoints'}; train with `sparse-dst train --method chase --out {run}` first"
        )
    tensors, meta = load_checkpoint(path)
    cfg = config_from_dict(TrainConfig, meta["config"])
    if cfg.method != "chase":
        raise ValueError(f"run {run} used method {cfg.method!r}; only a chase run has channels to remove")
    cfg.device = str(dev)
    model, chase, data = _restore_chase(cfg, tensors, meta, data_dir, dev)
    assert isinstance(chase, Chase)
    report = _finalize_and_report(cfg, model, chase, data, dev, recalibrate, round_to)
    slim = report.pop("_slim")
    weights = {f"model/{k}": v.detach().cpu().contiguous() for k, v in slim.state_dict().items()}
    weights |= {f"keep/{p}": k for p, k in chase.slim_keep.items()}
    save_file(weights, str(run / "slim.safetensors"))
    if export:
        from sparse_dst.export import export_slim

        example = chase.example_input.to(dev)
        report["exports"] = export_slim(slim.to(dev).eval(), example, run)
    report["checkpoint"] = str(path)
    write_json(run / "slim.json", report)
    typer.echo(json.dumps({k: v for k, v in report.items() if k != "channel_widths"}, indent=1))
    del torch


def _restore_chase(
    cfg: Any, tensors: dict, meta: dict, data_dir: str | None, device: Any
) -> tuple[Any, Any, Any]:
    import torch

    from sparse_dst.train import build_masking, build_model, load_train_data

    data = load_train_data(cfg, data_dir, augment=False)
    model = build_model(cfg, data).to(device)
    model.load_state_dict({k[6:]: v for k, v in tensors.items() if k.startswith("model/")})
    example = torch.rand(2, data.in_chans, data.image_size, data.image_size)
    if data.mean is None:
        example = example * 2 - 1
    total = int(meta["dst"]["step_count"]) or 1
    chase = build_masking(cfg, model, torch.optim.SGD(model.parameters(), lr=0.0), total, example.to(device))
    chase.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("dst/")}, meta["dst"])
    return model, chase, data


def _finalize_and_report(
    cfg: Any, model: Any, chase: Any, data: Any, device: Any, recalibrate: bool, round_to: int
) -> dict:
    from research_systems_core.vision.loaders import make_loader
    from sparse_dst.surgery import conv_linear_macs, count_parameters
    from sparse_dst.train import evaluate_loader

    val = make_loader(data.val, batch_size=256, train=False, device=device, workers=cfg.workers)
    masked_accuracy = evaluate_loader(model, val, device, cfg.precision)
    calibration = None
    if recalibrate:
        calibration = make_loader(
            data.train, batch_size=256, train=True, device=device, workers=cfg.workers, seed=0
        )
    slim = chase.finalize(calibration, max_batches=20, round_to=round_to)
    example = chase.example_input.to(device)
    return {
        "masked_accuracy": masked_accuracy, "slim_accuracy": evaluate_loader(slim, val, device, cfg.precision),
        "slim_vs_masked_relative_error": chase.equivalence_error,
        "params_before": count_parameters(model), "params_after": count_parameters(slim),
        "nonzero_params_after": count_parameters(slim, nonzero=True),
        "macs_before": conv_linear_macs(model, example), "macs_after": conv_linear_macs(slim, example),
        "round_to": round_to, "channel_widths_before_rounding": {p: int(k.sum()) for p, k in chase.keep.items()},
        "channel_widths": {p: int(k.sum()) for p, k in chase.slim_keep.items()}, "_slim": slim,
    }  # fmt: skip


@app.command()
def presets() -> None:
    """List the training presets (the reference's hyper-parameters and the paper's numbers)."""
    from sparse_dst.presets import PRESETS

    for name, preset in PRESETS.items():
        typer.echo(f"{name}: {preset['description']}")
        if "paper" in preset:
            typer.echo(f"  paper (not run here): {json.dumps(preset['paper'])}")


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
            raise ValueError(f"--seeds must be comma-separated integers, got {seeds!r}") from None
    summary = run(cfg, out, data_dir)
    typer.echo(f"{summary['verdict']}: {summary['verdict_reason']}")


if __name__ == "__main__":
    app()
