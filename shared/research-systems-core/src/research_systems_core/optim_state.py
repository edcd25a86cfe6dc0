"""Optimizer state to and from flat safetensors-friendly tensors, one key format for every package.

Keys: ``{prefix}{param_index}.{state_name}`` for tensor state (momentum buffers, Adam moments, step
counters stored as tensors). Non-tensor state and ``param_groups`` go to a JSON-able ``meta`` dict.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from research_systems_core.checkpoint import CheckpointError

__all__ = ["load_optimizer_state", "optimizer_state_to_tensors"]


def optimizer_state_to_tensors(
    optimizer: torch.optim.Optimizer, prefix: str = "optim."
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Flatten ``optimizer.state_dict()`` into ``(tensors, meta)`` (tensors are detached clones)."""
    state_dict = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for index, state in state_dict["state"].items():
        for name, value in state.items():
            key = f"{index}.{name}"
            if torch.is_tensor(value):
                tensors[prefix + key] = value.detach().clone().contiguous()
            else:
                scalars[key] = value
    meta = {"param_groups": state_dict["param_groups"], "scalars": scalars, "prefix": prefix}
    return tensors, meta


def load_optimizer_state(
    optimizer: torch.optim.Optimizer,
    tensors: Mapping[str, torch.Tensor],
    meta: Mapping[str, Any],
    prefix: str = "optim.",
) -> None:
    """Inverse of :func:`optimizer_state_to_tensors`; strict about keys and shapes.

    Raises :class:`CheckpointError` when the saved state does not fit this optimizer (other
    parameter count, a missing or extra key, a shape that differs from its parameter's)."""
    groups = meta.get("param_groups")
    if not isinstance(groups, list):
        raise CheckpointError("optimizer metadata has no 'param_groups'")
    params = [p for group in optimizer.param_groups for p in group["params"]]
    saved = sum(len(g["params"]) for g in groups)
    if saved != len(params):
        raise CheckpointError(f"optimizer state is for {saved} parameters, this optimizer has {len(params)}")
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if not key.startswith(prefix):
            continue
        index_text, _, name = key[len(prefix) :].partition(".")
        if not index_text.isdigit() or not name:
            raise CheckpointError(f"malformed optimizer key {key!r}")
        index = int(index_text)
        if index >= len(params):
            raise CheckpointError(f"optimizer key {key!r} names parameter {index} of {len(params)}")
        if value.dim() > 0 and value.shape != params[index].shape:
            raise CheckpointError(
                f"optimizer state {key!r} has shape {tuple(value.shape)}, "
                f"its parameter has {tuple(params[index].shape)}"
            )
        state.setdefault(index, {})[name] = value
    for key, value in dict(meta.get("scalars", {})).items():
        index_text, _, name = key.partition(".")
        state.setdefault(int(index_text), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": groups})
