"""Importance scores of the targeted weights: magnitude, random, SNIP and Wanda.

Every scorer returns ``{name: tensor}`` shaped like the weight; the lowest scores are pruned.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch

from llm_sparsity.targets import Targets
from research_systems_core.registry import Registry

__all__ = [
    "SCORES",
    "check_calibration",
    "compute_scores",
    "input_feature_norms",
    "magnitude",
    "random_scores",
    "snip",
    "wanda",
]

SCORES = Registry("score")
Batch = Mapping[str, torch.Tensor]
LossFn = Callable[[torch.nn.Module, Batch], torch.Tensor]


def check_calibration(batches: Iterable[Batch] | None, what: str) -> list[Batch]:
    """Validate calibration batches: mappings holding a 2-D integer ``input_ids`` (batch, seq_len)."""
    if batches is None:
        raise ValueError(
            f"{what} needs calibration batches (dicts with 'input_ids' of shape (batch, seq_len))"
        )
    batches = list(batches)
    if not batches:
        raise ValueError(f"{what} needs at least one calibration batch, got an empty list")
    for i, batch in enumerate(batches):
        if not isinstance(batch, Mapping) or "input_ids" not in batch:
            raise ValueError(
                f"calibration batch {i} must be a dict with 'input_ids', got {type(batch).__name__}"
            )
        ids = batch["input_ids"]
        if not isinstance(ids, torch.Tensor) or ids.dim() != 2 or ids.dtype.is_floating_point:
            shape = tuple(ids.shape) if isinstance(ids, torch.Tensor) else type(ids).__name__
            raise ValueError(
                f"calibration batch {i}: input_ids must be a 2-D (batch, seq_len) integer tensor, got {shape}"
            )
        mask = batch.get("attention_mask")
        if mask is not None and tuple(mask.shape) != tuple(ids.shape):
            raise ValueError(
                f"calibration batch {i}: attention_mask shape {tuple(mask.shape)} != input_ids shape {tuple(ids.shape)}"
            )
    return batches


@SCORES.register("magnitude")
def magnitude(model: torch.nn.Module, targets: Targets, **_: Any) -> dict[str, torch.Tensor]:
    """|w| (one-shot magnitude pruning, as in Essential Sparsity and the Junk DNA reference)."""
    return {n: p.detach().abs() for n, p in targets.parameters(model).items()}


@SCORES.register("random")
def random_scores(
    model: torch.nn.Module, targets: Targets, *, generator: torch.Generator | None = None, **_: Any
) -> dict[str, torch.Tensor]:
    """Uniform random scores: random pruning with the exact same per-allocation counts."""
    return {
        n: torch.rand(p.shape, generator=generator).to(p.device) for n, p in targets.parameters(model).items()
    }


def _default_loss(model: torch.nn.Module, batch: Batch) -> torch.Tensor:
    out = model(**batch)
    loss = getattr(out, "loss", None)
    if loss is None:
        raise ValueError("SNIP needs a loss: pass loss_fn(model, batch) or batches with labels")
    return loss


@SCORES.register("snip")
def snip(
    model: torch.nn.Module,
    targets: Targets,
    *,
    calibration: Iterable[Batch] | None = None,
    loss_fn: LossFn | None = None,
    **_: Any,
) -> dict[str, torch.Tensor]:
    """SNIP connection sensitivity |w * dL/dw|, gradients summed over the calibration batches.

    With a custom ``loss_fn(model, batch)`` the batches can be anything it accepts; otherwise they
    are token batches run through the model (which must return a loss)."""
    if loss_fn is None:
        batches = check_calibration(calibration, "SNIP")
        loss_fn = _default_loss
    else:
        batches = list(calibration or [])
        if not batches:
            raise ValueError("SNIP needs at least one calibration batch, got none")
    params = targets.parameters(model)
    was_training = model.training
    model.eval()
    grads = {n: torch.zeros_like(p) for n, p in params.items()}
    saved = {n: p.requires_grad for n, p in model.named_parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params.values():
        p.requires_grad_(True)
    try:
        for batch in batches:
            loss = loss_fn(model, batch)
            g = torch.autograd.grad(loss, list(params.values()))
            for (n, _), gi in zip(params.items(), g, strict=True):
                grads[n] += gi
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(saved[n])
        model.train(was_training)
    return {n: (p.detach() * grads[n]).abs() for n, p in params.items()}


def input_feature_norms(
    model: torch.nn.Module,
    targets: Targets,
    calibration: Iterable[Batch],
    forward_fn: Callable[[torch.nn.Module, Batch], Any] | None = None,
) -> dict[str, torch.Tensor]:
    """L2 norm over all (non-padding) calibration tokens of each input feature of every targeted layer."""
    batches = check_calibration(calibration, "Wanda")
    modules = dict(model.named_modules())
    sums: dict[str, torch.Tensor] = {}
    current_mask: list[torch.Tensor | None] = [None]
    handles = []

    def make_hook(name: str) -> Callable[..., None]:
        def hook(_mod: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            x = inputs[0].detach().float()
            mask = current_mask[0]
            if mask is not None and x.dim() == 3 and tuple(x.shape[:2]) == tuple(mask.shape):
                x = x[mask.bool()]
            x = x.reshape(-1, x.shape[-1])
            sq = (x * x).sum(0)
            sums[name] = sums[name] + sq if name in sums else sq

        return hook

    for name in targets.names:
        mod_name = name.rsplit(".", 1)[0] if "." in name else ""
        if mod_name not in modules:
            raise ValueError(f"cannot find the module owning {name} for Wanda's input hooks")
        handles.append(modules[mod_name].register_forward_pre_hook(make_hook(name)))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for batch in batches:
                current_mask[0] = batch.get("attention_mask")
                (forward_fn or (lambda m, b: m(**b)))(model, batch)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    missing = [n for n in targets.names if n not in sums]
    if missing:
        raise ValueError(
            f"the calibration forward pass never reached {missing[:5]}; Wanda needs their inputs"
        )
    return {n: s.sqrt() for n, s in sums.items()}


@SCORES.register("wanda")
def wanda(
    model: torch.nn.Module,
    targets: Targets,
    *,
    calibration: Iterable[Batch] | None = None,
    forward_fn: Callable[[torch.nn.Module, Batch], Any] | None = None,
    **_: Any,
) -> dict[str, torch.Tensor]:
    """Wanda: |W_ij| * ||X_j||_2 (input feature norm over calibration tokens); ranked per output row."""
    norms = input_feature_norms(model, targets, calibration, forward_fn)
    out = {}
    for n, p in targets.parameters(model).items():
        w = p.detach().abs()
        out[n] = w * norms[n][:, None] if n in targets.transposed else w * norms[n][None, :]
    return out


def compute_scores(
    name: str, model: torch.nn.Module, targets: Targets, **kwargs: Any
) -> dict[str, torch.Tensor]:
    """Scores by registry name (``magnitude``, ``random``, ``snip``, ``wanda``)."""
    return SCORES.get(name)(model, targets, **kwargs)
