import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robust_at.models import create_model
from robust_at.wot import WOT, WOTConfig, parameter_groups

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


def test_load_weights_writes_theta_in_place_exactly_at_the_ends() -> None:
    model, wot = _setup()
    params = list(model.parameters())
    w = torch.tensor([[0.2, 0.9], [0.5, 0.1], [1.0, 0.3]])
    wot.load_weights(w)
    assert all(a is b for a, b in zip(params, model.parameters(), strict=True))  # same objects
    for p, theta in zip(params, wot.combine(w), strict=True):
        assert torch.allclose(p, theta, atol=1e-6)
    wot.load_weights(torch.ones(3, wot.num_groups))
    assert all(torch.equal(p, s) for p, s in zip(params, wot.snapshots[-1], strict=True))
    wot.load_weights(torch.zeros(3, wot.num_groups))
    assert all(torch.equal(p, s) for p, s in zip(params, wot.snapshots[0], strict=True))
    with pytest.raises(ValueError, match="weights must have shape"):
        wot.load_weights(torch.zeros(2, wot.num_groups))


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


# ---------------------------------------------------------------- the reference's weight learning as the oracle
def _reference_weight_learning(
    model, origin, deltas, group_of, num_groups, val, attack, passes, lr=0.1, alpha=0.9
):
    """The reference's loop (TienjinHuang/WOT), re-implemented from its description: W starts at
    zero; every pass zeroes the momentum buffer; for each batch the gradient of CE on the
    attacked batch w.r.t. the parameters at origin + sum_j W[j, g] d_j gives, parameter tensor
    by parameter tensor and delta by delta, buf = alpha buf + <d_j, grad>, W -= lr buf; W is then
    clamped to [0, 1] and the parameters are reset to origin + sum_j W[j, g] d_j."""
    params = list(model.parameters())
    variables = torch.zeros(len(deltas), num_groups)

    def place() -> None:
        with torch.no_grad():
            for i, p in enumerate(params):
                temp = 0
                for j, delta in enumerate(deltas):
                    temp = temp + delta[i] * variables[j][group_of[i]]
                p.copy_(origin[i] + temp)

    place()
    for _ in range(passes):
        buffer = torch.zeros_like(variables)
        for x, y in val:
            x_in = attack(model, x, y) if attack is not None else x
            loss = F.cross_entropy(model(x_in), y)
            grad = torch.autograd.grad(loss, params)
            for i in range(len(params)):
                for j, delta in enumerate(deltas):
                    gw = torch.sum(delta[i] * grad[i])
                    buffer[j][group_of[i]] = buffer[j][group_of[i]] * alpha + gw
                    variables[j][group_of[i]] = variables[j][group_of[i]] - buffer[j][group_of[i]] * lr
            variables = torch.clamp(variables, 0, 1.0)
            place()
    return variables


@pytest.mark.parametrize("with_attack", [False, True])
def test_reference_update_rule_matches_the_reference_weight_learning(with_attack: bool) -> None:
    from robust_at.attacks import pgd

    torch.manual_seed(0)
    model = create_model("small-cnn", 3, 1, width=4, depth=2)
    cfg = WOTConfig(enabled=True, gap=2, num_gaps=3, grouping="block", passes=3, momentum_per_tensor=True,
                    reset_momentum_each_pass=True)  # fmt: skip
    wot = WOT(model, cfg)
    g = torch.Generator().manual_seed(1)
    xs, ys = torch.rand(48, 1, 8, 8, generator=g), torch.randint(0, 3, (48,), generator=g)
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9)
    wot.start()
    for k in range(6):  # a saved trajectory: 3 deltas of 2 steps
        opt.zero_grad()
        F.cross_entropy(model(xs[k * 8 : k * 8 + 8]), ys[k * 8 : k * 8 + 8]).backward()
        opt.step()
        wot.record_step()
    model.eval()
    origin, deltas = [t.clone() for t in wot.snapshots[0]], wot.deltas()
    val = [(xs[:24], ys[:24]), (xs[24:], ys[24:])]
    attack = (
        (lambda m, x, y: pgd(m, x, y, eps=0.1, step_size=0.03, steps=3, random_start="none"))
        if with_attack
        else None
    )
    oracle_model = copy.deepcopy(model)
    expected = _reference_weight_learning(
        oracle_model, origin, deltas, wot.group_of, wot.num_groups, val, attack, 3
    )
    got, _ = wot.learn_weights(model, lambda: val, attack)
    assert torch.allclose(got, expected, atol=1e-5), (got, expected)
    assert float(expected.max()) > 0  # a case where the weights move off zero
    for p, q in zip(model.parameters(), oracle_model.parameters(), strict=True):
        assert torch.allclose(p, q, atol=1e-5)


