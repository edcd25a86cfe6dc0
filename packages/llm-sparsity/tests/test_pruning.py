from __future__ import annotations

import pytest
import torch

from llm_sparsity.pruning import (
    cubic_sparsity,
    gradual_magnitude_pruning,
    iterative_magnitude_pruning,
    make_masks,
    parse_nm,
    prune,
)
from llm_sparsity.scores import compute_scores, input_feature_norms
from llm_sparsity.targets import select_targets


def test_essential_preset_is_six_linear_weights_per_block(tiny) -> None:
    targets = select_targets(tiny, "essential")
    assert len(targets) == 6 * 2
    assert all(n.endswith(".weight") and "encoder.layer" in n for n in targets.names)
    junk = select_targets(tiny, "junk_dna")
    assert set(targets.names) < set(junk.names)
    assert "pooler.dense.weight" in junk.names
    assert not any("embeddings" in n or "LayerNorm" in n or n.endswith("bias") for n in junk.names)
    with_emb = select_targets(tiny, "junk_dna", include_embeddings=True)
    assert "embeddings.word_embeddings.weight" in with_emb.names


def test_unknown_architecture_and_bad_pattern_name_what_exists() -> None:
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    with pytest.raises(ValueError, match=r"matched no parameter.*0\.weight"):
        select_targets(model, "essential")
    assert select_targets(model, None, patterns=[r"weight$"]).names == ("0.weight", "1.weight")
    with pytest.raises(ValueError, match="'nope'"):
        select_targets(model, None, patterns=["nope"])
    with pytest.raises(ValueError, match="unknown target preset"):
        select_targets(model, "bogus")


def test_gpt2_conv1d_targets_are_marked_transposed() -> None:
    from transformers import GPT2Config, GPT2Model

    model = GPT2Model(GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=50, n_positions=16))
    targets = select_targets(model, "essential")
    assert len(targets) == 4 and targets.transposed == frozenset(targets.names)
    scores = compute_scores("magnitude", model, targets)
    masks = make_masks(scores, 0.5, "row", transposed=targets.transposed)
    w = "h.0.mlp.c_fc.weight"  # stored (in=16, out=64): rows of the Linear are columns here
    assert masks.masks[w].shape == (16, 64)
    assert torch.all(masks.masks[w].sum(0) == 8)


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.77, 0.9])
def test_exact_sparsity_per_allocation(tiny, sparsity: float) -> None:
    targets = select_targets(tiny, "essential")
    total = targets.n_weights(tiny)
    scores = compute_scores("magnitude", tiny, targets)
    glob = make_masks(scores, sparsity, "global")
    assert glob.n_total - glob.n_active == round(sparsity * total)
    layer = make_masks(scores, sparsity, "layer")
    for name, m in layer.masks.items():
        assert m.numel() - int(m.sum()) == round(sparsity * m.numel()), name
    row = make_masks(scores, sparsity, "row")
    for m in row.masks.values():
        assert torch.all((~m).sum(1) == round(sparsity * m.shape[1]))


def test_global_magnitude_prunes_the_smallest(tiny) -> None:
    targets = select_targets(tiny, "essential")
    values = torch.cat([p.detach().abs().flatten() for p in targets.parameters(tiny).values()])
    masks = prune(tiny, targets, 0.4)
    kept = torch.cat([m.flatten() for m in masks.masks.values()])
    assert values[~kept].max() <= values[kept].min()
    for name, p in targets.parameters(tiny).items():
        assert torch.all(p[~masks.masks[name]] == 0)


def test_nm_structure_and_errors(tiny) -> None:
    targets = select_targets(tiny, "essential")
    scores = compute_scores("magnitude", tiny, targets)
    for nm in ("2:4", (4, 8)):
        n, m = parse_nm(nm)
        masks = make_masks(scores, None, "nm", nm=nm)
        for name, mask in masks.masks.items():
            groups = mask.reshape(mask.shape[0], -1, m)
            assert torch.all(groups.sum(-1) == n), name
            # the kept ones are the largest of their group
            s = scores[name].reshape(mask.shape[0], -1, m)
            assert torch.all(
                torch.where(groups, s, torch.inf).amin(-1) >= torch.where(groups, -torch.inf, s).amax(-1)
            )
    with pytest.raises(ValueError, match="0 < N < M"):
        parse_nm("4:4")
    with pytest.raises(ValueError, match="look like"):
        parse_nm("two:four")
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\), got 1.5"):
        make_masks(scores, 1.5, "global")


