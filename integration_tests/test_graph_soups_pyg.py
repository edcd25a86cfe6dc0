"""Pipeline 4 (issue 25): gnn-soup ingredients trained on a generated graph handed over as a PyG
``Data``; soups built through research-systems-core's averaging, compared with the logit ensemble.

Checked against quantities computed here: the ensemble's accuracy from the ingredients' averaged
logits, each soup's weights as the documented average of its accepted ingredients, and each
soup's comparison and verdict against the best ingredient and the ensemble."""

from __future__ import annotations

import torch
from torch_geometric.data import Data
from torch_geometric.utils import stochastic_blockmodel_graph, to_undirected

from gnn_soup.data import as_graph_data
from gnn_soup.executors import SequentialExecutor
from gnn_soup.ingredients import make_plan, train_plan
from gnn_soup.soup import (
    SOUP_METHODS,
    make_evaluators,
    run_soups,
    soup_verdict,
)
from gnn_soup.training import TrainConfig, build_model, masked_accuracy
from research_systems_core.averaging import average_state_dicts

CLASSES, PER_CLASS, FEATURES = 3, 80, 24


def _sbm_data(seed: int = 0) -> Data:
    """A 3-block SBM (PyG's generator) with noisy class-mean features and an explicit split."""
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # stochastic_blockmodel_graph draws from the global generator
    sizes = [PER_CLASS] * CLASSES
    probs = torch.full((CLASSES, CLASSES), 0.02) + torch.eye(CLASSES) * 0.06
    edge_index = to_undirected(stochastic_blockmodel_graph(sizes, probs, directed=False))
    y = torch.arange(CLASSES).repeat_interleave(PER_CLASS)
    means = torch.randn(CLASSES, FEATURES, generator=g) * 0.6
    x = means[y] + torch.randn(len(y), FEATURES, generator=g)
    order = torch.randperm(len(y), generator=g)
    train = torch.zeros(len(y), dtype=torch.bool)
    for c in range(CLASSES):
        train[order[y[order] == c][:8]] = True
    rest = order[~train[order]]
    val = torch.zeros_like(train)
    val[rest[:80]] = True
    test = ~(train | val)
    return Data(x=x, edge_index=edge_index, y=y, train_mask=train, val_mask=val, test_mask=test)


def test_soups_of_ingredients_trained_on_a_pyg_graph() -> None:
    data = _sbm_data()
    graph = as_graph_data(data, name="sbm")
    # the PyG masks and labels are taken over unchanged
    for key in ("train_mask", "val_mask", "test_mask"):
        assert torch.equal(getattr(graph, key), getattr(data, key))
    assert torch.equal(graph.y, data.y) and graph.num_classes == CLASSES

    config = TrainConfig(model="gcn", hidden_dim=16, dropout=0.5, lr=0.02, steps=60, eval_every=5)
    plan = make_plan("sbm", 4, config, samplers=["full", "neighbor"], seed=0)
    results = train_plan(plan, data, SequentialExecutor())  # the PyG Data itself goes in
    assert [r.index for r in results] == [0, 1, 2, 3]
    states = [r.state_dict for r in results]
    assert all(r.val_acc > 1 / CLASSES + 0.15 for r in results), [r.val_acc for r in results]

    evaluators = make_evaluators(build_model(config, graph), graph)
    report = run_soups(evaluators, states, [r.val_acc for r in results], grid=6)

    # The ensemble: averaged logits of all ingredients, recomputed here.
    logits = torch.stack([evaluators.logits(sd) for sd in states]).mean(0)
    ensemble_test = masked_accuracy(logits[graph.test_mask], graph.y[graph.test_mask])
    ensemble_val = masked_accuracy(logits[graph.val_mask], graph.y[graph.val_mask])
    assert report["ensemble"] == {"val": ensemble_val, "test": ensemble_test}
    best = report["best_ingredient"]
    assert best["index"] == max(range(4), key=lambda i: (results[i].val_acc, -i))

    for kind in SOUP_METHODS:
        entry = report[kind]
        assert entry["vs_ensemble"] == entry["test"] - ensemble_test
        assert entry["vs_best_ingredient"] == entry["test"] - best["test"]
        assert entry["verdict"] == soup_verdict(entry, best, report["ensemble"])
        assert entry["test"] == evaluators.test(report["_states"][kind])  # reported = re-evaluated

    # Soup weights are the documented averages of the accepted ingredients.
    soups = report["_states"]
    torch.testing.assert_close(soups["uniform"], average_state_dicts(states), rtol=0, atol=0)
    greedy_members = report["greedy"]["accepted"]
    assert greedy_members[0] == best["index"]
    torch.testing.assert_close(
        soups["greedy"], average_state_dicts([states[i] for i in greedy_members]), rtol=1e-5, atol=1e-6
    )
    weights = {int(i): w for i, w in report["greedy_interpolation"]["weights"].items()}
    assert abs(sum(weights.values()) - 1.0) < 1e-9
    members = sorted(weights)
    torch.testing.assert_close(
        soups["greedy_interpolation"],
        average_state_dicts([states[i] for i in members], [weights[i] for i in members]),
        rtol=1e-5,
        atol=1e-6,
    )
    # The greedy rules never end below the best ingredient on validation.
    assert report["greedy"]["val"] >= best["val"]
    assert report["greedy_interpolation"]["val"] >= best["val"]
    assert best["test"] > 1 / CLASSES + 0.15, report
    print({k: (v["val"], v["test"], v.get("verdict")) for k, v in report.items() if k != "_states"})
