"""Distillation losses, each a module in the ``LOSSES`` registry.

Every loss returns the *whole* training loss of the student (label term included) and takes
``(student_logits, teacher_logits, labels, student_feat=None, teacher_feat=None)``; the feature
losses (``fd``, ``mgd``) own a learned projector and need the tapped feature maps.

Conventions (documented because peers differ):

- ``kd``: ``alpha * T^2 * KL(softmax(t/T) || softmax(s/T)) + (1 - alpha) * CE(s, y)`` with
  ``batchmean`` KL, exactly the reference's ``loss_kd`` with its defaults ``--alpha 0.1 --T 1``
  (``alpha`` weighs the *distillation* term; torchdistill's ``KDLoss`` puts alpha on the hard-label
  term: our alpha = 1 - theirs).
- ``nkd``: normalized KD (Yang et al. 2023, official yzd-v/cls_KD ``NKDLoss``, T=1, gamma=1.5)
  added to the student's cross-entropy as in the official distiller: ``CE(s, y) - mean(p_t[y] log
  p_s[y]) - gamma * T^2 * mean(sum_{k != y} q_t[k] log q_s[k])`` where ``q`` are the softmaxes over
  the non-target classes at temperature T. ``include_ce=False`` drops the CE term (what the SLaK
  reference's ``engine_kd.py`` does, with gamma 1). Mixup targets use their arg-max class, as
  both references do.
- Every label term takes class indices (optionally ``label_smoothing``) or soft mixup targets.
- ``fd``: label loss (CE, or KD with ``logit_loss="kd"``) + ``weight * d(proj(s), t)`` with a 1x1
  conv projector, resizing of the student map to the teacher's size (average pooling or bilinear), and ``d`` the
  smooth-L1 (beta 2, the reference's default) or MSE; ``target_norm`` normalises the teacher map
  (parameter-free LayerNorm over C, H, W, the reference's ``--target_Lnorm``).
- ``mgd``: label loss + ``alpha_mgd * sum((G(mask * align(s)) - t)^2) / N`` with a random
  channel mask dropping a fraction ``lambda_mgd`` and G = conv3x3-ReLU-conv3x3 (Yang et al. 2022,
  the reference's ``MGDLoss``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from research_systems_core.registry import Registry
from research_systems_core.validation import check_int, check_positive, check_range

__all__ = [
    "LOSSES",
    "LOSS_DEFAULTS",
    "DistillLoss",
    "FeatureDistillLoss",
    "KDLoss",
    "MGDLoss",
    "NKDLoss",
    "create_loss",
    "kd_loss",
    "match_feature",
    "soft_or_hard_ce",
]

LOSSES = Registry("distillation loss")

# loss -> (paper / reference default, this package's default); the README table is built from it.
LOSS_DEFAULTS = {
    "kd": ("SLaK main_KD.py: alpha 0.1 on the KL term, T 1", "alpha 0.1, T 1"),
    "nkd": ("official NKD (cls_KD): T 1, gamma 1.5, plus the student CE", "T 1, gamma 1.5, include_ce"),
    "fd": ("SLaK: smooth-L1 (beta 2) x lr_fd 1.0 + CE", "smooth-L1 beta 2, weight 1.0, + CE"),
    "mgd": ("MGD: alpha_mgd 7e-5, lambda_mgd 0.5, channel mask", "alpha_mgd 7e-5, lambda_mgd 0.5, channel"),
}


def _finite(name: str, value: float, strict: bool = True) -> float:
    """A finite positive (or non-negative) number: temperatures and weights."""
    value = check_positive(name, value, strict=strict)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def soft_or_hard_ce(logits: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy with class-index targets (optionally smoothed) or soft (mixup) targets."""
    if target.ndim == 2:
        return torch.sum(-target * F.log_softmax(logits, dim=-1), dim=-1).mean()
    return F.cross_entropy(logits, target, label_smoothing=label_smoothing)


def hard_labels(target: torch.Tensor) -> torch.Tensor:
    """Class indices of (possibly soft) targets."""
    return target.argmax(dim=1) if target.ndim == 2 else target


