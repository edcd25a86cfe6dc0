"""Chase: channel-aware dynamic sparse training."""

from importlib.metadata import version as _version

__version__ = _version("sparse-dst")

__all__ = ["__version__"]
