"""The trained-head reproduction task (SVAMP operation type) and its floors, on tiny models and rows."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from llm_sparsity.head_task import (
    ClassifierConfig,
    LabelledTexts,
    accuracy,
    finetune_classifier,
    load_svamp_types,
    new_head,
    no_model_floors,
    split_indices,
    subsample,
)
from llm_sparsity.models import build_word_tokenizer, create_model

KINDS = {"Addition": "more total", "Subtraction": "left fewer", "Multiplication": "each times"}


def _toy(n_per_class: int = 12) -> LabelledTexts:
    """Texts whose class is given by one keyword pair (learnable, separable by words)."""
    texts, labels = [], []
    for c, words in enumerate(KINDS.values()):
        for i in range(n_per_class):
            texts.append(f"the cat has {i} apples {words} how many")
            labels.append(c)
    return LabelledTexts("toy", texts, np.array(labels), list(KINDS))


@pytest.fixture(scope="module")
def tok():
    words = [
        "the",
        "cat",
        "has",
        "apples",
        "more",
        "total",
        "left",
        "fewer",
        "each",
        "times",
        "how",
        "many",
    ] + [str(i) for i in range(20)]
    return build_word_tokenizer(words, 64)


def test_svamp_types_are_read_and_the_misspelt_type_is_merged(tmp_path) -> None:
    (tmp_path / "arithmetic").mkdir()
    rows = [
        {"Body": "A has 3 .", "Question": "How many ?", "Type": "Addition"},
        {"Body": "B has 4 .", "Question": "Each ?", "Type": "Common-Divison"},
        {"Body": "C has 5 .", "Question": "Each ?", "Type": "Common-Division"},
    ]
    (tmp_path / "arithmetic" / "SVAMP.json").write_text(json.dumps(rows))
    data = load_svamp_types(tmp_path)
    assert data.classes == ["Addition", "Common-Division"]
    assert data.labels.tolist() == [0, 1, 1] and data.texts[0] == "A has 3 . How many ?"
    rows[1].pop("Type")
    (tmp_path / "arithmetic" / "SVAMP.json").write_text(json.dumps(rows))
    with pytest.raises(ValueError, match="record 1 has no 'Type'"):
        load_svamp_types(tmp_path)
    with pytest.raises(FileNotFoundError, match="SVAMP not found"):
        load_svamp_types(tmp_path / "nowhere")


def test_split_and_subsample_are_stratified_disjoint_and_seeded() -> None:
    labels = np.array([0] * 40 + [1] * 20)
    train, test = split_indices(labels, 0.25, seed=3)
    assert len(test) == 15 and not set(train) & set(test) and len(train) + len(test) == 60
    assert (labels[test] == 1).sum() == 5  # stratified: a third of each split is class 1
    part = subsample(train, labels, 0.2, seed=1)
    assert len(part) == 9 and set(part) <= set(train) and (labels[part] == 1).sum() == 3
    assert np.array_equal(part, subsample(train, labels, 0.2, seed=1))
    assert np.array_equal(subsample(train, labels, 1.0, seed=1), train)
    with pytest.raises(ValueError, match="fraction"):
        subsample(train, labels, 0.0, seed=1)


def test_floors_hand_computed() -> None:
    from llm_sparsity.head_task import HeadConfig, TokenFeatures

    data = _toy(6)
    train, test = np.arange(0, 18, 2), np.arange(1, 18, 2)
    states = torch.zeros(18, 4, 3)
    states[torch.arange(18), 0, torch.as_tensor(data.labels)] = 1.0  # the first token gives the class away
    emb = TokenFeatures(states.half(), torch.ones(18, 4, dtype=torch.long))
    floors = no_model_floors(data, train, test, emb, HeadConfig(epochs=60, lr=1e-2), seed=0)
    # majority of the training rows (labels 0,0,0,1,1,1,2,2,2 -> first of the ties, class 0) on the test rows
    assert floors["chance"] == pytest.approx(3 / 9)
    assert floors["word_overlap"] == 1.0 and floors["mean_input_embeddings"] == 1.0
    assert floors["best_floor"] == 1.0


def test_token_states_are_the_hidden_states_and_layer_zero_is_the_embedding_table(tok) -> None:
    from llm_sparsity.head_task import token_states

    encoder = create_model("tiny_bert", vocab_size=64)
    texts = ["the cat has 3 apples", "how many"]
    feats = token_states(encoder, tok, texts, layers=2, max_length=16)
    enc = tok(texts, padding=True, return_tensors="pt")
    with torch.no_grad():
        hs = encoder(**enc, output_hidden_states=True).hidden_states
    assert feats.states.shape == (2, enc["input_ids"].shape[1], 2 * encoder.config.hidden_size)
    assert torch.allclose(feats.states.float(), torch.cat(hs[-2:], -1).half().float())
    emb = token_states(encoder, tok, texts, layers=0)
    assert torch.equal(emb.states, encoder.get_input_embeddings().weight.detach()[enc["input_ids"]].half())
    assert torch.equal(emb.mask, enc["attention_mask"])


def test_sparse_finetuning_learns_keeps_the_mask_and_accuracy_is_the_argmax(tok) -> None:
    from llm_sparsity.pruning import prune
    from llm_sparsity.targets import select_targets

    torch.manual_seed(0)
    data = _toy(12)
    encoder = create_model("tiny_bert", vocab_size=64)
    masks = prune(encoder, select_targets(encoder, "essential"), 0.5)
    head = new_head(encoder.config.hidden_size, 3, seed=0)
    train, test = split_indices(data.labels, 0.25, seed=0)
    stats = finetune_classifier(
        encoder, head, tok, data, train, masks, ClassifierConfig(steps=40, lr=3e-3), 0
    )
    assert stats["steps"] == 40 and stats["last_loss"] < stats["first_loss"]
    for name, keep in masks.masks.items():  # pruned weights still exactly zero
        assert dict(encoder.named_parameters())[name].detach()[~keep].eq(0).all()
    acc = accuracy(encoder, head, tok, data, test)
    enc = tok([data.texts[i] for i in test], padding=True, return_tensors="pt")
    from llm_sparsity.models import mean_pool

    with torch.no_grad():
        pred = head(
            mean_pool(encoder, {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]})
        )
    assert acc == pytest.approx(float((pred.argmax(-1).numpy() == data.labels[test]).mean()))
    assert acc >= 0.8  # the keyword rule is learnt


def test_head_cells_and_verdict_rules_on_hand_made_rows() -> None:
    from llm_sparsity.head_repro import HeadReproConfig, head_cells, summarise_head_rows

    cfg = HeadReproConfig(seeds=[0], sparsities=[0.5, 0.8], random_sparsities=[0.8], fractions=[0.2, 1.0],
                          junk_sparsities=[0.5], delta=0.02)  # fmt: skip
    assert head_cells(cfg) == [("dense", 0.0, 0.2), ("dense", 0.0, 1.0), ("magnitude", 0.5, 1.0),
                               ("magnitude", 0.8, 1.0), ("random", 0.8, 1.0), ("magnitude", 0.5, 0.2)]  # fmt: skip
    floors = {"chance": 0.5, "word_overlap": 0.7, "mean_input_embeddings": 0.6, "best_floor": 0.7}
    acc = {("dense", 0.0, 0.2): 0.8, ("dense", 0.0, 1.0): 0.9, ("magnitude", 0.5, 1.0): 0.89,
           ("magnitude", 0.8, 1.0): 0.8, ("random", 0.8, 1.0): 0.6, ("magnitude", 0.5, 0.2): 0.7}  # fmt: skip
    rows = [{"method": m, "sparsity": s, "fraction": f, "seed": 0, "accuracy": a, "floors": dict(floors)}
            for (m, s, f), a in acc.items()]  # fmt: skip
    summary = summarise_head_rows(rows, cfg)
    assert summary["dense_minus_best_floor"] == pytest.approx(0.2) and summary["testable"]
    ess = summary["essential"]
    assert ess["essential_sparsity"]["magnitude"]["tolerance"] == pytest.approx(0.5)
    assert ess["magnitude_minus_random_at_0.5_up"] == pytest.approx(0.2) and ess["reproduced"]
    junk = summary["junk_dna_train_fraction"]
    # full data: 1 - (0.89-0.5)/(0.9-0.5) = 0.025; a fifth of the data: 1 - (0.7-0.5)/(0.8-0.5) = 1/3
    assert junk["mean_normalised_drop"] == pytest.approx([0.025, 1 / 3])
    # over the best floor: 1 - (0.89-0.7)/(0.9-0.7) = 0.05 and 1 - (0.7-0.7)/(0.8-0.7) = 1
    assert junk["mean_drop_over_best_floor"] == pytest.approx([0.05, 1.0])
    assert junk["spearman_drop_vs_difficulty"] == pytest.approx(1.0) and junk["reproduced"]
    # the dense model not above the floors by MIN_ENCODER_GAIN: nothing is testable
    for r in rows:
        r["floors"] = {**floors, "word_overlap": 0.89, "best_floor": 0.89}
    low = summarise_head_rows(rows, cfg)
    assert not low["testable"] and low["essential"]["reproduced"] is None
    assert low["junk_dna_train_fraction"]["reproduced"] is None


@pytest.mark.parametrize("protocol", ["probe", "finetune"])
def test_head_reproduction_runs_end_to_end_on_a_tiny_encoder(tok, tmp_path, protocol) -> None:
    from llm_sparsity.head_repro import HeadReproConfig, head_cells, run_head_reproduction
    from llm_sparsity.head_task import HeadConfig
    from llm_sparsity.targets import select_targets

    encoder = create_model("tiny_bert", vocab_size=64)
    before = {k: v.clone() for k, v in encoder.state_dict().items()}
    cfg = HeadReproConfig(seeds=[0, 1], sparsities=[0.5, 0.8], random_sparsities=[0.8], fractions=[0.5, 1.0],
                          junk_sparsities=[0.5], protocol=protocol, layers=1, head=HeadConfig(epochs=3),
                          classifier=ClassifierConfig(steps=2, batch_size=4))  # fmt: skip
    summary, pngs = run_head_reproduction(
        tmp_path, _toy(8), encoder, tok, select_targets(encoder, "essential"), cfg
    )
    rows = [json.loads(line) for line in (tmp_path / "head_rows.jsonl").read_text().splitlines()]
    assert len(rows) == 2 * len(head_cells(cfg))
    for r in rows:
        assert 0.0 <= r["accuracy"] <= 1.0 and set(r["floors"]) >= {"chance", "word_overlap", "best_floor"}
        if r["method"] != "dense":
            assert r["actual_sparsity"] == pytest.approx(r["sparsity"], abs=1e-3)
    assert all((tmp_path / p).is_file() for p in pngs) and "verdict_reason" in summary
    for k, v in encoder.state_dict().items():  # the encoder ends with its pre-trained weights
        assert torch.equal(v, before[k])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sections", "head,bogus"], "--sections entry"),
        (["--quick", "--full"], "exclude each other"),
        (["--protocol", "lora"], "--protocol"),
    ],
)
def test_reproduce_refuses_bad_options_before_loading_anything(args, message, tmp_path) -> None:
    from typer.testing import CliRunner

    from llm_sparsity.cli import app

    result = CliRunner().invoke(app, ["reproduce", "--out", str(tmp_path), *args])
    assert result.exit_code == 2 and message in result.output
    assert not list(tmp_path.iterdir())


def test_head_config_needs_a_curve_and_full_data() -> None:
    from llm_sparsity.head_repro import HeadReproConfig

    with pytest.raises(ValueError, match="at least 2 non-zero points"):
        HeadReproConfig(sparsities=[0.5])
    with pytest.raises(ValueError, match="include 1.0"):
        HeadReproConfig(fractions=[0.5])
    with pytest.raises(ValueError, match="protocol"):
        HeadReproConfig(protocol="lora")


def test_reproduce_head_section_writes_a_summary_with_floors(tok, tmp_path, monkeypatch) -> None:
    from llm_sparsity import reproduce
    from llm_sparsity.head_repro import HeadReproConfig
    from llm_sparsity.head_task import HeadConfig

    monkeypatch.setattr(
        reproduce, "load_pretrained", lambda name: (create_model("tiny_bert", vocab_size=64), tok)
    )
    monkeypatch.setattr(reproduce, "load_svamp_types", lambda data_dir: _toy(8))
    hcfg = HeadReproConfig(seeds=[0], sparsities=[0.5, 0.8], random_sparsities=[0.8], fractions=[0.5, 1.0],
                           junk_sparsities=[0.5], layers=1, head=HeadConfig(epochs=2))  # fmt: skip
    summary = reproduce.run_reproduction(tmp_path, tmp_path, quick=True, head_config=hcfg)
    saved = json.loads((tmp_path / "summary.json").read_text())
    assert saved["verdict"] == summary["verdict"] and saved["verdict"] in {
        "reproduced", "partly", "not reproduced at this scale", "not testable at this scale"}  # fmt: skip
    assert "Trained head on SVAMP" in saved["verdict_reason"] and "retrieval" not in saved["timings_s"]
    assert {"chance", "word_overlap", "mean_input_embeddings"} <= set(saved["trained_head"]["floors"])
    assert all(r["section"] == "trained_head" for r in saved["table"]) and saved["pngs"]
