"""Checkpoints that survive Ctrl-C and never unpickle: safetensors + a JSON sidecar.

``ckpt-<step>.safetensors`` holds the tensors; ``ckpt-<step>.json`` (written last) holds the step,
user metadata (config, metrics, RNG states...) and the SHA-256 and size of the tensor file. Both are
written atomically (temp file, fsync, rename), so a checkpoint is complete exactly when its
sidecar exists, and a truncated or tampered tensor file is detected on load.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import pathlib
import random
import re
import tempfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from research_systems_core.files import atomic_write, fsync_dir
from research_systems_core.results import to_jsonable

__all__ = [
    "CheckpointError",
    "atomic_write",
    "capture_rng_state",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "restore_rng_state",
    "save_checkpoint",
]

log = logging.getLogger(__name__)
FORMAT = "research-systems-core-checkpoint/1"
_NAME = re.compile(r"^ckpt-(\d+)\.json$")


class CheckpointError(RuntimeError):
    """A checkpoint is missing, incomplete, truncated or tampered with."""


def _torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def _sha256(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _is_torch_tensor(value: Any) -> bool:
    return type(value).__module__.startswith("torch")


def _prepare_torch(tensors: Mapping[str, Any]) -> dict[str, Any]:
    import torch

    out: dict[str, Any] = {}
    seen: set[int] = set()
    for name, value in tensors.items():
        t = torch.from_numpy(np.ascontiguousarray(value)) if isinstance(value, np.ndarray) else value
        if not isinstance(t, torch.Tensor):
            raise TypeError(
                f"checkpoint tensor {name!r} must be a torch tensor or numpy array, got {type(value).__name__}"
            )
        t = t.detach().cpu().contiguous()
        ptr = t.untyped_storage().data_ptr()
        if ptr in seen and t.numel() > 0:  # tied weights: safetensors refuses shared storage
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        out[name] = t
    return out


def save_checkpoint(
    directory: str | os.PathLike[str],
    step: int,
    tensors: Mapping[str, Any],
    meta: Mapping[str, Any] | None = None,
    keep: int | None = None,
) -> pathlib.Path:
    """Write checkpoint ``step`` into ``directory`` atomically; keep the newest ``keep`` if given."""
    if isinstance(step, bool) or not isinstance(step, int) or step < 0:
        raise ValueError(f"step must be a non-negative integer, got {step!r}")
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensor_path = directory / f"ckpt-{step:09d}.safetensors"
    sidecar_path = directory / f"ckpt-{step:09d}.json"
    fd, tmp_name = tempfile.mkstemp(prefix=f".{tensor_path.name}.", suffix=".tmp", dir=directory)
    os.close(fd)
    tmp = pathlib.Path(tmp_name)
    try:
        if any(_is_torch_tensor(v) for v in tensors.values()):
            from safetensors.torch import save_file as save_torch

            save_torch(_prepare_torch(tensors), str(tmp))
        else:
            from safetensors.numpy import save_file as save_numpy

            arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
            save_numpy(arrays, str(tmp))
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        record = {
            "format": FORMAT,
            "step": step,
            "tensor_file": tensor_path.name,
            "sha256": _sha256(tmp),
            "size": tmp.stat().st_size,
            "meta": to_jsonable(dict(meta or {})),
        }
        os.replace(tmp, tensor_path)
        fsync_dir(directory)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    with atomic_write(sidecar_path) as handle:
        json.dump(record, handle, indent=1)
    if keep is not None:
        for old in list_checkpoints(directory)[:-keep] if keep > 0 else []:
            old.with_suffix(".safetensors").unlink(missing_ok=True)
            old.unlink(missing_ok=True)
    return tensor_path


def list_checkpoints(directory: str | os.PathLike[str]) -> list[pathlib.Path]:
    """Sidecar paths of the checkpoints in ``directory``, oldest step first."""
    directory = pathlib.Path(directory)
    if not directory.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in directory.iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def _read_sidecar(path: pathlib.Path) -> dict[str, Any]:
    sidecar = path.with_suffix(".json")
    if not sidecar.is_file():
        raise CheckpointError(f"checkpoint {path} is incomplete: its sidecar {sidecar.name} is missing")
    try:
        record = json.loads(sidecar.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"checkpoint sidecar {sidecar} is corrupt: {exc}") from None
    if not isinstance(record, dict) or record.get("format") != FORMAT:
        raise CheckpointError(f"{sidecar} is not a {FORMAT} sidecar")
    return record


def _verify(path: pathlib.Path, record: Mapping[str, Any]) -> pathlib.Path:
    tensor_path = path.with_name(record["tensor_file"])
    if not tensor_path.is_file():
        raise CheckpointError(f"checkpoint tensor file {tensor_path} is missing")
    size = tensor_path.stat().st_size
    if size != record["size"]:
        raise CheckpointError(
            f"checkpoint {tensor_path} is truncated or altered: {size} bytes on disk, {record['size']} recorded"
        )
    if _sha256(tensor_path) != record["sha256"]:
        raise CheckpointError(
            f"checkpoint {tensor_path} does not match its recorded SHA-256 (corrupt or tampered)"
        )
    return tensor_path


def load_checkpoint(
    path: str | os.PathLike[str], framework: str | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Verify and load a checkpoint (its ``.safetensors`` or ``.json`` path) -> ``(tensors, meta)``.

    ``framework`` is ``"pt"`` (torch tensors; the default when torch is installed) or ``"np"``.
    The returned meta has the step under ``meta["step"]`` as well.
    """
    path = pathlib.Path(path)
    record = _read_sidecar(path)
    tensor_path = _verify(path, record)
    framework = framework or ("pt" if _torch_available() else "np")
    if framework not in ("pt", "np"):
        raise ValueError(f"framework must be 'pt' or 'np', got {framework!r}")
    try:
        if framework == "pt":
            from safetensors.torch import load_file as load_torch

            tensors = load_torch(str(tensor_path))
        else:
            from safetensors.numpy import load_file as load_numpy

            tensors = load_numpy(str(tensor_path))
    except Exception as exc:  # safetensors' own errors on a malformed header
        raise CheckpointError(f"checkpoint {tensor_path} cannot be read: {exc}") from None
    meta = dict(record["meta"])
    meta.setdefault("step", record["step"])
    return tensors, meta


