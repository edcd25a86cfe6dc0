"""Pipeline 1: adversarially train with robust-at, prune one-shot with llm-sparsity's generic
pruning API (research-systems-core masks) over a sparsity grid, and read the robust-accuracy curve's
essential sparsity."""

from __future__ import annotations

import math
import pathlib

import torch

from llm_sparsity.curves import essential_sparsity, sparsity_curve
from llm_sparsity.targets import select_targets
from research_systems_core.masks import MaskSet
from robust_at.data import load_dataset
from robust_at.evaluate import clean_accuracy, pgd_accuracy
from robust_at.train import TrainConfig, build_model, load_weights, train

SPARSITIES = [0.0, 0.2, 0.4, 0.6, 0.8, 0.9, 0.97]
EPS, STEP = 0.1, 0.025


def test_adversarially_trained_model_pruned_over_a_sparsity_grid(tmp_path: pathlib.Path) -> None:
    cfg = TrainConfig(
        dataset="digits", train_size=800, val_size=100, test_size=300, model="small-cnn", width=16, depth=4,
        method="at-pgd", epochs=8, batch_size=64, lr=0.05, milestones=[6], weight_decay=0.0,
        eps=EPS, step_size=STEP, attack_steps=5, eval_steps=5, eval_size=100, device="cpu", seed=0,
    )  # fmt: skip
    result = train(cfg, tmp_path / "at")
    data = load_dataset("digits", val_size=100, train_size=800, test_size=300, seed=0)
    model = build_model(cfg, data)
    model.load_state_dict(load_weights(result["weights"]["last"]))
    model.eval()

    # Conv and linear weights of any nn.Module, chosen by pattern (BatchNorm weights are 1-D).
    targets = select_targets(
        model, preset=None, patterns=[r"(stem|stages)\.\d*\.?0\.weight$", r"head\.weight$"]
    )
    assert all(dict(model.named_parameters())[n].dim() >= 2 for n in targets.names)
    n_targeted = targets.n_weights(model)

    def evaluate(pruned: torch.nn.Module, masks: MaskSet) -> dict[str, float]:
        # masks are exact and applied: round(s * n) targeted weights are zero
        assert masks.n_total == n_targeted
        params = dict(pruned.named_parameters())
        for name, mask in masks.masks.items():
            assert (params[name][~mask] == 0).all()
        return {
            "pruned": masks.n_total - masks.n_active,
            "clean": clean_accuracy(pruned, data.x_test, data.y_test)["acc"],
            "robust": pgd_accuracy(pruned, data.x_test, data.y_test, eps=EPS, step_size=STEP, steps=10)[
                "acc"
            ],
        }

    rows = sparsity_curve(model, targets, SPARSITIES, evaluate, methods=("magnitude",))
    assert [r["sparsity"] for r in rows] == SPARSITIES
    for row in rows:
        assert row["pruned"] == round(row["sparsity"] * n_targeted)
    robust = [r["robust"] for r in rows]
    clean = [r["clean"] for r in rows]
    # A real robust model: well above chance under PGD-10, below its clean accuracy.
    assert robust[0] > 0.35, robust
    assert clean[0] > robust[0]
    # Extreme sparsity destroys robustness; moderate sparsity keeps most of it.
    assert robust[-1] < robust[0] - 0.1, robust
    assert robust[1] > robust[0] - 0.1, robust
    es = essential_sparsity(SPARSITIES, robust, delta=0.02)
    assert es.tolerance in SPARSITIES and 0.2 <= es.tolerance < SPARSITIES[-1]
    assert 0.0 < es.knee < SPARSITIES[-1]
    assert all(math.isfinite(v) for v in robust + clean)
