import math

import pytest
import torch

from sparse_dst.schedules import cosine_update_rate, cubic_sparsity
from sparse_dst.scores import channel_density, channel_scores


def test_cosine_update_rate_hand_values() -> None:
    assert cosine_update_rate(0, 100, 0.5, 0.0) == pytest.approx(0.5)
    assert cosine_update_rate(50, 100, 0.5, 0.0) == pytest.approx(0.25)
    assert cosine_update_rate(25, 100, 0.5, 0.1) == pytest.approx(0.1 + 0.4 * (1 + math.cos(math.pi / 4)) / 2)
    assert cosine_update_rate(100, 100, 0.5, 0.1) == pytest.approx(0.1)
    assert cosine_update_rate(500, 100, 0.5, 0.1) == pytest.approx(0.1)


def test_cubic_schedule_hand_values() -> None:
    # s(t) = Sc + (0 - Sc) * (1 - (t - t0) / (t1 - t0)) ** 3 with Sc = 0.5, t0 = 0, t1 = 100
    assert cubic_sparsity(0, 0.5, 0, 100) == 0.0
    assert cubic_sparsity(25, 0.5, 0, 100) == pytest.approx(0.5 - 0.5 * 0.75**3)  # 0.2890625
    assert cubic_sparsity(50, 0.5, 0, 100) == pytest.approx(0.4375)
    assert cubic_sparsity(90, 0.5, 0, 100) == pytest.approx(0.4995)
    assert cubic_sparsity(100, 0.5, 0, 100) == 0.5
    assert cubic_sparsity(10, 0.5, 20, 120) == 0.0  # before the start
    assert cubic_sparsity(70, 0.8, 20, 120, initial=0.2) == pytest.approx(0.8 - 0.6 * 0.125)


def test_umm_and_mmm_hand_computed() -> None:
    weight = torch.tensor([[1.0, -2.0, 0.0, 4.0], [0.5, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]])
    mask = torch.tensor(
        [[True, True, False, True], [True, False, False, False], [False, False, False, False]]
    )
    # UMM: mean |w| over the whole row, masked zeros included
    assert channel_scores(weight, mask, "umm").tolist() == pytest.approx([7 / 4, 0.5 / 4, 0.0])
    # MMM: mean |w| over active weights only; a row without active weights scores 0
    assert channel_scores(weight, mask, "mmm").tolist() == pytest.approx([7 / 3, 0.5, 0.0])
    assert channel_density(mask).tolist() == pytest.approx([0.75, 0.25, 0.0])


def test_umm_on_conv_filters_and_mask_is_applied() -> None:
    weight = torch.arange(2 * 2 * 2 * 2, dtype=torch.float32).reshape(2, 2, 2, 2) - 4
    mask = torch.zeros_like(weight, dtype=torch.bool)
    mask[0, 0] = True  # first filter keeps its first kernel: |-4|,|-3|,|-2|,|-1|
    mask[1] = True
    umm = channel_scores(weight, mask, "umm")
    assert umm[0].item() == pytest.approx(10 / 8)
    assert umm[1].item() == pytest.approx(sum(abs(v) for v in range(4, 12)) / 8)
    assert channel_scores(weight, mask, "mmm")[0].item() == pytest.approx(10 / 4)


def test_unknown_score_method() -> None:
    with pytest.raises(ValueError, match="umm"):
        channel_scores(torch.ones(2, 2), method="l2")
