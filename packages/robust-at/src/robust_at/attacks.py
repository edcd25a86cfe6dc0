"""Gradient attacks used in training and evaluation: FGSM and PGD (L-inf and L2).

All attacks work in input space: the model receives images in the declared box (default
[0, 1]) and does its own normalisation (see :class:`robust_at.models.Normalize`). Every iterate
is projected onto the eps-ball around the clean input and clamped to the box.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from research_systems_core.validation import check_choice, check_int, check_positive

__all__ = [
    "NORMS",
    "RANDOM_STARTS",
    "AttackConfig",
    "check_input_box",
    "check_logits",
    "fgsm",
    "pgd",
]

NORMS = ("linf", "l2")
RANDOM_STARTS = ("uniform", "normal", "none")
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
_BOX_TOLERANCE = 1e-6


@dataclass(frozen=True)
class AttackConfig:
    """Settings of a PGD attack (a training attack or an evaluation attack)."""

    eps: float = 8 / 255
    step_size: float = 2 / 255
    steps: int = 10
    norm: str = "linf"
    restarts: int = 1
    random_start: str = "uniform"
    early_stop: bool = False

    def __post_init__(self) -> None:
        validate_attack(self.eps, self.step_size, self.steps, self.norm, self.restarts, self.random_start)

    def run(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, **kwargs) -> torch.Tensor:
        """Attack ``model`` at ``(x, y)`` with these settings."""
        return pgd(
            model,
            x,
            y,
            eps=self.eps,
            step_size=self.step_size,
            steps=self.steps,
            norm=self.norm,
            restarts=self.restarts,
            random_start=self.random_start,
            early_stop=self.early_stop,
            **kwargs,
        )


def validate_attack(
    eps: float, step_size: float, steps: int, norm: str, restarts: int, random_start: str
) -> None:
    """Raise a clear ValueError for bad attack settings."""
    check_positive("eps", eps, strict=False)
    check_positive("step_size", step_size, strict=True)
    check_int("steps", steps, minimum=1)
    check_int("restarts", restarts, minimum=1)
    check_choice("norm", norm, NORMS)
    check_choice("random_start", random_start, RANDOM_STARTS)


def check_input_box(x: torch.Tensor, box: tuple[float, float]) -> None:
    """Raise ValueError when ``x`` leaves the declared input range ``box``."""
    low, high = box
    if not low < high:
        raise ValueError(f"box must satisfy low < high, got {box}")
    x_min, x_max = float(x.min()), float(x.max())
    if x_min < low - _BOX_TOLERANCE or x_max > high + _BOX_TOLERANCE:
        raise ValueError(
            f"inputs must lie in the declared input range [{low}, {high}], got values in [{x_min:.4g}, {x_max:.4g}]; "
            "feed unnormalised images and let the model normalise (create_model(..., mean=, std=))"
        )


def check_logits(logits: torch.Tensor, batch: int, num_classes: int | None = None) -> None:
    """Raise ValueError unless ``logits`` has shape (batch, num_classes)."""
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != batch:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"the model must return logits of shape (batch={batch}, classes), got {shape}")
    if num_classes is not None and logits.shape[1] != num_classes:
        raise ValueError(
            f"the model returns {logits.shape[1]} logits per input but the data has {num_classes} classes"
        )


def _random_start(x: torch.Tensor, eps: float, norm: str, kind: str) -> torch.Tensor:
    if kind == "none" or eps == 0:
        return torch.zeros_like(x)
    if kind == "normal":  # TRADES: a tiny Gaussian start
        return 0.001 * torch.randn_like(x)
    if norm == "linf":
        return torch.empty_like(x).uniform_(-eps, eps)
    delta = torch.randn_like(x)
    flat_norm = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
    radius = torch.rand(x.shape[0], device=x.device, dtype=x.dtype) * eps
    return delta * (radius / flat_norm).view(-1, *([1] * (x.dim() - 1)))


def _project(
    x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str, box: tuple[float, float]
) -> torch.Tensor:
    if norm == "linf":
        x_adv = torch.minimum(torch.maximum(x_adv, x - eps), x + eps)
    else:
        delta = x_adv - x
        scale = (eps / delta.flatten(1).norm(dim=1).clamp_min(1e-12)).clamp(max=1.0)
        x_adv = x + delta * scale.view(-1, *([1] * (x.dim() - 1)))
    return x_adv.clamp_(box[0], box[1])


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    step_size: float,
    steps: int,
    norm: str = "linf",
    restarts: int = 1,
    random_start: str = "uniform",
    early_stop: bool = False,
    box: tuple[float, float] = (0.0, 1.0),
    loss_fn: LossFn | None = None,
    check_inputs: bool = True,
) -> torch.Tensor:
    """Projected gradient ascent on ``loss_fn`` (per-sample cross-entropy by default).

    Returns adversarial inputs within ``eps`` of ``x`` (in ``norm``) and inside ``box``. With
    several restarts, each sample keeps the restart with the highest final loss. With
    ``early_stop``, samples stop moving once the model misclassifies them. The model's mode
    (train/eval) is left as it is; the caller chooses it.
    """
    validate_attack(eps, step_size, steps, norm, restarts, random_start)
    if check_inputs:
        check_input_box(x, box)
    loss_fn = loss_fn or (lambda logits, target: F.cross_entropy(logits, target, reduction="none"))
    x = x.detach()
    view = (-1, *([1] * (x.dim() - 1)))
    best_adv, best_loss = None, None
    if norm == "linf":  # the feasible set is a box: intersect the eps-box with the input box once
        lower = (x - eps).clamp_(box[0], box[1])
        upper = (x + eps).clamp_(box[0], box[1])
    with torch.enable_grad():
        for _ in range(restarts):
            x_adv = _project(x + _random_start(x, eps, norm, random_start), x, eps, norm, box)
            for _ in range(steps):
                x_adv.requires_grad_(True)
                logits = model(x_adv)
                (grad,) = torch.autograd.grad(loss_fn(logits, y).sum(), x_adv)
                x_adv = x_adv.detach()
                if early_stop:
                    still_correct = logits.detach().argmax(1) == y
                    if not bool(still_correct.any()):
                        break
                    grad = grad * still_correct.view(view)
                if norm == "linf":
                    x_adv.add_(grad.sign_(), alpha=step_size)
                    torch.maximum(x_adv, lower, out=x_adv)
                    torch.minimum(x_adv, upper, out=x_adv)
                else:
                    grad_norm = grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(view)
                    x_adv = _project(x_adv + step_size * grad / grad_norm, x, eps, norm, box)
            if restarts == 1:
                return x_adv.detach()
            with torch.no_grad():
                loss = loss_fn(model(x_adv), y)
            if best_adv is None:
                best_adv, best_loss = x_adv.detach().clone(), loss
            else:
                better = loss >= best_loss
                best_adv[better] = x_adv[better]
                best_loss = torch.maximum(best_loss, loss)
    assert best_adv is not None
    return best_adv


def fgsm(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    step_size: float | None = None,
    random_start: bool = False,
    box: tuple[float, float] = (0.0, 1.0),
) -> torch.Tensor:
    """FGSM (one signed-gradient step of size ``step_size``, default ``eps``); with
    ``random_start`` this is the "fast is better than free" variant (step 1.25 eps)."""
    check_positive("eps", eps, strict=True)
    return pgd(
        model,
        x,
        y,
        eps=eps,
        step_size=eps if step_size is None else step_size,
        steps=1,
        norm="linf",
        random_start="uniform" if random_start else "none",
        box=box,
    )
