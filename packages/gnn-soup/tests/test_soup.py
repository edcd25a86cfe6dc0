import pytest
import torch

from gnn_soup.executors import SequentialExecutor
from gnn_soup.ingredients import make_plan, train_plan
from gnn_soup.soup import (
    SoupInvariantError,
    check_reported_scores,
    ensemble_accuracy,
    interpolation_weights,
    make_evaluators,
    run_soups,
    soup_verdict,
    uniform_soup,
)
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


def test_interpolation_weights_follow_the_history() -> None:
    history = [
        {"ingredient": 2, "alpha": 1.0, "accepted": True},
        {"ingredient": 0, "alpha": 0.25, "accepted": True},
        {"ingredient": 1, "alpha": 0.5, "accepted": False},
        {"ingredient": 3, "alpha": 0.5, "accepted": True},
    ]
    assert interpolation_weights(history) == {2: 0.375, 0: 0.125, 3: 0.5}
    replaced = [*history, {"ingredient": 1, "alpha": 1.0, "accepted": True}]
    weights = interpolation_weights(replaced)  # alpha = 1 replaces the soup: earlier members weigh 0
    assert {i for i, w in weights.items() if w > 0} == {1}


def test_accepted_members_are_true_to_the_final_soup(trained) -> None:
    results, evaluators = trained
    states = [r.state_dict for r in results]
    out = run_soups(evaluators, states, [r.val_acc for r in results], grid=5)
    interp = out["greedy_interpolation"]
    weights = {int(k): w for k, w in interp["weights"].items()}
    assert sorted(weights) == sorted(interp["accepted"]) and sum(weights.values()) == pytest.approx(1.0)
    rebuilt = {k: sum(w * states[i][k].double() for i, w in weights.items()) for k in states[0]}
    soup = out["_states"]["greedy_interpolation"]
    assert all(torch.allclose(rebuilt[k].float(), soup[k], atol=1e-6) for k in soup)
    for name in ("uniform", "greedy", "greedy_interpolation"):  # ensemble and best beside every soup
        entry = out[name]
        assert entry["vs_best_ingredient"] == pytest.approx(entry["test"] - out["best_ingredient"]["test"])
        assert entry["vs_ensemble"] == pytest.approx(entry["test"] - out["ensemble"]["test"])
        assert entry["verdict"] == soup_verdict(entry, out["best_ingredient"], out["ensemble"])


def test_a_soup_score_without_its_evaluation_is_refused(trained) -> None:
    results, evaluators = trained
    state = results[0].state_dict
    check_reported_scores(evaluators, "x", state, evaluators.val(state), evaluators.test(state))
    with pytest.raises(SoupInvariantError, match="reported val accuracy"):
        check_reported_scores(evaluators, "x", state, evaluators.val(state) + 0.01, evaluators.test(state))


def test_soup_verdicts() -> None:
    best, ensemble = {"test": 0.70}, {"test": 0.72}
    assert soup_verdict({"test": 0.73}, best, ensemble) == "beats best ingredient and ensemble"
    assert soup_verdict({"test": 0.71}, best, ensemble) == "beats best ingredient, not the ensemble"
    assert soup_verdict({"test": 0.70}, best, ensemble) == "ties best ingredient"
    assert soup_verdict({"test": 0.69}, best, ensemble) == "below best ingredient"


def test_layerwise_evaluators_agree_with_full_ones(trained, graph) -> None:
    results, full = trained
    config = TrainConfig(hidden_dim=16, eval_method="layerwise", chunk_size=50)
    layerwise = make_evaluators(build_model(config, graph), graph, config)
    for r in results:
        assert layerwise.val(r.state_dict) == pytest.approx(full.val(r.state_dict))
        assert layerwise.test(r.state_dict) == pytest.approx(full.test(r.state_dict))
