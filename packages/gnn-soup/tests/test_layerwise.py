"""Layer-wise inference, propagated features (SGC, SIGN), FastGCN, samplers' statistics."""

import pytest
import torch
from torch_geometric.nn.conv.gcn_conv import gcn_norm

from gnn_soup.executors import SequentialExecutor
from gnn_soup.inference import layerwise_forward, propagate_features, receptive_sets
from gnn_soup.ingredients import make_plan, train_plan
from gnn_soup.models import create_model
from gnn_soup.samplers import NeighborSampler, create_sampler, pyg_backend_available
from gnn_soup.training import TrainConfig, TrainingContext


def _dense_gcn_adjacency(graph) -> torch.Tensor:
    index, weight = gcn_norm(graph.edge_index, None, graph.num_nodes, add_self_loops=True)
    return torch.sparse_coo_tensor(index.flip(0), weight, (graph.num_nodes,) * 2).to_dense()


@pytest.mark.parametrize("name", ["gcn", "sage", "gat"])
def test_layerwise_inference_equals_the_full_forward(graph, name) -> None:
    torch.manual_seed(0)
    model = create_model(name, in_dim=graph.features.shape[1], out_dim=3, hidden_dim=8, num_layers=3).eval()
    with torch.no_grad():
        full = model(graph.features, model.prepare(graph.edge_index, graph.num_nodes))
    layerwise = layerwise_forward(model, graph.graph, graph.features, chunk_size=37)
    assert torch.allclose(full, layerwise, atol=1e-5)
    nodes = torch.tensor([200, 5, 17, 5])  # any order, repeats allowed
    subset = layerwise_forward(model, graph.graph, graph.features, nodes=nodes, chunk_size=3)
    assert torch.allclose(full[nodes], subset, atol=1e-5)


def test_receptive_sets_grow_by_one_hop(graph) -> None:
    sets = receptive_sets(graph.graph, torch.tensor([0]), 2)
    neighbours = graph.graph.indices[graph.graph.indptr[0] : graph.graph.indptr[1]]
    assert sets[2].tolist() == [0]
    assert sets[1].tolist() == sorted({0, *neighbours.tolist()})
    assert set(sets[1].tolist()) <= set(sets[0].tolist())


def test_propagated_features_equal_dense_powers(graph) -> None:
    table = propagate_features(graph.graph, graph.features, 2, edge_chunk=50)
    a_hat, x = _dense_gcn_adjacency(graph), graph.features.to_dense()
    d = x.shape[1]
    assert torch.allclose(table[:, :d], x)
    assert torch.allclose(table[:, d : 2 * d], a_hat @ x, atol=1e-6)
    assert torch.allclose(table[:, 2 * d :], a_hat @ a_hat @ x, atol=1e-6)


@pytest.mark.parametrize("name", ["sgc", "sign"])
def test_precomputed_models_learn(graph, name) -> None:
    config = TrainConfig(
        model=name, hidden_dim=16, steps=80, eval_every=10, dropout=0.0, weight_decay=0.0, lr=0.05
    )
    plan = make_plan(
        "synthetic", 2, config, samplers=["full", "neighbor"], sampler_kwargs={"neighbor": {"batch_size": 16}}
    )
    results = train_plan(plan, graph, SequentialExecutor())
    assert all(r.val_acc > 0.6 for r in results), [r.val_acc for r in results]  # chance: 1/3


def test_fastgcn_layer_is_an_unbiased_estimate_of_a_hat(graph) -> None:
    sampler = create_sampler(
        "fastgcn", graph.graph, graph.train_mask, seed=0, batch_size=12, layer_size=40, num_layers=1
    )
    a_hat = _dense_gcn_adjacency(graph)
    h = torch.randn(graph.num_nodes, 3, generator=torch.Generator().manual_seed(1)).double()
    batch = torch.arange(10)
    total = torch.zeros(10, 3, dtype=torch.float64)
    draws = 3000
    for _ in range(draws):
        src, counts = sampler.sample_layer()
        block = sampler.layer_block(batch, src, counts)
        adj = torch.zeros(10, src.numel(), dtype=torch.float64)
        adj.index_put_((block.dst, block.src), block.weight.double(), accumulate=True)
        total += adj @ h[src]
    estimate, exact = total / draws, a_hat.double()[batch] @ h
    assert torch.allclose(estimate, exact, atol=0.08), (estimate - exact).abs().max()


