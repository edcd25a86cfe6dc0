"""DataLoaders that stream from disk the same way on a laptop and under ``torchrun``.

Order is a function of ``(seed, epoch)`` only when the loop calls :func:`set_loader_epoch` at
the start of every epoch (it sets ``DistributedSampler.set_epoch`` and reseeds the shuffling
generator otherwise), so a resumed run sees the same batches as an uninterrupted one. Random
augmentations run in the workers; with ``workers=0`` they draw from the main process's torch RNG,
which ``research_systems_core.checkpoint`` captures, so bit-exact resume needs ``workers=0``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from research_systems_core import distributed, seeding
from research_systems_core.torch_utils import resolve_device
from research_systems_core.validation import check_int

__all__ = ["ShardedEvalSampler", "default_workers", "epoch_seed", "make_loader", "set_loader_epoch"]

_SEED_ATTR = "_research_systems_core_seed"


def default_workers() -> int:
    """``min(4, CPU count)`` loader workers."""
    return min(4, os.cpu_count() or 1)


class ShardedEvalSampler(DistributedSampler):
    """Every sample exactly once across ranks (rank r gets indices r, r + W, ...), no padding.

    ``DistributedSampler`` pads with repeated samples so ranks get equal counts; for evaluation that
    would count some images twice, so summed metrics (see ``evaluate_accuracy``) use this instead.
    """

    def __init__(self, dataset: Dataset, num_replicas: int | None = None, rank: int | None = None) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)
        n = len(dataset)  # type: ignore[arg-type]
        self.num_samples = max(0, math.ceil((n - self.rank) / self.num_replicas))
        self.total_size = n

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.total_size, self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples


def _device(device: Any) -> torch.device:
    if isinstance(device, torch.device):
        return device
    if isinstance(device, str):
        return resolve_device(device)
    raise TypeError(f"device must be a torch.device or a string such as 'cpu' or 'cuda', got {device!r}")


def make_loader(
    dataset: Any,
    *,
    batch_size: int,
    train: bool,
    device: torch.device | str,
    workers: int | None = None,
    seed: int = 0,
    drop_last: bool | None = None,
) -> DataLoader:
    """A DataLoader over ``dataset`` (a torch Dataset, or an ``ImageDataset``: its train or val split).

    Training shuffles with a generator seeded by ``seed``; ``drop_last`` defaults to ``train`` unless
    the data set is smaller than one batch. Under ``torch.distributed`` training uses a
    ``DistributedSampler`` and evaluation a :class:`ShardedEvalSampler`. Pinned memory on CUDA,
    persistent workers when ``workers > 0``. Call :func:`set_loader_epoch` at each epoch start.
    """
    from research_systems_core.vision.datasets import ImageDataset

    if isinstance(dataset, ImageDataset):
        dataset = dataset.train if train else dataset.val
    if not isinstance(dataset, Dataset):
        raise TypeError(f"dataset must be a torch Dataset or an ImageDataset, got {type(dataset).__name__}")
    batch_size = check_int("batch_size", batch_size, minimum=1)
    if not isinstance(train, bool):
        raise TypeError(f"train must be True or False, got {train!r}")
    workers = default_workers() if workers is None else check_int("workers", workers, minimum=0)
    seed = check_int("seed", seed, minimum=0, maximum=2**32 - 1)
    if drop_last is not None and not isinstance(drop_last, bool):
        raise TypeError(f"drop_last must be True, False or None, got {drop_last!r}")
    dev = _device(device)
    n = len(dataset)  # type: ignore[arg-type]
    if n == 0:
        raise ValueError("dataset is empty: a loader over it would yield no batches")
    sampler = _sampler(dataset, train, seed)
    per_rank = len(sampler) if sampler is not None else n
    if drop_last is None:
        drop_last = train and per_rank >= batch_size
    elif drop_last and per_rank < batch_size:
        raise ValueError(
            f"batch_size {batch_size} exceeds the {per_rank} samples per process with drop_last=True: "
            "the loader would yield nothing; lower batch_size or pass drop_last=False"
        )
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=train and sampler is None,
        sampler=sampler,
        num_workers=workers,
        pin_memory=dev.type == "cuda",
        drop_last=drop_last,
        persistent_workers=workers > 0,
        worker_init_fn=seeding.worker_init_fn,
        generator=seeding.torch_generator(seed),
    )
    setattr(loader, _SEED_ATTR, seed)
    return loader


def _sampler(dataset: Dataset, train: bool, seed: int) -> DistributedSampler | None:
    if train:
        return distributed.distributed_sampler(dataset, shuffle=True, seed=seed)
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        return None
    return ShardedEvalSampler(dataset)


def epoch_seed(seed: int, epoch: int) -> int:
    """A 32-bit seed mixed from ``(seed, epoch)`` (torch's CPU generator keeps only 32 bits)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1)[0])


def set_loader_epoch(loader: DataLoader, epoch: int) -> None:
    """Make this epoch's order depend on ``(seed, epoch)`` only: call it before iterating each epoch."""
    epoch = check_int("epoch", epoch, minimum=0, maximum=2**31 - 1)
    sampler = loader.sampler
    if isinstance(sampler, DistributedSampler):
        sampler.set_epoch(epoch)
    seed = getattr(loader, _SEED_ATTR, None)
    if loader.generator is not None and seed is not None:
        loader.generator.manual_seed(epoch_seed(seed, epoch))
