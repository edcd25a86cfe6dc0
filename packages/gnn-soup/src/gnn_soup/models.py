"""GCN, GraphSAGE and GAT built from PyG layers, with a registry and :func:`create_model`.

Every model takes ``(x, graph)``: ``x`` is a :class:`~gnn_soup.features.NodeFeatures` (input
dropout then runs only on stored non-zeros, see that module) or a dense tensor, and ``graph`` is
what :meth:`GNN.prepare` built once per batch (a normalised sparse adjacency for GCN, a sparse
adjacency for GraphSAGE, an edge_index for GAT).
"""

from __future__ import annotations

import itertools
import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.nn import GATConv, GCNConv, SAGEConv
from torch_geometric.nn.conv.gcn_conv import gcn_norm

from gnn_soup.features import NodeFeatures
from research_systems_core.registry import Registry
from research_systems_core.validation import check_int, check_range

MODELS = Registry("model")


def _sparse_adjacency_t(edge_index: torch.Tensor, values: torch.Tensor, num_nodes: int) -> torch.Tensor:
    """Transposed adjacency (row = target) as a torch CSR tensor: ``out = adj_t @ x`` aggregates."""
    coo = torch.sparse_coo_tensor(
        edge_index.flip(0), values, (num_nodes, num_nodes), check_invariants=False
    ).coalesce()
    with warnings.catch_warnings():  # "sparse CSR support is in beta"
        warnings.simplefilter("ignore", UserWarning)
        return coo.to_sparse_csr()


class GNN(nn.Module):
    """A stack of message-passing layers with ReLU and dropout between them (and on the input)."""

    accepts_sparse_input = True

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int, dropout: float) -> None:
        super().__init__()
        self.in_dim = check_int("in_dim", in_dim, minimum=1)
        self.hidden_dim = check_int("hidden_dim", hidden_dim, minimum=1)
        self.out_dim = check_int("out_dim", out_dim, minimum=1)
        self.num_layers = check_int("num_layers", num_layers, minimum=1)
        self.dropout = check_range("dropout", dropout, 0.0, 1.0, high_inclusive=False)
        self.convs = nn.ModuleList()

    def prepare(
        self, edge_index: torch.Tensor, num_nodes: int, edge_weight: torch.Tensor | None = None
    ) -> object:
        raise NotImplementedError

    def _input(self, x: NodeFeatures | torch.Tensor) -> torch.Tensor:
        if isinstance(x, NodeFeatures):
            out = x.dropout(self.dropout, self.training)
        else:
            out = F.dropout(x, self.dropout, self.training)
        if out.layout != torch.strided and not self.accepts_sparse_input:
            out = out.to_dense()
        return out

    def forward(self, x: NodeFeatures | torch.Tensor, graph: object) -> torch.Tensor:
        h = self._input(x)
        for i, conv in enumerate(self.convs):
            h = conv(h, graph)
            if i < len(self.convs) - 1:
                h = F.relu(h)
                h = F.dropout(h, self.dropout, self.training)
        return h

    def _dims(self) -> list[tuple[int, int]]:
        dims = [self.in_dim] + [self.hidden_dim] * (self.num_layers - 1) + [self.out_dim]
        return list(itertools.pairwise(dims))


@MODELS.register("gcn")
class GCN(GNN):
    """Kipf & Welling GCN; the symmetric normalisation (with self loops) is precomputed per batch."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2, dropout: float = 0.5):
        super().__init__(in_dim, hidden_dim, out_dim, num_layers, dropout)
        for a, b in self._dims():
            self.convs.append(GCNConv(a, b, normalize=False))

    def prepare(self, edge_index, num_nodes, edge_weight=None):
        index, weight = gcn_norm(edge_index, None, num_nodes, add_self_loops=True)
        if edge_weight is not None:  # GraphSAINT aggregator norm on the original (loop-free) edges
            if bool((edge_index[0] == edge_index[1]).any()):
                raise ValueError("edge weights need a graph without self loops (they are added here)")
            weight = weight.clone()
            weight[: edge_weight.numel()] *= edge_weight
        return _sparse_adjacency_t(index, weight, num_nodes)


@MODELS.register("sage")
class GraphSAGE(GNN):
    """GraphSAGE with mean aggregation (root weight + neighbour mean)."""

    accepts_sparse_input = False

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2, dropout: float = 0.5):
        super().__init__(in_dim, hidden_dim, out_dim, num_layers, dropout)
        for a, b in self._dims():
            self.convs.append(SAGEConv(a, b, aggr="mean"))

    def prepare(self, edge_index, num_nodes, edge_weight=None):
        # sparse adjacency: SAGEConv then aggregates with one sparse-dense product (reduce="mean")
        return _sparse_adjacency_t(edge_index, torch.ones(edge_index.shape[1]), num_nodes)


@MODELS.register("gat")
class GAT(GNN):
    """GAT: ``heads`` concatenated attention heads in hidden layers, one averaged head at the output."""

    def __init__(
        self,
        in_dim: int,
        hidden_dim: int,
        out_dim: int,
        num_layers: int = 2,
        dropout: float = 0.6,
        heads: int = 8,
    ):
        super().__init__(in_dim, hidden_dim, out_dim, num_layers, dropout)
        self.heads = check_int("heads", heads, minimum=1)
        dims = self._dims()
        for i, (a, b) in enumerate(dims):
            last = i == len(dims) - 1
            in_features = a if i == 0 else a * heads
            self.convs.append(
                GATConv(in_features, b, heads=1 if last else heads, concat=not last, dropout=dropout)
            )

    def prepare(self, edge_index, num_nodes, edge_weight=None):
        return edge_index

    def forward(self, x, graph):
        h = self._input(x)
        for i, conv in enumerate(self.convs):
            h = conv(h, graph)
            if i < len(self.convs) - 1:
                h = F.elu(h)
                h = F.dropout(h, self.dropout, self.training)
        return h


def create_model(name: str, in_dim: int, out_dim: int, hidden_dim: int = 64, **kwargs) -> GNN:
    """Build a registered model by name (``gcn``, ``sage``, ``gat``)."""
    return MODELS.create(name, in_dim=in_dim, hidden_dim=hidden_dim, out_dim=out_dim, **kwargs)
