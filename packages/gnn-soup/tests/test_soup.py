import pytest
import torch

from gnn_soup.executors import SequentialExecutor
from gnn_soup.ingredients import make_plan, train_plan
from gnn_soup.soup import ensemble_accuracy, make_evaluators, run_soups, uniform_soup
from gnn_soup.training import TrainConfig, build_model


def test_uniform_soup_against_hand_computed_tensors() -> None:
    a = {"w": torch.tensor([[1.0, 2.0], [3.0, 4.0]]), "b": torch.tensor([0.0, 6.0])}
    b = {"w": torch.tensor([[3.0, 0.0], [1.0, 0.0]]), "b": torch.tensor([3.0, 0.0])}
    c = {"w": torch.tensor([[2.0, 1.0], [2.0, 5.0]]), "b": torch.tensor([0.0, 3.0])}
    soup = uniform_soup([a, b, c])
    assert torch.allclose(soup["w"], torch.tensor([[2.0, 1.0], [2.0, 3.0]]))
    assert torch.allclose(soup["b"], torch.tensor([1.0, 3.0]))
    assert torch.equal(a["w"], torch.tensor([[1.0, 2.0], [3.0, 4.0]]))  # inputs untouched


def test_soup_of_mismatched_state_dicts_names_the_key() -> None:
    a = {"w": torch.zeros(2, 2)}
    with pytest.raises(ValueError, match=r"'w'.*shape"):
        uniform_soup([a, {"w": torch.zeros(3, 2)}])
    with pytest.raises(ValueError, match="'v'"):
        uniform_soup([a, {"w": torch.zeros(2, 2), "v": torch.zeros(1)}])


@pytest.fixture(scope="module")
def trained(graph):
    config = TrainConfig(hidden_dim=16, steps=30, eval_every=5)
    plan = make_plan(
        "synthetic",
        4,
        config,
        samplers=["full", "neighbor"],
        seed=1,
        sampler_kwargs={"neighbor": {"batch_size": 8, "fanouts": [5, 5]}},
    )
    results = train_plan(plan, graph, SequentialExecutor())
    evaluators = make_evaluators(build_model(config, graph), graph)
    return results, evaluators


def test_soups_and_ensemble(trained, graph) -> None:
    results, evaluators = trained
    states = [r.state_dict for r in results]
    vals = [r.val_acc for r in results]
    for r in results:  # stored scores are the evaluator's scores
        assert evaluators.val(r.state_dict) == pytest.approx(r.val_acc)
    out = run_soups(evaluators, states, vals, grid=5)
    best = max(vals)
    # greedy interpolation never lowers validation accuracy below the best ingredient
    assert out["greedy_interpolation"]["val"] >= best
    assert out["greedy"]["val"] >= best
    assert out["best_ingredient"]["val"] == best
    assert out["ingredient_mean"]["val"] == pytest.approx(sum(vals) / len(vals))
    assert evaluators.val(out["_states"]["uniform"]) == pytest.approx(out["uniform"]["val"])
    # ensemble of one ingredient = that ingredient
    val, test = ensemble_accuracy(evaluators, states[:1])
    assert val == pytest.approx(results[0].val_acc) and test == pytest.approx(results[0].test_acc)
    # the functional evaluator does not touch the module's own weights
    before = {k: v.clone() for k, v in evaluators.model.state_dict().items()}
    evaluators.val(states[1])
    assert all(torch.equal(before[k], v) for k, v in evaluators.model.state_dict().items())


def test_grid_with_fewer_than_two_points_is_rejected(trained) -> None:
    results, evaluators = trained
    with pytest.raises(ValueError, match=r"grid must be >= 2, got 1"):
        run_soups(evaluators, [r.state_dict for r in results], grid=1)
    with pytest.raises(ValueError, match="at least one ingredient"):
        run_soups(evaluators, [], grid=3)
