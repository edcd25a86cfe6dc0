"""Weight averaging and soups against hand-computed tensors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from research_systems_core.averaging import (
    average_state_dicts,
    functional_evaluator,
    greedy_interpolation_soup,
    greedy_soup,
    interpolate_state_dicts,
)


def test_average_of_two_equals_hand_computed() -> None:
    a = {"w": torch.tensor([[1.0, 2.0], [3.0, 4.0]]), "n": torch.tensor(7)}
    b = {"w": torch.tensor([[3.0, 0.0], [-1.0, 4.0]]), "n": torch.tensor(9)}
    avg = average_state_dicts([a, b])
    assert torch.equal(avg["w"], torch.tensor([[2.0, 1.0], [1.0, 4.0]]))
    assert avg["n"].item() == 7  # integer buffer copied from the first
    weighted = average_state_dicts([a, b], weights=[3, 1])
    assert torch.allclose(weighted["w"], torch.tensor([[1.5, 1.5], [2.0, 4.0]]))
    half = torch.tensor([1.0, 2.0], dtype=torch.float16)
    assert average_state_dicts([{"h": half}, {"h": half * 3}])["h"].dtype == torch.float16


def test_interpolation_hand_computed_and_zeros_stay_zero() -> None:
    a = {"w": torch.tensor([0.0, 2.0, 4.0])}
    b = {"w": torch.tensor([0.0, 6.0, -4.0])}
    assert torch.equal(interpolate_state_dicts(a, b, 0.25)["w"], torch.tensor([0.0, 3.0, 2.0]))
    assert torch.equal(interpolate_state_dicts(a, b, 0.0)["w"], a["w"])
    assert torch.equal(interpolate_state_dicts(a, b, 1.0)["w"], b["w"])
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\], got 1.5"):
        interpolate_state_dicts(a, b, 1.5)


def test_mismatched_state_dicts_name_the_key() -> None:
    with pytest.raises(ValueError, match="key 'b' is missing from state dict #1"):
        average_state_dicts([{"a": torch.zeros(1), "b": torch.zeros(1)}, {"a": torch.zeros(1)}])
    with pytest.raises(ValueError, match=r"disagree on 'a': shape \(2,\) in #0, \(3,\) in #1"):
        average_state_dicts([{"a": torch.zeros(2)}, {"a": torch.zeros(3)}])
    with pytest.raises(ValueError, match="weights must not all be zero"):
        average_state_dicts([{"a": torch.zeros(2)}], weights=[0])
    with pytest.raises(ValueError, match="need at least one"):
        average_state_dicts([])


def _toy_problem():
    torch.manual_seed(0)
    model = nn.Linear(4, 1, bias=False)
    target = torch.tensor([[1.0, -1.0, 0.5, 2.0]])
    x = torch.randn(64, 4)
    y = x @ target.T

    def neg_mse(forward):
        return -float(((forward(x) - y) ** 2).mean())

    evaluate = functional_evaluator(model, neg_mse)
    # ingredients: target plus noise of different sizes, one far off
    gen = torch.Generator().manual_seed(1)
    ingredients = [{"weight": target + s * torch.randn(1, 4, generator=gen)} for s in (0.3, 0.3, 0.3, 3.0)]
    return model, evaluate, ingredients


def test_functional_evaluator_does_not_touch_the_module() -> None:
    model, evaluate, ingredients = _toy_problem()
    before = model.weight.detach().clone()
    evaluate(ingredients[0])
    assert torch.equal(model.weight, before)


def test_greedy_soup_never_accepts_a_worse_ingredient() -> None:
    _, evaluate, ingredients = _toy_problem()
    result = greedy_soup(ingredients, evaluate)
    assert result.score == pytest.approx(evaluate(result.state_dict))
    assert result.score >= max(result.ingredient_scores)
    assert 3 not in result.accepted  # the far-off ingredient would lower the score
    best = result.history[0]["score"]
    for step in result.history[1:]:
        assert step["accepted"] == (step["score"] > best)
        if step["accepted"]:
            best = step["score"]
    expected = average_state_dicts([ingredients[i] for i in result.accepted])
    assert torch.allclose(result.state_dict["weight"], expected["weight"])


def test_greedy_interpolation_soup_never_drops() -> None:
    _, evaluate, ingredients = _toy_problem()
    result = greedy_interpolation_soup(ingredients, evaluate, grid=11)
    assert result.score >= max(result.ingredient_scores)
    running = result.history[0]["score"]
    for step in result.history[1:]:
        assert len(step["curve"]) == 11
        if step["accepted"]:
            assert step["score"] >= running
            running = step["score"]
    assert result.score == pytest.approx(evaluate(result.state_dict))
    with pytest.raises(ValueError, match="grid must be >= 2"):
        greedy_interpolation_soup(ingredients, evaluate, grid=1)
    with pytest.raises(ValueError, match="at least 2 distinct points"):
        greedy_interpolation_soup(ingredients, evaluate, grid=[0.5, 0.5])
