"""Command-line interface of robust-at.

Bad input (ValueError, TypeError, FileNotFoundError, CheckpointError) is turned into one
``error: ...`` line and exit code 2 by the shared CLI error boundary; options are validated
before any data set or model is loaded.
"""

from __future__ import annotations

import json
import logging
import pathlib

import typer

from research_systems_core.cli import create_app
from robust_at import __version__

app = create_app(
    "robust-at",
    "Adversarial training with Weighted Optimization Trajectories (WOT).",
    __version__,
    default_threads=1,
)
log = logging.getLogger("robust_at")
WEIGHTS = ("last", "best_val", "best_test", "swa")
ATTACKS = ("pgd", "autoattack", "autoattack-quick")


@app.command("list")
def list_components() -> None:
    """List the registered models, training methods, data sets and presets."""
    from robust_at.data import DATASETS, IMAGE_STACK
    from robust_at.methods import METHODS
    from robust_at.models import MODELS
    from robust_at.presets import PRESETS

    for kind, names in (
        ("models", [*MODELS.names(), "any timm or torchvision model name"]),
        ("methods", METHODS.names()),
        ("datasets", [*DATASETS.names(), *IMAGE_STACK, "folder:PATH"]),
        ("presets", sorted(PRESETS)),
    ):
        typer.echo(f"{kind}: {', '.join(names)}")


