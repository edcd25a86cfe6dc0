"""Command-line interface of robust-at."""

from __future__ import annotations

import json
import logging
import pathlib

import typer

from research_systems_core.cli import create_app, fail
from robust_at import __version__

app = create_app(
    "robust-at", "Adversarial training with Weighted Optimization Trajectories (WOT).", __version__
)
log = logging.getLogger("robust_at")
WEIGHTS = ("last", "best_val", "best_test", "swa")
ATTACKS = ("pgd", "autoattack", "autoattack-quick")


@app.command("list")
def list_components() -> None:
    """List the registered models, training methods, data sets and presets."""
    from robust_at.data import DATASETS
    from robust_at.methods import METHODS
    from robust_at.models import MODELS
    from robust_at.train import PRESETS

    for kind, names in (
        ("models", MODELS.names()),
        ("methods", METHODS.names()),
        ("datasets", DATASETS.names()),
        ("presets", sorted(PRESETS)),
    ):
        typer.echo(f"{kind}: {', '.join(names)}")


@app.command()
def train(
    out: pathlib.Path = typer.Option(
        ..., "--out", help="Run directory (checkpoints, history.jsonl, weights, plots)."
    ),
    preset: str = typer.Option("digits-pilot", "--preset", help="Base settings: see `robust-at list`."),
    config: pathlib.Path | None = typer.Option(
        None, "--config", help="YAML/TOML file with TrainConfig keys (replaces --preset)."
    ),
    method: str | None = typer.Option(None, "--method", help="at-pgd, trades or awp."),
    wot: bool | None = typer.Option(None, "--wot/--no-wot", help="Wrap the method with WOT."),
    swa: bool | None = typer.Option(
        None, "--swa/--no-swa", help="Keep an SWA average from the first LR decay."
    ),
    epochs: int | None = typer.Option(None, "--epochs", help="Number of epochs."),
    seed: int | None = typer.Option(None, "--seed", help="Random seed."),
    device: str | None = typer.Option(None, "--device", help="auto, cpu or cuda."),
    data_dir: pathlib.Path | None = typer.Option(
        None,
        "--data-dir",
        help="Data directory (default: $RESEARCH_DATA_DIR or ~/.cache/research-systems-core/data).",
    ),
    download: bool = typer.Option(False, "--download", help="Let torchvision download CIFAR/SVHN."),
    overrides: list[str] = typer.Option(
        [], "--set", help="Override any config key: --set wot.gap=400 --set lr=0.1."
    ),
    resume: bool = typer.Option(
        True, "--resume/--no-resume", help="Continue from the latest checkpoint in --out."
    ),
) -> None:
    """Adversarially train a model (optionally with WOT), checkpointing every epoch.

    Example: robust-at train --preset digits-pilot --method at-pgd --wot --out runs/wot
    """
    from research_systems_core.config import load_config, parse_overrides
    from research_systems_core.torch_utils import set_torch_threads
    from robust_at.train import TrainConfig, build_config
    from robust_at.train import train as run_training

    set_torch_threads(1)
    explicit = {"method": method, "swa": swa, "epochs": epochs, "seed": seed, "device": device}
    extra = [f"{k}={json.dumps(v)}" for k, v in explicit.items() if v is not None]
    if wot is not None:
        extra.append(f"wot.enabled={json.dumps(wot)}")
    if download:
        extra.append("download=true")
    try:
        if config is not None:
            cfg = load_config(TrainConfig, config, [*extra, *overrides])
        else:
            cfg = build_config(preset, _merge(parse_overrides(extra), parse_overrides(overrides)))
        result = run_training(cfg, out, data_dir=data_dir, resume=resume)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        fail(exc)
    typer.echo(
        json.dumps({k: result.get(k) for k in ("last", "best_test", "early_stopping", "swa")}, indent=1)
    )


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


