import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robust_at.attacks import AttackConfig, check_logits, fgsm, pgd
from robust_at.models import create_model

torch.set_num_threads(1)


def _model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return create_model("small-cnn", 10, 1, width=8, depth=2).eval()


def _data(n: int = 32, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 8, 8, generator=g), torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize("norm,eps,step", [("linf", 0.1, 0.03), ("l2", 0.5, 0.15)])
def test_pgd_stays_in_ball_and_box_and_increases_loss(norm: str, eps: float, step: float) -> None:
    model, (x, y) = _model(), _data()
    x_adv = pgd(model, x, y, eps=eps, step_size=step, steps=10, norm=norm, restarts=2)
    delta = (x_adv - x).flatten(1)
    size = delta.abs().max(1).values if norm == "linf" else delta.norm(dim=1)
    assert float(size.max()) <= eps + 1e-6
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    with torch.no_grad():
        clean = F.cross_entropy(model(x), y, reduction="none")
        adv = F.cross_entropy(model(x_adv), y, reduction="none")
    assert float(adv.mean()) > float(clean.mean()) + 1e-3
    assert bool((adv >= clean - 1e-4).float().mean() > 0.9)
    assert torch.equal(x, _data()[0])  # the input is not changed


def test_pgd_respects_a_custom_box() -> None:
    model, (x, y) = _model(), _data()
    x = 0.25 + 0.5 * x
    x_adv = pgd(model, x, y, eps=0.3, step_size=0.1, steps=5, box=(0.25, 0.75))
    assert float(x_adv.min()) >= 0.25 and float(x_adv.max()) <= 0.75


def test_fgsm_matches_hand_computed_step_on_linear_model() -> None:
    torch.manual_seed(0)
    lin = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    x = torch.full((2, 1, 2, 2), 0.5)
    y = torch.tensor([0, 2])
    with torch.no_grad():
        p = F.softmax(lin(x), dim=1)
    onehot = F.one_hot(y, 3).float()
    grad_x = (p - onehot) @ lin[1].weight  # d CE / d x for a linear model
    expected = (x.flatten(1) + 0.1 * grad_x.sign()).view_as(x)
    assert torch.allclose(fgsm(lin, x, y, eps=0.1), expected, atol=1e-7)


def test_early_stop_freezes_misclassified_samples() -> None:
    model, (x, y) = _model(), _data()
    with torch.no_grad():
        pred = model(x).argmax(1)
    assert len(y) == len(pred)
    y_wrong = (pred + 1) % 10  # every sample starts misclassified
    x_adv = pgd(model, x, y_wrong, eps=0.1, step_size=0.05, steps=5, random_start="none", early_stop=True)
    assert torch.equal(x_adv, x)


def test_attack_config_runs_pgd() -> None:
    model, (x, y) = _model(), _data()
    cfg = AttackConfig(eps=0.1, step_size=0.05, steps=3)
    torch.manual_seed(3)
    a = cfg.run(model, x, y)
    torch.manual_seed(3)
    b = pgd(model, x, y, eps=0.1, step_size=0.05, steps=3)
    assert torch.equal(a, b)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"eps": -0.1}, "eps must be >= 0, got -0.1"),
        ({"step_size": 0.0}, "step_size must be > 0, got 0.0"),
        ({"steps": 0}, "steps must be >= 1, got 0"),
        ({"norm": "l3"}, "l3"),
        ({"restarts": 0}, "restarts must be >= 1"),
    ],
)
def test_bad_attack_settings_are_rejected(kwargs: dict, match: str) -> None:
    model, (x, y) = _model(), _data(4)
    args = {"eps": 0.1, "step_size": 0.01, "steps": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        pgd(model, x, y, **args)
    with pytest.raises(ValueError, match=match):
        AttackConfig(**args)


def test_inputs_outside_the_declared_range_are_rejected() -> None:
    model, (x, y) = _model(), _data(4)
    with pytest.raises(ValueError, match=r"declared input range \[0.0, 1.0\], got values in \[.*, 2"):
        pgd(model, x * 2 + 0.5, y, eps=0.1, step_size=0.01, steps=1)


def test_wrong_model_output_shape_is_rejected() -> None:
    with pytest.raises(ValueError, match="shape"):
        check_logits(torch.zeros(4, 10, 2), 4)
    with pytest.raises(ValueError, match="returns 5 logits per input but the data has 10 classes"):
        check_logits(torch.zeros(4, 5), 4, 10)