def test_wanda_against_hand_computed_layer() -> None:
    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.emb = torch.nn.Embedding(5, 3)
            self.fc = torch.nn.Linear(3, 2, bias=False)

        def forward(self, input_ids, attention_mask=None):
            return self.fc(self.emb(input_ids))

    model = Tiny()
    with torch.no_grad():
        model.emb.weight.copy_(torch.tensor([[0.0, 0, 0], [1, 2, 0], [3, 0, 1], [0, 1, 1], [2, 2, 2]]))
        model.fc.weight.copy_(torch.tensor([[0.3, -2.0, 0.5], [-0.1, 0.2, 4.0]]))
    targets = select_targets(model, None, patterns=[r"fc\.weight"])
    batch = {"input_ids": torch.tensor([[1, 2, 0]]), "attention_mask": torch.tensor([[1, 1, 0]])}
    # tokens 1 and 2 count (the padded 0 does not): feature norms sqrt(1+9), sqrt(4+0), sqrt(0+1)
    norms = input_feature_norms(model, targets, [batch])["fc.weight"]
    assert torch.allclose(norms, torch.tensor([10.0**0.5, 2.0, 1.0]))
    scores = compute_scores("wanda", model, targets, calibration=[batch])["fc.weight"]
    expected = torch.tensor([[0.3 * 10**0.5, 2 * 2.0, 0.5 * 1], [0.1 * 10**0.5, 0.2 * 2, 4.0]])
    assert torch.allclose(scores, expected)
    masks = make_masks({"fc.weight": scores}, 1 / 3, "row")
    # per row the lowest |w| * ||x||: row 0 drops 0.5 (magnitude alone would drop 0.3), row 1 drops -0.1
    assert masks.masks["fc.weight"].tolist() == [[True, True, False], [False, True, True]]
    with pytest.raises(ValueError, match=r"2-D \(batch, seq_len\)"):
        compute_scores("wanda", model, targets, calibration=[{"input_ids": torch.tensor([1, 2])}])


def test_snip_is_abs_weight_times_gradient() -> None:
    model = torch.nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -2.0, 3.0]]))
    targets = select_targets(model, None, patterns=["weight"])
    x = torch.tensor([[1.0, 1.0, 2.0]])

    def loss_fn(m, batch):
        return m(x).sum() * batch["input_ids"].shape[0]

    s = compute_scores(
        "snip",
        model,
        targets,
        calibration=[{"input_ids": torch.zeros(1, 2, dtype=torch.long)}],
        loss_fn=loss_fn,
    )
    assert torch.allclose(s["weight"], torch.tensor([[1.0, 2.0, 6.0]]))


def test_cubic_schedule() -> None:
    assert cubic_sparsity(0, final=0.8, start=0, end=100) == 0.0
    assert cubic_sparsity(100, final=0.8, start=0, end=100) == pytest.approx(0.8)
    assert cubic_sparsity(50, final=0.8, start=0, end=100) == pytest.approx(0.8 * (1 - 0.5**3))
    assert cubic_sparsity(500, final=0.8, start=0, end=100) == pytest.approx(0.8)


def _sgd_train(model, masks, steps):
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    handle = masks.attach(model, opt)
    ids = torch.randint(0, 100, (2, 6))
    for _ in range(steps):
        opt.zero_grad()
        model(input_ids=ids).last_hidden_state.pow(2).mean().backward()
        opt.step()
    handle.remove()


def test_gmp_and_imp_reach_target_and_imp_rewinds(tiny) -> None:
    targets = select_targets(tiny, "essential")
    pre = {k: v.clone() for k, v in tiny.state_dict().items()}
    masks, hist = gradual_magnitude_pruning(tiny, targets, 0.6, _sgd_train, total_steps=20, prune_every=5)
    assert masks.sparsity() == pytest.approx(0.6, abs=1e-4)
    assert [h["sparsity"] for h in hist] == sorted(h["sparsity"] for h in hist)
    tiny.load_state_dict(pre)
    masks, hist = iterative_magnitude_pruning(tiny, targets, 0.75, _sgd_train, rounds=3, steps_per_round=2)
    assert masks.sparsity() == pytest.approx(0.75, abs=1e-4)
    assert len(hist) == 3 and hist[0]["sparsity"] == pytest.approx(1 - 0.25 ** (1 / 3), abs=1e-4)
    for name, p in targets.parameters(tiny).items():  # survivors rewound to the pre-trained values
        keep = masks.masks[name]
        assert torch.equal(p.detach()[keep], pre[name][keep])
        assert torch.all(p.detach()[~keep] == 0)


@pytest.mark.parametrize("sparsity", [0.1, 0.5, 0.93])
def test_streaming_in_place_pruning_matches_maskset(tiny, sparsity: float) -> None:
    from llm_sparsity.streaming import magnitude_threshold, prune_magnitude_in_place

    targets = select_targets(tiny, "essential")
    with torch.no_grad():  # ties across and inside tensors
        first = targets.parameters(tiny)[targets.names[0]]
        first[:4] = 0.01
        targets.parameters(tiny)[targets.names[3]][:2] = -0.01
    expected = make_masks(compute_scores("magnitude", tiny, targets), sparsity, "global")
    info = prune_magnitude_in_place(tiny, targets, sparsity)
    assert info["pruned"] == round(sparsity * targets.n_weights(tiny))
    for name, p in targets.parameters(tiny).items():
        assert torch.equal(p.ne(0), expected.masks[name]), name
    values = torch.cat([torch.arange(10.0), torch.tensor([3.0, 3.0])])
    for k in range(1, 13):
        assert (
            magnitude_threshold([values[:5], values[5:]], k, bins=4, chunk=3) == values.sort().values[k - 1]
        )