@app.command("eval")
def evaluate(
    run: pathlib.Path = typer.Argument(..., help="A run directory written by `robust-at train`."),
    weights: str = typer.Option("last", "--weights", help=f"Which weights: {', '.join(WEIGHTS)}."),
    attack: str = typer.Option(
        "pgd",
        "--attack",
        help="pgd, autoattack (standard: APGD-CE, APGD-T, FAB-T, Square) or autoattack-quick.",
    ),
    steps: int = typer.Option(20, "--steps", help="PGD steps."),
    restarts: int = typer.Option(1, "--restarts", help="PGD restarts."),
    n: int | None = typer.Option(None, "--n", help="Evaluate the first N test images (default: all)."),
    data_dir: pathlib.Path | None = typer.Option(None, "--data-dir", help="Data directory."),
    seed: int = typer.Option(0, "--seed", help="Attack seed."),
    out: pathlib.Path | None = typer.Option(None, "--out", help="Write the result JSON here too."),
) -> None:
    """Evaluate a trained run: clean accuracy and robust accuracy under PGD or AutoAttack."""
    import torch

    from research_systems_core.config import config_from_dict
    from research_systems_core.results import read_json, write_json
    from research_systems_core.torch_utils import set_torch_threads
    from research_systems_core.validation import check_choice
    from robust_at.data import load_dataset
    from robust_at.evaluate import autoattack_accuracy, clean_accuracy, pgd_accuracy
    from robust_at.train import TrainConfig, build_model, load_weights

    set_torch_threads(1)
    try:
        check_choice("weights", weights, WEIGHTS)
        check_choice("attack", attack, ATTACKS)
        saved = read_json(run / "config.json") if (run / "config.json").is_file() else None
        if saved is None:
            raise FileNotFoundError(f"{run} has no config.json; is it a run directory of `robust-at train`?")
        cfg = config_from_dict(TrainConfig, saved["config"])
        data = load_dataset(
            cfg.dataset, data_dir, val_size=cfg.val_size, train_size=cfg.train_size,
            test_size=cfg.test_size, label_noise=cfg.label_noise, seed=cfg.seed, download=cfg.download,
        )  # fmt: skip
        model = build_model(cfg, data)
        model.load_state_dict(load_weights(run / f"model_{weights}.safetensors"))
        model.eval()
        x, y = (data.x_test[:n], data.y_test[:n]) if n else (data.x_test, data.y_test)
        torch.manual_seed(seed)
        result = {"run": str(run), "weights": weights, "attack": attack, "n": len(y)}
        result["clean_acc"] = clean_accuracy(model, x, y)["acc"]
        if attack == "pgd":
            r = pgd_accuracy(
                model,
                x,
                y,
                eps=cfg.eps,
                step_size=cfg.step_size,
                steps=steps,
                restarts=restarts,
                norm=cfg.norm,
            )
            result["robust_acc"] = r["acc"]
            result["steps"], result["restarts"] = steps, restarts
        else:
            version = "standard" if attack == "autoattack" else "custom"
            result.update(
                autoattack_accuracy(model, x, y, eps=cfg.eps, norm=cfg.norm, version=version, seed=seed)
            )
    except (ValueError, FileNotFoundError, ImportError) as exc:
        fail(exc)
    if out is not None:
        write_json(out, result)
    typer.echo(json.dumps(result, indent=1))


@app.command()
def reproduce(
    out: pathlib.Path = typer.Option(
        pathlib.Path("results/reproduce/robust-at"), "--out", help="Output directory."
    ),
    data_dir: pathlib.Path | None = typer.Option(
        None, "--data-dir", help="Data directory (digits need none)."
    ),
    quick: bool = typer.Option(
        False, "--quick", help="One seed, 16 epochs, smaller evaluation (about 2 minutes on one core)."
    ),
    seeds: list[int] = typer.Option(
        [], "--seed", help="Seeds to run (repeatable); default 0 1 2 (quick: 0)."
    ),
) -> None:
    """Reproduce WOT vs AT, early stopping and SWA on digits with label noise (CPU, minutes).

    Writes per-run directories, robust_accuracy.png, train_vs_test.png and, last, summary.json.
    Reruns reuse finished runs (each run resumes from its checkpoints).
    """
    from robust_at.reproduce import reproduce as run_reproduction

    try:
        summary = run_reproduction(out, str(data_dir) if data_dir else None, quick=quick, seeds=seeds or None)
    except (ValueError, FileNotFoundError, RuntimeError, ImportError) as exc:
        fail(exc)
    typer.echo(f"verdict: {summary['verdict']} ({summary['verdict_reason']})")
    for row in summary["table"]:
        typer.echo(
            f"  {row['method']:<48} clean {row['clean_mean']:.3f}  PGD-20 {row['pgd_mean']:.3f}±{row['pgd_std']:.3f}"
            f"  AA {row['autoattack_mean']:.3f}"
        )


if __name__ == "__main__":
    app()
