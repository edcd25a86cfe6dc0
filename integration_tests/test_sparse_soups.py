"""Pipeline 3: gnn-soup ingredients trained under one shared sparse mask (research-systems-core MaskSet);
the soups keep the mask exactly and the greedy interpolation soup is no worse than its best
ingredient on validation."""

from __future__ import annotations

import pathlib

import torch
import torch.nn.functional as F

from gnn_soup.data import load_dataset
from gnn_soup.soup import make_evaluators, run_soups
from gnn_soup.training import TrainConfig, TrainingContext, build_model, initial_state
from research_systems_core.masks import MaskSet
from research_systems_core.seeding import seed_everything

SPARSITY = 0.8


def _train_sparse_ingredient(context, config, init, mask, seed: int, steps: int = 80):
    data = context.data
    seed_everything(seed)  # ingredients differ by their dropout noise
    model = build_model(config, data)
    model.load_state_dict(init)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    handle = mask.attach(model, optimizer)
    structure = context.full_structure(model, config)
    best_val, best_state = -1.0, None
    for step in range(1, steps + 1):
        model.train()
        optimizer.zero_grad()
        logits = model(data.features, structure)
        F.cross_entropy(logits[data.train_mask], data.y[data.train_mask]).backward()
        optimizer.step()
        if step % 10 == 0:
            model.eval()
            with torch.no_grad():
                pred = model(data.features, structure).argmax(-1)
            val = float((pred[data.val_mask] == data.y[data.val_mask]).float().mean())
            if val > best_val:
                best_val, best_state = val, {k: v.detach().clone() for k, v in model.state_dict().items()}
    handle.remove()
    return model, best_state


def test_soups_of_ingredients_sharing_one_sparse_mask(data_dir: pathlib.Path, tmp_path: pathlib.Path) -> None:
    data = load_dataset("Cora", data_dir=data_dir, cache_dir=tmp_path / "cache")
    context = TrainingContext(data)
    config = TrainConfig(model="gcn", hidden_dim=64, dropout=0.5, lr=0.01, weight_decay=5e-4)
    init = initial_state(config, data, seed=0)
    weights = {k: v for k, v in init.items() if v.dim() == 2}
    mask = MaskSet.from_scores(weights, SPARSITY, transform=torch.abs)  # one shared mask, from the init
    assert mask.n_total - mask.n_active == round(SPARSITY * mask.n_total)

    states = []
    model = None
    for seed in (1, 2, 3):
        model, state = _train_sparse_ingredient(context, config, init, mask, seed)
        for name, m in mask.masks.items():
            assert (state[name][~m] == 0).all()
        states.append(state)

    results = run_soups(make_evaluators(model, data), states, grid=11)
    for kind in ("uniform", "greedy", "greedy_interpolation"):
        soup = results["_states"][kind]
        for name, m in mask.masks.items():
            assert (soup[name][~m] == 0).all(), f"{kind} soup broke the mask of {name}"
        assert MaskSet({n: soup[n] != 0 for n in mask.names}).n_active <= mask.n_active
    best = results["best_ingredient"]["val"]
    assert results["greedy_interpolation"]["val"] >= best
    assert results["greedy"]["val"] >= best
    assert best > 0.6, results  # 80%-sparse GCNs still learn Cora
    assert results["uniform"]["val"] > 0.6  # shared init and mask: the uniform soup does not collapse
