"""Essential Sparsity, Junk DNA Hypothesis, Instant Soup Pruning and SMC-Bench for pre-trained transformers."""

from importlib.metadata import version as _version

__version__ = _version("llm-sparsity")

__all__ = ["__version__"]
