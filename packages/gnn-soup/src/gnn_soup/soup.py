"""Soups of ingredient weights: uniform, greedy, greedy interpolation, and the logit ensemble.

Small graphs score candidate weights with ``torch.func.functional_call`` on one module (no state
dict loading); large ones by layer-wise inference (:mod:`gnn_soup.inference`). Every soup is
reported with the best ingredient and the logit ensemble beside it, and every reported score is
re-evaluated from the returned weights before it is reported (:func:`check_reported_scores`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from gnn_soup.data import GraphData
from gnn_soup.models import GNN
from gnn_soup.training import TrainConfig, TrainingContext, masked_accuracy, validation_nodes
from research_systems_core.averaging import average_state_dicts, greedy_interpolation_soup, greedy_soup
from research_systems_core.validation import check_int

SOUP_METHODS = ("uniform", "greedy", "greedy_interpolation")
REFERENCES = ("ingredient_mean", "best_ingredient", "ensemble")

StateDict = Mapping[str, torch.Tensor]


class SoupInvariantError(RuntimeError):
    """A reported soup score differs from a fresh evaluation of the soup's weights."""


@dataclass
class Evaluators:
    """Accuracy of a state dict on the validation and test nodes (full-batch or layer-wise)."""

    model: GNN
    context: TrainingContext
    config: TrainConfig
    calls: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        data = self.data
        self.model.to(self.context.device).eval()
        self.val_nodes = validation_nodes(data, self.config.eval_nodes)  # a fixed sample if eval_nodes > 0
        self.test_nodes = torch.nonzero(data.test_mask).flatten()
        self.eval_nodes = torch.cat([self.val_nodes, self.test_nodes])

    @property
    def data(self) -> GraphData:
        return self.context.data

    def logits(self, state_dict: StateDict, nodes: torch.Tensor | None = None) -> torch.Tensor:
        """Eval-mode logits of ``nodes`` (all when None) under ``state_dict``."""
        self.calls += 1
        context, config = self.context, self.config
        if context.eval_method(config) == "full":
            features = context.features_for(self.model).to(context.device)
            structure = context.full_structure(self.model, config)
            weights = {k: v.to(context.device) for k, v in state_dict.items()}
            with torch.no_grad(), context.autocast():
                out = torch.func.functional_call(self.model, weights, (features, structure)).float().cpu()
            return out if nodes is None else out[nodes]
        self.model.load_state_dict(dict(state_dict))
        return context.logits(self.model, config, nodes)

    def scores(self, state_dict: StateDict) -> tuple[float, float]:
        """(validation, test) accuracy in one pass."""
        logits = self.logits(state_dict, self.eval_nodes)
        n_val = self.val_nodes.numel()
        return (
            masked_accuracy(logits[:n_val], self.data.y[self.val_nodes]),
            masked_accuracy(logits[n_val:], self.data.y[self.test_nodes]),
        )

    def val(self, state_dict: StateDict) -> float:
        return masked_accuracy(self.logits(state_dict, self.val_nodes), self.data.y[self.val_nodes])

    def test(self, state_dict: StateDict) -> float:
        return masked_accuracy(self.logits(state_dict, self.test_nodes), self.data.y[self.test_nodes])


def make_evaluators(
    model: GNN, data: GraphData | TrainingContext, config: TrainConfig | None = None
) -> Evaluators:
    """Evaluators on ``data`` (a graph, or a :class:`TrainingContext` carrying device and precision)."""
    context = data if isinstance(data, TrainingContext) else TrainingContext(data)
    return Evaluators(model=model, context=context, config=config or TrainConfig(model=_model_name(model)))


def _model_name(model: GNN) -> str:
    from gnn_soup.models import MODELS

    for name in MODELS.names():
        if type(model) is MODELS.get(name):
            return name
    return "gcn"


def uniform_soup(state_dicts: Sequence[StateDict]) -> dict[str, torch.Tensor]:
    """Plain average of all ingredients (mismatched keys or shapes raise a ValueError naming the key)."""
    return average_state_dicts(list(state_dicts))


def ensemble_accuracy(evaluators: Evaluators, state_dicts: Sequence[StateDict]) -> tuple[float, float]:
    """Validation and test accuracy of the averaged logits of all ingredients (K forward passes)."""
    if not state_dicts:
        raise ValueError("need at least one ingredient for an ensemble")
    nodes = evaluators.eval_nodes
    logits = torch.stack([evaluators.logits(sd, nodes) for sd in state_dicts]).mean(0)
    n_val = evaluators.val_nodes.numel()
    y = evaluators.data.y
    return (
        masked_accuracy(logits[:n_val], y[evaluators.val_nodes]),
        masked_accuracy(logits[n_val:], y[evaluators.test_nodes]),
    )