def test_fastgcn_trains_gcn_only(graph) -> None:
    config = TrainConfig(hidden_dim=16, steps=40, eval_every=10)
    kwargs = {"fastgcn": {"batch_size": 16, "layer_size": 120}}
    (result,) = train_plan(
        make_plan("synthetic", 1, config, samplers=["fastgcn"], sampler_kwargs=kwargs),
        graph,
        SequentialExecutor(),
    )
    assert result.val_acc > 0.5
    with pytest.raises(ValueError, match="fastgcn.*gcn"):
        make_plan("synthetic", 1, TrainConfig(model="sage"), samplers=["fastgcn"])


def test_sampled_and_layerwise_validation_during_training(graph) -> None:
    config = TrainConfig(hidden_dim=8, steps=20, eval_every=5, eval_method="layerwise", eval_nodes=10)
    plan = make_plan("synthetic", 1, config, samplers=["neighbor"])
    (sampled,) = train_plan(plan, graph, SequentialExecutor())
    full = TrainConfig(hidden_dim=8, steps=20, eval_every=5, eval_method="full", eval_nodes=10)
    (reference,) = train_plan(
        make_plan("synthetic", 1, full, samplers=["neighbor"]), graph, SequentialExecutor()
    )
    assert sampled.history == reference.history  # same 10 nodes, same scores either way
    assert all(abs(h["val_acc"] * 10 - round(h["val_acc"] * 10)) < 1e-5 for h in sampled.history)  # 10 nodes


def test_sampler_state_round_trip_continues_the_stream(graph) -> None:
    sampler = create_sampler("neighbor", graph.graph, graph.train_mask, seed=3, batch_size=7)
    sampler.sample()
    state = {k: v.clone() for k, v in sampler.state_tensors().items()}
    expected = [sampler.sample().nodes for _ in range(5)]
    other = create_sampler("neighbor", graph.graph, graph.train_mask, seed=99, batch_size=7)
    other.load_state_tensors(state)
    assert all(torch.equal(a, other.sample().nodes) for a in expected)


def _neighbor_stats(sampler, batches: int) -> tuple[float, float]:
    nodes, edges = [], []
    for _ in range(batches):
        b = sampler.sample()
        nodes.append(b.num_nodes)
        edges.append(b.edge_index.shape[1])
    return sum(nodes) / batches, sum(edges) / batches


def test_own_neighbor_sampler_statistics_match_the_exact_expectation(graph) -> None:
    # one hop, fanout f: every seed keeps min(deg, f) neighbours, so edges per batch are exact
    sampler = NeighborSampler(
        graph.graph, graph.train_mask, torch.Generator().manual_seed(0), batch_size=24, fanouts=[3]
    )
    train = torch.nonzero(graph.train_mask).flatten()
    expected_edges = graph.graph.degree()[train].clamp(max=3).double().mean() * 24
    _, edges = _neighbor_stats(sampler, len(train) // 24)  # exactly one epoch: each seed once
    assert edges == pytest.approx(float(expected_edges), rel=1e-9)


@pytest.mark.skipif(not pyg_backend_available(), reason="PyG's NeighborLoader needs pyg-lib or torch-sparse")
def test_pyg_and_own_neighbor_samplers_have_the_same_statistics(graph) -> None:  # pragma: no cover
    own = create_sampler(
        "neighbor", graph.graph, graph.train_mask, seed=0, backend="torch", batch_size=8, fanouts=[4, 3]
    )
    pyg = create_sampler(
        "neighbor", graph.graph, graph.train_mask, seed=0, backend="auto", batch_size=8, fanouts=[4, 3]
    )
    own_nodes, own_edges = _neighbor_stats(own, 200)
    pyg_nodes, pyg_edges = _neighbor_stats(pyg, 200)
    assert own_nodes == pytest.approx(pyg_nodes, rel=0.1) and own_edges == pytest.approx(pyg_edges, rel=0.1)


def test_context_uses_layerwise_evaluation_above_the_threshold(graph, monkeypatch) -> None:
    import gnn_soup.training as training

    context = TrainingContext(graph)
    assert context.eval_method(TrainConfig()) == "full"
    monkeypatch.setattr(training, "FULL_EVAL_MAX_NODES", 10)
    assert context.eval_method(TrainConfig()) == "layerwise"
