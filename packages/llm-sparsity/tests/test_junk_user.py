"""Junk DNA on user data: difficulty axes, chance and dense normalisation (issue 16)."""

from __future__ import annotations

import json
import random

import pytest
from typer.testing import CliRunner

from llm_sparsity.cli import app
from llm_sparsity.evaluation import MCExample
from llm_sparsity.junk_user import UserStudy, check_levels, level_items, run_user_junk_dna
from llm_sparsity.models import build_word_tokenizer, create_model, load_model, tiny_lm
from llm_sparsity.targets import select_targets

WORDS = ["the", "cat", "sat", "on", "mat", "dog", "ran", "red", "blue", "green", "big", "small", "is", "a"]
ROWS = [
    {"question": "the cat sat on the", "choices": ["mat", "dog", "red", "blue"], "label": 0},
    {"question": "the dog ran a", "choices": ["big", "small", "green", "cat"], "label": 1},
    {"question": "the mat is", "choices": ["red", "sat", "ran", "on"], "label": 0},
    {"question": "a cat is", "choices": ["small", "on", "the", "mat"], "label": 0},
]


def _examples() -> list[MCExample]:
    return [MCExample(r["question"], tuple(r["choices"]), r["label"]) for r in ROWS]


@pytest.fixture(scope="module")
def lm_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("junk")
    tok = build_word_tokenizer(WORDS, 64)
    tok.add_special_tokens({"eos_token": "[SEP]", "bos_token": "[CLS]"})
    tiny_lm("gpt2", vocab_size=64).save_pretrained(str(root / "lm"))
    tok.save_pretrained(str(root / "lm"))
    for split in ("train", "test"):
        (root / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS) + "\n")
    return root


def test_options_axis_keeps_the_answer_and_k_shot_prepends_solved_rows() -> None:
    study = UserStudy(_examples(), _examples(), "options", [2, 3], causal=True)
    for n in (2, 3):
        for ex, orig in zip(level_items(study, n, seed=1), _examples(), strict=True):
            assert len(ex.choices) == n and ex.choices[ex.label] == orig.choices[orig.label]
            assert set(ex.choices) <= set(orig.choices)
    shots = UserStudy(_examples(), _examples()[:1], "k_shot", [2], causal=True)
    (item,) = level_items(shots, 2, seed=0)
    chosen = random.Random(0).sample(_examples(), 2)
    assert (
        item.context == "".join(f"{s.context} {s.choices[s.label]}\n\n" for s in chosen) + ROWS[0]["question"]
    )


@pytest.mark.parametrize(
    ("axis", "levels", "causal", "steps", "message"),
    [
        ("k_shot", [5], True, 0, "k_shot level 5 is larger than the training pool of 4 rows"),
        ("k_shot", [1], False, 0, "needs a causal language model"),
        ("options", [5], True, 0, r"options level 5 must be an integer in \[2, 4\]"),
        ("train_fraction", [0.5], True, 0, "--finetune-steps >= 1"),
        ("train_fraction", [1.5], True, 2, r"must be in \(0, 1\]"),
        ("depth", [1], True, 0, "axis must be one of"),
        ("context", [0.0], True, 0, r"context level 0.0 must be in \(0, 1\]"),
    ],
)
def test_bad_levels_are_refused(axis, levels, causal, steps, message) -> None:
    with pytest.raises(ValueError, match=message):
        check_levels(UserStudy(_examples(), _examples(), axis, levels, causal, steps))


@pytest.mark.parametrize(("axis", "levels", "steps"), [("options", [2, 4], 0), ("k_shot", [0, 2], 0),
                                                       ("train_fraction", [0.5, 1.0], 2)])  # fmt: skip
def test_study_on_a_tiny_causal_lm_normalises_to_chance_and_dense(lm_dir, axis, levels, steps) -> None:
    model, tok = load_model(str(lm_dir / "lm"), device="cpu", dtype="fp32")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    study = UserStudy(_examples(), _examples(), axis, levels, True, steps, batch_size=2)
    rows = run_user_junk_dna(
        model, tok, select_targets(model, "essential"), study, [0.5, 0.9], "magnitude", [0, 1]
    )
    assert len(rows) == 2 * 3 * len(levels)  # seeds x (dense, 0.5, 0.9) x levels
    assert all(v.equal(model.state_dict()[k]) for k, v in before.items())  # weights restored
    dense = {(r["seed"], r["level"]): r["accuracy"] for r in rows if r["method"] == "dense"}
    for r in rows:
        if axis == "options":
            assert r["chance"] == pytest.approx(1 / r["value"])
        ref = dense[(r["seed"], r["level"])]
        if ref - r["chance"] > 1e-9:
            assert r["normalised"] == pytest.approx((r["accuracy"] - r["chance"]) / (ref - r["chance"]))
            assert r["drop"] == pytest.approx(1 - r["normalised"])
        else:
            assert r["drop"] is None
        if r["method"] != "dense":
            assert r["actual_sparsity"] == pytest.approx(r["sparsity"], abs=1e-3)


