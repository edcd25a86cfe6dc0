import itertools
import math

import pytest
import timm
import torch
from torch import nn

import vision_kd  # noqa: F401  (registers the models)
from research_systems_core.masks import erk_densities
from vision_kd.models import reparameterize_model
from vision_kd.sparse import (
    DynamicSparsity,
    SparseConfig,
    layer_densities,
    nonzero_parameter_count,
    prunable_names,
    prune_rate_at,
)


def _pico():
    torch.manual_seed(0)
    return timm.create_model("slak_pico", in_chans=1, num_classes=10, patch_size=1, kernel_sizes=(7, 5, 3, 3))


def test_prunable_weights_are_the_2d_and_4d_ones():
    model = _pico()
    names = prunable_names(model)
    params = dict(model.named_parameters())
    assert all(params[n].dim() in (2, 4) for n in names)
    assert "stem.0.weight" in names and "head.weight" in names and "stages.0.1.pwconv1.weight" in names
    assert "stages.0.1.large_kernel.branches.small.conv.weight" in names
    assert not any(n.endswith(".bias") or "norm" in n or n.endswith("gamma") for n in names)
    only = prunable_names(model, only_large_kernels=True)
    assert only and all(
        "branches.vertical" in n or "branches.horizontal" in n or "branches.large" in n for n in only
    )


@pytest.mark.parametrize(("name", "reported_m"), [("slak_tiny", 30), ("slak_small", 55), ("slak_base", 95)])
def test_paper_models_match_the_reported_parameter_counts_at_40_percent(name, reported_m):
    with torch.device("meta"):
        model = timm.create_model(name)
    count = nonzero_parameter_count(model, 0.4)
    assert abs(count / 1e6 - reported_m) < 0.5, count  # 30.47M, 54.78M, 94.91M


def test_density_rules_hit_the_overall_budget():
    model = _pico()
    params = dict(model.named_parameters())
    names = prunable_names(model)
    total = sum(params[n].numel() for n in names)
    uni = layer_densities(model, SparseConfig(sparsity=0.4, init="uniform"))
    assert set(uni.values()) == {0.6}
    erk = layer_densities(model, SparseConfig(sparsity=0.4, init="erk"))
    assert erk == erk_densities({n: tuple(params[n].shape) for n in names}, 0.6)
    x, y = torch.randn(16, 1, 8, 8), torch.randint(0, 10, (16,))
    snip = layer_densities(model, SparseConfig(sparsity=0.4, init="snip"), batch=(x, y))
    kept = sum(snip[n] * params[n].numel() for n in names)
    assert kept == pytest.approx(0.6 * total, abs=1.0)
    assert len(set(round(d, 3) for d in snip.values())) > 1  # SNIP gives layers different densities
    with pytest.raises(ValueError, match="needs one training batch"):
        layer_densities(model, SparseConfig(init="snip"))


def test_cosine_decay_of_the_prune_rate():
    cfg = SparseConfig(prune_rate=0.5, min_prune_rate=0.005)
    assert prune_rate_at(0, 100, cfg) == pytest.approx(0.5)
    assert prune_rate_at(50, 100, cfg) == pytest.approx(0.005 + 0.5 * 0.495)
    assert prune_rate_at(100, 100, cfg) == pytest.approx(0.005)
    rates = [prune_rate_at(s, 100, cfg) for s in range(101)]
    assert all(a >= b for a, b in itertools.pairwise(rates))


class _One(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.tensor([[0.9, -0.1, 0.5, 0.05, -0.7, 0.3, 0.0, 0.0, 0.0, 0.0]]))


def test_prune_smallest_magnitude_and_regrow_at_random_by_hand():
    module = _One()
    opt = torch.optim.SGD(module.parameters(), lr=0.1)
    sparse = DynamicSparsity(module, opt, SparseConfig(sparsity=0.4, prune_rate=0.5, min_prune_rate=0.5,
                                                       update_frequency=1), 10, {"w": 0.6})  # fmt: skip
    # start from a known mask: the six non-zero entries active
    sparse.maskset.masks["w"].copy_(torch.tensor([[True] * 6 + [False] * 4]))
    with torch.no_grad():
        module.w.copy_(_One().w)  # construction applied a random mask; restore the known values
    swapped = sparse.update()
    assert swapped == {"w": math.ceil(0.5 * 6)}
    mask = sparse.maskset.masks["w"][0]
    assert bool(mask[0]) and bool(mask[2]) and bool(mask[4])  # the three largest magnitudes survive
    assert int(mask.sum()) == 6  # as many regrown as pruned
    # regrown: 3 positions among the 7 inactive ones (the 3 just pruned may come back, as in the reference)
    regrown = mask & torch.tensor([False, True, False, True, False, True, True, True, True, True])
    assert int(regrown.sum()) == 3
    new_positions = mask & torch.tensor([False] * 6 + [True] * 4)
    assert torch.all(module.w.detach()[0][~mask] == 0) and torch.all(module.w.detach()[0][new_positions] == 0)


def test_masks_hold_through_training_and_updates_keep_counts():
    model = _pico()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    cfg = SparseConfig(sparsity=0.4, init="erk", update_frequency=3, prune_rate=0.5)
    sparse = DynamicSparsity(model, opt, cfg, 12, layer_densities(model, cfg))
    counts = {n: int(m.sum()) for n, m in sparse.maskset.masks.items()}
    changed = False
    before = {n: m.clone() for n, m in sparse.maskset.masks.items()}
    for _ in range(6):
        loss = model(torch.randn(4, 1, 8, 8)).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        sparse.step()
        params = dict(model.named_parameters())
        for n, m in sparse.maskset.masks.items():
            assert torch.all(params[n].detach()[~m] == 0), n
            assert int(m.sum()) == counts[n]
    changed = any(not torch.equal(before[n], m) for n, m in sparse.maskset.masks.items())
    assert changed and sparse.steps == 6
    assert sparse.sparsity() == pytest.approx(0.4, abs=0.01)


def test_sparse_slak_reparameterises_exactly():
    model = _pico()
    opt = torch.optim.SGD(model.parameters(), lr=0.0)
    cfg = SparseConfig(sparsity=0.6, init="uniform")
    DynamicSparsity(model, opt, cfg, 10, layer_densities(model, cfg))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_()
            m.running_var.uniform_(0.5, 2.0)
    model.eval()
    x = torch.randn(2, 1, 12, 12)
    before = model(x)
    reparameterize_model(model)
    torch.testing.assert_close(model(x), before, atol=1e-5, rtol=1e-5)


def test_bad_sparse_settings():
    with pytest.raises(ValueError, match="sparsity"):
        SparseConfig(sparsity=1.0).validate()
    with pytest.raises(ValueError, match="sparse_init"):
        SparseConfig(init="grasp").validate()
    with pytest.raises(ValueError, match="update_frequency"):
        SparseConfig(update_frequency=0).validate()
    with pytest.raises(ValueError, match="no prunable"):
        prunable_names(nn.LayerNorm(4))
