import pytest
import torch

from gnn_soup.csr import CSRGraph, GraphValidationError, induced_subgraph, symmetrize, validate_symmetric_csr
from gnn_soup.partition import (
    EmptyPartitionError,
    check_partition,
    edge_cut,
    metis_partition,
    parts_to_nodes,
    random_partition,
)


def test_symmetrize_dedupes_and_drops_loops() -> None:
    edges = torch.tensor([[0, 1, 1, 2, 2], [1, 0, 2, 2, 1]])
    g = symmetrize(edges, 4)
    assert g.edge_index().tolist() == [[0, 1, 1, 2], [1, 0, 2, 1]]
    assert g.degree().tolist() == [1, 2, 1, 0]
    validate_symmetric_csr(g)


def test_validation_rejects_bad_csr() -> None:
    asym = CSRGraph.from_edge_index(torch.tensor([[0, 1], [1, 2]]), 3)
    with pytest.raises(GraphValidationError, match="not symmetric: 2 edges"):
        validate_symmetric_csr(asym)
    loop = CSRGraph.from_edge_index(torch.tensor([[0], [0]]), 2)
    with pytest.raises(GraphValidationError, match="self loops"):
        validate_symmetric_csr(loop)
    bad = CSRGraph(indptr=torch.tensor([0, 1, 1]), indices=torch.tensor([5]), num_nodes=2)
    with pytest.raises(GraphValidationError, match=r"indices must be in \[0, 2\)"):
        validate_symmetric_csr(bad)
    with pytest.raises(GraphValidationError, match="indptr must have"):
        validate_symmetric_csr(CSRGraph(indptr=torch.tensor([0, 0]), indices=torch.tensor([]), num_nodes=2))
    with pytest.raises(GraphValidationError, match=r"edge_index entries must be in \[0, 3\)"):
        symmetrize(torch.tensor([[0], [3]]), 3)


def test_induced_subgraph_hand_case() -> None:
    # path 0-1-2-3 plus chord 0-3
    edges = torch.tensor([[0, 1, 1, 2, 2, 3, 0, 3], [1, 0, 2, 1, 3, 2, 3, 0]])
    g = CSRGraph.from_edge_index(edges, 4)
    local, ids = induced_subgraph(g, torch.tensor([3, 0, 2]))
    pairs = {(int(a), int(b)) for a, b in local.t()}
    # local ids: 3->0, 0->1, 2->2 ; edges among {0, 2, 3}: 2-3 and 0-3
    assert pairs == {(0, 2), (2, 0), (0, 1), (1, 0)}
    full = g.edge_index()
    nodes = torch.tensor([3, 0, 2])
    assert torch.equal(full[:, ids], nodes[local])


def test_metis_covers_every_node_exactly_once(graph) -> None:
    membership = metis_partition(graph.edge_index, graph.num_nodes, 6, seed=1)
    assert membership.shape == (graph.num_nodes,)
    parts = parts_to_nodes(membership, 6)
    everything = torch.cat(parts)
    assert torch.equal(torch.sort(everything).values, torch.arange(graph.num_nodes))
    assert all(p.numel() > 0 for p in parts)
    # METIS must cut far fewer edges than a random partition of the same size
    rand = random_partition(graph.num_nodes, 6, seed=1)
    assert edge_cut(graph.edge_index, membership) < 0.6 * edge_cut(graph.edge_index, rand)


def test_metis_on_asymmetric_input_is_symmetrised_first() -> None:
    directed = torch.tensor([[0, 1, 2, 3, 4, 5], [1, 2, 3, 4, 5, 0]])  # a directed cycle
    membership = metis_partition(directed, 6, 2)
    assert sorted(torch.bincount(membership).tolist()) == [3, 3]


def test_random_partition_is_balanced_and_seeded() -> None:
    m = random_partition(10, 3, seed=4)
    assert sorted(torch.bincount(m).tolist()) == [3, 3, 4]
    assert torch.equal(m, random_partition(10, 3, seed=4))


def test_partition_bad_input() -> None:
    with pytest.raises(ValueError, match="num_parts"):
        metis_partition(torch.tensor([[0], [1]]), 2, 0)
    with pytest.raises(ValueError, match=r"num_parts must be <= the number of nodes \(2\), got 3"):
        random_partition(2, 3)
    with pytest.raises(EmptyPartitionError, match=r"partition\(s\) \[1\] of 3 are empty"):
        check_partition(torch.tensor([0, 0, 2]), 3)
