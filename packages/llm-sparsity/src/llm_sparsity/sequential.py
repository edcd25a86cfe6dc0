"""Sequential block-by-block pruning (Wanda, SparseGPT), as locuslab/wanda ``prune_wanda`` /
``prune_sparsegpt`` do it.

The calibration sequences are run up to the first transformer block (its inputs and keyword
arguments are captured, then the forward pass is stopped). Then, one block at a time: the block
moves to the device, hooks on its targeted linear layers collect their inputs over all
calibration sequences (input-feature norms for Wanda, the Hessian X^T X / n for SparseGPT), the
block's weights are pruned, the calibration inputs are run through the *pruned* block and its
outputs become the next block's inputs, and the block moves back. So every block is calibrated on
what the already pruned blocks before it produce, and only one block needs device memory.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from llm_sparsity.layerwise import (
    HessianAccumulator,
    NormAccumulator,
    magnitude_mask,
    sparsegpt_prune,
    wanda_mask,
)
from llm_sparsity.targets import Targets, find_blocks
from research_systems_core.masks import MaskSet

__all__ = ["SEQUENTIAL_METHODS", "capture_block_inputs", "prune_sequential"]

log = logging.getLogger(__name__)
SEQUENTIAL_METHODS = ("wanda", "sparsegpt", "magnitude")


class _StopForward(Exception):
    """Raised by the hook on the first block once its inputs are captured."""


@dataclass
class BlockInputs:
    """Per calibration batch: the hidden states entering a block and the other call arguments."""

    hidden: list[torch.Tensor]
    args: list[tuple[Any, ...]]
    kwargs: list[dict[str, Any]]


def _to(obj: Any, device: torch.device) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, tuple):
        return tuple(_to(o, device) for o in obj)
    if isinstance(obj, list):
        return [_to(o, device) for o in obj]
    if isinstance(obj, dict):
        return {k: _to(v, device) for k, v in obj.items()}
    return obj


def _move_outside_blocks(module: torch.nn.Module, blocks: torch.nn.ModuleList, device: torch.device) -> None:
    """Move every parameter and buffer that is not inside ``blocks`` (embeddings, norms, rotary)."""
    if module is blocks:
        return
    for key, p in module._parameters.items():
        if p is not None:
            module._parameters[key].data = p.data.to(device)
    for key, b in module._buffers.items():
        if b is not None:
            module._buffers[key] = b.to(device)
    for child in module.children():
        _move_outside_blocks(child, blocks, device)


@contextmanager
def _no_cache(model: torch.nn.Module) -> Iterator[None]:
    config = getattr(model, "config", None)
    saved = getattr(config, "use_cache", None)
    if config is not None and saved is not None:
        config.use_cache = False
    try:
        yield
    finally:
        if config is not None and saved is not None:
            config.use_cache = saved


@torch.no_grad()
def capture_block_inputs(
    model: torch.nn.Module,
    blocks: torch.nn.ModuleList,
    calibration: torch.Tensor,
    batch_size: int,
    device: torch.device,
) -> BlockInputs:
    """Run the calibration ids up to ``blocks[0]`` and keep what it would have received."""
    store = BlockInputs([], [], [])

    def hook(_mod: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        hidden = args[0] if args else kwargs.pop("hidden_states")
        store.hidden.append(hidden)
        store.args.append(tuple(args[1:]))
        store.kwargs.append(dict(kwargs))
        raise _StopForward

    handle = blocks[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for start in range(0, calibration.shape[0], batch_size):
            ids = calibration[start : start + batch_size].to(device)
            with suppress(_StopForward):
                model(input_ids=ids)
    finally:
        handle.remove()
    if len(store.hidden) != -(-calibration.shape[0] // batch_size):
        raise RuntimeError("the calibration forward pass never reached the first transformer block")
    return store


def _block_targets(targets: Targets, prefix: str, index: int) -> list[str]:
    head = f"{prefix}.{index}." if prefix else f"{index}."
    return [n for n in targets.names if n.startswith(head)]


def _run_block(block: torch.nn.Module, inputs: BlockInputs) -> list[torch.Tensor]:
    outs = []
    for hidden, args, kwargs in zip(inputs.hidden, inputs.args, inputs.kwargs, strict=True):
        out = block(hidden, *args, **kwargs)
        outs.append(out[0] if isinstance(out, (tuple, list)) else out)
    return outs


@dataclass
class _Layer:
    name: str
    module: torch.nn.Module
    transposed: bool
    stats: NormAccumulator | HessianAccumulator | None = None

    def weight(self) -> torch.Tensor:  # (out, in) view
        w = self.module.weight.data
        return w.t() if self.transposed else w


def _collect(layers: list[_Layer], block: torch.nn.Module, inputs: BlockInputs, method: str) -> None:
    """One pass of the calibration inputs through the block with input hooks on its layers."""
    handles = []
    for layer in layers:
        n_in = layer.weight().shape[1]
        dev = layer.module.weight.device
        layer.stats = HessianAccumulator(n_in, dev) if method == "sparsegpt" else NormAccumulator(n_in, dev)

        def hook(_m: torch.nn.Module, args: tuple[Any, ...], layer: _Layer = layer) -> None:
            layer.stats.add(args[0])

        handles.append(layer.module.register_forward_pre_hook(hook))
    try:
        _run_block(block, inputs)
    finally:
        for h in handles:
            h.remove()


def _prune_layer(
    layer: _Layer,
    method: str,
    sparsity: float | None,
    nm: tuple[int, int] | None,
    blocksize: int,
    percdamp: float,
) -> torch.Tensor:
    """Prune one layer in place; returns its keep-mask in the stored orientation."""
    w = layer.weight()
    if method == "sparsegpt":
        new_w, keep = sparsegpt_prune(w, layer.stats.h, sparsity, nm, blocksize=blocksize, percdamp=percdamp)
        w.copy_(new_w)
    else:
        keep = (
            wanda_mask(w, layer.stats.norms(), sparsity, nm)
            if method == "wanda"
            else magnitude_mask(w, sparsity, nm)
        )
        w.mul_(keep.to(w.dtype))
    return keep.t().contiguous() if layer.transposed else keep


@torch.no_grad()
def prune_sequential(
    model: torch.nn.Module,
    targets: Targets,
    calibration: torch.Tensor,
    method: str = "wanda",
    sparsity: float | None = 0.5,
    nm: tuple[int, int] | None = None,
    *,
    device: torch.device | str = "cpu",
    batch_size: int = 1,
    blocksize: int = 128,
    percdamp: float = 0.01,
    progress: bool = False,
    on_block: Callable[[int, int], None] | None = None,
) -> MaskSet:
    """Prune ``targets`` block by block (see the module docstring); returns the keep-masks.

    ``calibration`` is a (n_samples, seq_len) integer tensor of token ids (no padding), e.g. from
    :func:`llm_sparsity.calibration.load_calibration`. Every target must lie inside a block."""
    if method not in SEQUENTIAL_METHODS:
        raise ValueError(
            f"sequential method {method!r} unknown; choose one of {', '.join(SEQUENTIAL_METHODS)}"
        )
    if (
        not isinstance(calibration, torch.Tensor)
        or calibration.dim() != 2
        or calibration.dtype.is_floating_point
    ):
        raise ValueError("calibration must be a (n_samples, seq_len) integer tensor of token ids")
    device = torch.device(device)
    prefix, blocks = find_blocks(model)
    per_block = [_block_targets(targets, prefix, i) for i in range(len(blocks))]
    outside = sorted(set(targets.names) - {n for names in per_block for n in names})
    if outside:
        raise ValueError(
            f"{method} prunes weights inside the transformer blocks ({prefix}.N); these targets are outside: "
            f"{outside[:5]}. Use magnitude/random/snip for them, or exclude them."
        )
    modules = dict(model.named_modules())
    home = {i: next(b.parameters()).device for i, b in enumerate(blocks)}
    masks: dict[str, torch.Tensor] = {}
    with _no_cache(model):
        _move_outside_blocks(model, blocks, device)
        inputs = _to(capture_block_inputs(model, blocks, calibration, batch_size, device), device)
        bar = tqdm(range(len(blocks)), desc=f"{method} blocks", disable=not progress)
        for i in bar:
            block = blocks[i].to(device)
            layers = [_Layer(n, modules[n.rsplit(".", 1)[0]], n in targets.transposed) for n in per_block[i]]
            if layers:
                if method != "magnitude":
                    _collect(layers, block, inputs, method)
                for layer in layers:
                    masks[layer.name] = _prune_layer(layer, method, sparsity, nm, blocksize, percdamp).cpu()
                    layer.stats = None
            inputs.hidden = _run_block(block, inputs)  # the pruned block's outputs feed the next one
            blocks[i].to(home[i])
            if on_block is not None:
                on_block(i, len(blocks))
        _move_outside_blocks(model, blocks, home[0])
    return MaskSet({n: masks[n] for n in targets.names})
