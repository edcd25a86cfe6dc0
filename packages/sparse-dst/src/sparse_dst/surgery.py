"""Physically remove masked channels: the slim model is a genuinely smaller dense network."""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping

import torch
from torch import nn

from sparse_dst.tracing import ChannelGroup, UnsupportedGraphError, find_channel_groups


def _get(model: nn.Module, name: str) -> nn.Module:
    try:
        return model.get_submodule(name)
    except AttributeError as error:
        raise UnsupportedGraphError(f"model has no submodule {name!r}") from error


def _slice_out(module: nn.Module, keep: torch.Tensor) -> None:
    index = keep.nonzero().flatten()
    with torch.no_grad():
        module.weight = nn.Parameter(module.weight.index_select(0, index).clone())
        if module.bias is not None:
            module.bias = nn.Parameter(module.bias.index_select(0, index).clone())
    if isinstance(module, nn.Conv2d):
        module.out_channels = len(index)
    else:
        module.out_features = len(index)


def _slice_in(module: nn.Module, keep: torch.Tensor, features_per_channel: int) -> None:
    expanded = keep.repeat_interleave(features_per_channel)
    index = expanded.nonzero().flatten()
    with torch.no_grad():
        module.weight = nn.Parameter(module.weight.index_select(1, index).clone())
    if isinstance(module, nn.Conv2d):
        module.in_channels = len(index)
    else:
        module.in_features = len(index)


def _slice_norm(norm: nn.Module, keep: torch.Tensor) -> None:
    index = keep.nonzero().flatten()
    with torch.no_grad():
        if norm.weight is not None:
            norm.weight = nn.Parameter(norm.weight.index_select(0, index).clone())
            norm.bias = nn.Parameter(norm.bias.index_select(0, index).clone())
        if norm.running_mean is not None:
            norm.running_mean = norm.running_mean.index_select(0, index).clone()
            norm.running_var = norm.running_var.index_select(0, index).clone()
    norm.num_features = len(index)


def remove_channels(
    model: nn.Module,
    keep: Mapping[str, torch.Tensor],
    groups: Iterable[ChannelGroup] | None = None,
    inplace: bool = False,
) -> nn.Module:
    """Slice away every output channel whose ``keep[producer]`` entry is False.

    ``keep`` maps producer module names to boolean vectors over their output channels. The
    producer's rows and bias, the BatchNorm(s) in between and the consumer's input columns are
    sliced. Producers not in a traceable group raise :class:`UnsupportedGraphError`.
    """
    if groups is None:
        groups, skipped = find_channel_groups(model)
    else:
        skipped = {}
    by_producer = {group.producer: group for group in groups}
    for name, vector in keep.items():
        if name not in by_producer:
            reason = skipped.get(name, "not a conv/linear layer with a single traced consumer")
            raise UnsupportedGraphError(f"cannot remove channels of {name!r}: {reason}")
        producer = _get(model, name)
        channels = producer.weight.shape[0]
        if vector.dtype != torch.bool or vector.shape != (channels,):
            raise ValueError(
                f"keep[{name!r}] must be a bool vector of length {channels}, got {vector.dtype} {tuple(vector.shape)}"
            )
        if not bool(vector.any()):
            raise ValueError(f"keep[{name!r}] removes every channel; at least one must stay")
    slim = model if inplace else copy.deepcopy(model)
    for name, vector in keep.items():
        if bool(vector.all()):
            continue
        group = by_producer[name]
        vector = vector.cpu()
        _slice_out(_get(slim, group.producer), vector)
        for norm in group.norms:
            _slice_norm(_get(slim, norm), vector)
        _slice_in(_get(slim, group.consumer), vector, group.features_per_channel)
    return slim


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module, batches: Iterable[torch.Tensor], max_batches: int = 50
) -> nn.Module:
    """Recompute BatchNorm running statistics as exact averages over ``batches`` (inputs only)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return model
    was_training = model.training
    saved = [(m.momentum, m.track_running_stats) for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: an exact mean over the batches seen
    model.train()
    for i, x in enumerate(batches):
        if i >= max_batches:
            break
        model(x)
    for m, (momentum, _) in zip(norms, saved, strict=True):
        m.momentum = momentum
    model.train(was_training)
    return model


def count_parameters(model: nn.Module, nonzero: bool = False) -> int:
    """Number of parameters (or of non-zero ones)."""
    if nonzero:
        return int(sum(int((p != 0).sum()) for p in model.parameters()))
    return int(sum(p.numel() for p in model.parameters()))


def conv_linear_macs(model: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates of the conv and linear layers for one forward pass of ``example``."""
    total = 0
    hooks = []

    def hook(module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            per_output = module.weight[0].numel()
            total += output.numel() * per_output
        else:
            total += output.numel() * module.in_features

    for m in model.modules():
        if isinstance(m, nn.Conv2d | nn.Linear):
            hooks.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model.eval()(example)
    finally:
        for h in hooks:
            h.remove()
    return total // max(1, example.shape[0])
