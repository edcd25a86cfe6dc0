import math

import pytest
import torch
from torch import nn

from research_systems_core.masks import erk_densities
from sparse_dst.masking import DSTConfig, Masking, prunable_weights
from sparse_dst.models import create_model


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return create_model("mlp", in_features=64, hidden=(48, 32), num_classes=10)


def _train_steps(
    model: nn.Module, masking: Masking, optimizer: torch.optim.Optimizer, steps: int
) -> list[int]:
    counts = []
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(16, 64, generator=gen)
        y = torch.randint(0, 10, (16,), generator=gen)
        loss = nn.functional.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        masking.step()
        counts.append(masking.n_active())
    return counts


def test_erk_densities_meet_the_parameter_budget() -> None:
    model = create_model("small_cnn")
    shapes = {n: tuple(p.shape) for n, p in prunable_weights(model).items()}
    densities = erk_densities(shapes, 0.1)
    total = sum(math.prod(s) for s in shapes.values())
    kept = sum(densities[n] * math.prod(s) for n, s in shapes.items())
    assert kept == pytest.approx(0.1 * total, rel=1e-9)
    assert densities["features.0.weight"] == 1.0  # 9 weights per filter: ERK makes it dense
    model2 = create_model("small_cnn")
    opt = torch.optim.SGD(model2.parameters(), lr=0.1)
    masking = Masking(model2, opt, DSTConfig(density=0.1), total_steps=10)
    assert abs(masking.n_active() - 0.1 * total) <= len(shapes)  # whole weights per layer


@pytest.mark.parametrize("prune", ["layer", "global"])
@pytest.mark.parametrize("grow", ["gradient", "random"])
def test_prune_and_grow_keeps_active_count_and_zeros(prune: str, grow: str) -> None:
    model = _mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    cfg = DSTConfig(
        density=0.2, distribution="uniform", update_frequency=3, update_rate=0.3, prune=prune, grow=grow
    )
    masking = Masking(model, optimizer, cfg, total_steps=30)
    before = {n: m.clone() for n, m in masking.masks.items()}
    start = masking.n_active()
    counts = _train_steps(model, masking, optimizer, 12)
    assert counts == [start] * 12
    assert masking.n_updates == 4
    assert any(not torch.equal(before[n], masking.masks[n]) for n in before)  # topology did change
    for n, p in masking.params.items():
        assert torch.all(p[~masking.masks[n]] == 0)
        momentum = optimizer.state[p]["momentum_buffer"]
        assert torch.all(momentum[~masking.masks[n]] == 0)
    if prune == "layer":
        assert {n: int(m.sum()) for n, m in masking.masks.items()} == masking.targets


def test_rigl_grows_largest_gradients_and_new_weights_start_at_zero() -> None:
    layer = nn.Linear(4, 2, bias=False)
    model = nn.Sequential(layer)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    masking = Masking(model, optimizer, DSTConfig(density=0.5, distribution="uniform", update_rate=0.5), 100)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8]]))
    masking.masks["0.weight"].copy_(torch.tensor([[True, True, False, False], [True, True, False, False]]))
    masking.targets["0.weight"] = 4
    masking.maskset.apply(model)
    grads = {"0.weight": torch.tensor([[0.0, 0.0, 5.0, 0.1], [0.0, 0.0, 0.2, 9.0]])}
    out = masking.update_topology(grads)
    assert out == {"pruned": 2, "grown": 2}
    # rate 0.5 of 4 active: the two smallest (0.1, 0.2) are dropped; |grad| 9.0 and 5.0 grown
    assert masking.masks["0.weight"].tolist() == [[False, False, True, False], [True, True, False, True]]
    assert layer.weight[0, 2].item() == 0.0 and layer.weight[1, 3].item() == 0.0
    assert layer.weight[1, 0].item() == pytest.approx(0.5)


@pytest.mark.parametrize("prune", ["layer", "global"])
def test_memory_bound_grows_then_prunes_back_to_budget(prune: str) -> None:
    model = _mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    cfg = DSTConfig(
        density=0.2,
        update_frequency=2,
        memory_bound=True,
        memory_bound_rate=0.05,
        memory_bound_end_fraction=0.5,
        stop_fraction=0.8,
        prune=prune,
        debug=True,
    )
    masking = Masking(model, optimizer, cfg, total_steps=20)
    budget = masking.budget
    counts = _train_steps(model, masking, optimizer, 16)
    # step 2: pruned back to the budget, then 0.05 x all weights (cosine-decayed) grown on top
    extra = masking.memory_bound_extra(2)
    assert extra == int(0.05 * (1 + math.cos(math.pi * 2 / 10)) / 2 * masking.n_prunable)
    layers = len(masking.masks)
    assert budget + extra - (layers if prune == "layer" else 0) <= counts[1] <= budget + extra
    assert max(counts[:9]) > budget
    assert counts[9] == budget  # settled at the end of the phase (step 10)
    assert counts[-1] == budget  # plain DST updates afterwards keep the budget


