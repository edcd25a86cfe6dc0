"""MaskSet: exact counts, tie rule, N:M and row structure, persistence through optimizer steps."""

from __future__ import annotations

import math
import pathlib

import pytest
import torch
from torch import nn

from research_systems_core.masks import (
    MaskSet,
    erk_densities,
    kth_smallest,
    magnitude_scores,
    uniform_densities,
)
from research_systems_core.validation import UnknownNameError

SHAPES = {"a": (37, 13), "b": (5, 7, 3), "c": (1,), "d": (101,)}  # awkward sizes, n = 688


def _scores(seed: int = 0, dtype: torch.dtype = torch.float32) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {n: torch.randn(s, generator=gen).to(dtype) for n, s in SHAPES.items()}


@pytest.mark.parametrize("sparsity", [0.0, 0.001, 0.1, 1 / 3, 0.5, 0.77, 0.999])
def test_global_sparsity_is_exact_and_prunes_lowest(sparsity: float) -> None:
    scores = _scores()
    mask = MaskSet.from_scores(scores, sparsity, transform=torch.abs)
    total = sum(math.prod(s) for s in SHAPES.values())
    assert mask.n_total - mask.n_active == round(sparsity * total)
    kept = torch.cat(
        [s.abs().flatten()[m.flatten()] for s, m in zip(scores.values(), mask.masks.values(), strict=True)]
    )
    pruned = torch.cat(
        [s.abs().flatten()[~m.flatten()] for s, m in zip(scores.values(), mask.masks.values(), strict=True)]
    )
    if len(pruned) and len(kept):
        assert pruned.max() <= kept.min()


def test_ties_prune_earlier_positions_first() -> None:
    scores = {"x": torch.tensor([1.0, 0.0, 0.0, 2.0]), "y": torch.tensor([0.0, 0.0, 3.0])}
    mask = MaskSet.from_scores(scores, 3 / 7)  # 3 pruned among four tied zeros
    assert mask.masks["x"].tolist() == [True, False, False, True]
    assert mask.masks["y"].tolist() == [False, True, True]
    all_equal = {"x": torch.ones(3, 3), "y": torch.ones(4)}
    mask = MaskSet.from_scores(all_equal, 0.5)  # round(6.5) = 6 pruned
    assert mask.masks["x"].flatten().tolist() == [False] * 6 + [True] * 3
    assert mask.masks["y"].tolist() == [True] * 4


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.float64])
def test_kth_smallest_matches_sort_with_tiny_candidate_budget(dtype: torch.dtype) -> None:
    scores = _scores(3, dtype)
    values = torch.cat([s.float().flatten() for s in scores.values()]).to(torch.float64).sort().values
    for k in [1, 2, 344, 687, 688]:
        # max_candidates=5 forces several histogram narrowing rounds
        assert kth_smallest(scores.values(), k, bins=4, max_candidates=5) == float(values[k - 1])


def test_kth_smallest_rejects_nan_and_bad_k() -> None:
    with pytest.raises(ValueError, match="contain NaN"):
        kth_smallest([torch.tensor([1.0, float("nan")])], 1)
    with pytest.raises(ValueError, match="k must be <= 2"):
        kth_smallest([torch.tensor([1.0, 2.0])], 3)


def test_layer_allocation_is_exact_per_tensor() -> None:
    mask = MaskSet.from_scores(_scores(), 0.3, allocation="layer")
    for name, shape in SHAPES.items():
        n = math.prod(shape)
        assert int((~mask.masks[name]).sum()) == round(0.3 * n)


def test_row_allocation_prunes_each_row_equally() -> None:
    scores = {"w": torch.randn(6, 10)}
    mask = MaskSet.from_scores(scores, 0.35, allocation="row")
    pruned_per_row = (~mask.masks["w"]).sum(dim=1)
    assert pruned_per_row.tolist() == [round(0.35 * 10)] * 6  # round(3.5) = 4
    for row_s, row_m in zip(scores["w"], mask.masks["w"], strict=True):
        assert row_s[~row_m].max() <= row_s[row_m].min()


def test_nm_structure() -> None:
    w = torch.randn(4, 3, 2, 4)  # conv weight; rows of 24 inputs
    mask = MaskSet.from_nm({"w": w}, 2, 4, transform=torch.abs)
    groups = mask.masks["w"].reshape(4, -1, 4)
    assert (groups.sum(-1) == 2).all()
    g = w.abs().reshape(4, -1, 4)
    kept_min = torch.where(groups, g, torch.inf).amin(-1)
    pruned_max = torch.where(~groups, g, -torch.inf).amax(-1)
    assert (pruned_max <= kept_min).all()
    with pytest.raises(ValueError, match="n < m, got n=4, m=4"):
        MaskSet.from_nm({"w": w}, 4, 4)
    with pytest.raises(ValueError, match="not divisible by m=5"):
        MaskSet.from_nm({"w": w}, 2, 5)


def test_bad_sparsity_and_allocation() -> None:
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\), got 1.0"):
        MaskSet.from_scores(_scores(), 1.0)
    with pytest.raises(ValueError, match=r"got -0.1"):
        MaskSet.from_scores(_scores(), -0.1)
    with pytest.raises(UnknownNameError, match="unknown allocation 'cols'"):
        MaskSet.from_scores(_scores(), 0.5, allocation="cols")
    with pytest.raises(ValueError, match="scores is empty"):
        MaskSet.from_scores({}, 0.5)


