"""NeuroFS: supervised feature selection by neuron evolution in sparse neural networks."""

from importlib.metadata import version as _version
from typing import Any

__version__ = _version("feature-select")

__all__ = ["NeuroFS", "__version__"]


def __getattr__(name: str) -> Any:
    # lazy, so `feature-select --help` does not import torch and scikit-learn
    if name == "NeuroFS":
        from feature_select.selector import NeuroFS

        return NeuroFS
    raise AttributeError(f"module 'feature_select' has no attribute {name!r}")
