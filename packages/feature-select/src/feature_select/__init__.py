"""NeuroFS: supervised feature selection by neuron evolution in sparse neural networks."""

from importlib.metadata import version as _version

__version__ = _version("feature-select")

__all__ = ["__version__"]
