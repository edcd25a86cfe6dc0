"""Physically remove channels: the slim model is a genuinely smaller dense network.

Every member of a channel group is sliced consistently (producer rows and biases, BatchNorm
entries, depthwise convs, consumer input columns at the group's offset inside a concatenation and
expanded by the features per channel after a flatten). Module attributes (``out_channels``,
``in_features``, ``groups``, ``num_features``) are updated, so the slim model is an ordinary
PyTorch module with the same classes and forward code as the original.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence

import torch
from torch import nn

from sparse_dst.tracing import ChannelGroup, UnsupportedGraphError, analyse

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


def _get(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError as error:
        raise UnsupportedGraphError(f"model has no submodule {name!r}") from error


def _check_keep(
    model: nn.Module,
    keep: Mapping[str, torch.Tensor],
    by_name: dict[str, ChannelGroup],
    skipped: dict[str, str],
) -> None:
    for name, vector in keep.items():
        if name not in by_name:
            owner = next((g.name for g in by_name.values() if name in g.producers), None)
            if owner is not None:
                raise UnsupportedGraphError(
                    f"{name!r} is a member of channel group {owner!r}; pass keep[{owner!r}] to remove its channels"
                )
            reason = skipped.get(name, "not a Conv/Linear producer of a removable channel group")
            raise UnsupportedGraphError(f"cannot remove channels of {name!r}: {reason}")
        size = by_name[name].size
        if (
            not isinstance(vector, torch.Tensor)
            or vector.dtype != torch.bool
            or tuple(vector.shape) != (size,)
        ):
            got = (
                f"{vector.dtype} {tuple(vector.shape)}"
                if isinstance(vector, torch.Tensor)
                else type(vector).__name__
            )
            raise ValueError(f"keep[{name!r}] must be a bool vector of length {size}, got {got}")
        if not bool(vector.any()):
            raise ValueError(f"keep[{name!r}] removes every channel; at least one must stay")


def module_index_masks(
    model: nn.Module, keep: Mapping[str, torch.Tensor], groups: Iterable[ChannelGroup]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Per module: which output rows (dim 0 of weights, norms, depthwise convs) and which input
    columns (dim 1 of Conv/Linear weights) survive."""
    rows: dict[str, torch.Tensor] = {}
    cols: dict[str, torch.Tensor] = {}
    for group in groups:
        vector = keep.get(group.name)
        if vector is None or bool(vector.all()):
            continue
        vector = vector.cpu()
        for slot in group.slots:
            module = _get(model, slot.module)
            if slot.role in ("out", "dw", "norm"):
                n = module.weight.shape[0] if slot.role != "norm" else module.num_features
                target = rows.setdefault(slot.module, torch.ones(n, dtype=torch.bool))
                target[slot.offset : slot.offset + group.size] &= vector
            else:
                n = module.weight.shape[1]
                target = cols.setdefault(slot.module, torch.ones(n, dtype=torch.bool))
                start, stop = slot.offset * slot.fpc, (slot.offset + group.size) * slot.fpc
                target[start:stop] &= vector.repeat_interleave(slot.fpc)
    return rows, cols


def _param(tensor: torch.Tensor | None, index: torch.Tensor, dim: int = 0) -> nn.Parameter | None:
    if tensor is None:
        return None
    return nn.Parameter(
        tensor.detach().index_select(dim, index.to(tensor.device)).clone(), tensor.requires_grad
    )


@torch.no_grad()
def _slice_module(module: nn.Module, rows: torch.Tensor | None, cols: torch.Tensor | None) -> None:
    if isinstance(module, nn.modules.batchnorm._NormBase):
        index = rows.nonzero().flatten()
        if module.weight is not None:
            module.weight, module.bias = _param(module.weight, index), _param(module.bias, index)
        if module.running_mean is not None:
            module.running_mean = module.running_mean.index_select(0, index.to(module.running_mean.device))
            module.running_var = module.running_var.index_select(0, index.to(module.running_var.device))
        module.num_features = len(index)
        return
    if rows is not None:
        index = rows.nonzero().flatten()
        module.weight, module.bias = _param(module.weight, index), _param(module.bias, index)
        if isinstance(module, _CONVS):
            depthwise = module.groups > 1 and module.groups == module.in_channels == module.out_channels
            module.out_channels = len(index)
            if depthwise:
                module.in_channels = module.groups = len(index)
        else:
            module.out_features = len(index)
    if cols is not None:
        index = cols.nonzero().flatten()
        module.weight = _param(module.weight, index, dim=1)
        if isinstance(module, _CONVS):
            module.in_channels = len(index)
        else:
            module.in_features = len(index)


def remove_channels(
    model: nn.Module,
    keep: Mapping[str, torch.Tensor],
    groups: Iterable[ChannelGroup] | None = None,
    inplace: bool = False,
    example_input: torch.Tensor | Sequence[torch.Tensor] | None = None,
) -> nn.Module:
    """Slice away every channel whose ``keep[group]`` entry is False.

    ``keep`` maps channel-group names (see :func:`~sparse_dst.tracing.analyse`) to boolean vectors
    over the group's channels. A name that is not a removable group raises
    :class:`UnsupportedGraphError` with the reason (token-major flatten, LayerNorm over the
    channels, model output, ...).
    """
    if groups is None:
        groups, skipped = analyse(model, example_input)
    else:
        groups, skipped = list(groups), {}
    by_name = {g.name: g for g in groups}
    _check_keep(model, keep, by_name, skipped)
    slim = model if inplace else copy.deepcopy(model)
    rows, cols = module_index_masks(slim, keep, groups)
    for name in dict.fromkeys([*rows, *cols]):
        _slice_module(_get(slim, name), rows.get(name), cols.get(name))
    return slim


def count_parameters(model: nn.Module, nonzero: bool = False) -> int:
    """Number of parameters (or of non-zero ones)."""
    if nonzero:
        return int(sum(int((p != 0).sum()) for p in model.parameters()))
    return int(sum(p.numel() for p in model.parameters()))


def conv_linear_macs(model: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates of the Conv and Linear layers for one forward pass of ``example``
    (per sample; grouped convs count their real ``in_channels / groups`` fan-in)."""
    total = 0
    hooks = []

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, _CONVS):
            total += output.numel() * module.weight[0].numel()
        else:
            total += output.numel() * module.in_features

    for m in model.modules():
        if isinstance(m, (*_CONVS, nn.Linear)):
            hooks.append(m.register_forward_hook(hook))
    was_training = model.training
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return total // max(1, example.shape[0])