def kd_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    temperature: float,
    alpha: float,
    label_smoothing: float = 0.0,
) -> torch.Tensor:
    """``alpha * T^2 * KL(p_t^T || p_s^T) + (1 - alpha) * CE`` (KL averaged over the batch)."""
    t = temperature
    kl = F.kl_div(
        F.log_softmax(student_logits / t, dim=1),
        F.log_softmax(teacher_logits / t, dim=1),
        reduction="batchmean",
        log_target=True,
    )
    return alpha * t * t * kl + (1.0 - alpha) * soft_or_hard_ce(student_logits, labels, label_smoothing)


class DistillLoss(nn.Module):
    """Base class: ``forward(s_logits, t_logits, labels, s_feat=None, t_feat=None) -> loss``."""

    uses_features: bool = False

    def forward(
        self,
        student_logits: torch.Tensor,
        teacher_logits: torch.Tensor,
        labels: torch.Tensor,
        student_feat: torch.Tensor | None = None,
        teacher_feat: torch.Tensor | None = None,
    ) -> torch.Tensor:
        raise NotImplementedError


class KDLoss(DistillLoss):
    """Hinton's logit distillation (see the module docstring for the alpha convention)."""

    def __init__(self, temperature: float = 1.0, alpha: float = 0.1, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.temperature = _finite("temperature", temperature)
        self.alpha = check_range("alpha", alpha, 0.0, 1.0)
        self.label_smoothing = check_range("label_smoothing", label_smoothing, 0.0, 1.0, high_inclusive=False)

    def forward(self, student_logits, teacher_logits, labels, student_feat=None, teacher_feat=None):
        return kd_loss(
            student_logits, teacher_logits, labels, self.temperature, self.alpha, self.label_smoothing
        )


class NKDLoss(DistillLoss):
    """Normalized KD: target-class soft CE plus normalized non-target distribution matching."""

    def __init__(
        self,
        temperature: float = 1.0,
        gamma: float = 1.5,
        include_ce: bool = True,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.temperature = _finite("temperature", temperature)
        self.gamma = _finite("gamma", gamma, strict=False)
        if not isinstance(include_ce, bool):
            raise TypeError(f"include_ce must be True or False, got {include_ce!r}")
        self.include_ce = include_ce
        self.label_smoothing = check_range("label_smoothing", label_smoothing, 0.0, 1.0, high_inclusive=False)

    def forward(self, student_logits, teacher_logits, labels, student_feat=None, teacher_feat=None):
        ce = soft_or_hard_ce(student_logits, labels, self.label_smoothing) if self.include_ce else 0.0
        return ce + self.nkd_term(student_logits, teacher_logits, hard_labels(labels))

    def nkd_term(self, student_logits, teacher_logits, labels):
        """The NKD loss alone (the official ``NKDLoss.forward``)."""
        target = labels.view(-1, 1)
        log_p_s = F.log_softmax(student_logits, dim=1)
        p_t = F.softmax(teacher_logits, dim=1)
        soft = -(p_t.gather(1, target).detach() * log_p_s.gather(1, target)).mean()
        is_target = torch.zeros_like(student_logits, dtype=torch.bool).scatter_(1, target, True)
        t = self.temperature
        # Softmax over the non-target classes only (the target gets -inf, i.e. probability 0).
        log_q_s = F.log_softmax((student_logits / t).masked_fill(is_target, float("-inf")), dim=1)
        q_t = F.softmax((teacher_logits / t).masked_fill(is_target, float("-inf")), dim=1)
        cross = (q_t * log_q_s.masked_fill(is_target, 0.0)).sum(dim=1).mean()
        return soft - self.gamma * t * t * cross


def match_feature(student_feat: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize a student map (N, C, h, w) to the teacher's spatial ``size`` (average-pool or bilinear).

    Raises ValueError when the maps are not 4-D or their aspect ratios differ (no resize matches them).
    """
    if student_feat.ndim != 4:
        raise ValueError(f"student feature must be N x C x H x W, got shape {tuple(student_feat.shape)}")
    h, w = student_feat.shape[-2:]
    th, tw = size
    if h * tw != th * w:
        raise ValueError(
            f"student feature map {h}x{w} cannot be matched to the teacher's {th}x{tw}: aspect ratios differ; "
            "tap another stage (--student-tap/--teacher-tap)"
        )
    if (h, w) == (th, tw):
        return student_feat
    if h > th:  # shrink by averaging, enlarge by bilinear interpolation
        return F.adaptive_avg_pool2d(student_feat, (th, tw))
    return F.interpolate(student_feat, size=(th, tw), mode="bilinear", align_corners=False)


class _FeatureLoss(DistillLoss):
    uses_features = True

    def __init__(
        self, student_channels: int, teacher_channels: int, logit_loss: str, temperature: float, alpha: float,
        label_smoothing: float = 0.0,
    ):  # fmt: skip
        super().__init__()
        self.student_channels = check_int("student_channels", student_channels, minimum=1)
        self.teacher_channels = check_int("teacher_channels", teacher_channels, minimum=1)
        if logit_loss not in ("ce", "kd"):
            raise ValueError(f"logit_loss must be 'ce' or 'kd', got {logit_loss!r}")
        self.logit_loss = logit_loss
        self.temperature = _finite("temperature", temperature)
        self.alpha = check_range("alpha", alpha, 0.0, 1.0)
        self.label_smoothing = check_range("label_smoothing", label_smoothing, 0.0, 1.0, high_inclusive=False)

    def _check(self, student_feat: torch.Tensor | None, teacher_feat: torch.Tensor | None) -> None:
        if student_feat is None or teacher_feat is None:
            raise ValueError(f"{type(self).__name__} needs the student and teacher feature maps")
        if teacher_feat.ndim != 4:
            raise ValueError(f"teacher feature must be N x C x H x W, got shape {tuple(teacher_feat.shape)}")
        if student_feat.shape[1] != self.student_channels or teacher_feat.shape[1] != self.teacher_channels:
            raise ValueError(
                f"feature channels {student_feat.shape[1]} (student) / {teacher_feat.shape[1]} (teacher) do not match "
                f"the projector built for {self.student_channels} -> {self.teacher_channels}"
            )

    def label_loss(
        self, student_logits: torch.Tensor, teacher_logits: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        if self.logit_loss == "kd":
            return kd_loss(
                student_logits, teacher_logits, labels, self.temperature, self.alpha, self.label_smoothing
            )
        return soft_or_hard_ce(student_logits, labels, self.label_smoothing)


class FeatureDistillLoss(_FeatureLoss):
    """Feature distillation: 1x1-conv projector on the student map, smooth-L1 or MSE to the teacher map."""

    def __init__(
        self,
        student_channels: int,
        teacher_channels: int,
        distance: str = "smooth_l1",
        weight: float = 1.0,
        target_norm: bool = False,
        logit_loss: str = "ce",
        temperature: float = 1.0,
        alpha: float = 0.1,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(student_channels, teacher_channels, logit_loss, temperature, alpha, label_smoothing)
        if distance not in ("smooth_l1", "mse"):
            raise ValueError(f"distance must be 'smooth_l1' or 'mse', got {distance!r}")
        self.distance = distance
        self.weight = _finite("weight", weight, strict=False)
        self.target_norm = bool(target_norm)
        self.projector = nn.Conv2d(student_channels, teacher_channels, kernel_size=1)

    def feature_loss(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
        self._check(student_feat, teacher_feat)
        pred = self.projector(match_feature(student_feat, tuple(teacher_feat.shape[-2:])))
        target = teacher_feat.detach()
        if self.target_norm:
            target = F.layer_norm(target, target.shape[1:])
        if self.distance == "mse":
            return F.mse_loss(pred, target)
        return F.smooth_l1_loss(pred, target, beta=2.0)

    def forward(self, student_logits, teacher_logits, labels, student_feat=None, teacher_feat=None):
        loss = self.label_loss(student_logits, teacher_logits, labels)
        return loss + self.weight * self.feature_loss(student_feat, teacher_feat)


class MGDLoss(_FeatureLoss):
    """Masked generative distillation: regenerate the teacher map from a channel-masked student map."""

    def __init__(
        self,
        student_channels: int,
        teacher_channels: int,
        alpha_mgd: float = 7e-5,
        lambda_mgd: float = 0.5,
        mask: str = "channel",
        logit_loss: str = "ce",
        temperature: float = 1.0,
        alpha: float = 0.1,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(student_channels, teacher_channels, logit_loss, temperature, alpha, label_smoothing)
        self.alpha_mgd = _finite("alpha_mgd", alpha_mgd, strict=False)
        self.lambda_mgd = check_range("lambda_mgd", lambda_mgd, 0.0, 1.0, high_inclusive=False)
        if mask not in ("channel", "spatial"):
            raise ValueError(f"mask must be 'channel' or 'spatial', got {mask!r}")
        self.mask = mask
        c = teacher_channels
        self.align = nn.Conv2d(student_channels, c, 1) if student_channels != c else nn.Identity()
        self.generation = nn.Sequential(
            nn.Conv2d(c, c, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(c, c, 3, padding=1)
        )

    def feature_loss(self, student_feat: torch.Tensor, teacher_feat: torch.Tensor) -> torch.Tensor:
        self._check(student_feat, teacher_feat)
        n, c, h, w = teacher_feat.shape
        aligned = self.align(match_feature(student_feat, (h, w)))
        shape = (n, c, 1, 1) if self.mask == "channel" else (n, 1, h, w)
        keep = (torch.rand(shape, device=aligned.device) >= self.lambda_mgd).to(aligned.dtype)
        generated = self.generation(aligned * keep)
        return F.mse_loss(generated, teacher_feat.detach(), reduction="sum") / n

    def forward(self, student_logits, teacher_logits, labels, student_feat=None, teacher_feat=None):
        loss = self.label_loss(student_logits, teacher_logits, labels)
        return loss + self.alpha_mgd * self.feature_loss(student_feat, teacher_feat)


class CELoss(DistillLoss):
    """Plain cross-entropy (the student trained from scratch; the teacher is ignored)."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = check_range("label_smoothing", label_smoothing, 0.0, 1.0, high_inclusive=False)

    def forward(self, student_logits, teacher_logits, labels, student_feat=None, teacher_feat=None):
        return soft_or_hard_ce(student_logits, labels, self.label_smoothing)


@LOSSES.register("none")
def _ce(label_smoothing: float = 0.0) -> CELoss:
    return CELoss(label_smoothing)


@LOSSES.register("kd")
def _kd(temperature: float = 1.0, alpha: float = 0.1, label_smoothing: float = 0.0) -> KDLoss:
    return KDLoss(temperature, alpha, label_smoothing)


@LOSSES.register("nkd")
def _nkd(
    temperature: float = 1.0, gamma: float = 1.5, include_ce: bool = True, label_smoothing: float = 0.0
) -> NKDLoss:
    return NKDLoss(temperature, gamma, include_ce, label_smoothing)


@LOSSES.register("fd")
def _fd(student_channels: int, teacher_channels: int, **kwargs: object) -> FeatureDistillLoss:
    return FeatureDistillLoss(student_channels, teacher_channels, **kwargs)


@LOSSES.register("mgd")
def _mgd(student_channels: int, teacher_channels: int, **kwargs: object) -> MGDLoss:
    return MGDLoss(student_channels, teacher_channels, **kwargs)


def create_loss(
    name: str, student_channels: int | None = None, teacher_channels: int | None = None, **kwargs: object
) -> DistillLoss:
    """Build a loss by name; ``fd``/``mgd`` need the tapped feature channels of student and teacher."""
    factory = LOSSES.get(name)
    if name in ("fd", "mgd"):
        if student_channels is None or teacher_channels is None:
            raise ValueError(f"loss {name!r} needs student_channels and teacher_channels")
        return factory(student_channels=student_channels, teacher_channels=teacher_channels, **kwargs)
    return factory(**kwargs)
