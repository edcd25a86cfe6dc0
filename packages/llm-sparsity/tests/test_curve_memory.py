"""The curve sweep's memory-light magnitude path prunes exactly what the MaskSet path prunes."""

from __future__ import annotations

import copy

import torch

from llm_sparsity.llm_curve import llm_curve
from llm_sparsity.models import create_model
from llm_sparsity.pruning import prune
from llm_sparsity.targets import select_targets


def test_streamed_magnitude_points_equal_the_maskset_pruning_and_the_model_ends_dense() -> None:
    model = create_model("tiny_bert", seed=3)
    targets = select_targets(model, "essential")
    dense = copy.deepcopy(model.state_dict())
    seen: list[dict[str, torch.Tensor]] = []

    def evaluate(m: torch.nn.Module) -> float:
        seen.append({n: p.detach().eq(0) for n, p in targets.parameters(m).items()})
        return 0.0

    rows = llm_curve(model, targets, [0.3, 0.7], ["magnitude"], evaluate)
    assert [r["sparsity"] for r in rows] == [0.0, 0.3, 0.7]
    for zeros, s in zip(seen[1:], (0.3, 0.7), strict=True):
        ref = copy.deepcopy(model)
        masks = prune(ref, targets, s)
        for name, keep in masks.masks.items():
            assert torch.equal(zeros[name], ~keep)
    for k, v in model.state_dict().items():
        assert torch.equal(v, dense[k])
