import math

import pytest
import torch
import torch.nn.functional as F

from research_systems_core.validation import UnknownNameError
from vision_kd.losses import LOSSES, FeatureDistillLoss, KDLoss, MGDLoss, NKDLoss, create_loss, match_feature


def test_kd_matches_hand_computed_value_with_t_squared():
    # T = 2: student softmax(0, 0)/2 = (1/2, 1/2); teacher softmax((2 ln 3, 0) / 2) = (3/4, 1/4).
    s = torch.tensor([[0.0, 0.0]])
    t = torch.tensor([[2 * math.log(3.0), 0.0]])
    y = torch.tensor([0])
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    expected = 0.9 * 4.0 * kl + 0.1 * math.log(2.0)
    assert KDLoss(temperature=2.0, alpha=0.9)(s, t, y).item() == pytest.approx(expected, rel=1e-6)
    # alpha = 1: pure distillation term, scaled by T^2 = 4
    assert KDLoss(temperature=2.0, alpha=1.0)(s, t, y).item() == pytest.approx(4.0 * kl, rel=1e-6)
    # alpha = 0: plain cross-entropy
    assert KDLoss(temperature=2.0, alpha=0.0)(s, t, y).item() == pytest.approx(math.log(2.0), rel=1e-6)


def test_kd_is_zero_distillation_when_student_equals_teacher():
    logits = torch.randn(5, 7)
    y = torch.randint(0, 7, (5,))
    loss = KDLoss(3.0, 1.0)(logits, logits, y)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


def test_nkd_hand_computed():
    s = torch.zeros(1, 3)
    t = torch.log(torch.tensor([[2.0, 3.0, 1.0]]))
    y = torch.tensor([0])
    # target weight 2/6, student target prob 1/3; non-target teacher (3/4, 1/4), student (1/2, 1/2)
    expected = -(1 / 3) * math.log(1 / 3) - 1.5 * (0.75 * math.log(0.5) + 0.25 * math.log(0.5))
    # the official NKD default (gamma 1.5) is added to the student's CE, here -log(1/3)
    assert NKDLoss()(s, t, y).item() == pytest.approx(math.log(3) + expected, rel=1e-6)
    assert NKDLoss(include_ce=False)(s, t, y).item() == pytest.approx(expected, rel=1e-6)
    # mixup targets: the arg-max class is the target, CE on the soft target
    soft = torch.tensor([[0.7, 0.2, 0.1]])
    soft_ce = -(0.7 + 0.2 + 0.1) * math.log(1 / 3)
    assert NKDLoss()(s, t, soft).item() == pytest.approx(soft_ce + expected, rel=1e-6)


def test_defaults_are_the_papers():
    from vision_kd.losses import create_loss

    kd = create_loss("kd")
    assert (kd.temperature, kd.alpha) == (1.0, 0.1)  # SLaK main_KD.py --T 1 --alpha 0.1
    nkd = create_loss("nkd")
    assert (nkd.temperature, nkd.gamma, nkd.include_ce) == (1.0, 1.5, True)  # official NKD + CE


def _nkd_reference_formula(logit_s, logit_t, label, temp, alpha):
    """The reference's NKDLoss, transcribed independently for comparison (no ties in the inputs)."""
    label = label.view(-1, 1)
    y_i, t_i = F.softmax(logit_s, 1), F.softmax(logit_t, 1)
    y_t, w_t = y_i.gather(1, label), t_i.gather(1, label)
    mask = torch.zeros_like(logit_s).scatter_(1, label, 1).bool()
    big_t, big_s = F.softmax((logit_t - 1000 * mask) / temp, 1), F.softmax((logit_s - 1000 * mask) / temp, 1)
    tt, st = big_t.gather(1, label), big_s.gather(1, label)
    np_t, np_s = big_t / (1 - tt), big_s / (1 - st)
    np_t = np_t.masked_fill(mask, 0.0)
    np_s = np_s.masked_fill(mask, 1.0)
    return -(w_t * torch.log(y_t)).mean() - alpha * temp**2 * (np_t * torch.log(np_s)).sum(1).mean()


