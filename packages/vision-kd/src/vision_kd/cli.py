"""Command-line interface of vision-kd.

Every option is validated before a model or a data set is loaded; bad input prints one line
(``error: ...``) and exits 2 through the shared CLI error boundary.
"""

from __future__ import annotations

import json
import logging
import pathlib
from typing import Any

import typer

from research_systems_core.cli import create_app
from vision_kd import __version__
from vision_kd.data import DATASET_HELP

app = create_app(
    "vision-kd",
    "Large-kernel ConvNets as knowledge-distillation teachers for small-kernel ConvNets.",
    __version__,
    default_threads=1,
)

log = logging.getLogger("vision_kd")

# ---------------------------------------------------------------------------------- shared options
DATASET = typer.Option("mnist-cue", "--dataset", help=DATASET_HELP)
DATA_DIR = typer.Option(None, "--data-dir", help="Data directory (default $RESEARCH_DATA_DIR).")
IMAGE_SIZE = typer.Option(
    None, "--image-size", help="Image size (default: 224 for imagenet/folder, native else)."
)
AUGMENT = typer.Option(True, "--augment/--no-augment", help="Training augmentation (crop/flip recipes).")
N_TRAIN = typer.Option(None, "--n-train", help="Training examples (generated tasks: canvases built).")
N_TEST = typer.Option(None, "--n-test", help="Test examples.")
DOWNLOAD = typer.Option(
    False, "--download", help="Let torchvision download CIFAR/MNIST/SVHN (needs internet)."
)
EPOCHS = typer.Option(10, "--epochs", help="Training epochs.")
BATCH = typer.Option(64, "--batch-size", help="Mini-batch size (per process under torchrun).")
WD = typer.Option(0.05, "--weight-decay", help="AdamW weight decay.")
EMA = typer.Option(0.0, "--ema-decay", help="EMA decay of the weights (0 = off).")
MIXUP = typer.Option(0.0, "--mixup", help="Mixup alpha (0 = off; the paper's recipe: 0.8).")
CUTMIX = typer.Option(0.0, "--cutmix", help="CutMix alpha (0 = off; the paper's recipe: 1.0).")
SMOOTHING = typer.Option(0.0, "--smoothing", help="Label smoothing (the paper's recipe: 0.1).")
SEED = typer.Option(0, "--seed", help="Random seed.")
DEVICE = typer.Option("auto", "--device", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N or mps.")
PRECISION = typer.Option("auto", "--precision", help="auto (bf16 on CUDA, fp32 else), fp32, bf16 or fp16.")
WORKERS = typer.Option(0, "--workers", help="DataLoader worker processes.")
OUT = typer.Option(
    ..., "--out", help="Output directory (weights, checkpoints, result.json); resumes from it."
)


def _parse_value(text: str) -> Any:
    if "," in text:
        return tuple(_parse_value(part) for part in text.split(",") if part)
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _model_kwargs(pairs: list[str], option: str) -> dict[str, Any]:
    """``["kernel_sizes=17,9,5,3", "patch_size=4"]`` -> ``{"kernel_sizes": (17, 9, 5, 3), "patch_size": 4}``."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"{option} {pair!r} must look like key=value (e.g. kernel_sizes=17,9,5,3)")
        out[key.strip()] = _parse_value(value.strip())
    return out


def _train_config(
    image_size: int | None = None, n_train: int | None = None, n_test: int | None = None, **kwargs: Any
):
    """Validate the training options and the data-size options before anything is loaded."""
    from research_systems_core.validation import check_int
    from vision_kd.train import TrainConfig

    if image_size is not None:
        check_int("image_size", image_size, minimum=8, maximum=4096)
    for name, value in (("n_train", n_train), ("n_test", n_test)):
        if value is not None:
            check_int(name, value, minimum=1)
    return TrainConfig(**kwargs).validate()


def _load(dataset, data_dir, image_size, augment, n_train, n_test, download, seed):
    from vision_kd.data import load_data

    return load_data(dataset, data_dir, image_size=image_size, augment=augment, download=download,
                     n_train=n_train, n_test=n_test, seed=seed)  # fmt: skip


def _write_result(out: pathlib.Path, record: dict[str, Any], cfg: Any) -> None:
    from research_systems_core.metadata import run_metadata
    from research_systems_core.results import write_json

    meta = run_metadata(seed=cfg.seed, config=cfg, packages=("vision-kd", "timm"))
    write_json(out / "result.json", {**record, "metadata": meta})


# ---------------------------------------------------------------------------------- train-teacher
@app.command("train-teacher")
def train_teacher(
    model: str = typer.Option(..., "--model", help="Model name: slak_tiny, kd_vit_micro, timm:resnet50, ..."),
    model_arg: list[str] = typer.Option([], "--model-arg", help="Model keyword key=value (repeatable)."),
    pretrained: bool = typer.Option(False, "--pretrained", help="Start from timm/torchvision pretrained weights."),
    sparsity: float = typer.Option(0.0, "--sparsity", help="SLaK dynamic sparsity over 2-D/4-D weights (SLaK: 0.4)."),
    sparse_init: str = typer.Option("snip", "--sparse-init", help="Layer densities: snip, erk or uniform."),
    prune_rate: float = typer.Option(0.5, "--prune-rate", help="Initial prune-and-regrow fraction (cosine decay)."),
    update_frequency: int = typer.Option(2000, "--update-frequency", help="Steps between mask updates (-u)."),
    only_large_kernels: bool = typer.Option(False, "--only-large-kernels", help="Sparsify only large kernels."),
    dataset: str = DATASET, data_dir: str | None = DATA_DIR, image_size: int | None = IMAGE_SIZE,
    augment: bool = AUGMENT, n_train: int | None = N_TRAIN, n_test: int | None = N_TEST, download: bool = DOWNLOAD,
    epochs: int = EPOCHS, batch_size: int = BATCH,
    lr: float = typer.Option(2e-3, "--lr", help="Peak AdamW learning rate (warm-up then cosine)."),
    weight_decay: float = WD, ema_decay: float = EMA, mixup: float = MIXUP, cutmix: float = CUTMIX,
    smoothing: float = SMOOTHING, seed: int = SEED, device: str = DEVICE, precision: str = PRECISION,
    workers: int = WORKERS, out: pathlib.Path = OUT,
) -> None:  # fmt: skip
    """Train a teacher (or any model) alone with cross-entropy; optional SLaK sparse training."""
    from vision_kd.losses import create_loss
    from vision_kd.sparse import SparseConfig
    from vision_kd.train import train
    from vision_kd.weights import resolve_model, save_model

    cfg = _train_config(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, ema_decay=ema_decay,
                        seed=seed, device=device, precision=precision, workers=workers, mixup=mixup, cutmix=cutmix,
                        label_smoothing=smoothing, image_size=image_size, n_train=n_train, n_test=n_test)  # fmt: skip
    sparse = None
    if sparsity != 0.0:
        sparse = SparseConfig(sparsity=sparsity, init=sparse_init, prune_rate=prune_rate, seed=seed,
                              update_frequency=update_frequency, only_large_kernels=only_large_kernels).validate()  # fmt: skip
    kwargs = _model_kwargs(model_arg, "--model-arg")
    loss_fn = create_loss("none", label_smoothing=0.0 if cfg.mixes else smoothing)
    data = _load(dataset, data_dir, image_size, augment, n_train, n_test, download, seed)
    from research_systems_core.precision import configure_determinism

    configure_determinism(seed)
    net, meta = resolve_model(model, num_classes=data.num_classes, in_chans=data.in_chans, pretrained=pretrained,
                              kwargs=kwargs)  # fmt: skip
    result = train(
        net, data, cfg, loss_fn, checkpoint_dir=out / "checkpoints", desc=f"train {model}", sparse=sparse
    )
    save_model(out / "weights", net, meta["model"], meta["model_kwargs"], dataset=dataset, test_acc=result["test_acc"],
               mean=list(data.mean), std=list(data.std), sparsity=result["sparsity"])  # fmt: skip
    _write_result(out, {"model": model, "model_kwargs": meta["model_kwargs"], "dataset": dataset,
                        "test_acc": result["test_acc"], "sparsity": result["sparsity"], "device": result["device"],
                        "precision": result["precision"], "history": result["history"]}, cfg)  # fmt: skip
    typer.echo(f"{model}: test accuracy {result['test_acc']:.4f}; weights in {out / 'weights'}")


# ---------------------------------------------------------------------------------- distill
def _loss_options(
    loss, temperature, alpha, gamma, nkd_no_ce, fd_weight, alpha_mgd, smoothing
) -> dict[str, Any]:
    from research_systems_core.validation import check_choice, check_range
    from vision_kd.losses import _finite

    check_choice("loss", loss, ("kd", "nkd", "fd", "mgd", "none"))
    # every given value is checked, also those the chosen loss does not use
    for name, value, strict in (("temperature", temperature, True), ("gamma", gamma, False),
                                ("fd_weight", fd_weight, False), ("alpha_mgd", alpha_mgd, False)):  # fmt: skip
        if value is not None:
            _finite(name, value, strict)
    if alpha is not None:
        check_range("alpha", alpha, 0.0, 1.0)
    options: dict[str, Any] = {"label_smoothing": smoothing}
    if loss in ("kd", "nkd") and temperature is not None:
        options["temperature"] = temperature
    if loss == "kd" and alpha is not None:
        options["alpha"] = alpha
    if loss == "nkd":
        if gamma is not None:
            options["gamma"] = gamma
        options["include_ce"] = not nkd_no_ce
    if loss == "fd":
        options["weight"] = fd_weight
    if loss == "mgd":
        options["alpha_mgd"] = alpha_mgd
    return options


def _check_logit_loss(loss: str, options: dict[str, Any]) -> None:
    """Build the logit losses once now so their options are validated before any loading."""
    from vision_kd.losses import create_loss

    if loss in ("kd", "nkd", "none"):
        create_loss(loss, **options)
    else:
        create_loss(loss, student_channels=1, teacher_channels=1, **options)


@app.command("distill")
def distill(
    teacher: str = typer.Option(..., "--teacher", help="Teacher: vision-kd weights dir/file, SLaK .pth, or model name."),
    teacher_pretrained: bool = typer.Option(False, "--teacher-pretrained", help="Named teacher: pretrained weights."),
    student: str = typer.Option(..., "--student", help="Student model name, e.g. kd_resnet_micro, resnet50."),
    student_arg: list[str] = typer.Option([], "--student-arg", help="Student keyword key=value (repeatable)."),
    loss: str = typer.Option("kd", "--loss", help="kd, nkd, fd, mgd or none (student from scratch)."),
    temperature: float | None = typer.Option(None, "--temperature", help="Softmax temperature (kd, nkd: 1)."),
    alpha: float | None = typer.Option(None, "--alpha", help="kd: weight of the KL term (reference --alpha 0.1)."),
    gamma: float | None = typer.Option(None, "--gamma", help="nkd: non-target weight (official NKD: 1.5)."),
    nkd_no_ce: bool = typer.Option(False, "--nkd-no-ce", help="nkd: drop the CE term (SLaK engine_kd.py)."),
    fd_weight: float = typer.Option(1.0, "--fd-weight", help="fd: weight of the feature loss (--lr_fd)."),
    alpha_mgd: float = typer.Option(7e-5, "--alpha-mgd", help="mgd: weight of the generation loss."),
    student_tap: int = typer.Option(-2, "--student-tap", help="fd/mgd: student feature tap (feature_info index)."),
    teacher_tap: int = typer.Option(-1, "--teacher-tap", help="fd/mgd: teacher feature tap."),
    cache_teacher: bool | None = typer.Option(None, "--cache-teacher/--no-cache-teacher",
                                              help="Cache teacher outputs by sample (default: when exact)."),
    dataset: str = DATASET, data_dir: str | None = DATA_DIR, image_size: int | None = IMAGE_SIZE,
    augment: bool = AUGMENT, n_train: int | None = N_TRAIN, n_test: int | None = N_TEST, download: bool = DOWNLOAD,
    epochs: int = EPOCHS, batch_size: int = BATCH,
    lr: float = typer.Option(4e-3, "--lr", help="Peak AdamW learning rate."),
    weight_decay: float = WD, ema_decay: float = EMA, mixup: float = MIXUP, cutmix: float = CUTMIX,
    smoothing: float = SMOOTHING, seed: int = SEED, device: str = DEVICE, precision: str = PRECISION,
    workers: int = WORKERS, out: pathlib.Path = OUT,
) -> None:  # fmt: skip
    """Distill a frozen teacher into a student with logit (kd, nkd) or feature (fd, mgd) distillation."""
    from vision_kd.train import check_cache_exact

    cfg = _train_config(epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, ema_decay=ema_decay,
                        seed=seed, device=device, precision=precision, workers=workers, mixup=mixup, cutmix=cutmix,
                        label_smoothing=smoothing, image_size=image_size, n_train=n_train, n_test=n_test)  # fmt: skip
    options = _loss_options(loss, temperature, alpha, gamma, nkd_no_ce, fd_weight, alpha_mgd,
                            0.0 if cfg.mixes else smoothing)  # fmt: skip
    _check_logit_loss(loss, options)
    if cache_teacher:
        check_cache_exact(augment, cfg)
    use_cache = loss != "none" and (
        cache_teacher if cache_teacher is not None else not (augment or cfg.mixes)
    )
    _run_distill(teacher, teacher_pretrained, student, _model_kwargs(student_arg, "--student-arg"), loss, options,
                 student_tap, teacher_tap, use_cache, cfg, out,
                 (dataset, data_dir, image_size, augment, n_train, n_test, download, seed))  # fmt: skip


def _run_distill(teacher, teacher_pretrained, student, kwargs, loss, options, student_tap, teacher_tap, use_cache,
                 cfg, out, data_args) -> None:  # fmt: skip
    from research_systems_core.precision import configure_determinism
    from vision_kd.data import input_shape
    from vision_kd.features import feature_channels
    from vision_kd.losses import create_loss
    from vision_kd.models import num_classes_of
    from vision_kd.train import cache_teacher_outputs, evaluate, resolve_train_device, train
    from vision_kd.weights import resolve_model, save_model

    data = _load(*data_args)
    configure_determinism(cfg.seed)  # a named (randomly initialised) teacher is the same in every run
    t_model, t_meta = resolve_model(teacher, num_classes=data.num_classes, in_chans=data.in_chans,
                                    pretrained=teacher_pretrained)  # fmt: skip
    if t_meta.get("source") == "new":
        log.warning(
            "teacher %r is randomly initialised: pass --teacher-pretrained or a weights path", teacher
        )
    configure_determinism(cfg.seed)
    s_model, s_meta = resolve_model(
        student, num_classes=data.num_classes, in_chans=data.in_chans, kwargs=kwargs
    )
    if num_classes_of(t_model) != num_classes_of(s_model):
        raise ValueError(
            f"teacher has {num_classes_of(t_model)} classes but the student has {num_classes_of(s_model)}"
        )
    feature_loss = loss in ("fd", "mgd")
    if feature_loss:
        shape = input_shape(data)
        s_ch, t_ch = (
            feature_channels(s_model, shape, student_tap)[0],
            feature_channels(t_model, shape, teacher_tap)[0],
        )
        loss_fn = create_loss(loss, student_channels=s_ch, teacher_channels=t_ch, **options)
    else:
        loss_fn = create_loss(loss, **options)
    device = resolve_train_device(cfg)
    precision = cfg.resolved_precision(device)
    cache = None
    if use_cache:
        cache = cache_teacher_outputs(t_model, data, tap=teacher_tap if feature_loss else None, device=device,
                                      precision=precision)  # fmt: skip
    result = train(s_model, data, cfg, loss_fn, teacher=None if cache is not None else t_model, teacher_cache=cache,
                   student_tap=student_tap, teacher_tap=teacher_tap, checkpoint_dir=out / "checkpoints",
                   desc=f"distill {loss}")  # fmt: skip
    save_model(out / "weights", s_model, s_meta["model"], s_meta["model_kwargs"], dataset=data.name,
               test_acc=result["test_acc"], loss=loss, mean=list(data.mean), std=list(data.std))  # fmt: skip
    teacher_acc = evaluate(t_model, data, device=device, precision=precision)
    _write_result(out, {"student": student, "teacher": teacher, "teacher_model": t_meta["model"], "loss": loss,
                        "loss_options": options, "cached_teacher": cache is not None, "test_acc": result["test_acc"],
                        "test_acc_ema": result["test_acc_ema"], "teacher_test_acc": teacher_acc,
                        "device": result["device"], "precision": result["precision"],
                        "history": result["history"]}, cfg)  # fmt: skip
    typer.echo(
        f"student {student} ({loss}): test accuracy {result['test_acc']:.4f} (teacher {teacher_acc:.4f})"
    )


# ---------------------------------------------------------------------------------- convert-slak
@app.command("convert-slak")
def convert_slak(
    checkpoint: pathlib.Path = typer.Argument(..., help="Reference SLaK checkpoint (.pth from main.py, or .safetensors)."),
    out: pathlib.Path = typer.Option(None, "--out", help="Output directory (default: next to FILE, <stem>-vision-kd)."),
    key: str | None = typer.Option(None, "--key", help="State dict key inside the .pth: model (default) or model_ema."),
) -> None:  # fmt: skip
    """Convert a reference SLaK checkpoint (keys LoRA1, LoRA2, small_conv, ...) into vision-kd weights."""
    from vision_kd.convert import convert_slak_checkpoint

    if key is not None and key not in ("model", "model_ema", "state_dict", "module"):
        raise ValueError(f"--key must be model, model_ema, state_dict or module, got {key!r}")
    target = out if out is not None else checkpoint.with_name(checkpoint.stem + "-vision-kd")
    saved, conv = convert_slak_checkpoint(checkpoint, target, key)
    kw = conv["model_kwargs"]
    typer.echo(f"{conv['model']} (kernels {kw['kernel_sizes']} + {kw['small_kernel']}, dims {kw['dims']}, "
               f"{kw['num_classes']} classes) -> {saved.parent}")  # fmt: skip


# ---------------------------------------------------------------------------------- erf
@app.command("erf")
def erf(
    weights: list[str] = typer.Option(..., "--weights", help="Models (repeatable): weights dir/file, SLaK .pth, name."),
    dataset: str = DATASET, data_dir: str | None = DATA_DIR, image_size: int | None = IMAGE_SIZE,
    num_images: int = typer.Option(100, "--num-images", help="Test images averaged over."),
    scale: int = typer.Option(3, "--scale", help="Upsample the images by this factor first (bigger final maps)."),
    device: str = DEVICE,
    out: pathlib.Path = typer.Option(..., "--out", help="Output directory (erf.json, erf_heatmaps.png)."),
) -> None:  # fmt: skip
    """Effective receptive field of trained models on the chosen device: area ratios and heat maps."""
    import torch
    import torch.nn.functional as F

    from research_systems_core.results import write_json
    from research_systems_core.torch_utils import resolve_device
    from research_systems_core.validation import check_int
    from research_systems_core.vision import Normalize
    from vision_kd.erf import erf_map, erf_summary, plot_erf
    from vision_kd.weights import resolve_model

    check_int("num_images", num_images, minimum=1)
    check_int("scale", scale, minimum=1, maximum=16)
    if image_size is not None:
        check_int("image_size", image_size, minimum=8, maximum=4096)
    dev = resolve_device(device)
    data = _load(dataset, data_dir, image_size, False, None, num_images, False, 0)
    models = {
        w: resolve_model(w, num_classes=data.num_classes, in_chans=data.in_chans)[0].to(dev) for w in weights
    }
    count = min(num_images, len(data.val))  # type: ignore[arg-type]
    images = Normalize(data.mean, data.std)(torch.stack([data.val[i][0] for i in range(count)]))
    if scale > 1:
        images = F.interpolate(images, scale_factor=scale, mode="bilinear")
    maps = {name: erf_map(model, images) for name, model in models.items()}
    out.mkdir(parents=True, exist_ok=True)
    summary = {name: erf_summary(m) for name, m in maps.items()}
    plot_erf(out / "erf_heatmaps.png", {pathlib.Path(n).parent.name or n: m for n, m in maps.items()})
    write_json(out / "erf.json", {"device": str(dev), "erf": summary})
    for name, row in summary.items():
        typer.echo(f"{name}: " + ", ".join(f"{k} {v:.4f}" for k, v in row.items()))


# ---------------------------------------------------------------------------------- presets
@app.command("presets")
def presets(
    name: str | None = typer.Argument(None, help="Preset to show in full (default: list them)."),
) -> None:
    """The paper's recipes (ImageNet, GPU; not run here) with their reported numbers and exact commands."""
    from vision_kd.presets import PRESETS, get_preset

    if name is None:
        for key, p in PRESETS.items():
            typer.echo(f"{key}: {p['what']} (paper: {p['reported']})")
        return
    p = get_preset(name)
    typer.echo(f"{name}: {p['what']}\nreported: {p['reported']}\nstatus: not run here\n\n{p['command']}")


# ---------------------------------------------------------------------------------- reproduce
@app.command("reproduce")
def reproduce(
    out: pathlib.Path = typer.Option(..., "--out", help="Output directory (results.jsonl, PNGs, summary.json last)."),
    data_dir: str | None = typer.Option(None, "--data-dir", help="Data directory holding MNIST/raw."),
    quick: bool = typer.Option(False, "--quick", help="Demo scale: one seed, small data, < 3 min on one core."),
    seeds: str | None = typer.Option(None, "--seeds", help="Comma-separated student seeds (default 0,1,2)."),
    n_student: int | None = typer.Option(None, "--n-student", help="Training canvases the students see."),
) -> None:  # fmt: skip
    """Small-scale reproduction: SLaK vs ViT teachers (accuracy-matched) for a 3x3 student, plus ERFs."""
    from research_systems_core.data import resolve_data_dir
    from vision_kd.reproduce import ReproConfig, run_reproduction

    cfg = ReproConfig.quick_config() if quick else ReproConfig()
    if seeds:
        try:
            cfg.seeds = tuple(int(s) for s in seeds.split(","))
        except ValueError:
            raise ValueError(f"--seeds must be comma-separated integers, got {seeds!r}") from None
    if n_student is not None:
        cfg.n_student = n_student
    cfg.validate()
    summary = run_reproduction(out, resolve_data_dir(data_dir), cfg)
    typer.echo(f"verdict: {summary['verdict']} ({summary['verdict_reason']}); results in {out}")


if __name__ == "__main__":
    app()
