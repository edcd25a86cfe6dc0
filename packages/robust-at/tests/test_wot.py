import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robust_at.models import create_model
from robust_at.wot import WOT, WOTConfig, parameter_groups, recalibrate_batchnorm

torch.set_num_threads(1)


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 4)
        self.b = nn.Linear(4, 2)
        self.wot_blocks = ["a", "b"]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(torch.tanh(self.a(x)))


def _trajectory(model: nn.Module, wot: WOT, steps: int, seed: int = 0) -> None:
    """Run ``steps`` SGD steps on random data, recording them in ``wot``."""
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.9)
    wot.start()
    for _ in range(steps):
        x = torch.randn(8, 3, generator=g)
        y = torch.randint(0, 2, (8,), generator=g)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
        wot.record_step()


def _setup(grouping: str = "block", gap: int = 3, num_gaps: int = 3, **cfg):
    torch.manual_seed(0)
    model = Tiny()
    wot = WOT(model, WOTConfig(enabled=True, gap=gap, num_gaps=num_gaps, grouping=grouping, **cfg))
    _trajectory(model, wot, gap * num_gaps)
    return model, wot


def test_snapshots_every_gap_steps() -> None:
    model, wot = _setup(gap=3, num_gaps=3)
    assert len(wot.snapshots) == 4
    assert wot.steps == 9
    current = [p.detach() for p in model.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(wot.snapshots[-1], current, strict=True))


def test_weights_one_give_the_unrefined_parameters_and_zero_the_origin_exactly() -> None:
    _, wot = _setup()
    ones = wot.combine(torch.ones(3, wot.num_groups))
    zeros = wot.combine(torch.zeros(3, wot.num_groups))
    for theta, last in zip(ones, wot.snapshots[-1], strict=True):
        assert torch.equal(theta, last)
    for theta, first in zip(zeros, wot.snapshots[0], strict=True):
        assert torch.equal(theta, first)
    # and the map is origin + sum_j W_j d_j in between
    w = torch.tensor([[0.2, 0.9], [0.5, 0.1], [1.0, 0.3]])
    deltas = wot.deltas()
    for i, theta in enumerate(wot.combine(w)):
        g = wot.group_of[i]
        expected = wot.snapshots[0][i] + sum(w[j, g] * deltas[j][i] for j in range(3))
        assert torch.allclose(theta, expected, atol=1e-6)


