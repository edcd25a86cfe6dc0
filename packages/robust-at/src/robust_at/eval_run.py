"""Evaluating saved weights: a run directory, its ``checkpoints/`` directory or one weights file.

Every failure a user can cause (a missing, empty, truncated or corrupt file, weights of another
model, a weights file without settings) raises FileNotFoundError, ValueError or CheckpointError
with one line naming the file, which the CLI prints as ``error: ...`` with exit code 2.
"""

from __future__ import annotations

import pathlib
import re

import torch

from research_systems_core.checkpoint import CheckpointError, latest_checkpoint, load_checkpoint
from research_systems_core.config import config_from_dict, parse_overrides
from research_systems_core.results import read_json
from robust_at.evaluate import autoattack_accuracy, clean_accuracy, pgd_accuracy
from robust_at.train import (
    TrainConfig,
    _unprefixed,
    build_config,
    build_model,
    load_state_into,
    load_training_data,
    load_weights,
)

__all__ = ["evaluate_weights", "load_model_weights", "resolve_weights"]

_CHECKPOINT = re.compile(r"ckpt-\d+\.(safetensors|json)$")


def _run_config(directory: pathlib.Path) -> TrainConfig | None:
    path = directory / "config.json"
    if not path.is_file():
        return None
    try:
        return config_from_dict(TrainConfig, read_json(path)["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path} is not a robust-at run config: {exc}") from None


def _config_for_file(path: pathlib.Path, preset: str | None, overrides: list[str]) -> TrainConfig:
    if preset is not None or overrides:
        return build_config(preset, parse_overrides(overrides))
    for directory in (path.parent, path.parent.parent):
        cfg = _run_config(directory)
        if cfg is not None:
            return cfg
    raise ValueError(
        f"no config.json beside {path} or in its parent; give the settings with --preset NAME and/or "
        "--set dataset=... --set model=... --set eps=..."
    )


def resolve_weights(
    run: pathlib.Path, weights: str = "last", preset: str | None = None, overrides: list[str] | None = None
) -> tuple[TrainConfig, pathlib.Path]:
    """(settings, weights or checkpoint file) for a run directory, a ``checkpoints/`` directory
    (its latest verified checkpoint) or a single ``.safetensors`` file."""
    run, overrides = pathlib.Path(run), list(overrides or [])
    if not run.exists():
        raise FileNotFoundError(f"{run} does not exist (expected a run directory or a .safetensors file)")
    if run.is_file():
        if run.suffix != ".safetensors" and not _CHECKPOINT.search(run.name):
            raise ValueError(f"{run} is not a .safetensors weights file or a checkpoint")
        return _config_for_file(run, preset, overrides), run
    cfg = _run_config(run)
    if cfg is not None:
        path = run / f"model_{weights}.safetensors"
        if not path.is_file():
            have = sorted(p.name for p in run.glob("model_*.safetensors"))
            raise FileNotFoundError(
                f"{path} does not exist; this run has {', '.join(have) or 'no weights yet'}"
            )
        return cfg, path
    latest = latest_checkpoint(run)
    if latest is not None:
        return _config_for_file(latest, preset, overrides), latest
    raise FileNotFoundError(
        f"{run} has no config.json and no complete checkpoint; is it a run directory of `robust-at train`?"
    )


def load_model_weights(path: pathlib.Path) -> dict[str, torch.Tensor]:
    """The model's state dict from a weights file or a training checkpoint (verified)."""
    if _CHECKPOINT.search(path.name):
        tensors, _ = load_checkpoint(path)
        state = _unprefixed("model", tensors)
        if not state:
            raise CheckpointError(f"checkpoint {path} holds no model weights")
        return state
    return load_weights(path)


def evaluate_weights(
    cfg: TrainConfig,
    path: pathlib.Path,
    *,
    attack: str = "pgd",
    steps: int = 20,
    restarts: int = 1,
    n: int | None = None,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    batch_size: int = 256,
    data_dir: str | pathlib.Path | None = None,
    seed: int = 0,
) -> dict:
    """Clean and robust accuracy (PGD-``steps`` or AutoAttack) of the weights at ``path`` on the
    first ``n`` test images, on ``device``; the weights are checked against the model first."""
    state = load_model_weights(path)  # before the data: a bad file fails fast
    data = load_training_data(cfg, data_dir)
    model = build_model(cfg, data)
    load_state_into(model, state, f"weights file {path}")
    model.to(device).eval()
    x, y = (data.x_test[:n], data.y_test[:n]) if n else (data.x_test, data.y_test)
    torch.manual_seed(seed)
    result = {
        "weights": str(path),
        "attack": attack,
        "n": len(y),
        "device": str(device),
        "precision": precision,
    }
    result["clean_acc"] = clean_accuracy(model, x, y, batch_size, device, precision=precision)["acc"]
    if attack == "pgd":
        r = pgd_accuracy(
            model, x, y, eps=cfg.eps, step_size=cfg.step_size, steps=steps, restarts=restarts, norm=cfg.norm,
            batch_size=batch_size, device=device, precision=precision,
        )  # fmt: skip
        result.update({"robust_acc": r["acc"], "steps": steps, "restarts": restarts})
    else:
        version = "standard" if attack == "autoattack" else "custom"
        result.update(
            autoattack_accuracy(
                model, x, y, eps=cfg.eps, norm=cfg.norm, version=version, seed=seed, device=device,
                batch_size=batch_size,
            )
        )  # fmt: skip
    return result
