import itertools

import pytest
import torch

from gnn_soup.samplers import SAMPLERS, create_sampler


def _edge_set(edge_index: torch.Tensor) -> set[tuple[int, int]]:
    return {(int(a), int(b)) for a, b in edge_index.t()}


def _check_valid(graph, batch) -> None:
    nodes = batch.nodes
    assert nodes.unique().numel() == nodes.numel(), "nodes must be unique"
    local = batch.edge_index
    if local.numel():
        assert int(local.min()) >= 0 and int(local.max()) < nodes.numel(), "edges only between sampled nodes"
    glob = _edge_set(nodes[local])
    assert glob <= _edge_set(graph.edge_index), "every sampled edge is an edge of the graph"


@pytest.mark.parametrize("name", ["full", "cluster", "saint_node", "saint_edge", "saint_rw", "neighbor"])
def test_every_sampler_returns_valid_subgraphs(graph, name) -> None:
    csr = graph.csr()
    small = {"saint_node": {"budget": 60}, "saint_edge": {"budget": 40}, "saint_rw": {"num_roots": 20}}
    sampler = create_sampler(name, csr, graph.train_mask, seed=0, backend="torch", **small.get(name, {}))
    for _ in range(3):
        _check_valid(graph, sampler.sample())


def test_induced_samplers_keep_all_edges_between_sampled_nodes(graph) -> None:
    csr = graph.csr()
    for name, kwargs in [
        ("cluster", {"num_parts": 6}),
        ("saint_node", {"budget": 50}),
        ("saint_rw", {"num_roots": 20}),
    ]:
        batch = create_sampler(name, csr, graph.train_mask, seed=1, **kwargs).sample()
        inside = set(batch.nodes.tolist())
        expected = {(a, b) for a, b in _edge_set(graph.edge_index) if a in inside and b in inside}
        assert _edge_set(batch.nodes[batch.edge_index]) == expected, name


def test_saint_node_sampler_takes_exactly_budget_nodes(graph) -> None:
    sampler = create_sampler("saint_node", graph.csr(), graph.train_mask, seed=2, budget=37)
    assert sampler.sample().num_nodes == 37
    assert torch.all(sampler.probabilities > 0)


def test_saint_edge_sampler_nodes_are_endpoints_of_budget_edges(graph) -> None:
    sampler = create_sampler("saint_edge", graph.csr(), graph.train_mask, seed=3, budget=20)
    g1 = torch.Generator().manual_seed(9)
    sampler.generator = g1
    edges = sampler.sample_edges()
    assert edges.shape == (2, 20)
    assert _edge_set(edges) <= _edge_set(graph.edge_index)
    assert len(_edge_set(edges)) == 20  # without replacement
    sampler.generator = torch.Generator().manual_seed(9)
    batch = sampler.sample()
    assert torch.equal(batch.nodes, torch.unique(edges))


def test_random_walks_follow_edges(graph) -> None:
    sampler = create_sampler("saint_rw", graph.csr(), graph.train_mask, seed=4, num_roots=25, walk_length=3)
    walks = sampler.walks()
    assert walks.shape == (25, 4)
    edges = _edge_set(graph.edge_index)
    degree = graph.csr().degree()
    for walk in walks.tolist():
        for a, b in itertools.pairwise(walk):
            assert (a, b) in edges or (a == b and degree[a] == 0)


def test_neighbor_sampler_respects_fanouts_and_puts_seeds_first(graph) -> None:
    csr = graph.csr()
    sampler = create_sampler(
        "neighbor", csr, graph.train_mask, seed=5, backend="torch", batch_size=7, fanouts=[3, 2]
    )
    batch = sampler.sample()
    _check_valid(graph, batch)
    assert batch.num_targets == 7
    seeds = batch.nodes[:7]
    assert bool(graph.train_mask[seeds].all())
    in_degree = torch.bincount(batch.edge_index[1], minlength=batch.num_nodes)
    assert int(in_degree[:7].max()) <= 3
    assert int(in_degree.max()) <= 3
    # hop 1: each seed gets min(degree, 3) distinct neighbours
    expected = torch.clamp(csr.degree()[seeds], max=3)
    assert torch.equal(in_degree[:7], expected)


def test_neighbor_epoch_visits_every_training_node(graph) -> None:
    sampler = create_sampler(
        "neighbor", graph.csr(), graph.train_mask, seed=6, backend="torch", batch_size=5, fanouts=[2]
    )
    n_train = int(graph.train_mask.sum())
    batches = [sampler.sample() for _ in range(-(-n_train // 5))]
    seen = torch.cat([b.nodes[: b.num_targets] for b in batches])
    assert seen.numel() == n_train  # each training node exactly once per epoch
    assert torch.equal(torch.sort(torch.unique(seen)).values, torch.nonzero(graph.train_mask).flatten())


def test_cluster_batches_are_unions_of_parts(graph) -> None:
    sampler = create_sampler(
        "cluster", graph.csr(), graph.train_mask, seed=7, num_parts=6, clusters_per_batch=2
    )
    covered = torch.cat([sampler.sample().nodes for _ in range(3)])  # one epoch = 3 batches
    assert torch.equal(torch.sort(covered).values, torch.arange(graph.num_nodes))


def test_saint_normalisation_is_positive_and_finite(graph) -> None:
    sampler = create_sampler(
        "saint_rw", graph.csr(), graph.train_mask, seed=8, num_roots=20, sample_coverage=5
    )
    batch = sampler.sample()
    assert batch.node_norm is not None and batch.edge_norm is not None
    assert torch.all(batch.node_norm > 0) and torch.isfinite(batch.node_norm).all()
    assert batch.edge_norm.numel() == batch.edge_index.shape[1]


def test_sampler_bad_input(graph) -> None:
    csr = graph.csr()
    with pytest.raises(ValueError, match="sampler"):
        create_sampler("graphsaint", csr, graph.train_mask, seed=0)
    with pytest.raises(ValueError, match=r"budget must be <= the number of nodes \(240\), got 999"):
        create_sampler("saint_node", csr, graph.train_mask, seed=0, budget=999)
    with pytest.raises(ValueError, match="backend must be one of"):
        create_sampler("full", csr, graph.train_mask, seed=0, backend="cuda")
    with pytest.raises(ValueError, match="fanout"):
        create_sampler("neighbor", csr, graph.train_mask, seed=0, fanouts=[0])
    assert set(SAMPLERS.names()) == {
        "full",
        "cluster",
        "saint_node",
        "saint_edge",
        "saint_rw",
        "neighbor",
        "fastgcn",
    }