def test_study_on_a_tiny_encoder_uses_cosine_scores() -> None:
    tok = build_word_tokenizer(WORDS, 64)
    model = create_model("tiny_bert", vocab_size=64)
    study = UserStudy(_examples(), _examples(), "options", [2, 4], False, 1, batch_size=2)
    rows = run_user_junk_dna(model, tok, select_targets(model, "essential"), study, [0.5], "random", [0])
    assert {r["level"] for r in rows} == {"options=2", "options=4"} and len(rows) == 4
    assert all(0.0 <= r["accuracy"] <= 1.0 for r in rows)


def test_cli_junk_dna_on_user_data(lm_dir, tmp_path) -> None:
    base = ["junk-dna", "--model", str(lm_dir / "lm"), "--mc", str(lm_dir / "test.jsonl"), "--train",
            str(lm_dir / "train.jsonl"), "--sparsities", "0.5", "--methods", "magnitude", "--out", str(tmp_path)]  # fmt: skip
    bad = CliRunner().invoke(app, [*base, "--axis", "k_shot", "--levels", "0,9"])
    assert bad.exit_code == 2 and "k_shot level 9 is larger than the training pool of 4 rows" in bad.output
    bad = CliRunner().invoke(app, [*base, "--axis", "width", "--levels", "1"])
    assert bad.exit_code == 2 and "--axis" in bad.output
    ok = CliRunner().invoke(app, [*base, "--axis", "options", "--levels", "2,3,4"])
    assert ok.exit_code == 0, ok.output
    result = json.loads((tmp_path / "junk_dna.json").read_text())
    assert len(result["rows"]) == 6 and result["trend_method"] == "magnitude"
    measured = sorted(
        {r["value"] for r in result["rows"] if r["method"] != "dense" and r["drop"] is not None}
    )
    # a level whose dense accuracy is at chance has no normalised drop (random tiny weights)
    assert result["trend"].get("options", {}).get("levels_easy_to_hard", []) == measured
    assert "options=2 s=0.5 seed 0: accuracy" in ok.output


def test_context_axis_keeps_the_last_words() -> None:
    study = UserStudy([], _examples()[:1], "context", [0.4], causal=False)
    (item,) = level_items(study, 0.4, seed=0)
    assert item.context == "on the" and item.choices == tuple(ROWS[0]["choices"])  # 2 of 5 words


def test_mode_and_quantization_control_are_checked() -> None:
    with pytest.raises(ValueError, match="transfer mode must be one of sparse, sparse_to_dense, frozen"):
        check_levels(UserStudy(_examples(), _examples(), "options", [2], True, mode="dense"))
    with pytest.raises(ValueError, match="quantization control is zero-shot"):
        check_levels(UserStudy(_examples(), _examples(), "options", [2], True, 1, quant_bits=(4,)))


@pytest.mark.parametrize("mode", ["frozen", "sparse_to_dense"])
def test_transfer_modes_and_quantization_rows(lm_dir, mode) -> None:
    from llm_sparsity.junk_dna import quantize_weights

    model, tok = load_model(str(lm_dir / "lm"), device="cpu", dtype="fp32")
    targets = select_targets(model, "essential")
    ft = UserStudy(_examples(), _examples(), "options", [2, 4], True, 1, batch_size=2, lr=1e-2, mode=mode)
    rows = run_user_junk_dna(model, tok, targets, ft, [0.5], "magnitude", [0])
    assert {r["mode"] for r in rows} == {mode} and len(rows) == 4
    zs = UserStudy(_examples(), _examples(), "options", [2, 4], True, quant_bits=(8, 3))
    rows = run_user_junk_dna(model, tok, targets, zs, [0.5], "magnitude", [0])
    assert [r["method"] for r in rows] == ["dense"] * 2 + ["magnitude"] * 2 + ["quant8"] * 2 + ["quant3"] * 2
    # the quant3 row is the score of the 3-bit model, level by level
    quantize_weights(model, targets, 3)
    from llm_sparsity.evaluation import mc_accuracy

    for r in rows[-2:]:
        items = level_items(zs, r["value"], 0)
        assert r["accuracy"] == pytest.approx(mc_accuracy(model, tok, items)["acc"])


def test_trend_orders_the_new_axes_from_easy_to_hard() -> None:
    from llm_sparsity.junk_dna import difficulty_trend

    rows = [
        {"axis": axis, "value": v, "method": "magnitude", "sparsity": 0.5, "drop": d}
        for axis, pairs in {
            "k_shot": [(0, 0.3), (4, 0.1)],
            "train_fraction": [(0.25, 0.5), (1.0, 0.2)],
            "context": [(0.5, 0.4), (1.0, 0.1)],
        }.items()
        for v, d in pairs
    ]
    trend = difficulty_trend(rows, "magnitude", (0.5, 0.5))
    assert trend["k_shot"]["levels_easy_to_hard"] == [4, 0] and trend["k_shot"]["mean_drop"] == [0.1, 0.3]
    assert trend["train_fraction"]["levels_easy_to_hard"] == [1.0, 0.25]
    assert trend["context"]["levels_easy_to_hard"] == [1.0, 0.5]
