"""Shared utilities of the research monorepo (no torch import at this level)."""

from importlib.metadata import version as _version

__version__ = _version("research-systems-core")
