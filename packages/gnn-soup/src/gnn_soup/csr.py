"""Compressed sparse row (CSR) graphs in plain torch: build, symmetrise, validate, induce subgraphs.

Everything the samplers and the METIS partitioner need, without torch-sparse or pyg-lib.
Edges are stored as ``edge_index = [source, target]`` (PyG's convention); the CSR is indexed by
source node: the neighbours of ``v`` are ``indices[indptr[v]:indptr[v + 1]]``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


class GraphValidationError(ValueError):
    """A graph structure is malformed (bad index range, asymmetric adjacency, ...)."""


@dataclass(frozen=True)
class CSRGraph:
    """A directed graph in CSR form: ``indices[indptr[v]:indptr[v+1]]`` are the targets of ``v``."""

    indptr: torch.Tensor
    indices: torch.Tensor
    num_nodes: int

    @property
    def num_edges(self) -> int:
        return int(self.indices.numel())

    def degree(self) -> torch.Tensor:
        """Out-degree of every node (int64)."""
        return self.indptr[1:] - self.indptr[:-1]

    def degree_of(self, nodes: torch.Tensor) -> torch.Tensor:
        """Out-degree of ``nodes`` only (int64), without a whole-graph degree array."""
        nodes = nodes.long()
        return self.indptr[nodes + 1] - self.indptr[nodes]

    def edge_index(self) -> torch.Tensor:
        """The edges as a ``[2, E]`` int64 tensor, sorted by source then by CSR order."""
        sources = torch.repeat_interleave(torch.arange(self.num_nodes), self.degree())
        return torch.stack([sources, self.indices.long()])

    def neighbors_of(self, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """All edges leaving ``nodes``: (position of the owner in ``nodes``, neighbour id), int64."""
        nodes = nodes.long()
        starts, ends = self.indptr[nodes], self.indptr[nodes + 1]
        counts = ends - starts
        owner = torch.repeat_interleave(torch.arange(nodes.numel()), counts)
        offsets = torch.arange(int(counts.sum())) - torch.repeat_interleave(
            torch.cumsum(counts, 0) - counts, counts
        )
        edge_ids = torch.repeat_interleave(starts, counts) + offsets
        return owner, self.indices[edge_ids].long()

    @classmethod
    def from_edge_index(cls, edge_index: torch.Tensor, num_nodes: int) -> CSRGraph:
        """Build a CSR from ``[2, E]`` edges (duplicates are kept; see :func:`symmetrize`)."""
        edge_index = _check_edge_index(edge_index, num_nodes)
        source, target = edge_index
        order = torch.argsort(source * num_nodes + target, stable=True)
        counts = torch.bincount(source, minlength=num_nodes)
        indptr = torch.zeros(num_nodes + 1, dtype=torch.long)
        indptr[1:] = torch.cumsum(counts, 0)
        return cls(indptr=indptr, indices=target[order].contiguous(), num_nodes=num_nodes)


def _check_edge_index(edge_index: torch.Tensor, num_nodes: int) -> torch.Tensor:
    if not isinstance(edge_index, torch.Tensor) or edge_index.dim() != 2 or edge_index.shape[0] != 2:
        shape = tuple(edge_index.shape) if isinstance(edge_index, torch.Tensor) else type(edge_index)
        raise GraphValidationError(f"edge_index must be a [2, E] tensor, got {shape}")
    if num_nodes < 1:
        raise GraphValidationError(f"num_nodes must be >= 1, got {num_nodes}")
    edge_index = edge_index.long()
    if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= num_nodes):
        raise GraphValidationError(
            f"edge_index entries must be in [0, {num_nodes}), got range "
            f"[{int(edge_index.min())}, {int(edge_index.max())}]"
        )
    return edge_index


def symmetrize(edge_index: torch.Tensor, num_nodes: int, remove_self_loops: bool = True) -> CSRGraph:
    """Undirected simple graph: union of the edges and their reverses, no duplicates, no self loops."""
    edge_index = _check_edge_index(edge_index, num_nodes)
    both = torch.cat([edge_index, edge_index.flip(0)], dim=1)
    if remove_self_loops:
        both = both[:, both[0] != both[1]]
    keys = torch.unique(both[0] * num_nodes + both[1])  # sorted, unique
    return CSRGraph.from_edge_index(torch.stack([keys // num_nodes, keys % num_nodes]), num_nodes)


def validate_symmetric_csr(graph: CSRGraph) -> None:
    """Raise :class:`GraphValidationError` unless the CSR is well formed, loop-free and symmetric.

    METIS (through pymetis) does not check its input: an asymmetric adjacency corrupts its memory
    and can hang the process, so every partition call goes through this check first.
    """
    n = graph.num_nodes
    indptr, indices = graph.indptr, graph.indices
    if indptr.dim() != 1 or indptr.numel() != n + 1:
        raise GraphValidationError(f"indptr must have num_nodes + 1 = {n + 1} entries, got {indptr.numel()}")
    if int(indptr[0]) != 0 or int(indptr[-1]) != indices.numel():
        raise GraphValidationError(
            f"indptr must start at 0 and end at len(indices) = {indices.numel()}, "
            f"got {int(indptr[0])} and {int(indptr[-1])}"
        )
    if bool((indptr[1:] < indptr[:-1]).any()):
        raise GraphValidationError("indptr must be non-decreasing")
    if indices.numel() == 0:
        return
    if int(indices.min()) < 0 or int(indices.max()) >= n:
        raise GraphValidationError(
            f"indices must be in [0, {n}), got range [{int(indices.min())}, {int(indices.max())}]"
        )
    edge_index = graph.edge_index()
    if bool((edge_index[0] == edge_index[1]).any()):
        raise GraphValidationError("the adjacency has self loops; METIS requires a loop-free graph")
    forward = torch.unique(edge_index[0] * n + edge_index[1])
    if forward.numel() != edge_index.shape[1]:
        raise GraphValidationError("the adjacency has duplicate edges")
    backward = torch.unique(edge_index[1] * n + edge_index[0])
    if not torch.equal(forward, backward):
        missing = int((~torch.isin(forward, backward)).sum())
        raise GraphValidationError(f"the adjacency is not symmetric: {missing} edges have no reverse edge")


def induced_subgraph(graph: CSRGraph, nodes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Edges of ``graph`` with both endpoints in ``nodes``, relabelled to positions in ``nodes``.

    ``nodes`` must be unique. Returns the ``[2, E_sub]`` local edge_index and the CSR positions
    (global edge ids) of those edges.
    """
    nodes = nodes.long()
    mapping = torch.full((graph.num_nodes,), -1, dtype=torch.long)
    mapping[nodes] = torch.arange(nodes.numel())
    starts, ends = graph.indptr[nodes], graph.indptr[nodes + 1]
    counts = ends - starts
    local_source = torch.repeat_interleave(torch.arange(nodes.numel()), counts)
    offsets = torch.arange(int(counts.sum())) - torch.repeat_interleave(
        torch.cumsum(counts, 0) - counts, counts
    )
    edge_ids = torch.repeat_interleave(starts, counts) + offsets
    local_target = mapping[graph.indices[edge_ids].long()]
    keep = local_target >= 0
    return torch.stack([local_source[keep], local_target[keep]]), edge_ids[keep]
