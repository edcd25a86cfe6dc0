"""GCN, GraphSAGE and GAT built from PyG layers, with a registry and :func:`create_model`.

Every model takes ``(x, graph)``: ``x`` is a :class:`~gnn_soup.features.NodeFeatures` (input
dropout then runs only on stored non-zeros, see that module) or a dense tensor, and ``graph`` is
what :meth:`GNN.prepare` built once per batch (a normalised sparse adjacency for GCN, a sparse
adjacency for GraphSAGE, an edge_index for GAT).
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass

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


@dataclass
class Block:
    """One layer's bipartite graph for layer-wise inference and layer-wise samplers.

    ``num_dst`` target nodes, ``num_src`` source nodes whose first ``num_dst`` are the targets
    themselves (when ``dst_in_src``); edges ``src -> dst`` in local ids; ``weight`` optional
    per-edge weights (FastGCN: importance weights, already including self loops); ``degree_src``
    / ``degree_dst`` are the global (loop-free) degrees used for the GCN normalisation.
    """

    src: torch.Tensor
    dst: torch.Tensor
    num_src: int
    num_dst: int
    degree_src: torch.Tensor | None = None
    degree_dst: torch.Tensor | None = None
    weight: torch.Tensor | None = None
    dst_in_src: bool = True


def _rect_adjacency_t(block: Block, values: torch.Tensor) -> torch.Tensor:
    """``[num_dst, num_src]`` sparse CSR with ``values`` at (dst, src)."""
    coo = torch.sparse_coo_tensor(
        torch.stack([block.dst, block.src]), values, (block.num_dst, block.num_src), check_invariants=False
    ).coalesce()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return coo.to_sparse_csr()


class SymmetricNormAdjacency:
    """The whole graph's GCN operator ``A_hat = D^-1/2 (A + I) D^-1/2`` for a symmetric loop-free CSR.

    Kept as ``D^-1/2 A D^-1/2`` (a sparse CSR built from the graph's own ``indptr`` / ``indices``:
    no edge list, no sort, no coalesce) plus the diagonal ``1 / (deg + 1)`` of the self loops.
    Because ``A_hat`` is symmetric, the backward pass multiplies by the same matrix
    (:class:`_SymmetricSpmm`) instead of letting torch transpose the CSR (a sort of all edges) at
    every step: that transpose was most of a full-graph training step on the 1M-node graph.
    """

    def __init__(self, indptr: torch.Tensor, indices: torch.Tensor, num_nodes: int) -> None:
        degree = indptr[1:] - indptr[:-1]
        dinv = (degree.to(torch.float32) + 1.0).rsqrt()
        values = torch.repeat_interleave(dinv, degree)  # dinv[row] of every entry, no row ids kept
        values.mul_(torch.index_select(dinv, 0, indices))
        index_dtype = torch.int32 if indices.numel() < 2**31 - 1 else torch.int64
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            self.matrix = torch.sparse_csr_tensor(
                indptr.to(index_dtype), indices.to(index_dtype), values, (num_nodes, num_nodes)
            )
        self.self_weight = (dinv * dinv)[:, None]
        self.num_nodes = num_nodes

    def to(self, device: torch.device | str) -> SymmetricNormAdjacency:
        out = object.__new__(SymmetricNormAdjacency)
        out.matrix, out.self_weight = self.matrix.to(device), self.self_weight.to(device)
        out.num_nodes = self.num_nodes
        return out

    def dense(self) -> torch.Tensor:
        """``A_hat`` as a dense matrix (tests on small graphs)."""
        return self.matrix.to_dense() + torch.diag(self.self_weight.flatten())

    def __matmul__(self, h: torch.Tensor) -> torch.Tensor:
        return _SymmetricSpmm.apply(self.matrix, self.self_weight, h)


class _SymmetricSpmm(torch.autograd.Function):
    """``A_hat @ h`` whose gradient ``A_hat^T @ g`` is ``A_hat @ g`` (``A_hat`` symmetric)."""

    @staticmethod
    def forward(ctx, matrix, self_weight, h):
        ctx.save_for_backward(matrix, self_weight)
        h = h.to(self_weight.dtype)
        return torch.sparse.mm(matrix, h) + self_weight * h

    @staticmethod
    def backward(ctx, grad):
        matrix, self_weight = ctx.saved_tensors
        grad = grad.to(self_weight.dtype)
        return None, None, torch.sparse.mm(matrix, grad) + self_weight * grad


class GNN(nn.Module):
    """A stack of message-passing layers with ReLU and dropout between them (and on the input).

    Besides the full forward, :meth:`block_layer` runs layer ``i`` on one :class:`Block`
    (layer-wise inference over chunks of targets; layer-wise samplers such as FastGCN).
    """

    accepts_sparse_input = True
    precomputed_hops: int = 0  # > 0: the model reads propagated features (SGC, SIGN), no graph

    def block_structure(self, block: Block) -> object:
        raise NotImplementedError(f"{type(self).__name__} has no block-wise layers")

    def block_layer(self, i: int, h_src: torch.Tensor, block: Block) -> torch.Tensor:
        """Layer ``i`` on ``block`` in eval mode: ``[num_src, d] -> [num_dst, d']`` (activation included)."""
        out = self.convs[i](h_src, self.block_structure(block))
        return self.activation(out) if i < len(self.convs) - 1 else out

    def activation(self, h: torch.Tensor) -> torch.Tensor:
        return F.relu(h)

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

    def prepare_graph(self, graph) -> object | None:
        """The whole graph's structure built straight from its CSR (None: use :meth:`prepare`)."""
        return None

    def forward(self, x: NodeFeatures | torch.Tensor, graph: object) -> torch.Tensor:
        h = self._input(x)
        layered = isinstance(graph, list)  # one structure per layer (layer-wise samplers)
        for i, conv in enumerate(self.convs):
            h = conv(h, graph[i] if layered else graph)
            if i < len(self.convs) - 1:
                h = self.activation(h)
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

    def prepare_graph(self, graph) -> SymmetricNormAdjacency:
        """``A_hat`` of a symmetric loop-free CSR graph (every :class:`GraphData`'s graph)."""
        return SymmetricNormAdjacency(graph.indptr, graph.indices, graph.num_nodes)

    def forward(self, x: NodeFeatures | torch.Tensor, graph: object) -> torch.Tensor:
        if not isinstance(graph, SymmetricNormAdjacency):
            return super().forward(x, graph)
        h = self._input(x)
        for i, conv in enumerate(self.convs):
            h = self._symmetric_conv(conv, h, graph)
            if i < len(self.convs) - 1:
                h = F.dropout(self.activation(h), self.dropout, self.training)
        return h

    @staticmethod
    def _symmetric_conv(conv: GCNConv, h: torch.Tensor, graph: SymmetricNormAdjacency) -> torch.Tensor:
        """GCNConv's ``A_hat (h W) + b``, multiplying on the narrower side: ``(A_hat h) W`` when
        the input is narrower than the output (the same value, fewer sparse operations)."""
        if h.layout == torch.strided and conv.in_channels < conv.out_channels:
            out = conv.lin(graph @ h)
        else:
            out = graph @ conv.lin(h)
        return out + conv.bias if conv.bias is not None else out

    def block_layer(self, i: int, h_src: torch.Tensor, block: Block) -> torch.Tensor:
        """Layer ``i`` on a block whose edges are sorted by target (layer-wise inference): the
        block's CSR is built from the targets' degrees directly (no coalesce, no sort) and the
        self loops are added as a diagonal term."""
        dst = block.dst
        if block.weight is not None or not block.dst_in_src or bool((dst[1:] < dst[:-1]).any()):
            return super().block_layer(i, h_src, block)
        conv = self.convs[i]
        dinv_src = (block.degree_src.double() + 1.0).rsqrt()
        dinv_dst = (block.degree_dst.double() + 1.0).rsqrt()
        crow = torch.zeros(block.num_dst + 1, dtype=torch.long, device=dst.device)
        crow[1:] = torch.cumsum(torch.bincount(dst, minlength=block.num_dst), 0)
        values = (dinv_src[block.src] * dinv_dst[dst]).float()
        with warnings.catch_warnings():  # "sparse CSR support is in beta"
            warnings.simplefilter("ignore", UserWarning)
            adjacency = torch.sparse_csr_tensor(crow, block.src, values, (block.num_dst, block.num_src))
        loops = (dinv_dst * dinv_dst).float()[:, None]
        if conv.in_channels < conv.out_channels:  # (A h) W: the linear map on the targets only
            h_src = h_src.to(values.dtype)
            out = conv.lin(torch.sparse.mm(adjacency, h_src) + loops * h_src[: block.num_dst])
        else:
            h = conv.lin(h_src)
            out = torch.sparse.mm(adjacency, h) + loops * h[: block.num_dst]
        if conv.bias is not None:
            out = out + conv.bias
        return self.activation(out) if i < len(self.convs) - 1 else out

    def block_structure(self, block: Block) -> torch.Tensor:
        """Rectangular normalised adjacency; with ``weight`` (FastGCN) the weights are used as given."""
        if block.weight is not None:
            return _rect_adjacency_t(block, block.weight.float())
        dinv_src = (block.degree_src.double() + 1.0).rsqrt()
        dinv_dst = (block.degree_dst.double() + 1.0).rsqrt()
        values = dinv_src[block.src] * dinv_dst[block.dst]
        loops = torch.arange(block.num_dst, device=block.src.device)
        full = Block(
            src=torch.cat([block.src, loops]),
            dst=torch.cat([block.dst, loops]),
            num_src=block.num_src,
            num_dst=block.num_dst,
        )
        values = torch.cat([values, dinv_dst * dinv_dst]).float()
        return _rect_adjacency_t(full, values)


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

    def block_structure(self, block: Block) -> torch.Tensor:
        return _rect_adjacency_t(block, torch.ones(block.src.numel(), device=block.src.device))

    def block_layer(self, i: int, h_src: torch.Tensor, block: Block) -> torch.Tensor:
        out = self.convs[i]((h_src, h_src[: block.num_dst]), self.block_structure(block))
        return self.activation(out) if i < len(self.convs) - 1 else out


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

    def activation(self, h: torch.Tensor) -> torch.Tensor:
        return F.elu(h)

    def block_layer(self, i: int, h_src: torch.Tensor, block: Block) -> torch.Tensor:
        # targets are the first sources: GATConv's self loops i -> i then land on the right nodes
        out = self.convs[i](h_src, torch.stack([block.src, block.dst]))[: block.num_dst]
        return self.activation(out) if i < len(self.convs) - 1 else out


class PrecomputedModel(GNN):
    """A model on propagated features ``[X, A X, ..., A^K X]`` (no graph in the forward pass)."""

    accepts_sparse_input = False

    def prepare(self, edge_index, num_nodes, edge_weight=None):
        return None


@MODELS.register("sgc")
class SGC(PrecomputedModel):
    """SGC (Wu et al. 2019): a linear classifier on ``A_hat^K X`` (``num_layers`` = K hops)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2, dropout: float = 0.0):
        super().__init__(in_dim, hidden_dim, out_dim, num_layers, dropout)
        self.precomputed_hops = self.num_layers
        self.linear = nn.Linear(in_dim, out_dim)

    def forward(self, x, graph=None):
        h = self._input(x)  # [N, (K + 1) * in_dim]: only the last hop is used
        return self.linear(h[:, -self.in_dim :])


@MODELS.register("sign")
class SIGN(PrecomputedModel):
    """SIGN (Frasca et al. 2020): one linear map per hop ``A_hat^k X`` (k = 0..K), concatenated,
    ReLU and dropout, then a linear classifier."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, num_layers: int = 2, dropout: float = 0.5):
        super().__init__(in_dim, hidden_dim, out_dim, num_layers, dropout)
        self.precomputed_hops = self.num_layers
        self.hops = nn.ModuleList(nn.Linear(in_dim, hidden_dim) for _ in range(self.num_layers + 1))
        self.out = nn.Linear(hidden_dim * (self.num_layers + 1), out_dim)

    def forward(self, x, graph=None):
        h = self._input(x)
        parts = [lin(h[:, k * self.in_dim : (k + 1) * self.in_dim]) for k, lin in enumerate(self.hops)]
        h = F.dropout(F.relu(torch.cat(parts, dim=1)), self.dropout, self.training)
        return self.out(h)


def create_model(name: str, in_dim: int, out_dim: int, hidden_dim: int = 64, **kwargs) -> GNN:
    """Build a registered model by name (``gcn``, ``sage``, ``gat``, ``sgc``, ``sign``)."""
    return MODELS.create(name, in_dim=in_dim, hidden_dim=hidden_dim, out_dim=out_dim, **kwargs)
