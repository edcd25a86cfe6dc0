from __future__ import annotations

import numpy as np
import pytest
import torch

from llm_sparsity.curves import (
    essential_sparsity,
    knee_kneedle,
    knee_two_segment,
    sparsity_curve,
    tolerance_sparsity,
)
from llm_sparsity.pruning import prune
from llm_sparsity.saving import load_pruned, save_pruned
from llm_sparsity.targets import select_targets
from llm_sparsity.transfer import attach_transfer


def _steps(model, opt, n=3):
    ids = torch.randint(0, 100, (2, 6), generator=torch.Generator().manual_seed(0))
    for _ in range(n):
        opt.zero_grad()
        model(input_ids=ids).last_hidden_state.pow(2).mean().backward()
        opt.step()


@pytest.mark.parametrize("optim", ["sgd", "adam"])
def test_sparse_mode_keeps_mask_through_steps(tiny, optim: str) -> None:
    targets = select_targets(tiny, "essential")
    masks = prune(tiny, targets, 0.5)
    opt = (
        torch.optim.SGD(tiny.parameters(), lr=0.5, momentum=0.9)
        if optim == "sgd"
        else torch.optim.Adam(tiny.parameters(), lr=0.01)
    )
    handle = attach_transfer(tiny, masks, opt, "sparse")
    _steps(tiny, opt)
    for name, p in targets.parameters(tiny).items():
        assert torch.all(p[~masks.masks[name]] == 0)
    handle.remove()


def test_sparse_to_dense_lets_pruned_weights_regrow(tiny) -> None:
    targets = select_targets(tiny, "essential")
    masks = prune(tiny, targets, 0.5)
    opt = torch.optim.SGD(tiny.parameters(), lr=0.5)
    attach_transfer(tiny, masks, opt, "sparse_to_dense")
    _steps(tiny, opt)
    regrown = sum(int(p[~masks.masks[n]].ne(0).sum()) for n, p in targets.parameters(tiny).items())
    assert regrown > 0.5 * (masks.n_total - masks.n_active)


def test_frozen_mode_restores_pretrained_small_weights(tiny) -> None:
    targets = select_targets(tiny, "essential")
    pre = {n: p.detach().clone() for n, p in targets.parameters(tiny).items()}
    masks = prune(tiny, targets, 0.5)  # zeroes them; frozen mode puts the pre-trained values back
    opt = torch.optim.SGD(tiny.parameters(), lr=0.5)
    with pytest.raises(ValueError, match="pre-trained"):
        attach_transfer(tiny, masks, opt, "frozen")
    attach_transfer(tiny, masks, opt, "frozen", pretrained=pre)
    _steps(tiny, opt)
    changed_large = 0
    for n, p in targets.parameters(tiny).items():
        small = ~masks.masks[n]
        assert torch.equal(p.detach()[small], pre[n][small])
        changed_large += int((p.detach()[~small] != pre[n][~small]).sum())
    assert changed_large > 0
    with pytest.raises(ValueError, match="unknown transfer mode"):
        attach_transfer(tiny, masks, opt, "sparse-to-dense")


def test_knee_detectors_find_synthetic_knee() -> None:
    x = np.round(np.arange(0, 0.91, 0.05), 2)
    y = np.where(x <= 0.5, 0.8 - 0.02 * x, 0.8 - 0.01 - 1.5 * (x - 0.5))
    assert knee_two_segment(x, y) == pytest.approx(0.5, abs=0.01)
    assert knee_kneedle(x, y) == pytest.approx(0.5, abs=0.051)
    noisy = y + np.random.default_rng(0).normal(0, 0.005, size=len(y))
    assert knee_two_segment(x, noisy) == pytest.approx(0.5, abs=0.05)
    # tolerance: dense 0.8, within 0.01 until the drop starts after 0.5
    assert tolerance_sparsity(x, y, 0.01) == pytest.approx(0.5)
    assert tolerance_sparsity(x, y, 0.0) == 0.0
    es = essential_sparsity(x, y, delta=0.01, knee="kneedle")
    assert es.as_dict()["tolerance"] == pytest.approx(0.5)
    with pytest.raises(ValueError, match="at least 3"):
        knee_two_segment([0, 1], [1, 0])
    with pytest.raises(ValueError, match="unknown knee method"):
        essential_sparsity(x, y, knee="elbow")


def test_curve_restores_pretrained_and_counts(tiny) -> None:
    targets = select_targets(tiny, "essential")
    before = {k: v.clone() for k, v in tiny.state_dict().items()}
    seen = []

    def evaluate(model, masks):
        zeros = sum(int(p.eq(0).sum()) for p in targets.parameters(model).values())
        seen.append(zeros)
        return {"zeros": zeros}

    rows = sparsity_curve(tiny, targets, [0.0, 0.5, 0.8], evaluate, methods=("magnitude", "random"))
    total = targets.n_weights(tiny)
    assert [r["zeros"] for r in rows] == [0, round(0.5 * total), round(0.8 * total)] * 2
    for k, v in tiny.state_dict().items():
        assert torch.equal(v, before[k])
    with pytest.raises(ValueError, match="sparsity must be in"):
        sparsity_curve(tiny, targets, [1.0], evaluate)


def test_save_load_roundtrip(tiny, tmp_path) -> None:
    targets = select_targets(tiny, "junk_dna")
    masks = prune(tiny, targets, 0.6, "random", generator=torch.Generator().manual_seed(1))
    save_pruned(tiny, masks, tmp_path / "m", meta={"method": "random"})
    model, loaded, meta = load_pruned(tmp_path / "m")
    assert meta["method"] == "random" and meta["sparsity"] == pytest.approx(0.6, abs=1e-4)
    for n in masks.names:
        assert torch.equal(loaded.masks[n], masks.masks[n])
    sd = model.state_dict()
    for k, v in tiny.state_dict().items():
        assert torch.equal(sd[k], v), k
    with pytest.raises(FileNotFoundError, match=r"mask\.safetensors"):
        load_pruned(tmp_path)
