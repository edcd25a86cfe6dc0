"""Export a slim model as plain PyTorch artefacts that load without this package.

- ``slim.torchscript.pt``: ``torch.jit.trace`` of the model in eval mode (``torch.jit.load``).
- ``slim.pt2``: ``torch.export`` program (``torch.export.load(...).module()``), where it traces.
- ``slim_reference.safetensors``: the example input and the model's output on it, so a user can
  check a loaded artefact without sparse-dst (see the README).

Each artefact is checked right after writing: reloaded and run on the example input, its output
must match the in-memory model's (relative max difference <= 1e-4), else it is deleted and the
reason recorded.
"""

from __future__ import annotations

import logging
import pathlib
import warnings
from typing import Any

import torch
from safetensors.torch import save_file
from torch import nn

log = logging.getLogger(__name__)

TOLERANCE = 1e-4


def _relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max()) / (float(b.float().abs().max()) + 1e-12)


def _verify(path: pathlib.Path, output: torch.Tensor, reloaded: torch.Tensor) -> dict[str, Any]:
    error = _relative_error(reloaded, output)
    if not error <= TOLERANCE:
        path.unlink(missing_ok=True)
        return {"ok": False, "reason": f"reloaded output differs (relative error {error:.3g})"}
    return {"ok": True, "path": path.name, "relative_error": error}


@torch.no_grad()
def export_torchscript(model: nn.Module, example: torch.Tensor, path: pathlib.Path) -> dict[str, Any]:
    output = model(example)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            traced = torch.jit.trace(model, example, check_trace=False)
            torch.jit.save(traced, str(path))
            reloaded = torch.jit.load(str(path), map_location=example.device)(example)
    except Exception as error:  # tracing support varies by model; record why
        path.unlink(missing_ok=True)
        return {"ok": False, "reason": f"{type(error).__name__}: {error}"[:500]}
    return _verify(path, output, reloaded)


@torch.no_grad()
def export_program(model: nn.Module, example: torch.Tensor, path: pathlib.Path) -> dict[str, Any]:
    output = model(example)
    try:
        program = torch.export.export(model, (example,))
        torch.export.save(program, str(path))
        reloaded = torch.export.load(str(path)).module()(example)
    except Exception as error:
        path.unlink(missing_ok=True)
        return {"ok": False, "reason": f"{type(error).__name__}: {error}"[:500]}
    return _verify(path, output, reloaded)


def export_slim(model: nn.Module, example: torch.Tensor, out_dir: str | pathlib.Path) -> dict[str, Any]:
    """Write the TorchScript and torch.export artefacts plus reference input/output into ``out_dir``."""
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            reference = model(example)
        save_file(
            {
                "input": example.detach().cpu().contiguous(),
                "output": reference.detach().cpu().float().contiguous(),
            },
            str(out / "slim_reference.safetensors"),
        )
        result = {
            "torchscript": export_torchscript(model, example, out / "slim.torchscript.pt"),
            "torch_export": export_program(model, example, out / "slim.pt2"),
        }
    finally:
        model.train(was_training)
    log.info("exports: %s", result)
    return result