def test_conflicting_options_are_errors() -> None:
    with pytest.raises(ValueError, match="final_update_rate"):
        DSTConfig(update_rate=0.1, final_update_rate=0.2).validate()
    with pytest.raises(ValueError, match="memory_bound_end_fraction"):
        DSTConfig(memory_bound=True, memory_bound_end_fraction=0.9, stop_fraction=0.5).validate()
    with pytest.raises(ValueError, match="memory_bound_rate"):
        DSTConfig(memory_bound=True, density=0.99, memory_bound_rate=0.05).validate()


def test_conv1d_conv3d_are_sparsified_and_transposed_convs_refused() -> None:
    model = nn.Sequential(nn.Conv1d(2, 4, 3), nn.Flatten(), nn.Linear(4 * 6, 3))
    masking = Masking(model, torch.optim.SGD(model.parameters(), lr=0.1), DSTConfig(density=0.5), 10)
    assert "0.weight" in masking.masks and masking.masks["0.weight"].float().mean() < 1.0
    conv3d = nn.Sequential(nn.Conv3d(2, 4, 3), nn.Flatten(), nn.LazyLinear(3))
    conv3d(torch.randn(1, 2, 4, 4, 4))
    masking = Masking(conv3d, torch.optim.SGD(conv3d.parameters(), lr=0.1), DSTConfig(density=0.5), 10)
    assert "0.weight" in masking.masks
    transposed = nn.Sequential(nn.ConvTranspose2d(2, 4, 3), nn.Conv2d(4, 2, 1))
    with pytest.raises(ValueError, match=r"layer '0' is a ConvTranspose2d"):
        Masking(transposed, torch.optim.SGD(transposed.parameters(), lr=0.1), DSTConfig(), 10)


def test_debug_mode_catches_a_broken_mask() -> None:
    model = _mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    masking = Masking(
        model, optimizer, DSTConfig(density=0.2, update_frequency=2, debug=True), total_steps=20
    )
    _train_steps(model, masking, optimizer, 2)
    name = next(iter(masking.masks))
    masking.masks[name].view(-1)[: masking.masks[name].numel() // 2] = True  # an update that grew too much
    with pytest.raises(RuntimeError, match="active weights, expected"):
        masking.check_invariants("test")


def test_bad_input_is_named() -> None:
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="density"):
        Masking(model, opt, DSTConfig(density=1.5), 10)
    with pytest.raises(ValueError, match="density"):
        Masking(model, opt, DSTConfig(density=0.0), 10)
    with pytest.raises(ValueError, match="update_frequency"):
        Masking(model, opt, DSTConfig(update_frequency=0), 10)
    with pytest.raises(ValueError, match="grow"):
        Masking(model, opt, DSTConfig(grow="momentum"), 10)
    empty = nn.Sequential(nn.ReLU(), nn.BatchNorm1d(3))
    with pytest.raises(ValueError, match="no prunable layers"):
        Masking(empty, torch.optim.SGD(empty.parameters(), lr=0.1), DSTConfig(), 10)


def test_dense_first_and_last_are_kept_dense() -> None:
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    masking = Masking(model, opt, DSTConfig(density=0.75, dense_first=True, dense_last=True), 10)
    density = masking.layer_density()
    assert density["features.0.weight"] == 1.0 and density["classifier.weight"] == 1.0
    assert density["features.2.weight"] < 0.75
    assert masking.sparse_names() == ["features.2.weight"]


def test_state_dict_round_trip_and_refuses_other_model() -> None:
    model = _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    masking = Masking(model, opt, DSTConfig(density=0.2, update_frequency=2), 20)
    _train_steps(model, masking, opt, 5)
    tensors, meta = masking.state_dict()
    other = _mlp()
    opt2 = torch.optim.SGD(other.parameters(), lr=0.1)
    restored = Masking(other, opt2, DSTConfig(density=0.2, update_frequency=2, seed=7), 20)
    restored.load_state_dict(tensors, meta)
    assert restored.step_count == 5
    assert all(torch.equal(restored.masks[n], masking.masks[n]) for n in masking.masks)
    wrong = create_model("mlp", in_features=64, hidden=(40, 32), num_classes=10)
    bad = Masking(wrong, torch.optim.SGD(wrong.parameters(), lr=0.1), DSTConfig(density=0.2), 20)
    with pytest.raises(ValueError, match="different model"):
        bad.load_state_dict(tensors, meta)


def test_adam_moments_do_not_resurrect_pruned_weights() -> None:
    model = _mlp()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    masking = Masking(model, optimizer, DSTConfig(density=0.2, update_frequency=2, update_rate=0.5), 20)
    _train_steps(model, masking, optimizer, 7)
    for n, p in masking.params.items():
        pruned = ~masking.masks[n]
        assert torch.all(p[pruned] == 0)
        assert torch.all(optimizer.state[p]["exp_avg"][pruned] == 0)
        assert torch.all(optimizer.state[p]["exp_avg_sq"][pruned] == 0)
