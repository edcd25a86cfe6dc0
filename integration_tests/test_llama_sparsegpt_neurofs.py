"""Pipeline 2 (issue 25): a tiny Llama-style causal LM (random init from a transformers config,
briefly trained on SVAMP word problems) pruned by llm-sparsity's SparseGPT at 2:4, saved, reloaded
with ``AutoModelForCausalLM.from_pretrained`` and evaluated by perplexity; then its hidden states
are the features from which feature-select's NeuroFS picks K, with a complete ranking.

Checked: the exact 2:4 pattern in every targeted weight, perplexity equal to a hand-written
token-NLL computation, bit-equal perplexity and logits after the reload, and NeuroFS's ranking
invariants (``ranking_`` is a permutation, the support is its top K, ``transform(k=K')`` without
refitting equals slicing the top K' columns)."""

from __future__ import annotations

import json
import math
import pathlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import AutoModelForCausalLM, LlamaConfig

from feature_select.evaluation import evaluate_subset
from feature_select.selector import NeuroFS
from llm_sparsity.calibration import sample_windows
from llm_sparsity.evaluation import perplexity
from llm_sparsity.llm import PruneSpec, prune_llm
from llm_sparsity.models import build_word_tokenizer, embed, tokenize
from llm_sparsity.saving import load_pruned, save_pruned
from llm_sparsity.targets import select_targets

HIDDEN, SEQ, K = 64, 32, 16
OPERATIONS = {"Subtraction": 0, "Addition": 1, "Common-Division": 2, "Common-Divison": 2, "Multiplication": 3}


def _svamp(data_dir: pathlib.Path) -> tuple[list[str], np.ndarray]:
    path = data_dir / "arithmetic" / "SVAMP.json"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    records = json.loads(path.read_text())
    texts = [f"{r['Body'].strip()} {r['Question'].strip()}" for r in records]
    return texts, np.array([OPERATIONS[r["Type"]] for r in records])


def _tiny_llama(vocab_size: int) -> torch.nn.Module:
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=HIDDEN, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=SEQ, tie_word_embeddings=False,
    )  # fmt: skip
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(config)


def _train_briefly(model: torch.nn.Module, windows: torch.Tensor, steps: int = 60) -> None:
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        batch = windows[torch.randint(0, len(windows), (16,), generator=gen)]
        loss = model(input_ids=batch, labels=batch).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval()


def _nll_by_hand(model: torch.nn.Module, ids: torch.Tensor) -> float:
    """Mean next-token NLL over non-overlapping windows of SEQ tokens (perplexity's definition)."""
    n = ids.numel() // SEQ
    windows = ids[: n * SEQ].reshape(n, SEQ)
    with torch.no_grad():
        logits = model(input_ids=windows).logits[:, :-1]
    return float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), windows[:, 1:].reshape(-1)))


def test_sparsegpt_2_4_llama_saved_reloaded_then_neurofs_on_its_hidden_states(
    data_dir: pathlib.Path, tmp_path: pathlib.Path
) -> None:
    texts, y = _svamp(data_dir)
    train_texts, eval_text = texts[:800], "\n\n".join(texts[800:])
    tokenizer = build_word_tokenizer(train_texts, vocab_size=512)
    stream = torch.tensor(tokenizer("\n\n".join(train_texts))["input_ids"])
    model = _tiny_llama(len(tokenizer))
    ppl_init = perplexity(model, tokenizer, eval_text, seq_len=SEQ)["perplexity"]
    _train_briefly(model, sample_windows(stream, 256, SEQ, seed=1))
    dense = perplexity(model, tokenizer, eval_text, seq_len=SEQ)
    assert dense["perplexity"] < 0.5 * ppl_init, (dense, ppl_init)  # it learned something

    targets = select_targets(model, "essential")
    assert len(targets.names) == 2 * 7  # q, k, v, o, gate, up, down per block
    calibration = sample_windows(stream, 16, SEQ, seed=2)
    masks = prune_llm(model, targets, PruneSpec("sparsegpt", nm="2:4"), calibration=calibration)
    params = dict(model.named_parameters())
    for name in targets.names:
        mask, weight = masks.masks[name], params[name].detach()
        groups = mask.reshape(mask.shape[0], -1, 4)
        assert bool((groups.sum(-1) == 2).all()), name  # exactly 2 of every 4 kept
        assert bool((weight[~mask] == 0).all()), name
        assert int((weight.reshape(groups.shape) != 0).sum(-1).max()) <= 2, name
    assert masks.sparsity() == 0.5

    pruned = perplexity(model, tokenizer, eval_text, seq_len=SEQ)
    ids = torch.tensor(tokenizer(eval_text)["input_ids"])
    assert math.isclose(pruned["nll"], _nll_by_hand(model, ids), rel_tol=1e-5)
    assert math.isfinite(pruned["perplexity"]) and pruned["perplexity"] < ppl_init
    print({"ppl_init": ppl_init, "ppl_dense": dense["perplexity"], "ppl_2_4": pruned["perplexity"]})

    directory = save_pruned(model, masks, tmp_path / "llama-2-4", tokenizer)
    reloaded = AutoModelForCausalLM.from_pretrained(directory).eval()
    assert perplexity(reloaded, tokenizer, eval_text, seq_len=SEQ)["perplexity"] == pruned["perplexity"]
    probe = ids[:SEQ][None]
    with torch.no_grad():
        assert torch.equal(reloaded(input_ids=probe).logits, model(input_ids=probe).logits)
    _, reloaded_masks, meta = load_pruned(directory)  # the package's own loader checks the zeros
    assert sorted(reloaded_masks.names) == sorted(masks.names) and meta["sparsity"] == 0.5

    # Hidden states of the reloaded pruned model as features for NeuroFS.
    features = embed(
        reloaded.get_decoder(), tokenize(tokenizer, texts, max_length=96), normalize=False
    ).numpy()
    assert features.shape == (len(texts), HIDDEN) and np.isfinite(features).all()
    train, test = np.arange(700), np.arange(700, len(texts))
    selector = NeuroFS(
        n_features_to_select=K, hidden=(128,), epochs=20, batch_size=50, lr=0.05, random_state=0
    ).fit(features[train], y[train])
    ranking = selector.ranking_
    assert sorted(ranking.tolist()) == list(range(HIDDEN))  # every feature ranked once
    assert set(selector.get_support(indices=True)) == set(ranking[:K])
    assert np.all(np.diff(selector.feature_importances_[ranking]) <= 0)  # importances follow the ranking
    model_before = selector.model_
    for k in (K // 2, 4):
        top = np.sort(ranking[:k])
        np.testing.assert_array_equal(selector.transform(features[test], k=k), features[test][:, top])
        assert set(selector.get_support(indices=True, k=k)) <= set(ranking[:K])  # top k' of the fitted K
    assert selector.model_ is model_before and selector.transform(features[test]).shape == (len(test), K)
    majority = float(np.mean(y[test] == np.bincount(y[train]).argmax()))
    chosen = evaluate_subset(features[train], y[train], features[test], y[test], ranking[:K])["svc"]
    print({"neurofs_svc": chosen, "majority": majority})
    assert chosen > majority, (chosen, majority)  # the pruned LM's states carry the operation
