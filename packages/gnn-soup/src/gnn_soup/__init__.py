"""Graph Ladling: data-centric model soups for GNNs."""

from importlib.metadata import version as _version

__version__ = _version("gnn-soup")

__all__ = ["__version__"]
