"""Adversarial training with Weighted Optimization Trajectories (WOT)."""

from importlib.metadata import version as _version

__version__ = _version("robust-at")

__all__ = ["__version__"]
