"""Small-scale reproduction: are large-kernel ConvNets better teachers than transformers?

Protocol (real MNIST digits, the global-context "mnist-cue" task, see :mod:`vision_kd.data`):

1. Train a large-kernel ConvNet teacher (SLaK, decomposed kernels) and a transformer teacher
   (ViT) from scratch on the same data.
2. Train the same small-kernel student (ResNet, 3x3 kernels) from scratch and distilled from each
   teacher with logit KD and with feature distillation (FD), for several seeds.
3. Compare student accuracies and the ERF (area ratio of the high-contribution region) of
   teachers and students.

Writes ``results.jsonl`` (one row per run, as they finish), the PNG plots and, last,
``summary.json``.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import statistics
import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from research_systems_core.metadata import run_metadata
from research_systems_core.results import JsonlWriter, plot_curves, write_json
from research_systems_core.seeding import seed_everything
from research_systems_core.validation import check_int
from research_systems_core.vision import ImageDataset, Normalize
from vision_kd.data import input_shape, load_data
from vision_kd.erf import THRESHOLDS, erf_map, erf_summary, plot_erf
from vision_kd.features import feature_channels
from vision_kd.losses import create_loss
from vision_kd.models import create_model
from vision_kd.train import TrainConfig, cache_teacher_outputs, train
from vision_kd.weights import load_model, save_model

__all__ = ["ReproConfig", "run_reproduction"]

log = logging.getLogger(__name__)

PAPER = "Are Large Kernels Better Teachers than Transformers for ConvNets? (Huang et al., ICML 2023, arXiv 2305.19412)"
ERF_CLAIM = "Distillation from a large-kernel teacher enlarges the student's effective receptive field."
CLAIM = (
    "Large-kernel ConvNets (SLaK) are better distillation teachers for small-kernel ConvNets than Vision "
    "Transformers, with logit and feature distillation, and distillation enlarges the student's effective "
    "receptive field (reported on its own: erf_verdict)."
)


@dataclasses.dataclass
class ReproConfig:
    """What the reproduction trains (defaults: the full CPU run; :meth:`quick` for the demo)."""

    dataset: str = "mnist-cue"  # 32 x 64 canvases; "mnist-far" (32 x 96) is harder still
    n_train: int = 8000  # the teachers' training set
    n_student: int = 1000  # students see only n_student of those (labels and teacher outputs)
    n_test: int = 1000
    match_teachers: bool = True  # stronger teacher: use its epoch snapshot closest to the weaker's accuracy
    seeds: tuple[int, ...] = (0, 1, 2)
    teacher_seed: int = 0
    teacher_epochs: int = 15  # large-kernel teacher
    vit_epochs: int = 30  # the ViT learns more slowly
    student_epochs: int = 10
    batch_size: int = 64
    teacher_lr: float = 3e-3
    vit_lr: float = 2e-3
    student_lr: float = 4e-3
    lk_teacher: str = "slak_pico"
    lk_kwargs: dict[str, Any] = dataclasses.field(
        default_factory=lambda: {"patch_size": 4, "kernel_sizes": (17, 9, 5, 3), "small_kernel": 3}
    )
    vit_teacher: str = "kd_vit_micro"
    vit_kwargs: dict[str, Any] = dataclasses.field(
        default_factory=lambda: {"patch_size": 8, "dynamic_img_size": True, "img_size": (32, 64)}
    )
    student: str = "kd_resnet_micro"
    # 3x3 kernels only: timm's "deep" stem (three 3x3 convs) instead of the 7x7 one
    student_kwargs: dict[str, Any] = dataclasses.field(
        default_factory=lambda: {"stem_type": "deep", "stem_width": 8}
    )
    losses: tuple[str, ...] = ("kd", "nkd", "fd")
    kd_temperature: float = 3.0  # deviation from the reference's T=1/alpha=0.1 (named in the README): with
    kd_alpha: float = 0.9  # 1,000 labelled canvases the KL term needs the larger weight to matter
    fd_weight: float = 1.0
    student_tap: int = -2
    teacher_tap: int = -1
    erf_images: int = 200
    erf_scale: int = 3  # ERF measured on test canvases upsampled by this factor (RepLKNet resizes to 1024)
    quick: bool = False

    @classmethod
    def quick_config(cls) -> ReproConfig:
        """A <= 2.5-minute version for the project demo (one seed, less data, fewer epochs)."""
        return cls(
            n_train=2000,
            n_student=600,
            n_test=400,
            seeds=(0,),
            teacher_epochs=5,
            vit_epochs=6,
            student_epochs=4,
            losses=("kd", "fd"),
            erf_images=20,
            quick=True,
        )

    def validate(self) -> ReproConfig:
        check_int("n_train", self.n_train, minimum=64)
        check_int("n_student", self.n_student, minimum=64)
        if self.n_student > self.n_train:
            raise ValueError(f"n_student ({self.n_student}) must be <= n_train ({self.n_train})")
        check_int("n_test", self.n_test, minimum=1)
        if not self.seeds:
            raise ValueError("seeds must list at least one seed")
        for name in self.losses:
            if name not in ("kd", "nkd", "fd", "mgd"):
                raise ValueError(f"losses must be among kd, nkd, fd, mgd, got {name!r}")
        return self


def _mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _erf_images(data: ImageDataset, n: int) -> torch.Tensor:
    count = min(n, len(data.val))  # type: ignore[arg-type]
    return Normalize(data.mean, data.std)(torch.stack([data.val[i][0] for i in range(count)]))


def _student_data(data: ImageDataset, n: int) -> ImageDataset:
    """The first ``n`` training canvases (random already) with the same test split."""
    from torch.utils.data import Subset

    return dataclasses.replace(data, train=Subset(data.train, list(range(n))))


def _erf(model: torch.nn.Module, images: torch.Tensor, scale: int) -> np.ndarray:
    big = F.interpolate(images, scale_factor=scale, mode="bilinear", align_corners=False)
    return erf_map(model, big, batch_size=25)


def _plot_accuracy(path: pathlib.Path, table: list[dict[str, Any]], teachers: dict[str, float]) -> str:
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 3.8), dpi=110)
    labels = [row["run"] for row in table]
    means = [100 * row["student_acc_mean"] for row in table]
    stds = [100 * row["student_acc_std"] for row in table]
    colors = [
        "gray"
        if row["teacher"] == "none"
        else ("tab:red" if row["teacher"] == "large-kernel" else "tab:blue")
        for row in table
    ]
    ax.bar(range(len(table)), means, yerr=stds, color=colors, capsize=3)
    for name, acc in teachers.items():
        ax.axhline(
            100 * acc,
            linestyle="--",
            linewidth=1,
            color="tab:red" if name == "large-kernel" else "tab:blue",
            label=f"{name} teacher",
        )
    ax.set_xticks(range(len(table)), labels, rotation=20, fontsize=8)
    ax.set_ylabel("student test accuracy (%)")
    ax.set_ylim(max(0, min(means) - 15), 100)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path.name


def run_reproduction(
    out: str | pathlib.Path, data_dir: str | pathlib.Path, cfg: ReproConfig
) -> dict[str, Any]:
    """Run the whole protocol; write results.jsonl, PNGs and finally summary.json into ``out``."""
    cfg.validate()
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    rows = JsonlWriter(out / "results.jsonl")
    data = load_data(cfg.dataset, data_dir, n_train=cfg.n_train, n_test=cfg.n_test)
    shape = input_shape(data)
    log.info("data: %s train %d, test %d, images %s", cfg.dataset, len(data.train), len(data.val), shape)
    common = {"in_chans": data.in_chans, "num_classes": data.num_classes}

    # 1. teachers (reused from OUT/teachers when an earlier run with the same settings saved them) --
    specs = {
        "large-kernel": (cfg.lk_teacher, cfg.lk_kwargs, cfg.teacher_epochs, cfg.teacher_lr),
        "transformer": (
            cfg.vit_teacher,
            {**cfg.vit_kwargs, "img_size": shape[1:]},
            cfg.vit_epochs,
            cfg.vit_lr,
        ),
    }
    teacher_key = _teacher_key(cfg, specs)
    loaded = _load_teachers(out / "teachers", teacher_key)
    if loaded is not None:
        teachers, teacher_rows, curves = loaded
        log.info("teachers: reused from %s", out / "teachers")
    else:
        teachers, teacher_rows, curves = _train_teachers(cfg, specs, common, data)
        for kind, model in teachers.items():
            save_model(
                out / "teachers" / kind, model, specs[kind][0], {**common, **specs[kind][1]},
                key=teacher_key, row=teacher_rows[kind], curve=curves[kind],
            )  # fmt: skip
    for row in teacher_rows.values():
        rows.append(row)
    teacher_curve_png = plot_curves(
        out / "teacher_curves.png",
        {kind: curve for kind, curve in curves.items()},
        "epoch",
        "test accuracy (%)",
        title=f"teachers on {cfg.dataset} (dashed: epoch used after accuracy matching)",
        vlines={f"{kind}: epoch used": teacher_rows[kind]["epoch_used"] for kind in teachers},
    )

    # 2. students ---------------------------------------------------------------------------
    probe = create_model(cfg.student, **common, **cfg.student_kwargs)
    s_channels = feature_channels(probe, shape, cfg.student_tap)[0]
    student_data = _student_data(data, cfg.n_student)
    caches = {
        kind: cache_teacher_outputs(
            model, student_data, tap=cfg.teacher_tap if {"fd", "mgd"} & set(cfg.losses) else None
        )
        for kind, model in teachers.items()
    }
    runs: list[tuple[str, str]] = [("none", "none")] + [
        (kind, loss) for kind in teachers for loss in cfg.losses
    ]
    accs: dict[tuple[str, str], list[float]] = {run: [] for run in runs}
    erfs: dict[str, np.ndarray] = {}
    erf_images = _erf_images(data, cfg.erf_images)
    for seed in cfg.seeds:
        for kind, loss_name in runs:
            seed_everything(seed)
            student = create_model(cfg.student, **common, **cfg.student_kwargs)
            if loss_name == "none":
                loss_fn = create_loss("none")
            elif loss_name in ("fd", "mgd"):
                t_channels = caches[kind].features.shape[1]
                extra = {"weight": cfg.fd_weight} if loss_name == "fd" else {}
                loss_fn = create_loss(
                    loss_name, student_channels=s_channels, teacher_channels=t_channels, **extra
                )
            elif loss_name == "kd":
                loss_fn = create_loss("kd", temperature=cfg.kd_temperature, alpha=cfg.kd_alpha)
            else:
                loss_fn = create_loss(loss_name)
            scfg = TrainConfig(
                epochs=cfg.student_epochs, batch_size=cfg.batch_size, lr=cfg.student_lr, seed=seed
            )
            result = train(
                student,
                student_data,
                scfg,
                loss_fn,
                teacher_cache=None if kind == "none" else caches[kind],
                student_tap=cfg.student_tap,
                desc=f"student {kind}/{loss_name} seed {seed}",
            )
            accs[(kind, loss_name)].append(result["test_acc"])
            label = "scratch" if kind == "none" else f"{kind} {loss_name}"
            row = {
                "kind": "student",
                "teacher": kind,
                "loss": loss_name,
                "seed": seed,
                "test_acc": result["test_acc"],
            }
            if seed == cfg.seeds[0]:
                erfs[f"student {label}"] = _erf(student, erf_images, cfg.erf_scale)
                row["erf"] = erf_summary(erfs[f"student {label}"])
            rows.append(row)
            log.info("student %s seed %d: test accuracy %.4f", label, seed, result["test_acc"])

    # 3. ERF of the teachers, table, plots, verdict -----------------------------------------
    for kind, model in teachers.items():
        erfs[f"teacher {kind}"] = _erf(model, erf_images, cfg.erf_scale)
    table: list[dict[str, Any]] = []
    for kind, loss_name in runs:
        mean, std = _mean_std(accs[(kind, loss_name)])
        label = "scratch" if kind == "none" else f"{kind} {loss_name}"
        erf = erf_summary(erfs[f"student {label}"])
        table.append(
            {
                "run": label,
                "teacher": kind,
                "loss": loss_name,
                "teacher_acc": None if kind == "none" else teacher_rows[kind]["test_acc"],
                "student_acc_mean": mean,
                "student_acc_std": std,
                "student_accs": accs[(kind, loss_name)],
                **{f"erf_{k}": v for k, v in erf.items()},
            }
        )
    for kind in teachers:
        erf = erf_summary(erfs[f"teacher {kind}"])
        table.append(
            {
                "run": f"teacher {kind}",
                "teacher": kind,
                "loss": "-",
                "teacher_acc": teacher_rows[kind]["test_acc"],
                "student_acc_mean": None,
                "student_acc_std": None,
                "student_accs": [],
                **{f"erf_{k}": v for k, v in erf.items()},
            }
        )
    student_table = [r for r in table if r["student_acc_mean"] is not None]
    pngs = [
        pathlib.Path(teacher_curve_png).name,
        _plot_accuracy(
            out / "student_accuracy.png", student_table, {k: r["test_acc"] for k, r in teacher_rows.items()}
        ),
        pathlib.Path(
            plot_erf(
                out / "erf_heatmaps.png", erfs, title=f"ERF (normalised) on {cfg.dataset} x{cfg.erf_scale}"
            )
        ).name,
    ]
    erf_curves = {r["run"]: (list(THRESHOLDS), [r[f"erf_area@{t:g}"] for t in THRESHOLDS]) for r in table}
    pngs.append(
        pathlib.Path(
            plot_curves(
                out / "erf_area_ratio.png",
                erf_curves,
                "threshold t",
                "area ratio",
                title="high-contribution area ratio",
            )
        ).name
    )
    verdict, reason = _verdict(cfg, accs, teacher_rows)
    erf_verdict, erf_reason = _erf_verdict(table)
    summary = {
        "paper": PAPER,
        "claim": CLAIM,
        "verdict": verdict,
        "verdict_reason": reason,
        "erf_claim": ERF_CLAIM,
        "erf_verdict": erf_verdict,
        "erf_verdict_reason": erf_reason,
        "quick": cfg.quick,
        "table": table,
        "teachers": teacher_rows,
        "seeds": list(cfg.seeds),
        "pngs": pngs,
        "seconds": time.perf_counter() - started,
        "config": dataclasses.asdict(cfg),
        "metadata": run_metadata(
            seed=cfg.seeds[0], config=dataclasses.asdict(cfg), packages=("vision-kd", "timm")
        ),
    }
    write_json(out / "summary.json", summary)  # last: the demo treats summary.json as "done"
    log.info("verdict: %s (%s)", verdict, reason)
    return summary


def _erf_verdict(table: list[dict[str, Any]]) -> tuple[str, str]:
    """ERF transfer, on its own: is the LK-taught students' high-contribution area (t = 0.5, seed 0)
    larger than both the scratch student's and the ViT-taught student's (same loss)?"""
    area = {r["run"]: r["erf_area@0.5"] for r in table}
    scratch = area["scratch"]
    parts, wins, total = [], 0, 0
    for run, value in area.items():
        if not run.startswith("large-kernel "):
            continue
        loss = run.removeprefix("large-kernel ")
        vit = area.get(f"transformer {loss}")
        total += 1
        won = value > scratch and (vit is None or value > vit)
        wins += won
        parts.append(f"{loss}: LK-taught {value:.3f} vs scratch {scratch:.3f}, ViT-taught {vit:.3f}")
    reason = (
        "; ".join(parts)
        + f"; teachers LK {area['teacher large-kernel']:.3f}, ViT {area['teacher transformer']:.3f}"
    )
    if total and wins == total:
        return "reproduced", reason
    return ("partly" if wins else "not reproduced at this scale"), reason


def _teacher_key(cfg: ReproConfig, specs: dict[str, Any]) -> str:
    """Everything the teachers depend on, to decide whether saved teachers can be reused."""
    import json

    parts = {"specs": specs, "dataset": cfg.dataset, "n_train": cfg.n_train, "n_test": cfg.n_test,
             "seed": cfg.teacher_seed, "batch": cfg.batch_size, "match": cfg.match_teachers}  # fmt: skip
    return json.dumps(parts, sort_keys=True, default=str)


def _load_teachers(directory: pathlib.Path, key: str) -> tuple[dict, dict, dict] | None:
    teachers, rows, curves = {}, {}, {}
    for kind in ("large-kernel", "transformer"):
        if not (directory / kind).is_dir():
            return None
        try:
            model, meta = load_model(directory / kind)
        except (FileNotFoundError, ValueError) as err:
            log.warning("cannot reuse teacher %s: %s", kind, err)
            return None
        if meta.get("key") != key:
            log.info("saved teacher %s was trained with other settings; retraining", kind)
            return None
        teachers[kind], rows[kind], curves[kind] = model, meta["row"], tuple(meta["curve"])
    return teachers, rows, curves


def _train_teachers(
    cfg: ReproConfig, specs: dict[str, Any], common: dict[str, int], data: ImageDataset
) -> tuple[dict, dict, dict]:
    teachers: dict[str, torch.nn.Module] = {}
    snapshots: dict[str, list[tuple[float, dict[str, torch.Tensor]]]] = {}
    rows: dict[str, dict[str, Any]] = {}
    curves: dict[str, Any] = {}
    for kind, (name, kwargs, epochs, lr) in specs.items():
        seed_everything(cfg.teacher_seed)
        model = create_model(name, **common, **kwargs)
        tcfg = TrainConfig(epochs=epochs, batch_size=cfg.batch_size, lr=lr, seed=cfg.teacher_seed)
        snaps: list[tuple[float, dict[str, torch.Tensor]]] = []

        def snapshot(row: dict[str, Any], model: torch.nn.Module = model, snaps: list = snaps) -> None:
            snaps.append((row["test_acc"], {k: v.detach().clone() for k, v in model.state_dict().items()}))

        result = train(model, data, tcfg, desc=f"teacher {kind}", on_epoch=snapshot)
        snapshots[kind] = snaps
        teachers[kind] = model
        curves[kind] = (
            [r["epoch"] for r in result["history"]],
            [100 * r["test_acc"] for r in result["history"]],
        )
        rows[kind] = {
            "kind": "teacher",
            "teacher": kind,
            "model": name,
            "test_acc": result["test_acc"],
            "final_test_acc": result["test_acc"],
            "epoch_used": epochs,
            "params": sum(p.numel() for p in model.parameters()),
            "train_seconds": sum(result["epoch_seconds"]),
        }
        log.info("teacher %s (%s): test accuracy %.4f", kind, name, result["test_acc"])
    if cfg.match_teachers:
        _match_teachers(teachers, snapshots, rows)
    return teachers, rows, curves


def _match_teachers(
    teachers: dict[str, torch.nn.Module],
    snapshots: dict[str, list[tuple[float, dict[str, torch.Tensor]]]],
    rows: dict[str, dict[str, Any]],
) -> None:
    """Load into the stronger teacher its epoch snapshot whose test accuracy is closest to the weaker's."""
    weaker = min(rows, key=lambda k: rows[k]["test_acc"])
    target = rows[weaker]["test_acc"]
    for kind, model in teachers.items():
        rows[kind]["final_test_acc"] = rows[kind]["test_acc"]
        rows[kind]["epoch_used"] = len(snapshots[kind])
        if kind == weaker:
            continue
        best = min(range(len(snapshots[kind])), key=lambda i: (abs(snapshots[kind][i][0] - target), -i))
        model.load_state_dict(snapshots[kind][best][1])
        model.eval()
        rows[kind]["test_acc"] = snapshots[kind][best][0]
        rows[kind]["epoch_used"] = best + 1
        log.info(
            "teacher %s: epoch %d snapshot (test accuracy %.4f) matches %s (%.4f)",
            kind, best + 1, rows[kind]["test_acc"], weaker, target,
        )  # fmt: skip


