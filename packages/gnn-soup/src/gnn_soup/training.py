"""Training one soup ingredient: a short loop over sampled subgraphs with best-validation selection."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from gnn_soup.csr import CSRGraph
from gnn_soup.data import GraphData
from gnn_soup.models import GNN, MODELS, create_model
from gnn_soup.partition import metis_partition, random_partition
from gnn_soup.samplers import SAMPLERS, create_sampler
from research_systems_core.seeding import seed_everything
from research_systems_core.validation import check_choice, check_int, check_positive, check_range


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
    """Per-process cache of a data set's CSR and full-graph model inputs."""

    def __init__(self, data: GraphData) -> None:
        self.data = data
        self.graph: CSRGraph = data.csr()
        self._full: dict[str, object] = {}
        self._partitions: dict[tuple[int, str, int], torch.Tensor] = {}

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

    def full_structure(self, model: GNN, config: TrainConfig) -> object:
        if config.model not in self._full:
            self._full[config.model] = model.prepare(self.data.edge_index, self.data.num_nodes)
        return self._full[config.model]


@torch.no_grad()
def accuracy(logits: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> float:
    if int(mask.sum()) == 0:
        return float("nan")
    return float((logits[mask].argmax(-1) == y[mask]).float().mean())


def _loss(
    logits: torch.Tensor, y: torch.Tensor, train: torch.Tensor, batch, saint_scale: float
) -> torch.Tensor:
    """Mean cross-entropy over the batch's training targets (GraphSAINT: normalised estimate of it).

    With ``node_norm`` (lambda_v = 1 / (C_v / num_samples) / N) the weighted sum estimates the sum of
    training losses over the whole graph divided by N; ``saint_scale = N / N_train`` turns it into
    an unbiased estimate of the mean training loss.
    """
    per_node = F.cross_entropy(logits, y, reduction="none")
    if batch.num_targets is not None:
        train = train.clone()
        train[batch.num_targets :] = False
    if batch.node_norm is not None:
        return (per_node * batch.node_norm)[train].sum() * saint_scale
    return per_node[train].mean()


def train_ingredient(
    context: TrainingContext,
    spec: IngredientSpec,
    config: TrainConfig,
    init_state: dict[str, torch.Tensor] | None = None,
) -> IngredientResult:
    """Train one ingredient from ``init_state`` (shared init) or from its own seed (independent init)."""
    spec.validate()
    config.validate()
    data = context.data
    start = time.perf_counter()
    seed_everything(spec.seed)
    model = build_model(config, data)
    if init_state is not None:
        model.load_state_dict(init_state)
    kwargs = dict(spec.sampler_kwargs)
    if spec.sampler == "cluster" and "membership" not in kwargs:
        kwargs["membership"] = context.partition(
            kwargs.get("num_parts", 8), kwargs.get("method", "metis"), kwargs.get("partition_seed", 0)
        )
    sampler = create_sampler(spec.sampler, context.graph, data.train_mask, seed=spec.seed, **kwargs)
    saint_scale = data.num_nodes / max(int(data.train_mask.sum()), 1)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    full = context.full_structure(model, config)
    best = (-1.0, 0)
    best_state = None
    history: list[dict[str, float]] = []
    skipped = 0
    for step in range(1, config.steps + 1):
        batch = sampler.sample()
        if spec.sampler == "full":
            features, structure, y, train = data.features, full, data.y, data.train_mask
        else:
            features = data.features.rows(batch.nodes)
            structure = model.prepare(batch.edge_index, batch.num_nodes, batch.edge_norm)
            y, train = data.y[batch.nodes], data.train_mask[batch.nodes]
        has_train = bool(train[: batch.num_targets].any()) if batch.num_targets else bool(train.any())
        if has_train:
            model.train()
            optimizer.zero_grad(set_to_none=True)
            logits = model(features, structure)
            loss = _loss(logits, y, train, batch, saint_scale)
            loss.backward()
            optimizer.step()
        else:
            skipped += 1
        if step % config.eval_every == 0 or step == config.steps:
            model.eval()
            with torch.no_grad():
                logits = model(data.features, full)
            val = accuracy(logits, data.y, data.val_mask)
            history.append({"step": step, "val_acc": val})
            if config.select == "last" or val > best[0]:
                best = (val, step)
                best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    assert best_state is not None
    model.load_state_dict(best_state)
    model.eval()
    with torch.no_grad():
        logits = model(data.features, full)
    return IngredientResult(
        index=spec.index,
        state_dict=best_state,
        val_acc=accuracy(logits, data.y, data.val_mask),
        test_acc=accuracy(logits, data.y, data.test_mask),
        best_step=best[1],
        seconds=time.perf_counter() - start,
        skipped_steps=skipped,
        history=history,
    )
