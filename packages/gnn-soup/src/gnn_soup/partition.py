"""Graph partitions: METIS through pymetis (validated input) and a random baseline."""

from __future__ import annotations

import torch

from gnn_soup.csr import CSRGraph, symmetrize, validate_symmetric_csr
from research_systems_core.validation import check_int


class EmptyPartitionError(ValueError):
    """A partition has no nodes (too many parts for the graph)."""


def _check_parts(num_parts: int, num_nodes: int) -> None:
    check_int("num_parts", num_parts, minimum=1)
    if num_parts > num_nodes:
        raise ValueError(f"num_parts must be <= the number of nodes ({num_nodes}), got {num_parts}")


def check_partition(membership: torch.Tensor, num_parts: int) -> None:
    """Every part must be non-empty and every node must belong to exactly one part in range."""
    if membership.dim() != 1:
        raise ValueError(f"membership must be a 1-D tensor, got shape {tuple(membership.shape)}")
    if membership.numel() and (int(membership.min()) < 0 or int(membership.max()) >= num_parts):
        raise ValueError(f"membership entries must be in [0, {num_parts})")
    sizes = torch.bincount(membership, minlength=num_parts)
    empty = torch.nonzero(sizes == 0).flatten().tolist()
    if empty:
        raise EmptyPartitionError(
            f"partition(s) {empty} of {num_parts} are empty; use fewer parts (num_parts={num_parts})"
        )


def metis_partition(edge_index: torch.Tensor, num_nodes: int, num_parts: int, seed: int = 0) -> torch.Tensor:
    """METIS k-way partition of the (symmetrised) graph; returns each node's part id (int64).

    The adjacency is symmetrised, de-duplicated, stripped of self loops and validated before it
    reaches pymetis, which would otherwise corrupt memory on asymmetric input.
    """
    _check_parts(num_parts, num_nodes)
    if num_parts == 1:
        return torch.zeros(num_nodes, dtype=torch.long)

    graph = symmetrize(edge_index, num_nodes)
    validate_symmetric_csr(graph)
    membership = _pymetis_call(graph, num_parts, seed)
    check_partition(membership, num_parts)
    return membership


def _pymetis_call(graph: CSRGraph, num_parts: int, seed: int) -> torch.Tensor:
    import numpy as np
    import pymetis

    options = pymetis.Options()
    options.seed = int(seed)
    xadj = np.ascontiguousarray(graph.indptr.numpy(), dtype=np.int64)
    adjncy = np.ascontiguousarray(graph.indices.numpy(), dtype=np.int64)
    if hasattr(pymetis, "CSRAdjacency"):  # pymetis >= 2025.2
        adjacency = pymetis.CSRAdjacency(adj_starts=xadj, adjacent=adjncy)
        _, membership = pymetis.part_graph(num_parts, adjacency=adjacency, options=options)
    else:  # pragma: no cover - older pymetis
        _, membership = pymetis.part_graph(num_parts, xadj=xadj, adjncy=adjncy, options=options)
    return torch.as_tensor(np.asarray(membership), dtype=torch.long)


def random_partition(num_nodes: int, num_parts: int, seed: int = 0) -> torch.Tensor:
    """Balanced random partition: a random permutation cut into ``num_parts`` near-equal parts."""
    _check_parts(num_parts, num_nodes)
    generator = torch.Generator().manual_seed(int(seed))
    permutation = torch.randperm(num_nodes, generator=generator)
    membership = torch.empty(num_nodes, dtype=torch.long)
    membership[permutation] = torch.arange(num_nodes) * num_parts // num_nodes
    return membership


def edge_cut(edge_index: torch.Tensor, membership: torch.Tensor) -> int:
    """Number of (directed) edges whose endpoints lie in different parts."""
    return int((membership[edge_index[0]] != membership[edge_index[1]]).sum())


def parts_to_nodes(membership: torch.Tensor, num_parts: int) -> list[torch.Tensor]:
    """Node ids of every part, in increasing order."""
    order = torch.argsort(membership, stable=True)
    sizes = torch.bincount(membership, minlength=num_parts).tolist()
    return list(torch.split(order, sizes))
