"""Soups of ingredient weights: uniform, greedy, greedy interpolation, and the logit ensemble.

Candidate weights are scored with ``research_systems_core.averaging.functional_evaluator`` (one module,
``torch.func.functional_call``), never by loading state dicts into fresh modules.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from gnn_soup.data import GraphData
from gnn_soup.models import GNN
from research_systems_core.averaging import (
    average_state_dicts,
    functional_evaluator,
    greedy_interpolation_soup,
    greedy_soup,
)
from research_systems_core.validation import check_int

SOUP_METHODS = ("uniform", "greedy", "greedy_interpolation", "ensemble")

StateDict = Mapping[str, torch.Tensor]


@dataclass
class Evaluators:
    """Full-graph accuracy of a state dict on the validation and test nodes."""

    model: GNN
    data: GraphData
    structure: object

    def __post_init__(self) -> None:
        self.model.eval()
        self.val = functional_evaluator(self.model, self._metric(self.data.val_mask))
        self.test = functional_evaluator(self.model, self._metric(self.data.test_mask))

    def _metric(self, mask: torch.Tensor):
        data, structure = self.data, self.structure

        def metric(forward) -> float:
            logits = forward(data.features, structure)
            return float((logits[mask].argmax(-1) == data.y[mask]).float().mean())

        return metric

    def logits(self, state_dict: StateDict) -> torch.Tensor:
        with torch.no_grad():
            return torch.func.functional_call(
                self.model, dict(state_dict), (self.data.features, self.structure)
            )


def make_evaluators(model: GNN, data: GraphData) -> Evaluators:
    return Evaluators(model=model, data=data, structure=model.prepare(data.edge_index, data.num_nodes))


def uniform_soup(state_dicts: Sequence[StateDict]) -> dict[str, torch.Tensor]:
    """Plain average of all ingredients (mismatched keys or shapes raise a ValueError naming the key)."""
    return average_state_dicts(list(state_dicts))


def ensemble_accuracy(evaluators: Evaluators, state_dicts: Sequence[StateDict]) -> tuple[float, float]:
    """Validation and test accuracy of the averaged logits of all ingredients (the upper reference)."""
    if not state_dicts:
        raise ValueError("need at least one ingredient for an ensemble")
    logits = torch.stack([evaluators.logits(sd) for sd in state_dicts]).mean(0)
    data = evaluators.data
    pred = logits.argmax(-1)
    val = float((pred[data.val_mask] == data.y[data.val_mask]).float().mean())
    test = float((pred[data.test_mask] == data.y[data.test_mask]).float().mean())
    return val, test


def run_soups(
    evaluators: Evaluators,
    state_dicts: Sequence[StateDict],
    val_scores: Sequence[float] | None = None,
    grid: int = 11,
) -> dict[str, dict[str, Any]]:
    """Every soup and reference of one set of ingredients: validation and test accuracy of each.

    Keys: ``ingredient_mean``, ``best_ingredient`` (by validation), ``uniform``, ``greedy``,
    ``greedy_interpolation``, ``ensemble``.
    """
    check_int("grid", grid, minimum=2)
    state_dicts = list(state_dicts)
    if not state_dicts:
        raise ValueError("need at least one ingredient to make a soup")
    if val_scores is None:
        val_scores = [evaluators.val(sd) for sd in state_dicts]
    test_scores = [evaluators.test(sd) for sd in state_dicts]
    best = max(range(len(state_dicts)), key=lambda i: (val_scores[i], -i))
    out: dict[str, dict[str, Any]] = {
        "ingredient_mean": {
            "val": float(torch.tensor(val_scores).mean()),
            "test": float(torch.tensor(test_scores).mean()),
        },
        "best_ingredient": {"val": float(val_scores[best]), "test": float(test_scores[best]), "index": best},
    }
    uniform = uniform_soup(state_dicts)
    out["uniform"] = {"val": evaluators.val(uniform), "test": evaluators.test(uniform)}
    greedy = greedy_soup(state_dicts, evaluators.val, scores=val_scores)
    out["greedy"] = {
        "val": greedy.score,
        "test": evaluators.test(greedy.state_dict),
        "accepted": greedy.accepted,
    }
    start = time.perf_counter()
    interp = greedy_interpolation_soup(state_dicts, evaluators.val, grid=grid, scores=val_scores)
    seconds = time.perf_counter() - start
    out["greedy_interpolation"] = {
        "val": interp.score,
        "test": evaluators.test(interp.state_dict),
        "accepted": interp.accepted,
        "alphas": [h["alpha"] for h in interp.history],
        "search_seconds": seconds,
    }
    val, test = ensemble_accuracy(evaluators, state_dicts)
    out["ensemble"] = {"val": val, "test": test}
    out["_states"] = {
        "uniform": uniform,
        "greedy": greedy.state_dict,
        "greedy_interpolation": interp.state_dict,
    }
    return out
