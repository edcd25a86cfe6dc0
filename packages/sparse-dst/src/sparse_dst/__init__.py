"""Chase: channel-aware dynamic sparse training."""

from __future__ import annotations

from importlib import import_module
from importlib.metadata import version as _version
from typing import Any

__version__ = _version("sparse-dst")

_EXPORTS = {
    "Masking": "sparse_dst.masking",
    "DSTConfig": "sparse_dst.masking",
    "Chase": "sparse_dst.chase",
    "ChaseConfig": "sparse_dst.chase",
    "create_model": "sparse_dst.models",
    "MODELS": "sparse_dst.models",
    "find_channel_groups": "sparse_dst.tracing",
    "UnsupportedGraphError": "sparse_dst.tracing",
    "remove_channels": "sparse_dst.surgery",
    "recalibrate_batchnorm": "sparse_dst.surgery",
    "channel_scores": "sparse_dst.scores",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    """Import the public API lazily, so ``sparse-dst --help`` does not pay for importing torch."""
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'sparse_dst' has no attribute {name!r}")
