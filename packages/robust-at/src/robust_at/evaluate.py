"""Evaluation: clean accuracy, PGD-k robust accuracy and AutoAttack (the official code, as
packaged on PyPI by ``pyautoattack``: install the extra ``robust-at[autoattack]``)."""

from __future__ import annotations

import logging
import time

import torch
import torch.nn.functional as F
from torch import nn

from research_systems_core.distributed import reduce_metrics
from research_systems_core.precision import autocast
from research_systems_core.validation import check_choice, check_int, check_positive
from robust_at.attacks import check_input_box, check_logits, pgd
from robust_at.data import batches

__all__ = ["AUTOATTACK_VERSIONS", "autoattack_accuracy", "clean_accuracy", "pgd_accuracy"]

log = logging.getLogger(__name__)
AUTOATTACK_VERSIONS = ("standard", "custom", "plus", "rand")
QUICK_ATTACKS = ("apgd-ce", "apgd-t")


def _eval_mode(model: nn.Module):
    class _Ctx:
        def __enter__(self):
            self.was = model.training
            model.eval()

        def __exit__(self, *exc):
            model.train(self.was)

    return _Ctx()


def _reduced(correct: torch.Tensor, loss: torch.Tensor, n: int, world_size: int) -> dict[str, float]:
    """Accuracy and mean loss from this rank's sums, summed over ranks under torchrun (one
    host sync per evaluation)."""
    sums = {"correct": float(correct), "loss": float(loss), "n": float(n)}
    if world_size > 1:
        sums = reduce_metrics(sums)  # means over ranks; their ratios are the global ratios
    return {"acc": sums["correct"] / max(sums["n"], 1e-12), "loss": sums["loss"] / max(sums["n"], 1e-12)}


@torch.no_grad()
def clean_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int = 256,
    device: str | torch.device = "cpu",
    *,
    precision: str = "fp32",
    rank: int = 0,
    world_size: int = 1,
) -> dict[str, float]:
    """Accuracy and mean cross-entropy on clean inputs (model in eval mode); under torchrun each
    rank takes its shard (``rank``, ``world_size``) and the result is reduced over ranks."""
    correct = torch.zeros((), dtype=torch.int64, device=device)
    loss = torch.zeros((), dtype=torch.float64, device=device)
    n = 0
    with _eval_mode(model):
        for xb, yb in batches(x, y, batch_size, device=device, rank=rank, world_size=world_size):
            with autocast(device, precision):
                logits = model(xb)
            check_logits(logits, len(yb))
            correct += (logits.argmax(1) == yb).sum()
            loss += F.cross_entropy(logits.float(), yb, reduction="sum").double()
            n += len(yb)
    return _reduced(correct, loss, n, world_size)


def pgd_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    step_size: float,
    steps: int = 20,
    restarts: int = 1,
    norm: str = "linf",
    batch_size: int = 256,
    box: tuple[float, float] = (0.0, 1.0),
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    rank: int = 0,
    world_size: int = 1,
) -> dict[str, float]:
    """Robust accuracy and loss under PGD-``steps`` with ``restarts`` random restarts (eval
    mode; the attack and the final forward under ``precision`` autocast); sharded and reduced
    over ranks like :func:`clean_accuracy`."""
    correct = torch.zeros((), dtype=torch.int64, device=device)
    loss = torch.zeros((), dtype=torch.float64, device=device)
    n = 0
    with _eval_mode(model):
        for xb, yb in batches(x, y, batch_size, device=device, rank=rank, world_size=world_size):
            with autocast(device, precision):
                x_adv = pgd(
                    model,
                    xb,
                    yb,
                    eps=eps,
                    step_size=step_size,
                    steps=steps,
                    norm=norm,
                    restarts=restarts,
                    box=box,
                )
                with torch.no_grad():
                    logits = model(x_adv)
            correct += (logits.argmax(1) == yb).sum()
            loss += F.cross_entropy(logits.float(), yb, reduction="sum").double()
            n += len(yb)
    return _reduced(correct, loss, n, world_size)


def autoattack_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    norm: str = "linf",
    version: str = "standard",
    attacks: tuple[str, ...] | None = None,
    n_iter: int | None = None,
    batch_size: int = 256,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> dict:
    """Robust accuracy under AutoAttack (Croce & Hein 2020) with the official implementation.

    ``version="standard"`` runs APGD-CE, APGD-T, FAB-T and Square (the referee; slow on CPU).
    ``version="custom"`` runs ``attacks`` (default APGD-CE + APGD-T, the quick variant).
    ``n_iter`` overrides the 100 APGD/FAB iterations (only for smoke tests). Returns the robust
    accuracy after each attack, the clean accuracy and the time taken.
    """
    try:
        from pyautoattack import AutoAttack
    except ImportError:  # pragma: no cover - depends on the environment
        raise ImportError(
            "AutoAttack evaluation needs the official AutoAttack package: pip install 'robust-at[autoattack]'"
        ) from None
    check_choice("autoattack version", version, AUTOATTACK_VERSIONS)
    check_positive("eps", eps, strict=True)
    check_int("batch_size", batch_size, minimum=1)
    check_input_box(x.float() / 255 if x.dtype == torch.uint8 else x, (0.0, 1.0))
    norm_name = {"linf": "Linf", "l2": "L2", "l1": "L1"}[check_choice("norm", norm, ("linf", "l2", "l1"))]
    if version == "custom":
        attacks = tuple(attacks or QUICK_ATTACKS)
    elif attacks is not None:
        raise ValueError(f"attacks can only be chosen with version='custom', got version={version!r}")
    x = (x.float() / 255 if x.dtype == torch.uint8 else x).to(device)
    y = y.to(device)
    start = time.perf_counter()
    with _eval_mode(model):
        kwargs = {"attacks": list(attacks)} if attacks else {}
        adversary = AutoAttack(
            model, eps=eps, norm=norm_name, version=version, seed=seed, device=device, **kwargs
        )
        if n_iter is not None:
            check_int("n_iter", n_iter, minimum=1)
            adversary.apgd.n_iter = adversary.apgd_targeted.n_iter = adversary.fab.n_iter = n_iter
        # the package logs per-attack accuracies at debug level; collect them from the flags
        x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=batch_size)
        with torch.no_grad():
            clean = torch.cat(
                [model(xb).argmax(1) == yb for xb, yb in batches(x, y, batch_size, device=device)]
            )
            robust = torch.cat(
                [model(xb).argmax(1) == yb for xb, yb in batches(x_adv, y, batch_size, device=device)]
            )
    max_pert = (x_adv - x).abs().flatten(1).max(1).values.max().item() if norm == "linf" else None
    return {
        "version": version,
        "attacks": list(adversary.attacks_to_run),
        "clean_acc": float(clean.float().mean()),
        "robust_acc": float((robust & clean).float().mean()),
        "n": len(y),
        "max_linf_perturbation": max_pert,
        "seconds": time.perf_counter() - start,
    }