def _loss_at(model: Tiny, wot: WOT, weights: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The loss as an explicit function of the weights (autograd through theta(W))."""
    deltas = wot.deltas()
    params = {}
    for i, name in enumerate(wot.names):
        g = wot.group_of[i]
        params[name] = wot.snapshots[0][i] + sum(weights[j, g] * deltas[j][i] for j in range(len(deltas)))
    return F.cross_entropy(torch.func.functional_call(model, params, (x,)), y)


@pytest.mark.parametrize("grouping", ["model", "block", "layer"])
def test_weight_gradient_is_sum_of_delta_times_grad(grouping: str) -> None:
    model, wot = _setup(grouping)
    g = torch.Generator().manual_seed(5)
    x, y = torch.randn(16, 3, generator=g), torch.randint(0, 2, (16,), generator=g)
    w0 = torch.full((3, wot.num_groups), 0.4)
    wot.load_weights(w0)
    grads = torch.autograd.grad(F.cross_entropy(model(x), y), wot.params)
    got = wot.weight_gradient(list(grads), wot.deltas())
    # hand-computed: sum over the group's tensors of <delta, grad>
    deltas = wot.deltas()
    hand = torch.zeros(3, wot.num_groups)
    for j in range(3):
        for i, grp in enumerate(wot.group_of):
            hand[j, grp] += float((deltas[j][i] * grads[i]).sum())
    assert torch.allclose(got, hand, atol=1e-7)
    # autograd through theta(W) and central finite differences agree
    w = w0.clone().double().requires_grad_(True)
    model_d = Tiny().double()
    wot_d = WOT(model_d, wot.config)
    wot_d.snapshots = [[t.double() for t in s] for s in wot.snapshots]
    (auto,) = torch.autograd.grad(_loss_at(model_d, wot_d, w, x.double(), y), w)
    assert torch.allclose(got.double(), auto, atol=1e-6)
    for j in range(3):
        for k in range(wot.num_groups):
            e = torch.zeros_like(w0).double()
            e[j, k] = 1e-6
            with torch.no_grad():
                fd = (
                    _loss_at(model_d, wot_d, w + e, x.double(), y)
                    - _loss_at(model_d, wot_d, w - e, x.double(), y)
                ) / 2e-6
            assert abs(float(fd) - float(auto[j, k])) < 1e-6


def test_refine_takes_the_hand_computed_momentum_sgd_steps() -> None:
    model, wot = _setup("block", lr=0.5, momentum=0.9, passes=2, init="one", bn_batches=0)
    g = torch.Generator().manual_seed(7)
    x, y = torch.randn(16, 3, generator=g), torch.randint(0, 2, (16,), generator=g)
    snaps = [[t.clone() for t in s] for s in wot.snapshots]
    # expected: two momentum-SGD steps on W, clamped to [0, 1]
    w, buf = torch.ones(3, 2), torch.zeros(3, 2)
    wot_ref = WOT(Tiny(), wot.config)
    wot_ref.snapshots = snaps
    for _ in range(2):
        wd = w.clone().double().requires_grad_(True)
        model_d = Tiny().double()
        wot_d = WOT(model_d, wot.config)
        wot_d.snapshots = [[t.double() for t in s] for s in snaps]
        (grad,) = torch.autograd.grad(_loss_at(model_d, wot_d, wd, x.double(), y), wd)
        buf = 0.9 * buf + grad.float()
        w = (w - 0.5 * buf).clamp(0, 1)
    got = wot.refine(model, lambda: [(x, y)], attack=None)
    assert torch.allclose(got, w, atol=1e-5)
    # the model now sits at theta(W) and a new window starts there
    for p, theta in zip(model.parameters(), wot_ref.combine(got), strict=True):
        assert torch.allclose(p.detach(), theta, atol=1e-6)
    assert len(wot.snapshots) == 1 and wot.refinements == 1


def test_reference_quirks_change_the_update() -> None:
    grads_model, wot = _setup("model", lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(9)
    x, y = torch.randn(16, 3, generator=g), torch.randint(0, 2, (16,), generator=g)
    w0 = torch.full((3, 1), 0.5)
    wot.load_weights(w0)
    grads = list(torch.autograd.grad(F.cross_entropy(grads_model(x), y), wot.params))
    deltas = wot.deltas()
    clean = wot.update_weights(w0, torch.zeros(3, 1), grads, deltas)
    wot.config.momentum_per_tensor = True
    quirk = wot.update_weights(w0, torch.zeros(3, 1), grads, deltas)
    # hand-computed quirk: per tensor, buf = 0.9 buf + <d, g>; w -= 0.1 buf
    w, buf = w0.clone(), torch.zeros(3, 1)
    for i in range(len(wot.params)):
        for j in range(3):
            buf[j, 0] = buf[j, 0] * 0.9 + float((deltas[j][i] * grads[i]).sum())
            w[j, 0] = w[j, 0] - 0.1 * buf[j, 0]
    assert torch.allclose(quirk, w.clamp(0, 1), atol=1e-6)
    assert not torch.allclose(quirk, clean, atol=1e-6)


def test_parameter_groups_of_the_registered_models() -> None:
    _, index, groups = parameter_groups(create_model("preact-resnet18", 10, 3, width=8), "block")
    assert groups == ["conv1", "layer1", "layer2", "layer3", "layer4", "bn+linear"]
    assert index[0] == 0 and index[-1] == 5 and sorted(set(index)) == list(range(6))
    _, _, groups = parameter_groups(create_model("small-cnn", 10, 1, width=4, depth=4), "block")
    assert len(groups) == 5
    _, index, groups = parameter_groups(create_model("small-cnn", 10, 1, width=4, depth=4), "model")
    assert groups == ["model"] and set(index) == {0}
    _, _, groups = parameter_groups(create_model("small-cnn", 10, 1, width=4, depth=2), "layer")
    assert groups == ["stem.0", "stem.1", "stages.0.0", "stages.0.1", "head"]


def test_batchnorm_recalibration_is_the_sample_weighted_average() -> None:
    bn = nn.BatchNorm1d(2)
    data = [torch.randn(5, 2) * 3 + 1, torch.randn(3, 2) - 2]
    used = recalibrate_batchnorm(bn, [(d, None) for d in data], max_batches=400)
    assert used == 2
    means = [d.mean(0) for d in data]
    expected = (5 * means[0] + 3 * means[1]) / 8
    assert torch.allclose(bn.running_mean, expected, atol=1e-6)
    assert bn.momentum == 0.1 and bn.training


def test_bad_wot_settings_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"wot\.gap must be >= 1, got 0"):
        WOTConfig(gap=0)
    with pytest.raises(ValueError, match=r"wot\.grouping"):
        WOTConfig(grouping="stage")
    model, wot = _setup()
    wot.snapshots = wot.snapshots[:1]
    with pytest.raises(RuntimeError, match="at least one recorded delta"):
        wot.refine(model, lambda: [], attack=None)
    model, wot = _setup()
    with pytest.raises(ValueError, match="non-empty validation split"):
        wot.refine(model, lambda: [], attack=None)
