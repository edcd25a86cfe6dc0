"""Mini-batch samplers in plain torch on CSR (no pyg-lib / torch-sparse needed).

* ``full``: the whole graph every step (the classic Planetoid setting).
* ``cluster``: ClusterGCN (Chiang et al. 2019): METIS parts, each batch the union of
  ``clusters_per_batch`` random parts with all edges between them.
* ``saint_node`` / ``saint_edge`` / ``saint_rw``: GraphSAINT (Zeng et al. 2020) node, edge and
  random-walk samplers on the induced subgraph, with the loss (``node_norm``) and aggregation
  (``edge_norm``) normalisations estimated by pre-sampling (``sample_coverage``).
* ``neighbor``: uniform neighbour sampling (GraphSAGE; PyG's NeighborLoader semantics): seed nodes
  first, then for every hop at most ``fanout`` uniformly drawn neighbours of each new frontier node.

Every sampler returns :class:`Subgraph` objects with global node ids and local edges.
When pyg-lib or torch-sparse is installed, :func:`pyg_backend_available` says so and
:func:`create_sampler` with ``backend="auto"`` uses PyG's own ClusterData/NeighborLoader.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from gnn_soup.csr import CSRGraph, induced_subgraph
from gnn_soup.models import Block
from gnn_soup.partition import metis_partition, parts_to_nodes, random_partition
from research_systems_core.registry import Registry
from research_systems_core.validation import check_int

SAMPLERS = Registry("sampler")


@dataclass
class Subgraph:
    """A training batch: ``nodes`` are global ids, ``edge_index`` is local (``[source, target]``).

    ``num_targets`` nodes at the front carry the loss (all nodes when None); ``node_norm`` weights
    each node's loss, ``edge_norm`` each edge's message (GraphSAINT normalisation).
    """

    nodes: torch.Tensor
    edge_index: torch.Tensor
    num_targets: int | None = None
    node_norm: torch.Tensor | None = None
    edge_norm: torch.Tensor | None = None
    blocks: list[Block] | None = None  # layer-wise samplers: one block per layer, input first
    output_nodes: torch.Tensor | None = None  # layer-wise samplers: the nodes the loss is on

    @property
    def num_nodes(self) -> int:
        return int(self.nodes.numel())


class Sampler:
    """Base class: ``sample()`` returns the next :class:`Subgraph`; seeded by ``generator``."""

    def __init__(self, graph: CSRGraph, train_mask: torch.Tensor, generator: torch.Generator) -> None:
        self.graph = graph
        self.train_mask = train_mask
        self.generator = generator

    def sample(self) -> Subgraph:
        raise NotImplementedError

    def state_tensors(self) -> dict[str, torch.Tensor]:
        """Everything needed to continue the same random stream (for resumable training)."""
        state = {"generator": self.generator.get_state()}
        queue = getattr(self, "_queue", None)
        if queue is not None:
            state["queue"] = torch.cat(queue) if queue else torch.empty(0, dtype=torch.long)
            state["queue_sizes"] = torch.tensor([q.numel() for q in queue], dtype=torch.long)
        return state

    def load_state_tensors(self, state: dict[str, torch.Tensor]) -> None:
        self.generator.set_state(state["generator"])
        if "queue" in state:
            self._queue = list(torch.split(state["queue"], state["queue_sizes"].tolist()))


def _require_edges(graph: CSRGraph, sampler: str) -> None:
    if graph.num_edges == 0:
        raise ValueError(f"sampler {sampler!r} needs a graph with edges, got a graph with 0 edges")


def _gumbel_top_k(weights: torch.Tensor, k: int, generator: torch.Generator) -> torch.Tensor:
    """``k`` indices drawn without replacement with probability proportional to ``weights``."""
    uniform = torch.rand(weights.shape, generator=generator, dtype=torch.float64).clamp_min(1e-300)
    keys = torch.log(weights.double()) - torch.log(-torch.log(uniform))
    return torch.topk(keys, k).indices


@SAMPLERS.register("full")
class FullGraphSampler(Sampler):
    """The whole graph every step."""

    def __init__(self, graph: CSRGraph, train_mask: torch.Tensor, generator: torch.Generator) -> None:
        super().__init__(graph, train_mask, generator)
        self._batch = Subgraph(nodes=torch.arange(graph.num_nodes), edge_index=graph.edge_index())

    def sample(self) -> Subgraph:
        return self._batch


@SAMPLERS.register("cluster")
class ClusterSampler(Sampler):
    """ClusterGCN batches: ``clusters_per_batch`` random parts of a METIS (or random) partition.

    An epoch visits every part once (a random permutation cut into groups); the partition itself
    depends only on ``partition_seed`` so all ingredients can share it.
    """

    def __init__(
        self,
        graph: CSRGraph,
        train_mask: torch.Tensor,
        generator: torch.Generator,
        num_parts: int = 8,
        clusters_per_batch: int = 2,
        method: str = "metis",
        partition_seed: int = 0,
        membership: torch.Tensor | None = None,
    ) -> None:
        super().__init__(graph, train_mask, generator)
        check_int("clusters_per_batch", clusters_per_batch, minimum=1)
        _require_edges(graph, "cluster")
        if clusters_per_batch > num_parts:
            raise ValueError(
                f"clusters_per_batch must be <= num_parts ({num_parts}), got {clusters_per_batch}"
            )
        if membership is None:
            if method == "metis":
                membership = metis_partition(
                    graph.edge_index(), graph.num_nodes, num_parts, seed=partition_seed
                )
            elif method == "random":
                membership = random_partition(graph.num_nodes, num_parts, seed=partition_seed)
            else:
                raise ValueError(f"method must be one of ['metis', 'random'], got {method!r}")
        self.membership = membership
        self.parts = parts_to_nodes(membership, num_parts)
        self.num_parts = num_parts
        self.clusters_per_batch = clusters_per_batch
        self._queue: list[torch.Tensor] = []

    def sample(self) -> Subgraph:
        if not self._queue:
            order = torch.randperm(self.num_parts, generator=self.generator)
            self._queue = list(torch.split(order, self.clusters_per_batch))
        group = self._queue.pop(0)
        nodes = torch.cat([self.parts[int(p)] for p in group])
        edge_index, _ = induced_subgraph(self.graph, nodes)
        return Subgraph(nodes=nodes, edge_index=edge_index)


class _SaintSampler(Sampler):
    """GraphSAINT: sample a node set, train on its induced subgraph, normalise by pre-sampling."""

    def __init__(
        self, graph: CSRGraph, train_mask: torch.Tensor, generator: torch.Generator, sample_coverage: int = 0
    ) -> None:
        super().__init__(graph, train_mask, generator)
        check_int("sample_coverage", sample_coverage, minimum=0)
        self.node_norm_full: torch.Tensor | None = None
        self.edge_norm_full: torch.Tensor | None = None
        if sample_coverage > 0:
            self._estimate_norms(sample_coverage)

    def _sample_nodes(self) -> torch.Tensor:
        raise NotImplementedError

    def _estimate_norms(self, coverage: int) -> None:
        n = self.graph.num_nodes
        node_count = torch.zeros(n)
        edge_count = torch.zeros(self.graph.num_edges)
        num_samples, total = 0, 0
        while total < coverage * n:
            nodes = self._sample_nodes()
            _, edge_ids = induced_subgraph(self.graph, nodes)
            node_count[nodes] += 1
            edge_count[edge_ids] += 1
            num_samples += 1
            total += nodes.numel()
        # aggregator norm alpha_{u,v}^{-1} = C_v / C_{u,v} (v: the aggregating target node)
        targets = self.graph.indices.long()
        self.edge_norm_full = (node_count[targets] / edge_count.clamp_min(1)).clamp(0, 1e4)
        # loss norm lambda_v proportional to 1 / C_v
        self.node_norm_full = num_samples / node_count.clamp_min(1) / n

    def sample(self) -> Subgraph:
        nodes = torch.sort(self._sample_nodes()).values
        edge_index, edge_ids = induced_subgraph(self.graph, nodes)
        node_norm = None if self.node_norm_full is None else self.node_norm_full[nodes]
        edge_norm = None if self.edge_norm_full is None else self.edge_norm_full[edge_ids]
        return Subgraph(nodes=nodes, edge_index=edge_index, node_norm=node_norm, edge_norm=edge_norm)


@SAMPLERS.register("saint_node")
class SaintNodeSampler(_SaintSampler):
    """``budget`` distinct nodes, P(v) proportional to the squared column norm of the GCN adjacency."""

    def __init__(
        self,
        graph: CSRGraph,
        train_mask: torch.Tensor,
        generator: torch.Generator,
        budget: int = 1000,
        sample_coverage: int = 0,
    ) -> None:
        check_int("budget", budget, minimum=1)
        if budget > graph.num_nodes:
            raise ValueError(f"budget must be <= the number of nodes ({graph.num_nodes}), got {budget}")
        self.budget = budget
        self.probabilities = gcn_column_norms(graph)  # ||A~[:, v]||^2 = sum_u 1/(d_u d_v)
        super().__init__(graph, train_mask, generator, sample_coverage)

    def _sample_nodes(self) -> torch.Tensor:
        return _gumbel_top_k(self.probabilities, self.budget, self.generator)


@SAMPLERS.register("saint_edge")
class SaintEdgeSampler(_SaintSampler):
    """``budget`` distinct edges, P(u, v) proportional to 1/deg(u) + 1/deg(v); nodes are their endpoints."""

    def __init__(
        self,
        graph: CSRGraph,
        train_mask: torch.Tensor,
        generator: torch.Generator,
        budget: int = 500,
        sample_coverage: int = 0,
    ) -> None:
        check_int("budget", budget, minimum=1)
        _require_edges(graph, "saint_edge")
        if budget > graph.num_edges:
            raise ValueError(f"budget must be <= the number of edges ({graph.num_edges}), got {budget}")
        self.budget = budget
        degree = graph.degree().double().clamp_min(1)
        edges = graph.edge_index()
        self.edges = edges
        self.probabilities = 1.0 / degree[edges[0]] + 1.0 / degree[edges[1]]
        super().__init__(graph, train_mask, generator, sample_coverage)

    def _sample_nodes(self) -> torch.Tensor:
        chosen = _gumbel_top_k(self.probabilities, self.budget, self.generator)
        return torch.unique(self.edges[:, chosen])

    def sample_edges(self) -> torch.Tensor:
        """The raw sampled edges (global ids), for inspection and tests."""
        return self.edges[:, _gumbel_top_k(self.probabilities, self.budget, self.generator)]


@SAMPLERS.register("saint_rw")
class SaintRandomWalkSampler(_SaintSampler):
    """``num_roots`` uniform root nodes, each followed by a uniform random walk of ``walk_length`` steps."""

    def __init__(
        self,
        graph: CSRGraph,
        train_mask: torch.Tensor,
        generator: torch.Generator,
        num_roots: int = 300,
        walk_length: int = 2,
        sample_coverage: int = 0,
    ) -> None:
        check_int("num_roots", num_roots, minimum=1)
        check_int("walk_length", walk_length, minimum=0)
        _require_edges(graph, "saint_rw")
        self.num_roots = num_roots
        self.walk_length = walk_length
        super().__init__(graph, train_mask, generator, sample_coverage)

    def walks(self) -> torch.Tensor:
        """``[num_roots, walk_length + 1]`` node ids; a node without neighbours stays in place."""
        g = self.graph
        current = torch.randint(0, g.num_nodes, (self.num_roots,), generator=self.generator)
        steps = [current]
        for _ in range(self.walk_length):
            d = g.degree_of(current)
            pick = (torch.rand(current.shape, generator=self.generator, dtype=torch.float64) * d).long()
            pick = torch.minimum(pick, (d - 1).clamp_min(0))
            nxt = g.indices[(g.indptr[current] + pick).clamp_max(max(g.num_edges - 1, 0))].long()
            current = torch.where(d > 0, nxt, current)
            steps.append(current)
        return torch.stack(steps, dim=1)

    def _sample_nodes(self) -> torch.Tensor:
        return torch.unique(self.walks())


@SAMPLERS.register("neighbor")
class NeighborSampler(Sampler):
    """Uniform neighbour sampling around ``batch_size`` training seed nodes, ``fanouts`` per hop.

    Edges point from sampled neighbour to the node that sampled it; each node's neighbourhood is
    sampled once (the first hop it enters the frontier), so a node has at most ``fanout`` sampled
    in-edges from that hop.
    """

    def __init__(
        self,
        graph: CSRGraph,
        train_mask: torch.Tensor,
        generator: torch.Generator,
        batch_size: int = 64,
        fanouts: tuple[int, ...] | list[int] = (10, 10),
    ) -> None:
        super().__init__(graph, train_mask, generator)
        check_int("batch_size", batch_size, minimum=1)
        if not fanouts:
            raise ValueError("fanouts must name at least one hop, got []")
        for fanout in fanouts:
            check_int("fanout", fanout, minimum=1)
        self.batch_size = batch_size
        self.fanouts = [int(f) for f in fanouts]
        self.train_nodes = torch.nonzero(train_mask).flatten()
        if self.train_nodes.numel() == 0:
            raise ValueError("the neighbour sampler needs at least one training node, got none")
        self._queue: list[torch.Tensor] = []
        self._local: torch.Tensor | None = None

    def sample_neighbors(self, frontier: torch.Tensor, fanout: int) -> tuple[torch.Tensor, torch.Tensor]:
        """For each frontier node up to ``fanout`` distinct neighbours: returns (targets, neighbours)."""
        g = self.graph
        counts = g.degree_of(frontier)
        owner = torch.repeat_interleave(torch.arange(frontier.numel()), counts)
        starts = torch.repeat_interleave(g.indptr[frontier], counts)
        offsets = torch.arange(int(counts.sum())) - torch.repeat_interleave(
            torch.cumsum(counts, 0) - counts, counts
        )
        keys = owner.double() + torch.rand(owner.shape, generator=self.generator, dtype=torch.float64) * 0.5
        order = torch.argsort(keys)
        segment_start = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        rank = torch.empty_like(order)
        rank[order] = torch.arange(order.numel())
        keep = (rank - segment_start) < fanout
        return frontier[owner[keep]], g.indices[(starts + offsets)[keep]].long()

    def sample(self) -> Subgraph:
        if not self._queue:
            perm = self.train_nodes[torch.randperm(self.train_nodes.numel(), generator=self.generator)]
            self._queue = list(torch.split(perm, self.batch_size))
        seeds = self._queue.pop(0)
        if self._local is None:  # node -> batch position, -1 outside the batch; reset after use
            self._local = torch.full((self.graph.num_nodes,), -1, dtype=torch.long)
        local = self._local
        local[seeds] = torch.arange(seeds.numel())
        nodes = [seeds]
        count = seeds.numel()
        sources, targets = [], []
        frontier = seeds
        for fanout in self.fanouts:
            if frontier.numel() == 0:
                break
            tgt, nbr = self.sample_neighbors(frontier, fanout)
            new = torch.unique(nbr[local[nbr] < 0])
            local[new] = torch.arange(count, count + new.numel())
            count += new.numel()
            nodes.append(new)
            sources.append(local[nbr])
            targets.append(local[tgt])
            frontier = new
        edge_index = (
            torch.stack([torch.cat(sources), torch.cat(targets)])
            if sources
            else torch.empty(2, 0, dtype=torch.long)
        )
        all_nodes = torch.cat(nodes)
        local[all_nodes] = -1
        return Subgraph(nodes=all_nodes, edge_index=edge_index, num_targets=int(seeds.numel()))


def gcn_column_norms(graph: CSRGraph) -> torch.Tensor:
    """``||A_hat[:, v]||^2`` for every node (GCN normalisation with self loops), float64."""
    degree = graph.degree().double() + 1.0
    inv = 1.0 / degree
    sources = torch.repeat_interleave(torch.arange(graph.num_nodes), graph.degree())
    column_sq = torch.zeros(graph.num_nodes, dtype=torch.float64)
    column_sq.index_add_(0, sources, inv[graph.indices.long()])
    return (column_sq + inv) * inv


@SAMPLERS.register("fastgcn")
class FastGCNSampler(Sampler):
    """FastGCN (Chen, Ma, Xiao 2018), a layer-wise sampler for GCN.

    A batch of ``batch_size`` training nodes is the output layer; below it every layer draws
    ``layer_size`` nodes i.i.d. (with replacement) from ``q(u) ∝ ||A_hat[:, u]||^2``, independent
    of the batch, and connects them to the layer above with weights
    ``A_hat[v, u] * count(u) / (layer_size * q(u))``: an unbiased estimate of ``A_hat h`` (tested).
    """

    def __init__(
        self,
        graph: CSRGraph,
        train_mask: torch.Tensor,
        generator: torch.Generator,
        batch_size: int = 256,
        layer_size: int = 512,
        num_layers: int = 2,
    ) -> None:
        super().__init__(graph, train_mask, generator)
        check_int("batch_size", batch_size, minimum=1)
        check_int("layer_size", layer_size, minimum=1)
        check_int("num_layers", num_layers, minimum=1)
        self.batch_size, self.layer_size, self.num_layers = batch_size, layer_size, num_layers
        self.train_nodes = torch.nonzero(train_mask).flatten()
        if self.train_nodes.numel() == 0:
            raise ValueError("the fastgcn sampler needs at least one training node, got none")
        norms = gcn_column_norms(graph)
        self.q = norms / norms.sum()
        self.dinv = (graph.degree().double() + 1.0).rsqrt()
        self._scratch = torch.full((graph.num_nodes,), -1, dtype=torch.long)
        self._queue: list[torch.Tensor] = []

    def layer_block(self, dst: torch.Tensor, src: torch.Tensor, counts: torch.Tensor) -> Block:
        """Importance-weighted edges from the sampled ``src`` (with ``counts``) to ``dst``."""
        owner, neighbours = self.graph.neighbors_of(dst)
        owner = torch.cat([owner, torch.arange(dst.numel())])  # self loops of A_hat
        neighbours = torch.cat([neighbours, dst])
        self._scratch[src] = torch.arange(src.numel())
        local = self._scratch[neighbours]
        self._scratch[src] = -1
        keep = local >= 0
        owner, neighbours, local = owner[keep], neighbours[keep], local[keep]
        a_hat = self.dinv[dst[owner]] * self.dinv[neighbours]
        weight = a_hat * counts[local].double() / (self.layer_size * self.q[neighbours])
        return Block(
            src=local,
            dst=owner,
            num_src=int(src.numel()),
            num_dst=int(dst.numel()),
            weight=weight.float(),
            dst_in_src=False,
        )

    def sample_layer(self) -> tuple[torch.Tensor, torch.Tensor]:
        draws = torch.multinomial(self.q, self.layer_size, replacement=True, generator=self.generator)
        return torch.unique(draws, return_counts=True)

    def sample(self) -> Subgraph:
        if not self._queue:
            perm = self.train_nodes[torch.randperm(self.train_nodes.numel(), generator=self.generator)]
            self._queue = list(torch.split(perm, self.batch_size))
        batch = self._queue.pop(0)
        dst, blocks = batch, []
        for _ in range(self.num_layers):
            src, counts = self.sample_layer()
            blocks.insert(0, self.layer_block(dst, src, counts))
            dst = src
        return Subgraph(
            nodes=dst, edge_index=torch.empty(2, 0, dtype=torch.long), blocks=blocks, output_nodes=batch
        )


def pyg_backend_available() -> bool:
    """True when pyg-lib or torch-sparse is importable (PyG's own samplers then work)."""
    try:
        import torch_geometric.typing as pyg_typing
    except ImportError:  # pragma: no cover - torch_geometric is a dependency
        return False
    return bool(pyg_typing.WITH_PYG_LIB or pyg_typing.WITH_TORCH_SPARSE)


class PygNeighborSampler(Sampler):
    """PyG's NeighborLoader (needs pyg-lib or torch-sparse), wrapped to return :class:`Subgraph`."""

    def __init__(self, graph, train_mask, generator, batch_size: int = 64, fanouts=(10, 10)) -> None:
        super().__init__(graph, train_mask, generator)
        from torch_geometric.data import Data
        from torch_geometric.loader import NeighborLoader

        data = Data(edge_index=graph.edge_index(), num_nodes=graph.num_nodes)
        data.n_id = torch.arange(graph.num_nodes)
        self.loader = NeighborLoader(
            data, num_neighbors=list(fanouts), batch_size=batch_size, input_nodes=train_mask, shuffle=True
        )
        self._iter = iter(self.loader)

    def sample(self) -> Subgraph:  # pragma: no cover - needs pyg-lib / torch-sparse
        try:
            batch = next(self._iter)
        except StopIteration:
            self._iter = iter(self.loader)
            batch = next(self._iter)
        return Subgraph(nodes=batch.n_id, edge_index=batch.edge_index, num_targets=int(batch.batch_size))


def create_sampler(
    name: str,
    graph: CSRGraph,
    train_mask: torch.Tensor,
    seed: int,
    backend: str = "auto",
    **kwargs,
) -> Sampler:
    """Build a registered sampler.

    ``backend="auto"`` (default) uses PyG's NeighborLoader for ``neighbor`` when pyg-lib or
    torch-sparse is installed, else the plain-torch sampler; ``backend="torch"`` always uses the
    plain-torch one (bit-for-bit repeatable from ``seed``).
    """
    if backend not in ("torch", "auto"):
        raise ValueError(f"backend must be one of ['torch', 'auto'], got {backend!r}")
    generator = torch.Generator().manual_seed(int(seed))
    cls: Callable[..., Sampler] = SAMPLERS.get(name)
    if backend == "auto" and name == "neighbor" and pyg_backend_available():  # pragma: no cover
        cls = PygNeighborSampler
    return cls(graph, train_mask, generator, **kwargs)


def expected_batches_per_epoch(sampler: Sampler) -> int:
    """How many ``sample()`` calls cover the training data about once (for step budgets)."""
    if isinstance(sampler, ClusterSampler):
        return math.ceil(sampler.num_parts / sampler.clusters_per_batch)
    if isinstance(sampler, NeighborSampler):
        return math.ceil(sampler.train_nodes.numel() / sampler.batch_size)
    return 1
