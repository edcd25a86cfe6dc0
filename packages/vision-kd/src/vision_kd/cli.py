"""Command-line interface of vision-kd."""

from __future__ import annotations

import json
import logging
import pathlib
from typing import Any

import typer

from research_systems_core.cli import create_app
from vision_kd import __version__

app = create_app(
    "vision-kd",
    "Large-kernel ConvNets as knowledge-distillation teachers for small-kernel ConvNets.",
    __version__,
    default_threads=1,
)

log = logging.getLogger("vision_kd")

DATASET_HELP = (
    "mnist-cue (global-context task), mnist, digits, cifar10, cifar100 or folder (ImageFolder root)."
)


def _parse_value(text: str) -> Any:
    if "," in text:
        return tuple(_parse_value(part) for part in text.split(",") if part)
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _model_kwargs(pairs: list[str]) -> dict[str, Any]:
    """``["kernel_sizes=17,9,5,3", "patch_size=4"]`` -> ``{"kernel_sizes": (17, 9, 5, 3), "patch_size": 4}``."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise typer.BadParameter(
                f"model argument {pair!r} must look like key=value (e.g. kernel_sizes=17,9,5,3)"
            )
        key, value = pair.split("=", 1)
        out[key.strip()] = _parse_value(value.strip())
    return out


def _data(dataset: str, data_dir: str | None, n_train: int | None, n_test: int | None, download: bool):
    from research_systems_core.data import resolve_data_dir
    from vision_kd.data import load_dataset

    root = resolve_data_dir(data_dir)
    return (
        load_dataset(dataset, root, train=True, n=n_train, download=download),
        load_dataset(dataset, root, train=False, n=n_test, download=download),
    )


def _fail(err: Exception) -> None:
    typer.secho(f"error: {err}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2) from err


@app.command("train-teacher")
def train_teacher(
    model: str = typer.Option(
        ..., "--model", help="timm model name, e.g. slak_pico, kd_vit_micro, convnext_atto."
    ),
    model_arg: list[str] = typer.Option([], "--model-arg", help="Model keyword key=value (repeatable)."),
    dataset: str = typer.Option("mnist-cue", "--dataset", help=DATASET_HELP),
    data_dir: str | None = typer.Option(
        None, "--data-dir", help="Data directory (default $RESEARCH_DATA_DIR)."
    ),
    n_train: int | None = typer.Option(None, "--n-train", help="Number of training examples (default: all)."),
    n_test: int | None = typer.Option(None, "--n-test", help="Number of test examples (default: all)."),
    epochs: int = typer.Option(10, "--epochs", help="Training epochs."),
    batch_size: int = typer.Option(64, "--batch-size", help="Mini-batch size."),
    lr: float = typer.Option(2e-3, "--lr", help="Peak AdamW learning rate (warm-up then cosine)."),
    ema_decay: float = typer.Option(0.0, "--ema-decay", help="EMA decay of the weights (0 = off)."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    download: bool = typer.Option(
        False, "--download", help="Let torchvision download CIFAR (needs internet)."
    ),
    out: pathlib.Path = typer.Option(
        ..., "--out", help="Output directory (weights, checkpoints, result.json)."
    ),
) -> None:
    """Train a teacher (or any model) alone with cross-entropy; resumes from OUT/checkpoints."""
    from research_systems_core.metadata import run_metadata
    from research_systems_core.results import write_json
    from research_systems_core.seeding import seed_everything
    from vision_kd.models import create_model
    from vision_kd.train import TrainConfig, train
    from vision_kd.weights import save_model

    try:
        train_data, test_data = _data(dataset, data_dir, n_train, n_test, download)
        kwargs = {
            "in_chans": train_data.in_chans,
            "num_classes": train_data.num_classes,
            **_model_kwargs(model_arg),
        }
        cfg = TrainConfig(
            epochs=epochs, batch_size=batch_size, lr=lr, ema_decay=ema_decay, seed=seed, device=device
        )
        cfg.validate()
        seed_everything(seed)
        net = create_model(model, **kwargs)
    except (ValueError, TypeError, FileNotFoundError) as err:
        _fail(err)
    result = train(net, train_data, test_data, cfg, checkpoint_dir=out / "checkpoints", desc=f"train {model}")
    save_model(out / "weights", net, model, kwargs, dataset=dataset, test_acc=result["test_acc"])
    write_json(
        out / "result.json",
        {"model": model, "model_kwargs": kwargs, "dataset": dataset, "test_acc": result["test_acc"], "history": result["history"],
         "metadata": run_metadata(seed=seed, config=cfg, packages=("vision-kd", "timm"))},
    )  # fmt: skip
    typer.echo(f"{model}: test accuracy {result['test_acc']:.4f}; weights in {out / 'weights'}")


@app.command("distill")
def distill(
    teacher: pathlib.Path = typer.Option(
        ..., "--teacher", help="Teacher weights: a train-teacher OUT/weights dir or file."
    ),
    student: str = typer.Option(..., "--student", help="timm name of the student, e.g. kd_resnet_micro."),
    student_arg: list[str] = typer.Option(
        [], "--student-arg", help="Student keyword key=value (repeatable)."
    ),
    loss: str = typer.Option("kd", "--loss", help="kd, nkd, fd, mgd or none (student from scratch)."),
    temperature: float | None = typer.Option(
        None, "--temperature", help="Softmax temperature T (kd: 3, nkd: 1)."
    ),
    alpha: float = typer.Option(
        0.9, "--alpha", help="kd: weight of the distillation term (1 - alpha on CE)."
    ),
    fd_weight: float = typer.Option(1.0, "--fd-weight", help="fd: weight of the feature loss."),
    alpha_mgd: float = typer.Option(7e-5, "--alpha-mgd", help="mgd: weight of the generation loss."),
    student_tap: int = typer.Option(
        -2, "--student-tap", help="fd/mgd: student feature tap (timm feature_info index)."
    ),
    teacher_tap: int = typer.Option(-1, "--teacher-tap", help="fd/mgd: teacher feature tap."),
    cache_teacher: bool = typer.Option(
        True, "--cache-teacher/--no-cache-teacher", help="Precompute teacher outputs once."
    ),
    dataset: str = typer.Option("mnist-cue", "--dataset", help=DATASET_HELP),
    data_dir: str | None = typer.Option(
        None, "--data-dir", help="Data directory (default $RESEARCH_DATA_DIR)."
    ),
    n_train: int | None = typer.Option(None, "--n-train", help="Number of training examples."),
    n_test: int | None = typer.Option(None, "--n-test", help="Number of test examples."),
    epochs: int = typer.Option(10, "--epochs", help="Training epochs."),
    batch_size: int = typer.Option(64, "--batch-size", help="Mini-batch size."),
    lr: float = typer.Option(4e-3, "--lr", help="Peak AdamW learning rate."),
    ema_decay: float = typer.Option(0.0, "--ema-decay", help="EMA decay of the student (0 = off)."),
    seed: int = typer.Option(0, "--seed", help="Random seed."),
    device: str = typer.Option("cpu", "--device", help="cpu or cuda."),
    out: pathlib.Path = typer.Option(..., "--out", help="Output directory."),
) -> None:
    """Distill a frozen teacher into a student with logit (kd, nkd) or feature (fd, mgd) distillation."""
    from research_systems_core.metadata import run_metadata
    from research_systems_core.results import write_json
    from research_systems_core.seeding import seed_everything
    from vision_kd.features import feature_channels
    from vision_kd.losses import create_loss
    from vision_kd.models import create_model, num_classes_of
    from vision_kd.train import TrainConfig, cache_teacher_outputs, evaluate, train
    from vision_kd.weights import load_model, save_model

    try:
        train_data, test_data = _data(dataset, data_dir, n_train, n_test, download=False)
        t_model, t_meta = load_model(teacher)
        kwargs = {
            "in_chans": train_data.in_chans,
            "num_classes": train_data.num_classes,
            **_model_kwargs(student_arg),
        }
        seed_everything(seed)
        s_model = create_model(student, **kwargs)
        if num_classes_of(t_model) != num_classes_of(s_model):
            raise ValueError(
                f"teacher has {num_classes_of(t_model)} classes but the student has {num_classes_of(s_model)}"
            )
        options: dict[str, Any] = {}
        if temperature is not None:
            options["temperature"] = temperature
        if loss == "kd":
            options["alpha"] = alpha
        shape = (train_data.in_chans, *train_data.image_size)
        if loss in ("fd", "mgd"):
            s_ch, t_ch = (
                feature_channels(s_model, shape, student_tap)[0],
                feature_channels(t_model, shape, teacher_tap)[0],
            )
            options.update({"weight": fd_weight} if loss == "fd" else {"alpha_mgd": alpha_mgd})
            loss_fn = create_loss(loss, student_channels=s_ch, teacher_channels=t_ch, **options)
        else:
            loss_fn = create_loss(loss, **options)
        cfg = TrainConfig(
            epochs=epochs, batch_size=batch_size, lr=lr, ema_decay=ema_decay, seed=seed, device=device
        )
        cfg.validate()
    except (ValueError, TypeError, FileNotFoundError) as err:
        _fail(err)
    feature_loss = loss in ("fd", "mgd")
    cache = None
    if cache_teacher and loss != "none":
        cache = cache_teacher_outputs(
            t_model, train_data, tap=teacher_tap if feature_loss else None, device=device
        )
    result = train(
        s_model, train_data, test_data, cfg, loss_fn,
        teacher=None if cache is not None else t_model, teacher_cache=cache,
        student_tap=student_tap, teacher_tap=teacher_tap, checkpoint_dir=out / "checkpoints", desc=f"distill {loss}",
    )  # fmt: skip
    save_model(
        out / "weights", s_model, student, kwargs, dataset=dataset, test_acc=result["test_acc"], loss=loss
    )
    teacher_acc = evaluate(t_model, test_data, device=device)
    write_json(
        out / "result.json",
        {"student": student, "teacher": t_meta["model"], "loss": loss, "loss_options": options,
         "test_acc": result["test_acc"], "test_acc_ema": result["test_acc_ema"], "teacher_test_acc": teacher_acc,
         "history": result["history"], "metadata": run_metadata(seed=seed, config=cfg, packages=("vision-kd", "timm"))},
    )  # fmt: skip
    typer.echo(
        f"student {student} ({loss}): test accuracy {result['test_acc']:.4f} (teacher {teacher_acc:.4f})"
    )


@app.command("erf")
def erf(
    weights: list[pathlib.Path] = typer.Option(
        ..., "--weights", help="Model weights (repeatable) from train-teacher/distill."
    ),
    dataset: str = typer.Option("mnist-cue", "--dataset", help=DATASET_HELP),
    data_dir: str | None = typer.Option(
        None, "--data-dir", help="Data directory (default $RESEARCH_DATA_DIR)."
    ),
    num_images: int = typer.Option(100, "--num-images", help="Test images averaged over."),
    scale: int = typer.Option(
        3, "--scale", help="Upsample the images by this factor first (bigger final maps)."
    ),
    out: pathlib.Path = typer.Option(..., "--out", help="Output directory (erf.json, erf_heatmaps.png)."),
) -> None:
    """Effective receptive field of trained models: area ratios at t = 0.2/0.3/0.5/0.99 and heat maps."""
    import torch.nn.functional as F

    from research_systems_core.data import resolve_data_dir
    from research_systems_core.results import write_json
    from research_systems_core.validation import check_int
    from vision_kd.data import load_dataset
    from vision_kd.erf import erf_map, erf_summary, plot_erf
    from vision_kd.weights import load_model

    try:
        check_int("num_images", num_images, minimum=1)
        check_int("scale", scale, minimum=1)
        data = load_dataset(dataset, resolve_data_dir(data_dir), train=False, n=num_images)
        models = {str(w): load_model(w)[0] for w in weights}
    except (ValueError, TypeError, FileNotFoundError) as err:
        _fail(err)
    images = (
        F.interpolate(data.images[:num_images], scale_factor=scale, mode="bilinear")
        if scale > 1
        else data.images
    )
    maps = {name: erf_map(model, images) for name, model in models.items()}
    out.mkdir(parents=True, exist_ok=True)
    summary = {name: erf_summary(m) for name, m in maps.items()}
    plot_erf(out / "erf_heatmaps.png", {pathlib.Path(n).parent.name or n: m for n, m in maps.items()})
    write_json(out / "erf.json", summary)
    for name, row in summary.items():
        typer.echo(f"{name}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items()))


@app.command("reproduce")
def reproduce(
    out: pathlib.Path = typer.Option(
        ..., "--out", help="Output directory (results.jsonl, PNGs, summary.json last)."
    ),
    data_dir: str | None = typer.Option(
        None, "--data-dir", help="Data directory holding MNIST/raw (default $RESEARCH_DATA_DIR)."
    ),
    quick: bool = typer.Option(
        False, "--quick", help="Demo scale: one seed, 3000 images, <= 2.5 min on one core."
    ),
    seeds: str | None = typer.Option(
        None, "--seeds", help="Comma-separated student seeds (default 0,1,2; quick: 0)."
    ),
    n_student: int | None = typer.Option(
        None, "--n-student", help="Training canvases the students see (default 1000; teachers see 10000)."
    ),
) -> None:
    """Small-scale reproduction: SLaK vs ViT teachers for a 3x3 ResNet student (KD and FD), plus ERFs."""
    from research_systems_core.data import resolve_data_dir
    from vision_kd.reproduce import ReproConfig, run_reproduction

    cfg = ReproConfig.quick_config() if quick else ReproConfig()
    try:
        if seeds:
            cfg.seeds = tuple(int(s) for s in seeds.split(","))
        if n_student is not None:
            cfg.n_student = n_student
        cfg.validate()
        summary = run_reproduction(out, resolve_data_dir(data_dir), cfg)
    except (ValueError, FileNotFoundError) as err:
        _fail(err)
    typer.echo(f"verdict: {summary['verdict']} ({summary['verdict_reason']}); results in {out}")
