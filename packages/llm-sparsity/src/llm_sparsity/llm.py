"""One entry point to prune a language model with any method, and the task losses SNIP uses."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from llm_sparsity.models import model_task
from llm_sparsity.pruning import ALLOCATIONS, check_sparsity, parse_nm, prune
from llm_sparsity.sequential import prune_sequential
from llm_sparsity.targets import Targets
from research_systems_core.masks import MaskSet

__all__ = ["LLM_METHODS", "PruneSpec", "mlm_batch", "prune_llm", "task_loss"]

LLM_METHODS = ("magnitude", "random", "snip", "wanda", "sparsegpt")
SEQUENTIAL = ("wanda", "sparsegpt")


@dataclass(frozen=True)
class PruneSpec:
    """What to prune to: a method, a sparsity (or an N:M pattern) and, for magnitude/random/snip,
    how the count is allocated (global, layer, row). Validated on construction."""

    method: str = "magnitude"
    sparsity: float | None = 0.5
    nm: tuple[int, int] | None = None
    allocation: str = "global"

    def __post_init__(self) -> None:
        if self.method not in LLM_METHODS:
            raise ValueError(f"method {self.method!r} unknown; choose one of {', '.join(LLM_METHODS)}")
        if self.nm is not None:
            object.__setattr__(self, "nm", parse_nm(self.nm))
        else:
            if self.sparsity is None:
                raise ValueError("give a sparsity in [0, 1) or an N:M pattern")
            check_sparsity(self.sparsity)
        if self.allocation not in ALLOCATIONS:
            raise ValueError(
                f"allocation {self.allocation!r} unknown; choose one of {', '.join(ALLOCATIONS)}"
            )

    @property
    def needs_calibration(self) -> bool:
        return self.method in ("snip", "wanda", "sparsegpt")


def mlm_batch(
    input_ids: torch.Tensor, mask_token_id: int, seed: int = 0, rate: float = 0.15
) -> dict[str, torch.Tensor]:
    """BERT's masked-LM objective on a batch: ``rate`` of the tokens (seeded) replaced by [MASK],
    labels -100 elsewhere (at least one masked token per sequence)."""
    gen = torch.Generator().manual_seed(seed)
    chosen = torch.rand(input_ids.shape, generator=gen) < rate
    chosen[
        torch.arange(input_ids.shape[0]),
        torch.randint(0, input_ids.shape[1], (input_ids.shape[0],), generator=gen),
    ] = True
    labels = torch.where(chosen, input_ids, torch.full_like(input_ids, -100))
    return {"input_ids": input_ids.masked_fill(chosen, mask_token_id), "labels": labels}


def task_loss(model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The model's own training loss on a batch: language modelling for causal LMs (labels =
    inputs), the masked-LM loss for masked LMs (batch from :func:`mlm_batch`), the classification
    loss for classifiers (the batch must carry ``labels``). A base model has no loss."""
    task = model_task(model)
    device = next(model.parameters()).device
    batch = {k: v.to(device) for k, v in batch.items()}
    if task == "causal-lm":
        batch.setdefault("labels", batch["input_ids"])
    elif "labels" not in batch:
        raise ValueError(f"SNIP on a {task} model needs batches with 'labels' (its task loss)")
    if task == "base":
        raise ValueError(
            "SNIP needs a task loss; a base model without a head has none (load it with its head)"
        )
    return model(**batch).loss


def _snip_batches(
    model: torch.nn.Module,
    calibration: torch.Tensor,
    tokenizer: Any,
    labels: torch.Tensor | None,
    batch_size: int,
) -> list[dict[str, torch.Tensor]]:
    task = model_task(model)
    batches = []
    for i, start in enumerate(range(0, calibration.shape[0], batch_size)):
        ids = calibration[start : start + batch_size]
        if task == "masked-lm":
            mask_id = getattr(tokenizer, "mask_token_id", None)
            if mask_id is None:
                raise ValueError("SNIP on a masked LM needs a tokenizer with a mask token")
            batches.append(mlm_batch(ids, mask_id, seed=i))
        elif task == "sequence-classification":
            if labels is None:
                raise ValueError("SNIP on a classifier needs calibration labels (its task loss)")
            batches.append({"input_ids": ids, "labels": labels[start : start + batch_size]})
        else:
            batches.append({"input_ids": ids})
    return batches


def prune_llm(
    model: torch.nn.Module,
    targets: Targets,
    spec: PruneSpec,
    *,
    calibration: torch.Tensor | None = None,
    tokenizer: Any = None,
    labels: torch.Tensor | None = None,
    device: torch.device | str = "cpu",
    batch_size: int = 1,
    seed: int = 0,
    progress: bool = False,
) -> MaskSet:
    """Prune ``model`` in place to ``spec``; returns the keep-masks (exact counts).

    Wanda and SparseGPT run block by block (:func:`prune_sequential`), comparing within rows or
    N:M groups as their papers do; magnitude, random and SNIP use ``spec.allocation`` (global by
    default). ``calibration`` is a (n, seq_len) id tensor for the methods that need data."""
    if spec.needs_calibration and calibration is None:
        raise ValueError(f"{spec.method} needs calibration token ids (see llm_sparsity.calibration)")
    if spec.method in SEQUENTIAL:
        return prune_sequential(
            model,
            targets,
            calibration,
            spec.method,
            spec.sparsity,
            spec.nm,
            device=device,
            batch_size=batch_size,
            progress=progress,
        )
    allocation = "nm" if spec.nm else spec.allocation
    kwargs: dict[str, Any] = {"generator": torch.Generator().manual_seed(seed)}
    if spec.method == "snip":
        kwargs["calibration"] = _snip_batches(model, calibration, tokenizer, labels, batch_size)
        kwargs["loss_fn"] = task_loss
    return prune(
        model, targets, None if spec.nm else spec.sparsity, spec.method, allocation, nm=spec.nm, **kwargs
    )
