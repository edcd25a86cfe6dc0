"""Encoder multiple choice through a trained multiple-choice head (issue 16), on a tiny random BERT."""

from __future__ import annotations

import json
import random

import pytest
import torch

from llm_sparsity.evaluation import MCExample
from llm_sparsity.models import build_word_tokenizer, create_model

WORDS = ["the", "cat", "sat", "on", "mat", "dog", "ran", "red", "blue", "big", "small", "is", "a", "what"]


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    """A tiny random BertModel with a word tokenizer, saved as a Hugging Face directory."""
    root = tmp_path_factory.mktemp("enc")
    tok = build_word_tokenizer(WORDS, 64)
    tok.add_special_tokens({"cls_token": "[CLS]", "sep_token": "[SEP]"})
    model = create_model("tiny_bert", vocab_size=64)
    model.config.architectures = ["BertModel"]
    model.save_pretrained(str(root))
    tok.save_pretrained(str(root))
    return root


def _rows(n: int, seed: int) -> list[dict]:
    """The right option is always 'cat' (learnable); options shuffled, 2 or 3 of them."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        opts = ["cat", *rng.sample(["dog", "red", "blue", "mat"], 1 + i % 2)]
        rng.shuffle(opts)
        rows.append(
            {"question": " ".join(rng.sample(WORDS[:8], 3)), "choices": opts, "label": opts.index("cat")}
        )
    return rows


def _examples(rows: list[dict]) -> list[MCExample]:
    return [MCExample(r["question"], tuple(r["choices"]), r["label"]) for r in rows]


def test_scores_are_the_models_own_per_pair_logits_and_padding_is_minus_inf(encoder_dir) -> None:
    from llm_sparsity.mc_head import load_mc_model, mc_logits

    model, tok = load_mc_model(str(encoder_dir))
    items = _examples(_rows(4, 0))
    with torch.no_grad():
        logits = mc_logits(model, tok, items)
    assert logits.shape == (4, 3)
    for i, it in enumerate(items):
        assert torch.isinf(logits[i, len(it.choices) :]).all()
        for j, choice in enumerate(it.choices):  # one pair alone through the same model
            enc = tok([it.context], [choice], return_tensors="pt")
            with torch.no_grad():
                alone = model(**{k: v[:, None] for k, v in enc.items()}).logits[0, 0]
            assert float(logits[i, j]) == pytest.approx(float(alone), abs=1e-5)
    # the head is initialised from the given seed and leaves the global RNG alone
    state = torch.random.get_rng_state()
    again, _ = load_mc_model(str(encoder_dir))
    assert torch.equal(torch.random.get_rng_state(), state)
    for a, b in zip(model.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_the_head_learns_a_rule_cosine_scoring_cannot_know(encoder_dir) -> None:
    from llm_sparsity.finetune import FinetuneConfig
    from llm_sparsity.mc_head import _MCPairs, load_mc_model, mc_head_accuracy

    model, tok = load_mc_model(str(encoder_dir))
    train, test = _examples(_rows(32, 1)), _examples(_rows(16, 2))
    before = mc_head_accuracy(model, tok, test)
    trainer = _MCPairs(train, tok, FinetuneConfig(batch_size=8, lr=3e-3))
    stats = trainer.train(model, None, 40, seed=0)
    after = mc_head_accuracy(model, tok, test)
    assert stats.steps == 40 and stats.losses[-1] < stats.losses[0]
    assert after == 1.0 and after > before


def test_smc_bench_scores_an_encoder_on_csqa_through_the_trained_head(encoder_dir, tmp_path) -> None:
    from typer.testing import CliRunner

    from llm_sparsity.cli import app
    from llm_sparsity.mc_head import MCHeadBundle
    from llm_sparsity.smc_bench import Budget, load_task

    (tmp_path / "csqa").mkdir()
    for split, seed in (("train", 1), ("test", 2)):
        (tmp_path / "csqa" / f"{split}.jsonl").write_text(
            "\n".join(json.dumps(r) for r in _rows(6, seed)) + "\n"
        )
    bundle = load_task("csqa", tmp_path, None, Budget(steps=1, batch_size=2), family="base", model=str(encoder_dir),
                       n_train=6, n_eval=6)  # fmt: skip
    assert isinstance(bundle, MCHeadBundle) and len(bundle.eval_items) == 6
    args = ["smc-bench", "--model", str(encoder_dir), "--data-dir", str(tmp_path), "--out", str(tmp_path / "o"),
            "--tasks", "csqa", "--methods", "omp_before", "--sparsities", "0.5", "--steps", "2",
            "--n-train", "6", "--n-eval", "6"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "o" / "results.jsonl").read_text().splitlines()]
    assert {r["method"] for r in rows} == {"dense", "omp_before"}
    for r in rows:
        assert r["accuracy"] in {k / 6 for k in range(7)}
        if r["method"] == "omp_before":
            assert r["actual_sparsity"] >= 0.5 - 1e-6 and r["train_steps"] == 2


def test_unknown_task_for_the_head_is_refused(encoder_dir, tmp_path) -> None:
    from llm_sparsity.mc_head import build_mc_head_task

    with pytest.raises(ValueError, match="csqa, race, winogrande"):
        build_mc_head_task("svamp", tmp_path, str(encoder_dir), n_train=2, n_eval=2, batch_size=2, lr=1e-4)
