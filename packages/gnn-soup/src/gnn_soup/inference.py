"""Scoring graphs too large for one full-batch forward: layer-wise mini-batch inference.

Layer ``l`` is computed for all needed nodes before layer ``l + 1``, in chunks of target nodes:
each chunk gathers its neighbours' layer ``l - 1`` outputs (a :class:`~gnn_soup.models.Block`),
so peak memory is one chunk's neighbourhood plus one ``[nodes, hidden]`` table per layer instead of
the whole graph's activations and adjacency. With ``nodes`` given, only their receptive field is
computed (exact scores of a sample of validation nodes during training).

Also the propagation ``[X, A X, ..., A^K X]`` that SGC and SIGN read, computed in row chunks.
"""

from __future__ import annotations

import contextlib

import torch

from gnn_soup.csr import CSRGraph
from gnn_soup.features import NodeFeatures
from gnn_soup.models import GNN, Block
from research_systems_core.validation import check_int

DEFAULT_CHUNK = 8192
DEFAULT_TARGET_BATCH = 8192


def receptive_sets(graph: CSRGraph, nodes: torch.Tensor, hops: int, chunk: int = 4096) -> list[torch.Tensor]:
    """``[R_0, ..., R_hops]`` with ``R_hops = nodes`` and ``R_{l-1} = R_l + neighbours(R_l)`` (sorted).

    Neighbours are marked in a boolean ``[num_nodes]`` array ``chunk`` nodes at a time, so the
    edge lists of a large receptive field are never held at once.
    """
    sets = [torch.unique(nodes.long())]
    for _ in range(hops):
        mark = torch.zeros(graph.num_nodes, dtype=torch.bool)
        mark[sets[0]] = True
        for part in torch.split(sets[0], chunk):
            _, neighbours = graph.neighbors_of(part)
            mark[neighbours] = True
        sets.insert(0, torch.nonzero(mark).flatten())
    return sets


def make_block(graph: CSRGraph, targets: torch.Tensor, scratch: torch.Tensor) -> tuple[Block, torch.Tensor]:
    """The block of ``targets`` (global ids) and its source nodes (targets first, then new neighbours).

    ``scratch`` is a ``[num_nodes]`` int64 buffer filled with -1; it is left that way on return.
    """
    count = targets.numel()
    owner, neighbours = graph.neighbors_of(targets)
    scratch[targets] = torch.arange(count)
    new = torch.unique(neighbours[scratch[neighbours] < 0])
    scratch[new] = torch.arange(count, count + new.numel())
    sources = torch.cat([targets, new])
    src = scratch[neighbours]
    scratch[sources] = -1
    block = Block(
        src=src,
        dst=owner,
        num_src=int(sources.numel()),
        num_dst=int(count),
        degree_src=graph.degree_of(sources),
        degree_dst=graph.degree_of(targets),
    )
    return block, sources


def _block_to(block: Block, device: torch.device) -> Block:
    if block.src.device == device:
        return block
    return Block(
        src=block.src.to(device),
        dst=block.dst.to(device),
        num_src=block.num_src,
        num_dst=block.num_dst,
        degree_src=block.degree_src.to(device),
        degree_dst=block.degree_dst.to(device),
    )