def test_kl_meta_loss_is_the_batch_mean_kl_between_clean_and_attacked_predictions() -> None:
    model, wot = _setup(meta_loss="kl")
    x, x_adv = torch.randn(5, 3), torch.randn(5, 3)
    loss, logits = wot.meta_loss(model, x, x_adv, torch.zeros(5, dtype=torch.long))
    p, q = F.softmax(model(x), 1), F.softmax(model(x_adv), 1)
    assert torch.allclose(loss, (p * (p.log() - q.log())).sum(1).mean(), atol=1e-6)
    assert torch.allclose(logits, model(x_adv))
    wot.meta_loss(model, x, x_adv, torch.zeros(5, dtype=torch.long))[0].backward()  # gradient flows


def test_gap_is_multiplied_once_from_times_epoch_and_train_mode_follows_the_epoch() -> None:
    model, wot = _setup(gap=3, num_gaps=2, times=2, times_epoch=5, train_mode_epoch=7, bn_batches=0)
    x, y = torch.randn(8, 3), torch.randint(0, 2, (8,))
    seen_modes = []

    class Spy(nn.Module):
        def forward(self, inp):
            seen_modes.append(model.training)
            return inp

    spy = Spy()
    val = lambda: [(x, y)]  # noqa: E731
    attack = lambda m, xb, yb: spy(xb)  # noqa: E731
    wot.refine(model, val, attack, epoch=4)
    assert wot.gap == 3 and seen_modes[-1] is False
    _trajectory(model, wot, 3 * 2)
    wot.refine(model, val, attack, epoch=6)
    assert wot.gap == 6 and seen_modes[-1] is False
    _trajectory(model, wot, 6 * 2)
    assert len(wot.snapshots) == 3  # snapshots now every 6 steps
    wot.refine(model, val, attack, epoch=8)
    assert wot.gap == 6 and seen_modes[-1] is True  # multiplied only once; BN in train mode from epoch 7
    assert wot.state_meta()["gap"] == 6


def test_block_groups_of_wrapped_timm_and_torchvision_models() -> None:
    import timm
    import torchvision

    from robust_at.models import Normalize

    resnet = nn.Sequential(Normalize((0.5,) * 3, (0.5,) * 3), timm.create_model("resnet10t", num_classes=10))
    _, index, groups = parameter_groups(resnet, "block")
    assert groups == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
    assert index[0] == 0 and index[-1] == 5
    tv = torchvision.models.resnet18(num_classes=10)
    _, _, groups = parameter_groups(tv, "block")
    assert groups == ["conv1", "bn1", "layer1", "layer2", "layer3", "layer4", "fc"]
    vit = timm.create_model("vit_tiny_patch16_224", num_classes=10, img_size=32, patch_size=8, depth=2)
    _, _, groups = parameter_groups(vit, "block")
    assert groups[0] == "stem" and groups[-1] == "head" and "blocks.1" in groups


def test_block_grouping_with_a_single_group_is_an_error() -> None:
    single = nn.Sequential(nn.Identity(), nn.Sequential(nn.Linear(3, 2)))
    with pytest.raises(ValueError, match=r"WOT-B.*found only one block group.*wot.grouping=model"):
        WOT(single, WOTConfig(enabled=True, grouping="block"))
    WOT(single, WOTConfig(enabled=True, grouping="model"))  # WOT-W is fine
