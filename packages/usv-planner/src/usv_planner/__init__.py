"""GPMP2 path planning for unmanned surface vehicles with a spatiotemporal ocean-current factor."""

from importlib.metadata import version as _version

__version__ = _version("usv-planner")

__all__ = ["__version__"]
