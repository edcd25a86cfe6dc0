"""One call to make a run repeatable: python, numpy and (when installed) torch."""

from __future__ import annotations

import importlib.util
import os
import random
from typing import Any

import numpy as np

from research_systems_core.validation import check_int

__all__ = ["numpy_rng", "seed_everything", "torch_generator", "worker_init_fn"]

_MAX_SEED = 2**32 - 1


def _torch_available() -> bool:
    return importlib.util.find_spec("torch") is not None


def seed_everything(seed: int, deterministic: bool = False) -> int:
    """Seed python, numpy and torch (CPU and CUDA); optionally ask torch for deterministic kernels."""
    seed = check_int("seed", seed, minimum=0, maximum=_MAX_SEED)
    os.environ["PYTHONHASHSEED"] = str(seed)
    random.seed(seed)
    np.random.seed(seed)
    if _torch_available():
        import torch

        torch.manual_seed(seed)  # also seeds every CUDA device
        if deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.benchmark = False
    return seed


def worker_init_fn(worker_id: int) -> None:
    """DataLoader ``worker_init_fn``: derive python/numpy seeds from torch's per-worker seed."""
    import torch

    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def torch_generator(seed: int) -> Any:
    """A ``torch.Generator`` seeded with ``seed`` (pass it to DataLoader/randperm for repeatable order)."""
    import torch

    gen = torch.Generator()
    gen.manual_seed(check_int("seed", seed, minimum=0, maximum=_MAX_SEED))
    return gen


def numpy_rng(seed: int | None) -> np.random.Generator:
    """A numpy ``Generator`` (``None`` gives fresh entropy)."""
    return np.random.default_rng(seed)
