"""Training one soup ingredient: a short loop over sampled subgraphs with best-validation selection.

Validation every ``eval_every`` steps runs on the full graph only for small graphs; large ones
are scored by layer-wise inference, optionally on a fixed sample of ``eval_nodes`` validation
nodes (exact scores of those nodes, see :mod:`gnn_soup.inference`). With a progress folder the
loop checkpoints every ``checkpoint_every`` steps (model, optimiser, best weights, all random
streams, the sampler's queue) and a killed run resumes to the same weights bit for bit.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from gnn_soup.csr import CSRGraph
from gnn_soup.data import GraphData
from gnn_soup.features import NodeFeatures
from gnn_soup.inference import DEFAULT_CHUNK, layerwise_forward, propagate_features
from gnn_soup.models import GNN, MODELS, create_model
from gnn_soup.partition import metis_partition, random_partition
from gnn_soup.samplers import SAMPLERS, Sampler, Subgraph, create_sampler
from research_systems_core.seeding import seed_everything
from research_systems_core.validation import check_choice, check_int, check_positive, check_range

EVAL_METHODS = ("auto", "full", "layerwise")
FULL_EVAL_MAX_NODES = 200_000  # "auto": full-batch forward up to this many nodes, layer-wise above
LAYERWISE_SAMPLERS = ("fastgcn",)


@dataclass
class TrainConfig:
    """Model and optimiser settings shared by all ingredients of one soup."""

    model: str = "gcn"
    hidden_dim: int = 64
    num_layers: int = 2
    dropout: float = 0.5
    heads: int = 8
    lr: float = 0.01
    weight_decay: float = 5e-4
    steps: int = 200
    eval_every: int = 5
    select: str = "best_val"
    eval_method: str = "auto"
    eval_nodes: int = 0  # > 0: validate on this many fixed random validation nodes while training
    chunk_size: int = DEFAULT_CHUNK
    checkpoint_every: int = 0  # > 0 and a progress folder: resumable mid-ingredient

    def validate(self) -> TrainConfig:
        check_choice("model", self.model, MODELS.names())
        check_int("hidden_dim", self.hidden_dim, minimum=1)
        check_int("num_layers", self.num_layers, minimum=1)
        check_range("dropout", self.dropout, 0.0, 1.0, high_inclusive=False)
        check_int("heads", self.heads, minimum=1)
        check_positive("lr", self.lr)
        check_positive("weight_decay", self.weight_decay, strict=False)
        check_int("steps", self.steps, minimum=1)
        check_int("eval_every", self.eval_every, minimum=1)
        check_choice("select", self.select, ["best_val", "last"])
        check_choice("eval_method", self.eval_method, EVAL_METHODS)
        check_int("eval_nodes", self.eval_nodes, minimum=0)
        check_int("chunk_size", self.chunk_size, minimum=1)
        check_int("checkpoint_every", self.checkpoint_every, minimum=0)
        return self

    def model_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "hidden_dim": self.hidden_dim,
            "num_layers": self.num_layers,
            "dropout": self.dropout,
        }
        if self.model == "gat":
            kwargs["heads"] = self.heads
        return kwargs


@dataclass
class IngredientSpec:
    """One ingredient: its index, its seed (dropout, sampling, independent init) and its data sampler."""

    index: int
    seed: int
    sampler: str = "full"
    sampler_kwargs: dict[str, Any] = field(default_factory=dict)

    def validate(self) -> IngredientSpec:
        check_int("index", self.index, minimum=0)
        check_int("seed", self.seed, minimum=0)
        check_choice("sampler", self.sampler, SAMPLERS.names())
        return self


@dataclass
class IngredientResult:
    """A trained ingredient's weights and scores."""

    index: int
    state_dict: dict[str, torch.Tensor]
    val_acc: float
    test_acc: float
    best_step: int
    seconds: float
    skipped_steps: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    device: str = "cpu"

    def meta(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.pop("state_dict")
        return out


def build_model(config: TrainConfig, data: GraphData) -> GNN:
    return create_model(
        config.model, in_dim=data.features.shape[1], out_dim=data.num_classes, **config.model_kwargs()
    )


def initial_state(config: TrainConfig, data: GraphData, seed: int) -> dict[str, torch.Tensor]:
    """The weights every ingredient starts from under a shared initialisation."""
    config.validate()
    torch.manual_seed(int(seed))
    model = build_model(config, data)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class TrainingContext:
    """Per-process view of a graph: its CSR, cached partitions, propagated features, device."""

    def __init__(self, data: GraphData, device: torch.device | str = "cpu", precision: str = "fp32") -> None:
        from research_systems_core.precision import check_precision

        self.data = data
        self.graph: CSRGraph = data.graph
        self.device = torch.device(device)
        self.precision = check_precision(precision)
        self._full: dict[str, object] = {}
        self._partitions: dict[tuple[int, str, int], torch.Tensor] = {}
        self._propagated: dict[int, NodeFeatures] = {}
        self._device_features: NodeFeatures | None = None

    def autocast(self):
        from research_systems_core.precision import autocast

        return autocast(self.device, self.precision)

    def partition(self, num_parts: int, method: str, seed: int) -> torch.Tensor:
        """Cluster membership shared by every ingredient of this process (computed once)."""
        key = (int(num_parts), method, int(seed))
        if key not in self._partitions:
            if method == "metis":
                membership = metis_partition(self.data.edge_index, self.data.num_nodes, num_parts, seed=seed)
            else:
                membership = random_partition(self.data.num_nodes, num_parts, seed=seed)
            self._partitions[key] = membership
        return self._partitions[key]

    def features_for(self, model: GNN) -> NodeFeatures:
        """The model's input table: raw features, or ``[X, AX, ..., A^K X]`` for SGC / SIGN."""
        hops = model.precomputed_hops
        if not hops:
            return self.data.features
        if hops not in self._propagated:
            table = propagate_features(self.graph, self.data.features, hops)
            self._propagated[hops] = NodeFeatures(table, sparse=False)
        return self._propagated[hops]

    def full_structure(self, model: GNN, config: TrainConfig) -> object:
        if config.model not in self._full:
            structure = model.prepare_graph(self.graph)
            if structure is None:
                structure = model.prepare(self.data.edge_index, self.data.num_nodes)
            if structure is not None:
                structure = structure.to(self.device)
            self._full[config.model] = structure
        return self._full[config.model]

    def eval_method(self, config: TrainConfig) -> str:
        if config.eval_method != "auto":
            return config.eval_method
        return "full" if self.data.num_nodes <= FULL_EVAL_MAX_NODES else "layerwise"

    def logits(self, model: GNN, config: TrainConfig, nodes: torch.Tensor | None = None) -> torch.Tensor:
        """Eval-mode logits (on CPU) of ``nodes`` (all when None), full-batch or layer-wise."""
        features = self.features_for(model)
        if self.eval_method(config) == "layerwise":
            return layerwise_forward(
                model, self.graph, features, nodes, config.chunk_size, self.device, self.autocast
            )
        model.eval()
        with torch.no_grad(), self.autocast():
            out = model(features.to(self.device), self.full_structure(model, config)).float().cpu()
        return out if nodes is None else out[nodes]


def masked_accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    if y.numel() == 0:
        return float("nan")
    return float((logits.argmax(-1) == y).float().mean())


@torch.no_grad()
def accuracy(logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> float:
    if int(mask.sum()) == 0:
        return float("nan")
    return float((logits[mask].argmax(-1) == y[mask]).float().mean())


def final_scores(context: TrainingContext, model: GNN, config: TrainConfig) -> tuple[float, float]:
    """Accuracy on all validation and all test nodes, scoring only those nodes (layer-wise: in
    target batches, so a worker never holds hidden tables for the whole graph)."""
    data = context.data
    val_nodes = torch.nonzero(data.val_mask).flatten()
    test_nodes = torch.nonzero(data.test_mask).flatten()
    logits = context.logits(model, config, torch.cat([val_nodes, test_nodes]))
    n_val = val_nodes.numel()
    return masked_accuracy(logits[:n_val], data.y[val_nodes]), masked_accuracy(
        logits[n_val:], data.y[test_nodes]
    )


def _loss(logits: torch.Tensor, y: torch.Tensor, train: torch.Tensor, batch: Subgraph, saint_scale: float):
    """Mean cross-entropy over the batch's training targets (GraphSAINT: normalised estimate of it).

    With ``node_norm`` (lambda_v = 1 / (C_v / num_samples) / N) the weighted sum estimates the sum of
    training losses over the whole graph divided by N; ``saint_scale = N / N_train`` turns it into
    an unbiased estimate of the mean training loss.
    """
    per_node = F.cross_entropy(logits.float(), y, reduction="none")
    if batch.num_targets is not None:
        train = train.clone()
        train[batch.num_targets :] = False
    weight = train.to(per_node.dtype)  # masked sums: no boolean indexing, so no host sync on CUDA
    if batch.node_norm is not None:
        return (per_node * batch.node_norm.to(per_node.device) * weight).sum() * saint_scale
    return (per_node * weight).sum() / weight.sum().clamp_min(1.0)


def batch_inputs(
    context: TrainingContext, model: GNN, config: TrainConfig, sampler_name: str, batch: Subgraph
):
    """``(features, structure, y, loss mask)`` of one batch, on the context's device."""
    data, device = context.data, context.device
    table = context.features_for(model)
    if batch.blocks is not None:  # layer-wise sampler: input nodes below, output nodes on top
        from gnn_soup.inference import _block_to

        features = table.rows(batch.nodes).to(device)
        structure = [model.block_structure(_block_to(b, device)) for b in batch.blocks]
        out = batch.output_nodes
        return features, structure, data.y[out].to(device), data.train_mask[out].to(device)
    if sampler_name == "full":
        features, structure = table.to(device), context.full_structure(model, config)
        return features, structure, data.y.to(device), data.train_mask.to(device)
    features = table.rows(batch.nodes).to(device)
    structure = model.prepare(batch.edge_index, batch.num_nodes, batch.edge_norm)
    if isinstance(structure, torch.Tensor):
        structure = structure.to(device)
    return features, structure, data.y[batch.nodes].to(device), data.train_mask[batch.nodes].to(device)


def validation_nodes(data: GraphData, count: int) -> torch.Tensor:
    """All validation nodes, or a fixed random sample of ``count`` of them (same for every ingredient)."""
    nodes = torch.nonzero(data.val_mask).flatten()
    if 0 < count < nodes.numel():
        pick = torch.randperm(nodes.numel(), generator=torch.Generator().manual_seed(20230616))[:count]
        nodes = torch.sort(nodes[pick]).values
    return nodes


@dataclass
class LoopState:
    """Everything the training loop carries from step to step (checkpointed as a whole)."""

    step: int = 0
    best_val: float = -1.0
    best_step: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    skipped: int = 0
    seconds: float = 0.0
    history: list[dict[str, float]] = field(default_factory=list)


def _checkpoint_progress(
    directory: pathlib.Path, loop: LoopState, model, optimizer, sampler: Sampler
) -> None:
    from research_systems_core.checkpoint import capture_rng_state, save_checkpoint
    from research_systems_core.optim_state import optimizer_state_to_tensors

    tensors = {f"model.{k}": v.detach().cpu() for k, v in model.state_dict().items()}
    if loop.best_state is not None:
        tensors.update({f"best.{k}": v for k, v in loop.best_state.items()})
    optim_tensors, optim_meta = optimizer_state_to_tensors(optimizer)
    tensors.update({k: v.cpu() for k, v in optim_tensors.items()})
    rng_tensors, rng_meta = capture_rng_state()
    tensors.update(rng_tensors)
    tensors.update({f"sampler.{k}": v for k, v in sampler.state_tensors().items()})
    meta = {
        "loop": {k: v for k, v in dataclasses.asdict(loop).items() if k != "best_state"},
        "optim": optim_meta,
        **rng_meta,
    }
    save_checkpoint(directory, loop.step, tensors, meta, keep=1)


def _resume_progress(directory: pathlib.Path, model, optimizer, sampler: Sampler) -> LoopState | None:
    from research_systems_core.checkpoint import latest_checkpoint, load_checkpoint, restore_rng_state
    from research_systems_core.optim_state import load_optimizer_state

    path = latest_checkpoint(directory) if directory.exists() else None
    if path is None:
        return None
    tensors, meta = load_checkpoint(path)

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}

    model.load_state_dict(part("model."))
    load_optimizer_state(optimizer, tensors, meta["optim"])
    sampler.load_state_tensors(part("sampler."))
    restore_rng_state(tensors, meta)
    loop = LoopState(**meta["loop"])
    best = part("best.")
    loop.best_state = best or None
    return loop


def _make_sampler(context: TrainingContext, spec: IngredientSpec, config: TrainConfig) -> Sampler:
    kwargs = dict(spec.sampler_kwargs)
    if spec.sampler == "cluster" and "membership" not in kwargs:
        kwargs["membership"] = context.partition(
            kwargs.get("num_parts", 8), kwargs.get("method", "metis"), kwargs.get("partition_seed", 0)
        )
    if spec.sampler in LAYERWISE_SAMPLERS:
        if config.model != "gcn":
            raise ValueError(
                f"sampler {spec.sampler!r} is defined for model 'gcn', got model {config.model!r}"
            )
        kwargs.setdefault("num_layers", config.num_layers)
    return create_sampler(spec.sampler, context.graph, context.data.train_mask, seed=spec.seed, **kwargs)


def _has_training_target(data: GraphData, batch: Subgraph, sampler: str) -> bool:
    """Whether the batch holds a training node carrying the loss (checked on the CPU copy)."""
    if batch.blocks is not None:
        return bool(data.train_mask[batch.output_nodes].any())
    if sampler == "full":
        return True  # validate_graph guarantees a non-empty training mask
    nodes = batch.nodes if batch.num_targets is None else batch.nodes[: batch.num_targets]
    return bool(data.train_mask[nodes].any())


def _train_step(context, model, optimizer, scaler, config, spec, batch, saint_scale) -> bool:
    if not _has_training_target(context.data, batch, spec.sampler):
        return False
    features, structure, y, train = batch_inputs(context, model, config, spec.sampler, batch)
    model.train()
    optimizer.zero_grad(set_to_none=True)
    with context.autocast():
        logits = model(features, structure)
    loss = _loss(logits, y, train, batch, saint_scale)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return True


def train_ingredient(
    context: TrainingContext,
    spec: IngredientSpec,
    config: TrainConfig,
    init_state: dict[str, torch.Tensor] | None = None,
    progress_dir: str | pathlib.Path | None = None,
) -> IngredientResult:
    """Train one ingredient from ``init_state`` (shared init) or from its own seed (independent init)."""
    from research_systems_core.precision import grad_scaler

    spec.validate()
    config.validate()
    data = context.data
    start = time.perf_counter()
    seed_everything(spec.seed)
    model = build_model(config, data)
    if init_state is not None:
        model.load_state_dict(init_state)
    model.to(context.device)
    sampler = _make_sampler(context, spec, config)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scaler = grad_scaler(context.device, context.precision)
    saint_scale = data.num_nodes / max(int(data.train_mask.sum()), 1)
    val_nodes = validation_nodes(data, config.eval_nodes)
    val_y = data.y[val_nodes]
    progress = pathlib.Path(progress_dir) if progress_dir and config.checkpoint_every else None
    loop = (_resume_progress(progress, model, optimizer, sampler) if progress else None) or LoopState()
    resumed_seconds = loop.seconds
    for step in range(loop.step + 1, config.steps + 1):
        batch = sampler.sample()
        if not _train_step(context, model, optimizer, scaler, config, spec, batch, saint_scale):
            loop.skipped += 1
        if step % config.eval_every == 0 or step == config.steps:
            val = masked_accuracy(context.logits(model, config, val_nodes), val_y)
            loop.history.append({"step": step, "val_acc": val})
            if config.select == "last" or val > loop.best_val:
                loop.best_val, loop.best_step = val, step
                loop.best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        loop.step = step
        if progress is not None and step % config.checkpoint_every == 0 and step < config.steps:
            loop.seconds = resumed_seconds + time.perf_counter() - start
            _checkpoint_progress(progress, loop, model, optimizer, sampler)
    if loop.best_state is None:
        raise RuntimeError("training finished without a validation score (no evaluation step ran)")
    model.load_state_dict(loop.best_state)
    val_acc, test_acc = final_scores(context, model, config)
    return IngredientResult(
        index=spec.index,
        state_dict=loop.best_state,
        val_acc=val_acc,
        test_acc=test_acc,
        best_step=loop.best_step,
        seconds=resumed_seconds + time.perf_counter() - start,
        skipped_steps=loop.skipped,
        history=loop.history,
        device=str(context.device),
    )
