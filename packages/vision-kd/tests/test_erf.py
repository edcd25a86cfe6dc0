import numpy as np
import pytest
import torch

from vision_kd.erf import area_ratio, erf_map, erf_summary, normalise_erf


def _single_conv(k: int) -> torch.nn.Module:
    conv = torch.nn.Conv2d(1, 1, k, padding=k // 2, bias=False)
    torch.nn.init.constant_(conv.weight, 1.0)
    return conv


@pytest.mark.parametrize("k", [3, 5, 7])
def test_single_conv_has_a_k_by_k_erf(k):
    model = _single_conv(k)
    images = torch.rand(4, 1, 21, 21) + 0.1  # positive: the centre unit is active
    scores = erf_map(model, images, feature_fn=lambda m, x: m(x))
    support = scores > 0
    rows, cols = np.nonzero(support)
    assert rows.max() - rows.min() + 1 == k and cols.max() - cols.min() + 1 == k
    assert support.sum() == k * k
    side, ratio = area_ratio(normalise_erf(scores), 0.99)
    assert side == k and ratio == pytest.approx(k * k / 21**2)


def test_stacked_convs_grow_the_erf():
    two = torch.nn.Sequential(_single_conv(3), _single_conv(3))
    scores = erf_map(two, torch.rand(2, 1, 15, 15) + 0.1, feature_fn=lambda m, x: m(x))
    assert (scores > 0).sum() == 25  # 3x3 twice -> 5x5
    # a triangle-shaped (not flat) profile: the centre gets the most gradient paths
    assert scores[7, 7] == scores.max() and scores[5, 5] < scores[7, 7]


def test_area_ratio_hand_cases_and_never_fails():
    data = np.zeros((9, 9))
    data[4, 4] = 1.0
    assert area_ratio(data, 0.5) == (1, 1 / 81)
    flat = np.ones((4, 6))  # even sizes: squares clip at the border and finally cover everything
    _, ratio = area_ratio(flat, 0.99)
    assert ratio == 1.0
    with pytest.raises(ValueError, match="threshold must be in"):
        area_ratio(flat, 1.0)
    with pytest.raises(ValueError, match="all zero"):
        area_ratio(np.zeros((3, 3)), 0.5)


def test_normalise_and_summary():
    scores = np.array([[0.0, 9.0], [99.0, 0.0]])
    norm = normalise_erf(scores)
    np.testing.assert_allclose(norm, [[0.0, 0.5], [1.0, 0.0]])
    summary = erf_summary(scores)
    assert set(summary) == {"area@0.2", "area@0.3", "area@0.5", "area@0.99"}
    assert all(0 < v <= 1 for v in summary.values())
