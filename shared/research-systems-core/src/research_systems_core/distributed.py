"""What a training loop needs to run unchanged on one CPU or under ``torchrun`` on many GPUs.

``init_distributed()`` reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR,
MASTER_PORT); without it the run is a single process and every helper here is a no-op. Only the
main process (rank 0) should write results and checkpoints.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
from collections.abc import Mapping
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "DistInfo",
    "barrier",
    "cleanup",
    "distributed_sampler",
    "init_distributed",
    "is_main_process",
    "reduce_mean",
    "reduce_metrics",
    "wrap_model",
]


@dataclasses.dataclass(frozen=True)
class DistInfo:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    is_distributed: bool

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from None


def init_distributed(backend: str | None = None, timeout_s: float = 1800.0) -> DistInfo:
    """Join the process group torchrun describes (gloo on CPU, nccl on CUDA), or run alone."""
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    cuda = torch.cuda.is_available()
    device = torch.device(f"cuda:{local_rank}") if cuda else torch.device("cpu")
    if world_size <= 1:
        return DistInfo(0, 1, 0, device, False)
    if not 0 <= rank < world_size:
        raise ValueError(f"RANK must be in [0, {world_size}), got {rank}")
    backend = backend or ("nccl" if cuda else "gloo")
    if cuda:
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=dt.timedelta(seconds=timeout_s))
    return DistInfo(rank, world_size, local_rank, device, True)


def _active() -> bool:
    return dist.is_available() and dist.is_initialized()


def is_main_process() -> bool:
    return not _active() or dist.get_rank() == 0


def barrier() -> None:
    if _active():
        dist.barrier()


def cleanup() -> None:
    if _active():
        dist.destroy_process_group()


def distributed_sampler(dataset: Any, shuffle: bool = True, seed: int = 0, drop_last: bool = False) -> Any:
    """A ``DistributedSampler`` when running distributed, else None (let the DataLoader shuffle)."""
    if not _active():
        return None
    from torch.utils.data import DistributedSampler

    return DistributedSampler(dataset, shuffle=shuffle, seed=seed, drop_last=drop_last)


def reduce_mean(value: float | torch.Tensor) -> float:
    """Mean of a scalar over all ranks (the value itself when not distributed)."""
    t = torch.as_tensor(value, dtype=torch.float64).clone()
    if _active():
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= dist.get_world_size()
    return float(t)


def reduce_metrics(metrics: Mapping[str, float]) -> dict[str, float]:
    """Average every scalar metric over ranks in one all-reduce (same key order on every rank)."""
    keys = sorted(metrics)
    t = torch.tensor([float(metrics[k]) for k in keys], dtype=torch.float64)
    if _active():
        if dist.get_backend() == "nccl":
            t = t.cuda()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= dist.get_world_size()
    return {k: float(v) for k, v in zip(keys, t.tolist(), strict=True)}


def wrap_model(model: nn.Module, info: DistInfo) -> nn.Module:
    """Move to the rank's device and wrap in DistributedDataParallel when distributed."""
    model = model.to(info.device)
    if not info.is_distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    device_ids = [info.device.index] if info.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids)