def _verdict(
    cfg: ReproConfig, accs: dict[tuple[str, str], list[float]], teachers: dict[str, dict[str, Any]]
) -> tuple[str, str]:
    """LK-taught vs ViT-taught student, per loss: a win needs a mean gap larger than the seed noise."""
    wins, parts = 0, []
    for loss_name in cfg.losses:
        lk, vit = accs[("large-kernel", loss_name)], accs[("transformer", loss_name)]
        (m_lk, s_lk), (m_vit, s_vit) = _mean_std(lk), _mean_std(vit)
        noise = max(s_lk, s_vit, 0.005)
        if m_lk - m_vit > noise:
            wins += 1
            parts.append(f"{loss_name}: LK-taught {100 * m_lk:.1f}% > ViT-taught {100 * m_vit:.1f}%")
        elif m_vit - m_lk > noise:
            parts.append(f"{loss_name}: ViT-taught {100 * m_vit:.1f}% > LK-taught {100 * m_lk:.1f}%")
        else:
            parts.append(
                f"{loss_name}: LK-taught {100 * m_lk:.1f}% ~ ViT-taught {100 * m_vit:.1f}% (within seed noise)"
            )
    scratch = _mean_std(accs[("none", "none")])[0]
    t_lk, t_vit = teachers["large-kernel"]["test_acc"], teachers["transformer"]["test_acc"]
    reason = (
        "; ".join(parts)
        + f"; scratch student {100 * scratch:.1f}%; teachers LK {100 * t_lk:.1f}% vs ViT {100 * t_vit:.1f}%"
        + f"; {len(cfg.seeds)} seed(s)"
        + ("; quick run (demo scale), not a conclusion" if cfg.quick else "")
    )
    if wins == len(cfg.losses):
        return "reproduced", reason
    if wins > 0:
        return "partly", reason
    return "not reproduced at this scale", reason