def _merge(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _explicit_overrides(**options) -> list[str]:
    """``key=json`` strings for the options that were given on the command line."""
    extra = []
    for key, value in options.items():
        if value is not None:
            extra.append(f"{key}={json.dumps(value)}")
    return extra


@app.command()
def train(
    out: pathlib.Path = typer.Option(
        ..., "--out", help="Run directory (checkpoints, history.jsonl, weights, plots)."
    ),
    preset: str = typer.Option("digits-pilot", "--preset", help="Base settings: see `robust-at list`."),
    config: pathlib.Path | None = typer.Option(
        None, "--config", help="YAML/TOML file with TrainConfig keys (replaces --preset)."
    ),
    dataset: str | None = typer.Option(
        None,
        "--dataset",
        help="digits, mnist, cifar10, cifar100, svhn, tiny-imagenet, imagenet or folder:PATH.",
    ),
    model: str | None = typer.Option(
        None, "--model", help="preact-resnet18, wrn-34-10, vgg16, small-cnn, or any timm/torchvision model."
    ),
    method: str | None = typer.Option(None, "--method", help="at-pgd, trades or awp."),
    wot: bool | None = typer.Option(None, "--wot/--no-wot", help="Wrap the method with WOT."),
    swa: bool | None = typer.Option(
        None, "--swa/--no-swa", help="Keep an SWA average from the first LR decay."
    ),
    epochs: int | None = typer.Option(None, "--epochs", help="Number of epochs."),
    seed: int | None = typer.Option(None, "--seed", help="Random seed."),
    device: str | None = typer.Option(
        None, "--device", help="auto (cuda, mps, cpu), cpu, cuda, cuda:N or mps."
    ),
    precision: str | None = typer.Option(
        None, "--precision", help="fp32, bf16 or fp16 autocast (training and attacks)."
    ),
    image_size: int | None = typer.Option(
        None, "--image-size", help="Resolution for the shared image stack."
    ),
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
    from robust_at.train import TrainConfig, build_config
    from robust_at.train import train as run_training

    extra = _explicit_overrides(
        dataset=dataset, model=model, method=method, swa=swa, epochs=epochs, seed=seed, device=device,
        precision=precision, image_size=image_size,
    )  # fmt: skip
    if wot is not None:
        extra.append(f"wot.enabled={json.dumps(wot)}")
    if download:
        extra.append("download=true")
    if config is not None:
        cfg = load_config(TrainConfig, config, [*extra, *overrides])
    else:
        cfg = build_config(preset, _merge(parse_overrides(extra), parse_overrides(overrides)))
    result = run_training(cfg, out, data_dir=data_dir, resume=resume)
    typer.echo(
        json.dumps({k: result.get(k) for k in ("last", "best_test", "early_stopping", "swa")}, indent=1)
    )


@app.command("eval")
def evaluate(
    run: pathlib.Path = typer.Argument(
        ...,
        help="A run directory of `robust-at train`, its checkpoints/ directory, or one .safetensors file.",
    ),
    weights: str = typer.Option("last", "--weights", help=f"For a run directory: {', '.join(WEIGHTS)}."),
    attack: str = typer.Option(
        "pgd",
        "--attack",
        help="pgd, autoattack (standard: APGD-CE, APGD-T, FAB-T, Square) or autoattack-quick.",
    ),
    steps: int = typer.Option(20, "--steps", min=1, help="PGD steps."),
    restarts: int = typer.Option(1, "--restarts", min=1, help="PGD restarts."),
    n: int | None = typer.Option(None, "--n", min=1, help="Evaluate the first N test images (default: all)."),
    preset: str | None = typer.Option(
        None, "--preset", help="Settings for a weights file without a config.json beside it."
    ),
    overrides: list[str] = typer.Option(
        [], "--set", help="Config keys for a bare weights file (dataset=, model=, eps=)."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N or mps."),
    precision: str = typer.Option("fp32", "--precision", help="fp32, bf16 or fp16 autocast for the attack."),
    batch_size: int = typer.Option(256, "--batch-size", min=1, help="Evaluation batch size."),
    data_dir: pathlib.Path | None = typer.Option(None, "--data-dir", help="Data directory."),
    seed: int = typer.Option(0, "--seed", help="Attack seed."),
    out: pathlib.Path | None = typer.Option(None, "--out", help="Write the result JSON here too."),
) -> None:
    """Evaluate trained weights: clean accuracy and robust accuracy under PGD or AutoAttack."""
    from research_systems_core.precision import check_precision
    from research_systems_core.results import write_json
    from research_systems_core.torch_utils import resolve_device
    from research_systems_core.validation import check_choice
    from robust_at.eval_run import evaluate_weights, resolve_weights

    check_choice("weights", weights, WEIGHTS)
    check_choice("attack", attack, ATTACKS)
    check_precision(precision)
    torch_device = resolve_device(device)
    cfg, path = resolve_weights(run, weights, preset, overrides)
    result = evaluate_weights(
        cfg, path, attack=attack, steps=steps, restarts=restarts, n=n, device=torch_device,
        precision=precision, batch_size=batch_size, data_dir=data_dir, seed=seed,
    )  # fmt: skip
    if out is not None:
        write_json(out, result)
    typer.echo(json.dumps(result, indent=1))


@app.command()
def reproduce(
    out: pathlib.Path = typer.Option(
        pathlib.Path("results/reproduce/robust-at"), "--out", help="Output directory."
    ),
    data_dir: pathlib.Path | None = typer.Option(None, "--data-dir", help="Data directory (MNIST)."),
    quick: bool = typer.Option(
        False, "--quick", help="One seed, short schedule (under 3 minutes on one core)."
    ),
    seeds: list[int] = typer.Option(
        [], "--seed", help="Seeds to run (repeatable); default 0 1 2 (quick: 0)."
    ),
) -> None:
    """Reproduce WOT vs AT, early stopping and SWA where plain AT overfits (CPU, minutes).

    Writes per-run directories, robust_accuracy.png, train_vs_test.png and, last, summary.json.
    Reruns reuse finished runs (each run resumes from its checkpoints).
    """
    from robust_at.reproduce import reproduce as run_reproduction

    summary = run_reproduction(out, str(data_dir) if data_dir else None, quick=quick, seeds=seeds or None)
    typer.echo(f"verdict: {summary['verdict']} ({summary['verdict_reason']})")
    for row in summary["table"]:
        aa = row["autoattack_mean"]
        typer.echo(
            f"  {row['method']:<48} clean {row['clean_mean']:.3f}  PGD-20 {row['pgd_mean']:.3f}±{row['pgd_std']:.3f}"
            f"  AA {'not run' if aa is None else f'{aa:.3f}'}"
        )


@app.command("wot-diagnose")
def wot_diagnose(
    run: pathlib.Path = typer.Argument(
        ..., help="A WOT run directory (its latest checkpoint holds a trajectory)."
    ),
    data_dir: pathlib.Path | None = typer.Option(None, "--data-dir", help="Data directory."),
    points: int = typer.Option(6, "--points", min=2, help="Points on the line W = t * 1, t in [0, 1]."),
    out: pathlib.Path | None = typer.Option(None, "--out", help="Write the diagnosis JSON here too."),
) -> None:
    """Learn WOT weights on a saved trajectory with this package's and the reference's update
    rule and scan the validation robust loss along W = t (explains near-zero weights)."""
    from research_systems_core.results import write_json
    from robust_at.diagnose import diagnose_run

    result = diagnose_run(run, data_dir=data_dir, points=points)
    if out is not None:
        write_json(out, result)
    typer.echo(json.dumps(result, indent=1))


if __name__ == "__main__":
    app()
