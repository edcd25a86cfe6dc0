"""Models: SLaK and CPU-sized variants registered in timm, plus a validating ``create_model``."""

from vision_kd.models import slak as _slak  # noqa: F401  (registers slak_* in timm)
from vision_kd.models import small as _small  # noqa: F401  (registers kd_* in timm)
from vision_kd.models.factory import create_model, num_classes_of
from vision_kd.models.slak import LargeKernelConv, SLaK, reparameterize_model

__all__ = ["LargeKernelConv", "SLaK", "create_model", "num_classes_of", "reparameterize_model"]
