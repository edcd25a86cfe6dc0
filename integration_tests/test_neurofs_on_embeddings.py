"""Pipeline 4: feature-select's NeuroFS chooses features of sentence embeddings produced by
llm-sparsity's MiniLM loader, from the dense and from a 50%-pruned encoder, on the offline SVAMP
word problems (label: the operation the problem needs)."""

from __future__ import annotations

import json
import os
import pathlib

import numpy as np
import pytest

from feature_select.evaluation import evaluate_subset
from feature_select.selector import NeuroFS
from llm_sparsity.models import embed, load_pretrained, tokenize
from llm_sparsity.pruning import prune
from llm_sparsity.targets import select_targets

K = 32


def _svamp(data_dir: pathlib.Path) -> tuple[list[str], np.ndarray]:
    path = data_dir / "arithmetic" / "SVAMP.json"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    records = json.loads(path.read_text())
    kinds = {"Subtraction": 0, "Addition": 1, "Common-Division": 2, "Common-Divison": 2, "Multiplication": 3}
    texts = [f"{r['Body'].strip()} {r['Question'].strip()}" for r in records]
    return texts, np.array([kinds[r["Type"]] for r in records])


def test_neurofs_selects_informative_embedding_dimensions(data_dir: pathlib.Path) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    texts, y = _svamp(data_dir)
    model, tokenizer = load_pretrained("minilm")
    tokens = tokenize(tokenizer, texts, batch_size=64, max_length=96)
    dense = embed(model, tokens).numpy()
    targets = select_targets(model, "essential")
    masks = prune(model, targets, 0.5, "magnitude")
    assert masks.n_total - masks.n_active == round(0.5 * targets.n_weights(model))
    pruned = embed(model, tokens).numpy()
    assert dense.shape == pruned.shape == (len(texts), 384)
    assert not np.allclose(dense, pruned)

    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    train, test = order[:700], order[700:]
    majority = float(np.mean(y[test] == np.bincount(y[train]).argmax()))
    results = {}
    for name, x in (("dense", dense), ("pruned50", pruned)):
        selector = NeuroFS(
            n_features_to_select=K, hidden=(256,), epochs=40, batch_size=50, lr=0.05, random_state=0
        ).fit(x[train], y[train])
        chosen = np.flatnonzero(selector.get_support())
        assert len(chosen) == K and selector.transform(x[test]).shape == (len(test), K)
        ours = evaluate_subset(x[train], y[train], x[test], y[test], chosen)
        randoms = [
            evaluate_subset(x[train], y[train], x[test], y[test], rng.choice(384, K, replace=False), seed=s)
            for s in range(3)
        ]
        results[name] = {
            "neurofs_svc": ours["svc"],
            "random_svc": float(np.mean([r["svc"] for r in randoms])),
            "all_svc": evaluate_subset(x[train], y[train], x[test], y[test], np.arange(384))["svc"],
        }
    print(results, "majority", majority)
    for name, r in results.items():
        assert r["neurofs_svc"] > majority + 0.05, (name, r, majority)  # the embeddings carry the operation
        assert r["neurofs_svc"] >= r["random_svc"] - 0.03, (name, r)
    # Half of the encoder's block weights removed one-shot: embeddings still hold the task signal.
    assert results["pruned50"]["all_svc"] > majority, results
