import pytest
import torch
from torch import nn

from robust_at.evaluate import autoattack_accuracy, clean_accuracy, pgd_accuracy

torch.set_num_threads(1)
pytest.importorskip("pyautoattack")


def _setup():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10)).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(12, 1, 8, 8, generator=g)
    with torch.no_grad():
        y = model(x).argmax(1)  # every image starts correctly classified
    return model, x, y


def test_pgd_accuracy_is_at_most_clean_accuracy() -> None:
    model, x, y = _setup()
    clean = clean_accuracy(model, x, y)
    robust = pgd_accuracy(model, x, y, eps=0.3, step_size=0.1, steps=5)
    assert clean["acc"] == 1.0
    assert robust["acc"] < clean["acc"] and robust["loss"] > clean["loss"]


def test_autoattack_custom_runs_on_a_tiny_model() -> None:
    model, x, y = _setup()
    result = autoattack_accuracy(model, x, y, eps=0.3, version="custom", n_iter=5, seed=0)
    assert result["attacks"] == ["apgd-ce", "apgd-t"]
    assert result["clean_acc"] == 1.0
    assert 0.0 <= result["robust_acc"] < 1.0
    assert result["max_linf_perturbation"] <= 0.3 + 1e-6


def test_autoattack_standard_runs_on_a_tiny_model() -> None:
    model, x, y = _setup()
    result = autoattack_accuracy(model, x[:4], y[:4], eps=0.05, version="standard", n_iter=3, seed=0)
    assert result["attacks"] == ["apgd-ce", "apgd-t", "fab-t", "square"]
    assert 0.0 <= result["robust_acc"] <= result["clean_acc"]


def test_autoattack_rejects_bad_input() -> None:
    model, x, y = _setup()
    with pytest.raises(ValueError, match="eps must be > 0"):
        autoattack_accuracy(model, x, y, eps=0.0)
    with pytest.raises(ValueError, match="declared input range"):
        autoattack_accuracy(model, x + 1.5, y, eps=0.1)
    with pytest.raises(ValueError, match="version='custom'"):
        autoattack_accuracy(model, x, y, eps=0.1, attacks=("apgd-ce",))
