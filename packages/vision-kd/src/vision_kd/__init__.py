"""Large-kernel ConvNets as knowledge-distillation teachers for small-kernel ConvNets."""

from importlib.metadata import version as _version

from vision_kd import models  # noqa: F401  (registers the slak_* and kd_* models in timm)
from vision_kd.models import create_model

__version__ = _version("vision-kd")

__all__ = ["__version__", "create_model"]