def latest_checkpoint(directory: str | os.PathLike[str], verify: bool = True) -> pathlib.Path | None:
    """The newest complete (and, with ``verify``, intact) checkpoint in ``directory``, or None.

    A newer checkpoint that fails verification is reported with a warning and passed over.
    """
    for sidecar in reversed(list_checkpoints(directory)):
        try:
            record = _read_sidecar(sidecar)
            tensor_path = _verify(sidecar, record) if verify else sidecar.with_name(record["tensor_file"])
        except CheckpointError as exc:
            log.warning("skipping checkpoint: %s", exc)
            continue
        return tensor_path
    return None


def capture_rng_state() -> tuple[dict[str, Any], dict[str, Any]]:
    """Python, numpy and torch (CPU, CUDA) RNG states as ``(tensors, meta)`` for a checkpoint."""
    version, state, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    meta = {
        "python": [version, list(state), gauss],
        "numpy": {
            "name": np_name,
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "gauss": float(np_gauss),
        },
    }
    tensors: dict[str, Any] = {"rng.numpy.keys": np.asarray(np_keys, dtype=np.int64)}
    if _torch_available():
        import torch

        tensors["rng.numpy.keys"] = torch.from_numpy(tensors["rng.numpy.keys"])
        tensors["rng.torch.cpu"] = torch.get_rng_state()
        if torch.cuda.is_available():
            for i, s in enumerate(torch.cuda.get_rng_state_all()):
                tensors[f"rng.torch.cuda.{i}"] = s
    return tensors, {"rng": meta}


def restore_rng_state(tensors: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state` (extra keys in ``tensors``/``meta`` are ignored)."""
    rng = meta.get("rng")
    if rng is None or "rng.numpy.keys" not in tensors:
        raise CheckpointError("checkpoint has no RNG state (was capture_rng_state() saved with it?)")
    version, state, gauss = rng["python"]
    random.setstate((version, tuple(state), gauss))
    keys = np.asarray(
        tensors["rng.numpy.keys"].tolist()
        if _is_torch_tensor(tensors["rng.numpy.keys"])
        else tensors["rng.numpy.keys"],
        dtype=np.uint32,
    )
    n = rng["numpy"]
    np.random.set_state((n["name"], keys, n["pos"], n["has_gauss"], n["gauss"]))
    if "rng.torch.cpu" in tensors:
        import torch

        torch.set_rng_state(torch.as_tensor(tensors["rng.torch.cpu"], dtype=torch.uint8))
        cuda_keys = sorted(
            (k for k in tensors if k.startswith("rng.torch.cuda.")), key=lambda k: int(k.rsplit(".", 1)[1])
        )
        cuda = [tensors[k] for k in cuda_keys]
        if cuda and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([torch.as_tensor(c, dtype=torch.uint8) for c in cuda])