@pytest.mark.parametrize("temp", [1.0, 2.5])
def test_nkd_matches_reference_formula(temp):
    s, t = torch.randn(6, 10), torch.randn(6, 10) * 2
    y = torch.randint(0, 10, (6,))
    ours = NKDLoss(temperature=temp, gamma=1.0, include_ce=False)(s, t, y)
    assert ours.item() == pytest.approx(_nkd_reference_formula(s, t, y, temp, 1.0).item(), rel=1e-5)


def test_kd_gradient_matches_finite_differences():
    torch.manual_seed(1)
    s = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    t = torch.randn(3, 4, dtype=torch.float64)
    y = torch.tensor([0, 2, 3])
    assert torch.autograd.gradcheck(lambda z: KDLoss(2.0, 0.7)(z, t, y), (s,))
    assert torch.autograd.gradcheck(lambda z: NKDLoss(1.5, 1.0)(z, t, y), (s,))


@pytest.mark.parametrize(
    ("student", "teacher"), [((4, 8, 8), (6, 4, 4)), ((4, 4, 8), (6, 8, 16)), ((3, 5, 5), (3, 5, 5))]
)
def test_fd_projector_shapes(student, teacher):
    loss = FeatureDistillLoss(student[0], teacher[0])
    s_feat, t_feat = torch.randn(2, *student), torch.randn(2, *teacher)
    pred = loss.projector(match_feature(s_feat, teacher[1:]))
    assert pred.shape == t_feat.shape
    value = loss(torch.randn(2, 5), torch.randn(2, 5), torch.tensor([0, 1]), s_feat, t_feat)
    assert value.ndim == 0 and torch.isfinite(value)


def test_fd_value_is_ce_plus_smooth_l1_of_projection():
    loss = FeatureDistillLoss(2, 3, weight=0.5)
    s_feat, t_feat = torch.randn(2, 2, 4, 4), torch.randn(2, 3, 4, 4)
    logits, y = torch.randn(2, 5), torch.tensor([1, 4])
    expected = F.cross_entropy(logits, y) + 0.5 * F.smooth_l1_loss(loss.projector(s_feat), t_feat, beta=2.0)
    assert loss(logits, None, y, s_feat, t_feat).item() == pytest.approx(expected.item(), rel=1e-6)


def test_fd_unmatchable_shapes_raise_clear_errors():
    loss = FeatureDistillLoss(4, 6)
    with pytest.raises(ValueError, match="aspect ratios differ"):
        loss(torch.randn(2, 5), None, torch.tensor([0, 1]), torch.randn(2, 4, 8, 4), torch.randn(2, 6, 4, 8))
    with pytest.raises(ValueError, match="channels 5 \\(student\\)"):
        loss(torch.randn(2, 5), None, torch.tensor([0, 1]), torch.randn(2, 5, 4, 4), torch.randn(2, 6, 4, 4))
    with pytest.raises(ValueError, match="N x C x H x W"):
        loss(torch.randn(2, 5), None, torch.tensor([0, 1]), torch.randn(2, 4, 16), torch.randn(2, 6, 4, 4))


def test_mgd_mask_and_value():
    torch.manual_seed(0)
    loss = MGDLoss(4, 4, alpha_mgd=1.0, lambda_mgd=0.0)  # nothing masked: G(s) vs t
    s_feat, t_feat = torch.randn(2, 4, 3, 3), torch.randn(2, 4, 3, 3)
    expected = ((loss.generation(s_feat) - t_feat) ** 2).sum() / 2
    assert loss.feature_loss(s_feat, t_feat).item() == pytest.approx(expected.item(), rel=1e-5)
    assert isinstance(MGDLoss(3, 4).align, torch.nn.Conv2d)


def test_bad_loss_options_name_the_value():
    with pytest.raises(ValueError, match="temperature must be > 0, got 0"):
        KDLoss(temperature=0.0)
    with pytest.raises(ValueError, match="temperature must be > 0, got -1"):
        create_loss("nkd", temperature=-1.0)
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\], got 1.5"):
        KDLoss(alpha=1.5)
    with pytest.raises(UnknownNameError, match=r"'fdd'.*'fd'"):
        create_loss("fdd", 4, 4)
    with pytest.raises(ValueError, match="needs student_channels"):
        create_loss("fd")
    assert set(LOSSES.names()) == {"none", "kd", "nkd", "fd", "mgd"}