@torch.no_grad()
def layerwise_forward(
    model: GNN,
    graph: CSRGraph,
    features: NodeFeatures,
    nodes: torch.Tensor | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    device: torch.device | str = "cpu",
    autocast=None,
    target_batch: int = DEFAULT_TARGET_BATCH,
) -> torch.Tensor:
    """Eval-mode logits of ``nodes`` (all nodes when None), computed layer by layer in chunks.

    Equal to the full-batch forward (up to float rounding, tested). Precomputed models (SGC,
    SIGN) take ``features`` as their propagated features and run in row chunks. ``nodes`` are
    scored ``target_batch`` at a time, each batch through its own receptive field: on a graph
    whose two-hop neighbourhoods cover most nodes, this bounds the hidden tables at about
    ``target_batch * degree`` rows instead of one row per node of the whole receptive field.
    """
    check_int("chunk_size", chunk_size, minimum=1)
    check_int("target_batch", target_batch, minimum=1)
    device = torch.device(device)
    was_training = model.training
    model.eval()
    ctx = autocast or contextlib.nullcontext
    try:
        all_nodes = torch.arange(graph.num_nodes) if nodes is None else torch.unique(nodes.long())
        if model.precomputed_hops:
            outs = []
            for i in range(0, all_nodes.numel(), chunk_size):
                rows = features.rows(all_nodes[i : i + chunk_size]).to_dense().to(device)
                with ctx():
                    outs.append(model(rows).float().cpu())
            logits = torch.cat(outs)
        else:
            batches = [all_nodes] if nodes is None else list(torch.split(all_nodes, target_batch))
            logits = torch.cat(
                [
                    _layerwise_gnn(model, graph, features, batch, nodes is None, chunk_size, device, ctx)
                    for batch in batches
                ]
            )
    finally:
        model.train(was_training)
    if nodes is None:
        return logits
    position = torch.searchsorted(all_nodes, nodes.long())
    return logits[position]


def _layerwise_gnn(model, graph, features, targets, everything, chunk_size, device, ctx) -> torch.Tensor:
    hops = len(model.convs)
    sets = [targets] * (hops + 1) if everything else receptive_sets(graph, targets, hops)
    scratch = torch.full((graph.num_nodes,), -1, dtype=torch.long)
    position = torch.full((graph.num_nodes,), -1, dtype=torch.long)
    h = None  # layer 0 reads its sources' rows from the (possibly memory-mapped) features
    for layer in range(hops):
        current, nxt = sets[layer], sets[layer + 1]
        position[current] = torch.arange(current.numel())
        out = None
        for i in range(0, nxt.numel(), chunk_size):
            chunk = nxt[i : i + chunk_size]
            block, sources = make_block(graph, chunk, scratch)
            rows = features.rows(sources).to_dense() if h is None else h[position[sources]]
            h_src = rows.to(device, non_blocking=True)
            with ctx():
                part = model.block_layer(layer, h_src, _block_to(block, device)).float()
            if out is None:
                out = torch.empty(nxt.numel(), part.shape[1])
            out[i : i + chunk.numel()] = part.cpu()
        position[current] = -1
        h = out
    return h


@torch.no_grad()
def propagate_features(
    graph: CSRGraph, features: NodeFeatures, hops: int, edge_chunk: int = 1 << 21, dtype=torch.float32
) -> torch.Tensor:
    """``[X, A_hat X, ..., A_hat^hops X]`` concatenated along the feature axis, ``A_hat`` the GCN
    normalisation with self loops ``D^-1/2 (A + I) D^-1/2`` (SGC, SIGN)."""
    check_int("hops", hops, minimum=1)
    degree = graph.degree().float() + 1.0
    dinv = degree.rsqrt()
    x = features.to_dense() if not features.sparse else features.as_tensor().to_dense()
    x = x.float()
    hop_outputs = [x.to(dtype)]
    row_cuts = _row_chunks(graph, edge_chunk)
    for _ in range(hops):
        out = torch.empty_like(x)
        for start, end in row_cuts:
            rows = torch.arange(start, end)
            owner, neighbours = graph.neighbors_of(rows)
            weight = (dinv[rows][owner] * dinv[neighbours])[:, None]
            part = x[rows] * (dinv[rows] * dinv[rows])[:, None]
            part.index_add_(0, owner, x[neighbours] * weight)
            out[start:end] = part
        x = out
        hop_outputs.append(x.to(dtype))
    return torch.cat(hop_outputs, dim=1)


def _row_chunks(graph: CSRGraph, edge_chunk: int) -> list[tuple[int, int]]:
    """Row ranges holding about ``edge_chunk`` edges each (at least one row)."""
    cuts, start, n = [], 0, graph.num_nodes
    indptr = graph.indptr
    while start < n:
        target = int(indptr[start]) + edge_chunk
        end = int(torch.searchsorted(indptr, torch.tensor(target), right=True)) - 1
        end = max(start + 1, min(end, n))
        cuts.append((start, end))
        start = end
    return cuts
