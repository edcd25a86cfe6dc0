"""Transfer modes after pruning, as in the Junk DNA reference.

- ``sparse``: the mask is kept through every optimizer step (pruned weights stay exactly zero,
  their gradients and optimizer moments are zeroed).
- ``sparse_to_dense``: pruning only sets the starting point; pruned weights start at zero and are
  free to regrow during fine-tuning.
- ``frozen``: the "small weights" are not removed but frozen: pruned positions are reset to their
  pre-trained values after every step, so only the large weights learn.
- ``dense``: no pruning at all (the reference's dense baseline); the masks are ignored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from research_systems_core.masks import MaskSet
from research_systems_core.validation import check_choice

__all__ = ["TRANSFER_MODES", "TransferHandle", "attach_transfer"]

TRANSFER_MODES = ("sparse", "sparse_to_dense", "frozen", "dense")


class TransferHandle:
    """Keeps a transfer mode active on an optimizer until :meth:`remove`."""

    def __init__(self, handles: list[Any]) -> None:
        self._handles = handles

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


def attach_transfer(
    model: torch.nn.Module,
    masks: MaskSet,
    optimizer: torch.optim.Optimizer,
    mode: str,
    pretrained: Mapping[str, torch.Tensor] | None = None,
) -> TransferHandle:
    """Prepare the model for fine-tuning in ``mode`` and hook the optimizer accordingly.

    ``sparse`` and ``sparse_to_dense`` zero the pruned weights first; ``frozen`` needs the
    pre-trained values of the targeted weights in ``pretrained`` and restores them."""
    check_choice("transfer mode", mode, TRANSFER_MODES)
    if mode == "dense":
        return TransferHandle([])
    if mode == "sparse":
        masks.apply(model)
        return TransferHandle([masks.attach(model, optimizer)])
    if mode == "sparse_to_dense":
        masks.apply(model)
        return TransferHandle([])
    if pretrained is None:
        raise ValueError("transfer mode 'frozen' needs the pre-trained weights (pretrained={name: tensor})")
    params = dict(model.named_parameters())
    missing = [n for n in masks.names if n not in pretrained]
    if missing:
        raise ValueError(f"transfer mode 'frozen': pretrained is missing {missing[:5]}")
    frozen = {
        n: (~masks.masks[n].to(params[n].device), pretrained[n].to(params[n].device)) for n in masks.names
    }

    def restore() -> None:
        with torch.no_grad():
            for n, (where, value) in frozen.items():
                params[n].data[where] = value[where].to(params[n].dtype)

    def post_hook(_opt: torch.optim.Optimizer, _args: Any, _kwargs: Any) -> None:
        restore()

    restore()
    return TransferHandle([optimizer.register_step_post_hook(post_hook)])