def interpolation_weights(history: Sequence[Mapping[str, Any]]) -> dict[int, float]:
    """Each ingredient's weight in the final greedy-interpolation soup, replayed from its history.

    Accepting ``alpha`` scales every earlier weight by ``1 - alpha``: with ``alpha = 1`` the soup
    is replaced by the new ingredient and the earlier members drop to weight 0.
    """
    weights: dict[int, float] = {}
    for step, entry in enumerate(history):
        if step == 0:
            weights = {int(entry["ingredient"]): 1.0}
            continue
        if not entry["accepted"]:
            continue
        alpha = float(entry["alpha"])
        weights = {i: w * (1.0 - alpha) for i, w in weights.items()}
        weights[int(entry["ingredient"])] = weights.get(int(entry["ingredient"]), 0.0) + alpha
    return weights


def check_reported_scores(
    evaluators: Evaluators, name: str, state: StateDict, val: float, test: float
) -> None:
    """Invariant: a soup's reported scores are those of its returned weights (re-evaluated here)."""
    fresh_val, fresh_test = evaluators.val(state), evaluators.test(state)
    for split, reported, fresh in (("val", val, fresh_val), ("test", test, fresh_test)):
        if not (abs(reported - fresh) <= 1e-6 or (reported != reported and fresh != fresh)):
            raise SoupInvariantError(
                f"{name}: reported {split} accuracy {reported:.6f} but its weights score {fresh:.6f}"
            )


def soup_verdict(soup: Mapping[str, float], best: Mapping[str, float], ensemble: Mapping[str, float]) -> str:
    """One word on a soup's test accuracy against the best ingredient (by validation) and the ensemble."""
    if soup["test"] > ensemble["test"] and soup["test"] > best["test"]:
        return "beats best ingredient and ensemble"
    if soup["test"] > best["test"]:
        return "beats best ingredient, not the ensemble"
    if soup["test"] == best["test"]:
        return "ties best ingredient"
    return "below best ingredient"


def run_soups(
    evaluators: Evaluators,
    state_dicts: Sequence[StateDict],
    val_scores: Sequence[float] | None = None,
    grid: int = 11,
) -> dict[str, dict[str, Any]]:
    """Every soup and reference of one set of ingredients: validation and test accuracy of each.

    Keys: ``ingredient_mean``, ``best_ingredient`` (by validation), ``ensemble`` (averaged logits),
    ``uniform``, ``greedy``, ``greedy_interpolation``; each soup carries ``vs_best_ingredient``,
    ``vs_ensemble`` (test accuracy differences) and a ``verdict``; ``_states`` holds the weights.
    """
    check_int("grid", grid, minimum=2)
    state_dicts = list(state_dicts)
    if not state_dicts:
        raise ValueError("need at least one ingredient to make a soup")
    pairs = [evaluators.scores(sd) for sd in state_dicts]
    measured_val = [v for v, _ in pairs]
    val_scores = measured_val if val_scores is None else [float(v) for v in val_scores]
    test_scores = [t for _, t in pairs]
    best = max(range(len(state_dicts)), key=lambda i: (val_scores[i], -i))
    out: dict[str, dict[str, Any]] = {
        "ingredient_mean": {
            "val": float(torch.tensor(measured_val).mean()),
            "test": float(torch.tensor(test_scores).nanmean()),
        },
        "best_ingredient": {"val": measured_val[best], "test": test_scores[best], "index": best},
    }
    val, test = ensemble_accuracy(evaluators, state_dicts)
    out["ensemble"] = {"val": val, "test": test}
    states: dict[str, dict[str, torch.Tensor]] = {}
    states["uniform"] = uniform_soup(state_dicts)
    out["uniform"] = {"val": evaluators.val(states["uniform"]), "test": evaluators.test(states["uniform"])}
    greedy = greedy_soup(state_dicts, evaluators.val, scores=val_scores)
    states["greedy"] = greedy.state_dict
    out["greedy"] = {
        "val": greedy.score,
        "test": evaluators.test(greedy.state_dict),
        "accepted": greedy.accepted,
    }
    start = time.perf_counter()
    interp = greedy_interpolation_soup(state_dicts, evaluators.val, grid=grid, scores=val_scores)
    weights = interpolation_weights(interp.history)
    states["greedy_interpolation"] = interp.state_dict
    out["greedy_interpolation"] = {
        "val": interp.score,
        "test": evaluators.test(interp.state_dict),
        "accepted": [i for i, w in weights.items() if w > 0],
        "weights": {str(i): w for i, w in weights.items() if w > 0},
        "alphas": [h["alpha"] for h in interp.history],
        "decisions": [bool(h["accepted"]) for h in interp.history],
        "search_seconds": time.perf_counter() - start,
    }
    for name in SOUP_METHODS:
        entry = out[name]
        check_reported_scores(evaluators, name, states[name], entry["val"], entry["test"])
        entry["vs_best_ingredient"] = entry["test"] - out["best_ingredient"]["test"]
        entry["vs_ensemble"] = entry["test"] - out["ensemble"]["test"]
        entry["verdict"] = soup_verdict(entry, out["best_ingredient"], out["ensemble"])
    out["_states"] = states
    return out
