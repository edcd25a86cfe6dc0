"""Large-kernel ConvNets as knowledge-distillation teachers for small-kernel ConvNets."""

from importlib.metadata import version as _version

__version__ = _version("vision-kd")

__all__ = ["__version__"]