def test_random_masks_exact_density_and_seeded() -> None:
    dens = {"a": 0.25, "b": 0.5, "c": 1.0, "d": 0.05}
    m1 = MaskSet.random(SHAPES, dens, generator=torch.Generator().manual_seed(1))
    m2 = MaskSet.random(SHAPES, dens, generator=torch.Generator().manual_seed(1))
    for name, shape in SHAPES.items():
        assert int(m1.masks[name].sum()) == round(dens[name] * math.prod(shape))
        assert torch.equal(m1.masks[name], m2.masks[name])


def test_vote_union_intersection_iou() -> None:
    a = MaskSet({"w": torch.tensor([1, 1, 0, 0], dtype=torch.bool)})
    b = MaskSet({"w": torch.tensor([1, 0, 1, 0], dtype=torch.bool)})
    c = MaskSet({"w": torch.tensor([1, 1, 1, 0], dtype=torch.bool)})
    assert MaskSet.vote([a, b, c], 2).masks["w"].tolist() == [True, True, True, False]
    assert torch.equal(MaskSet.vote([a, b, c], 1).masks["w"], MaskSet.union([a, b, c]).masks["w"])
    assert torch.equal(MaskSet.vote([a, b, c], 3).masks["w"], MaskSet.intersection([a, b, c]).masks["w"])
    assert MaskSet.intersection([a, b, c]).masks["w"].tolist() == [True, False, False, False]
    assert a.iou(b) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="k must be <= 3"):
        MaskSet.vote([a, b, c], 4)


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(9, 17), nn.ReLU(), nn.Linear(17, 3))


@pytest.mark.parametrize("opt", ["adamw", "adam_wd", "sgd_momentum"])
def test_masks_stay_zero_through_100_optimizer_steps(opt: str) -> None:
    model = _mlp()
    names = ["0.weight", "2.weight"]
    mask = MaskSet.from_scores(magnitude_scores(model, names), 0.6)
    if opt == "adamw":
        optimizer = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.1)
    elif opt == "adam_wd":
        optimizer = torch.optim.Adam(model.parameters(), lr=0.05, weight_decay=0.1)
    else:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=0.1)
    handle = mask.attach(model, optimizer)
    x, y = torch.randn(32, 9), torch.randint(0, 3, (32,))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    for _ in range(100):
        optimizer.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        optimizer.step()
    params = dict(model.named_parameters())
    for name in names:
        assert (params[name][~mask.masks[name]] == 0).all()
        assert not torch.equal(params[name][mask.masks[name]], before[name][mask.masks[name]])
        for state in optimizer.state[params[name]].values():
            if isinstance(state, torch.Tensor) and state.shape == params[name].shape:
                assert (state[~mask.masks[name]] == 0).all()
    handle.remove()
    optimizer.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
    assert (params["0.weight"][~mask.masks["0.weight"]] != 0).any()  # detached: weights regrow


def test_apply_checks_names_and_shapes() -> None:
    model = _mlp()
    with pytest.raises(ValueError, match="has no parameter '9.weight'"):
        MaskSet({"9.weight": torch.ones(3, 3, dtype=torch.bool)}).apply(model)
    with pytest.raises(ValueError, match=r"mask '0.weight' has shape \(3, 3\), parameter has \(17, 9\)"):
        MaskSet({"0.weight": torch.ones(3, 3, dtype=torch.bool)}).apply(model)


def test_save_load_roundtrip_and_report(tmp_path: pathlib.Path) -> None:
    mask = MaskSet.from_scores(_scores(), 0.5)
    path = mask.save(tmp_path / "m.safetensors")
    loaded = MaskSet.load(path)
    assert loaded.names == mask.names
    assert all(torch.equal(loaded.masks[n], mask.masks[n]) for n in mask.names)
    report = loaded.report()
    assert report["a"]["total"] == 481 and report["c"]["total"] == 1
    assert sum(r["active"] for r in report.values()) == mask.n_active == 344
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="not a valid safetensors file"):
        MaskSet.load(tmp_path / "bad.safetensors")


def test_erk_budget_and_dense_layers() -> None:
    shapes = {"conv1": (16, 3, 3, 3), "conv2": (64, 16, 3, 3), "conv3": (128, 64, 3, 3), "fc": (10, 128)}
    total = sum(math.prod(s) for s in shapes.values())
    for density in [0.05, 0.1, 0.3, 0.8]:
        dens = erk_densities(shapes, density)
        kept = sum(dens[n] * math.prod(s) for n, s in shapes.items())
        assert kept == pytest.approx(density * total)
        assert all(0 < d <= 1 for d in dens.values())
    dens = erk_densities(shapes, 0.3)
    assert dens["conv1"] == 1.0  # small first layer would exceed 1: fixed dense
    # ERK ratio between two sparse layers follows sum/prod of the shapes
    r = (sum(shapes["conv2"]) / math.prod(shapes["conv2"])) / (
        sum(shapes["conv3"]) / math.prod(shapes["conv3"])
    )
    assert dens["conv2"] / dens["conv3"] == pytest.approx(r)
    forced = erk_densities(shapes, 0.3, dense=["fc"])
    assert forced["fc"] == 1.0
    assert sum(forced[n] * math.prod(s) for n, s in shapes.items()) == pytest.approx(0.3 * total)
    assert uniform_densities(shapes, 0.2) == dict.fromkeys(shapes, 0.2)
    with pytest.raises(ValueError, match=r"density must be in \(0, 1\]"):
        erk_densities(shapes, 0.0)
