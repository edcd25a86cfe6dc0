"""NeuroFS training: SGD on the sparse MLP with neuron evolution after every epoch."""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, field
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F

from feature_select.evolution import (
    FINAL_ACTIVE,
    InputNeuronSchedule,
    RowScorer,
    keep_strongest_per_row,
    row_max_scores,
    set_prune_mask,
    top_new_connections,
)
from feature_select.inputs import FeatureMatrix, dense_column_scores
from feature_select.model import SparseMLP, layer_gradients
from feature_select.sparse_linear import BACKENDS, INITS, SparseLinear
from research_systems_core.logs import progress
from research_systems_core.torch_utils import resolve_device
from research_systems_core.validation import check_choice, check_int, check_positive, check_range

__all__ = [
    "NeuroFSConfig",
    "NeuroFSResult",
    "complete_ranking",
    "default_batch_size",
    "evolve",
    "train_neurofs",
]


class TrainingDivergedError(ValueError, FloatingPointError):
    """The loss became NaN or infinite (learning rate too high or unscaled features)."""


def default_batch_size(n_samples: int) -> int:
    """Batch size tied to the number of training samples: ``clip(n // 8, 16, 100)``.

    The reference uses 100 for its large sets and 20 for its small ones (arcene, Prostate_GE,
    SMK, GLA-BRA-180: 80-150 training samples); n // 8 gives the same on both ends and keeps at
    least ~8 SGD steps per epoch (a fixed 100 gave a 165-sample set one step per epoch).
    """
    check_int("n_samples", n_samples, minimum=1)
    return int(min(n_samples, max(16, min(100, n_samples // 8))))


log = logging.getLogger(__name__)

REGROWTH = ("gradient", "random")


@dataclass
class NeuroFSConfig:
    """Hyper-parameters; defaults are the reference's (code/utils.py) unless noted."""

    k: int = 50
    hidden: tuple[int, ...] = (1000, 1000, 1000)
    activation: str = "tanh"
    epsilon: float = 13.0
    zeta_in: float = 0.4
    zeta_hid: float = 0.2
    frac_epoch_remove: float = 0.65
    final_active: str = "reference"  # "reference": zeta_in*d + K stay active; "k": remove down to K
    swap_until_end: bool = True  # reference: input neurons are swapped until the last epoch
    warmup_epochs: int = 2  # epochs whose input layer is rewired like a hidden layer (reference: 2)
    epochs: int = 100  # the reference requires it on the command line; 100 in its README
    batch_size: int | None = None  # None: default_batch_size(n)
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-5  # Keras l2(wd): loss += wd * sum(w**2)
    regrowth: str = "gradient"
    backend: str = "auto"
    # regrowth scores of a layer are formed whole up to this many entries (64 MB), else in blocks
    chunk_elements: int = 1 << 24
    # neuron addition scores at most this many random inactive inputs (None: all, as the reference)
    max_candidates: int | None = None
    init: str = (
        "sparse"  # "sparse": Glorot with the real fan-in (see sparse_glorot_limit); "dense": reference
    )
    device: str = "auto"
    seed: int = 0

    def validate(self, n_features: int) -> None:
        check_int("n_features_to_select", self.k, minimum=1)
        if self.k > n_features:
            raise ValueError(
                f"n_features_to_select must be <= the number of features ({n_features}), got {self.k}"
            )
        if isinstance(self.hidden, int | str) or not len(self.hidden):
            raise ValueError(f"hidden must be a non-empty sequence of layer sizes, got {self.hidden!r}")
        for size in self.hidden:
            check_int("hidden layer size", size, minimum=1)
        for name in ("epsilon", "lr", "weight_decay", "momentum", "zeta_in", "zeta_hid", "frac_epoch_remove"):
            value = getattr(self, name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        check_positive("epsilon", self.epsilon)
        check_range("zeta_in", self.zeta_in, 0.0, 1.0, high_inclusive=False)
        check_range("zeta_hid", self.zeta_hid, 0.0, 1.0, high_inclusive=False)
        check_range("frac_epoch_remove", self.frac_epoch_remove, 0.0, 1.0, low_inclusive=False)
        check_int("warmup_epochs", self.warmup_epochs, minimum=0)
        check_int("epochs", self.epochs, minimum=1)
        if self.batch_size is not None:
            check_int("batch_size", self.batch_size, minimum=1)
        check_positive("lr", self.lr)
        check_range("momentum", self.momentum, 0.0, 1.0, high_inclusive=False)
        check_positive("weight_decay", self.weight_decay, strict=False)
        check_choice("regrowth", self.regrowth, REGROWTH)
        check_choice("final_active", self.final_active, FINAL_ACTIVE)
        check_choice("backend", self.backend, BACKENDS)
        check_int("chunk_elements", self.chunk_elements, minimum=1)
        if self.max_candidates is not None:
            check_int("max_candidates", self.max_candidates, minimum=1)
        check_choice("init", self.init, INITS)
        if not isinstance(self.device, str | torch.device):
            raise TypeError(f"device must be a string such as 'auto', 'cpu' or 'cuda', got {self.device!r}")


@dataclass
class NeuroFSResult:
    """What a NeuroFS run produces."""

    selected: np.ndarray  # K feature indices, strongest first (= ranking[:K])
    strengths: np.ndarray  # (n_features,) input-neuron strength at the end of training
    ranking: np.ndarray  # all feature indices, most important first (see complete_ranking)
    last_active_epoch: np.ndarray  # (n_features,) last epoch a neuron was active (epochs = active at the end)
    exit_strength: np.ndarray  # (n_features,) strength when it left the network (or at the end)
    model: SparseMLP
    history: list[dict] = field(default_factory=list)
    config: dict = field(default_factory=dict)


def _gradient_scorer(a, dz: torch.Tensor, max_elements: int) -> RowScorer:
    """Rows of ``|dL/dW| = |a^T dz|`` for the layer whose input is ``a`` (a tensor, or the
    :class:`FeatureMatrix` for the first layer). When the whole gradient has at most
    ``max_elements`` entries it is formed once and rows are looked up; otherwise every call forms
    just the requested rows (memory ``O(rows * n_out)``)."""
    scores = a.column_scores if isinstance(a, FeatureMatrix) else partial(dense_column_scores, a)
    if a.shape[1] * dz.shape[1] <= max_elements:
        full = scores(None, dz)
        return lambda rows: full[rows]
    return lambda rows: scores(rows, dz)


def _random_scorer(n_out: int, generator: torch.Generator) -> RowScorer:
    return lambda rows: torch.rand(rows.numel(), n_out, generator=generator).to(rows.device)


def _rewire_hidden(layer: SparseLinear, budget: int, zeta: float, scorer: RowScorer, chunk: int) -> None:
    """SET step: prune ``zeta`` of the smallest positive and negative weights, regrow to ``budget``."""
    rows, cols, values = layer.connections()
    keep = set_prune_mask(values, zeta)
    rows, cols, values = rows[keep], cols[keep], values[keep]
    n_new = min(budget, layer.n_in * layer.n_out) - rows.numel()
    new_rows, new_cols = top_new_connections(
        scorer, torch.arange(layer.n_in, device=rows.device), layer.n_out, rows, cols, n_new, chunk
    )
    layer.set_connections(
        torch.cat([rows, new_rows]),
        torch.cat([cols, new_cols]),
        torch.cat([values, values.new_zeros(new_rows.numel())]),
    )


def _sample_candidates(
    candidates: torch.Tensor, limit: int | None, generator: torch.Generator
) -> torch.Tensor:
    """At most ``limit`` of the inactive input neurons, uniformly at random (all when ``None``),
    sorted: the addition step then scores ``limit`` inputs instead of every inactive one."""
    if limit is None or candidates.numel() <= limit:
        return candidates
    pick = torch.randperm(candidates.numel(), generator=generator)[:limit].to(candidates.device)
    return torch.sort(candidates[pick]).values


def _evolve_input(
    layer: SparseLinear,
    budget: int,
    schedule: InputNeuronSchedule,
    epoch: int,
    cfg: NeuroFSConfig,
    scorer: RowScorer,
    chunk: int,
    generator: torch.Generator,
) -> dict:
    """NeuroFS input-layer step: remove weak mature neurons, swap in new ones, rewire, regrow."""
    rows, cols, values = layer.connections()
    active = layer.active_inputs()
    to_remove, n_add = schedule.plan(epoch, layer.input_strength(), active)
    removed = torch.zeros(layer.n_in, dtype=torch.bool, device=rows.device)
    removed[to_remove] = True
    survive = ~removed[rows]
    rows, cols, values = rows[survive], cols[survive], values[survive]
    kept_neurons = torch.nonzero(active & ~removed).flatten()
    keep = set_prune_mask(values, cfg.zeta_in)
    keep = keep_strongest_per_row(rows, values, keep, kept_neurons)
    rows, cols, values = rows[keep], cols[keep], values[keep]

    # neuron addition: inactive neurons (not the ones removed just now) with the largest gradient
    candidates = _sample_candidates(torch.nonzero(~active).flatten(), cfg.max_candidates, generator)
    added = rows.new_empty(0)
    forced_cols = rows.new_empty(0)
    if n_add > 0 and candidates.numel():
        best, where = row_max_scores(scorer, candidates, chunk)
        top = torch.argsort(best, descending=True, stable=True)[:n_add]
        added, forced_cols = candidates[top], where[top]
        order = torch.argsort(added)
        added, forced_cols = added[order], forced_cols[order]
        schedule.mark_added(added)
    # every added neuron gets its best connection, the rest of the budget goes to the top scores
    rows = torch.cat([rows, added])
    cols = torch.cat([cols, forced_cols])
    values = torch.cat([values, values.new_zeros(added.numel())])
    pool = torch.sort(torch.cat([kept_neurons, added])).values
    budget_now = min(budget, pool.numel() * layer.n_out)
    new_rows, new_cols = top_new_connections(
        scorer, pool, layer.n_out, rows, cols, budget_now - rows.numel(), chunk
    )
    layer.set_connections(
        torch.cat([rows, new_rows]),
        torch.cat([cols, new_cols]),
        torch.cat([values, values.new_zeros(new_rows.numel())]),
    )
    return {"removed": int(to_remove.numel()), "added": int(added.numel())}


def evolve(
    model: SparseMLP,
    schedule: InputNeuronSchedule,
    epoch: int,
    x: torch.Tensor,
    y: torch.Tensor,
    cfg: NeuroFSConfig,
    generator: torch.Generator,
) -> dict:
    """One evolution step after training epoch ``epoch`` (0-based); returns counts for the history."""
    layers = list(model.sparse_layers)
    if cfg.regrowth == "gradient":
        scorers = [_gradient_scorer(a, dz, cfg.chunk_elements) for a, dz in layer_gradients(model, x, y, 512)]
    else:
        scorers = [_random_scorer(layer.n_out, generator) for layer in layers]
    chunks = [max(1, cfg.chunk_elements // layer.n_out) for layer in layers]
    info = {"removed": 0, "added": 0}
    first = layers[0]
    if epoch < cfg.warmup_epochs:
        schedule.mark_all_active_mature(first.active_inputs())
        _rewire_hidden(first, model.budgets[0], cfg.zeta_hid, scorers[0], chunks[0])
    else:
        info = _evolve_input(first, model.budgets[0], schedule, epoch, cfg, scorers[0], chunks[0], generator)
    for i in range(1, len(layers)):
        _rewire_hidden(layers[i], model.budgets[i], cfg.zeta_hid, scorers[i], chunks[i])
    return info


def complete_ranking(last_active_epoch: np.ndarray, exit_strength: np.ndarray) -> np.ndarray:
    """Every feature ordered from the evolution history: neurons that stayed active longer first,
    ties (same last epoch, e.g. all survivors) broken by strength, then by index."""
    n = len(last_active_epoch)
    return np.lexsort((np.arange(n), -exit_strength, -last_active_epoch)).astype(np.int64)


def _prepare(x, y: np.ndarray, n_classes: int, cfg: NeuroFSConfig):
    """Validated config, device, data on the device, model, schedule and batch size."""
    d = x.shape[1]
    cfg.validate(d)
    device = resolve_device(str(cfg.device))
    features = FeatureMatrix(x, device)
    y_t = torch.as_tensor(np.asarray(y), dtype=torch.int64).to(device)
    model = SparseMLP(
        d, n_classes, cfg.hidden, cfg.epsilon, cfg.activation, cfg.backend, cfg.seed, cfg.init, device
    )
    epoch_remove = max(1, int(cfg.epochs * cfg.frac_epoch_remove))
    schedule = InputNeuronSchedule(
        d, cfg.k, cfg.zeta_in, cfg.epochs, epoch_remove, cfg.swap_until_end, cfg.final_active
    )
    n = x.shape[0]
    batch = min(cfg.batch_size if cfg.batch_size is not None else default_batch_size(n), n)
    return device, features, y_t, model, schedule, batch


def train_one_epoch(
    model: SparseMLP,
    features: FeatureMatrix,
    y: torch.Tensor,
    cfg: NeuroFSConfig,
    batch: int,
    generator: torch.Generator,
) -> tuple[float, float]:
    """One pass of SGD over ``n // batch`` mini-batches; returns (mean loss, training accuracy).

    Loss and hit counts are summed on the device and read once, at the end of the epoch."""
    n = features.shape[0]
    steps = max(1, n // batch)
    # the reference recompiles the Keras model every epoch: a fresh SGD (momentum reset)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    perm = torch.randperm(n, generator=generator).to(y.device)
    total_loss = torch.zeros((), device=y.device)
    correct = torch.zeros((), device=y.device, dtype=torch.int64)
    for step in range(steps):
        idx = perm[step * batch : (step + 1) * batch]
        logits = model(features.rows(idx))
        loss = F.cross_entropy(logits, y[idx])
        penalty = cfg.weight_decay * model.l2_penalty() if cfg.weight_decay else 0.0
        optimizer.zero_grad(set_to_none=True)
        (loss + penalty).backward()
        optimizer.step()
        total_loss += loss.detach() * idx.numel()
        correct += (logits.detach().argmax(1) == y[idx]).sum()
    seen = steps * batch
    return float(total_loss) / seen, int(correct) / seen


def _check_result(strength: torch.Tensor, ranking: np.ndarray, k: int, active: torch.Tensor) -> None:
    """Invariant: the selected K are the K strongest surviving neurons, and all of them are active."""
    selected = ranking[:k]
    strength_np = strength.cpu().numpy()
    active_np = active.cpu().numpy()
    if not active_np[selected].all() and active_np.sum() >= k:
        raise RuntimeError("internal error: a selected feature is not an active input neuron")
    kth = np.sort(strength_np[active_np])[::-1][min(k, int(active_np.sum())) - 1]
    if (strength_np[selected] < kth - 1e-6 * max(1.0, abs(kth))).any():
        raise RuntimeError("internal error: the selection is not the K strongest active input neurons")


def train_neurofs(x, y: np.ndarray, n_classes: int, cfg: NeuroFSConfig) -> NeuroFSResult:
    """Train NeuroFS on features ``x`` (N, d; numpy or scipy.sparse) and labels ``y`` in ``[0, n_classes)``."""
    device, features, y_t, model, schedule, batch = _prepare(x, y, n_classes, cfg)
    d = x.shape[1]
    generator = torch.Generator().manual_seed(cfg.seed + 1)
    last_active = torch.full((d,), -1, dtype=torch.int64, device=device)
    exit_strength = torch.zeros(d, device=device)
    history: list[dict] = []
    for epoch in progress(range(cfg.epochs), desc="NeuroFS", total=cfg.epochs):
        start = time.perf_counter()
        loss, accuracy = train_one_epoch(model, features, y_t, cfg, batch, generator)
        if not math.isfinite(loss):
            raise TrainingDivergedError(
                f"NeuroFS training diverged at epoch {epoch} (loss {loss}); lower lr or scale X"
            )
        train_time = time.perf_counter() - start
        info = {"removed": 0, "added": 0}
        if epoch < cfg.epochs - 1:  # the last evolution step would not change the selection
            before = model.input_layer.active_inputs()
            strength = model.input_layer.input_strength()
            info = evolve(model, schedule, epoch, features, y_t, cfg, generator)
            left = before & ~model.input_layer.active_inputs()
            last_active[left] = epoch
            exit_strength[left] = strength[left]
        history.append(
            {
                "epoch": epoch,
                "loss": loss,
                "train_acc": accuracy,
                "batch_size": batch,
                "active_inputs": int(model.input_layer.active_inputs().sum()),
                "connections": [layer.n_active for layer in model.sparse_layers],
                "train_seconds": train_time,
                "evolve_seconds": time.perf_counter() - start - train_time,
                **info,
            }
        )
        log.debug("epoch %d: %s", epoch, history[-1])
    strength = model.input_layer.input_strength()
    active = model.input_layer.active_inputs()
    last_active[active] = cfg.epochs
    exit_strength[active] = strength[active]
    last_np = last_active.cpu().numpy()
    exit_np = exit_strength.cpu().numpy().astype(np.float64)
    ranking = complete_ranking(last_np, exit_np)
    _check_result(strength, ranking, cfg.k, active)
    cfg_dict = asdict(cfg)
    cfg_dict["hidden"] = list(cfg.hidden)
    cfg_dict["batch_size"] = batch
    cfg_dict["device"] = str(device)
    return NeuroFSResult(
        ranking[: cfg.k].copy(),
        strength.cpu().numpy().astype(np.float64),
        ranking,
        last_np,
        exit_np,
        model,
        history,
        cfg_dict,
    )
