from __future__ import annotations

import pytest
import torch

from llm_sparsity.junk_dna import difficulty_trend, normalise, quantize_weights
from llm_sparsity.probe import RetrievalSuite, RidgeProbe, episode_accuracy
from llm_sparsity.targets import select_targets
from llm_sparsity.tasks import (
    DEFAULT_LEVELS,
    Level,
    Problem,
    RetrievalTask,
    infix_to_prefix,
    load_arithmetic,
    near_miss_variants,
    render,
)


def test_infix_prefix_render_roundtrip() -> None:
    prefix = infix_to_prefix(["(", "76.0", "-", "25.0", ")", "*", "3"])
    assert prefix == ("*", "-", "76.0", "25.0", "3")
    assert render(prefix) == "( 76.0 - 25.0 ) * 3"
    assert infix_to_prefix(["a", "+", "b", "*", "c"]) == ("+", "a", "*", "b", "c")
    with pytest.raises(ValueError, match="unbalanced"):
        infix_to_prefix(["(", "a", "+", "b"])


def test_near_miss_variants_by_hand() -> None:
    v = {render(p) for p in near_miss_variants(("-", "number0", "number1"))}
    assert v == {"number0 + number1", "number0 * number1", "number0 / number1", "number1 - number0"}
    nested = near_miss_variants(("+", "-", "a", "b", "c"))
    assert ("+", "c", "-", "a", "b") in nested  # swap at the root
    assert ("+", "-", "b", "a", "c") in nested  # swap in the subtree
    assert all(len(p) == 5 for p in nested)


def _toy_task() -> RetrievalTask:
    ops = ["+", "-", "*", "/"]
    train, dev = [], []
    for i in range(40):
        op = ops[i % 4]
        prefix = (op, "number0", "number1") if i % 3 else (op, "number1", "number0")
        (train if i < 30 else dev).append(
            Problem(f"question {i} with op {op}", prefix, "train" if i < 30 else "dev")
        )
    dev.append(Problem("two ops", ("+", "*", "number0", "number1", "number2"), "dev"))
    return RetrievalTask(train, dev)


def test_episodes_are_deterministic_and_well_formed() -> None:
    task = _toy_task()
    level = Level("distractors", 1.0, n_candidates=4, near_miss=1.0)
    a, b = task.episodes(level, seed=3), task.episodes(level, seed=3)
    assert a == b and a != task.episodes(level, seed=4)
    for e in a:
        gold = task.eval[e.question]
        assert e.candidates[e.gold] == gold.template
        assert len(set(e.candidates)) == 4
        near = {render(v) for v in near_miss_variants(gold.prefix)}
        assert all(c in near for i, c in enumerate(e.candidates) if i != e.gold)
    assert len(task.episodes(Level("complexity", 2, n_ops=2))) == 1
    with pytest.raises(ValueError, match="distinct equations"):
        task.episodes(Level("options", 64, n_candidates=64))


def test_ridge_probe_closed_form() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(50, 4, generator=g)
    w = torch.randn(4, 3, generator=g)
    probe = RidgeProbe.fit(x, x @ w, l2=1e-8)
    assert torch.allclose(probe.weight, w, atol=1e-4)
    lam = 2.0
    expected = torch.linalg.solve(x.T @ x + lam * torch.eye(4), x.T @ (x @ w))
    assert torch.allclose(RidgeProbe.fit(x, x @ w, l2=lam).weight, expected, atol=1e-5)
    assert episode_accuracy(
        [torch.tensor([1.0, 1.0, 0.0]), torch.tensor([0.0, 2.0])], [0, 1]
    ) == pytest.approx(0.75)


def test_suite_runs_on_tiny_model_and_normalises() -> None:
    from llm_sparsity.models import build_word_tokenizer, create_model

    task = _toy_task()
    tok = build_word_tokenizer([p.question for p in task.train + task.eval] + task.templates, 128)
    model = create_model("tiny_bert", vocab_size=128)
    levels = [Level("options", 2, n_candidates=2), Level("options", 4, n_candidates=4)]
    suite = RetrievalSuite(task, tok, levels, seeds=[0, 1])
    rows = suite.evaluate(model)
    assert len(rows) == 4 and all(0 <= r["accuracy"] <= 1 for r in rows)
    rows = normalise(
        [{**r, "method": "dense", "sparsity": 0.0} for r in rows]
        + [{**r, "method": "magnitude", "sparsity": 0.5, "accuracy": r["chance"]} for r in rows]
    )
    for r in rows:
        if r["method"] == "magnitude" and r["normalised"] is not None:
            assert r["normalised"] == pytest.approx(0.0) and r["drop"] == pytest.approx(1.0)


def test_difficulty_trend_orders_levels() -> None:
    rows = [
        {"method": "magnitude", "sparsity": 0.6, "axis": "train_data", "value": v, "drop": d, "seed": 0}
        for v, d in ((1.0, 0.1), (0.25, 0.2), (0.05, 0.5))
    ]
    t = difficulty_trend(rows, "magnitude", (0.5, 0.8))["train_data"]
    assert t["levels_easy_to_hard"] == [1.0, 0.25, 0.05]
    assert t["spearman_drop_vs_difficulty"] == pytest.approx(1.0)
    assert t["hardest_minus_easiest"] == pytest.approx(0.4)
    flat = [{**r, "drop": 0.0} for r in rows]  # ties: no trend, not a perfect one
    assert difficulty_trend(flat, "magnitude", (0.5, 0.8))["train_data"]["spearman_drop_vs_difficulty"] != 1.0


def test_normalise_uses_the_dense_rows_not_other_zero_sparsity_rows() -> None:
    rows = [
        {"method": "dense", "sparsity": 0.0, "seed": 0, "level": "a", "accuracy": 0.9, "chance": 0.5},
        {"method": "quant3", "sparsity": 0.0, "seed": 0, "level": "a", "accuracy": 0.7, "chance": 0.5},
    ]
    out = normalise(rows)
    assert out[1]["normalised"] == pytest.approx(0.5) and out[1]["drop"] == pytest.approx(0.5)


def test_quantize_weights_levels(tiny) -> None:
    targets = select_targets(tiny, "essential")
    quantize_weights(tiny, targets, 3)
    for p in targets.parameters(tiny).values():
        for row in p.detach():
            assert len(torch.unique(row)) <= 7  # 2^(3-1) - 1 = 3 levels per sign plus zero


def test_real_arithmetic_data(arithmetic_dir) -> None:
    problems = load_arithmetic(arithmetic_dir)
    assert {p.split for p in problems} == {"train", "dev"}
    assert sum(p.split == "dev" for p in problems) == 1000
    svamp = load_arithmetic(arithmetic_dir, "svamp")
    assert len(svamp) == 1000
    assert svamp[0].template == "number0 - number1"  # "76 dollars ... discount of 25": ( 76.0 - 25.0 )
    task = RetrievalTask.from_problems(problems, 100, 50)
    eps = task.episodes(DEFAULT_LEVELS[0])
    assert len(eps) == 50
    with pytest.raises(FileNotFoundError, match="arithmetic"):
        load_arithmetic(arithmetic_dir / "nowhere")


def _passages(n: int, split: str) -> list:
    from llm_sparsity.tasks import Passage

    topics = ["apples", "pencils", "marbles", "cookies", "stickers", "balloons", "crayons", "shells"]
    return [
        Passage(
            f"how many {topics[i % 8]} does person{i} have ?",
            f"person{i} has number0 {topics[i % 8]} story{i}",
            split,
        )
        for i in range(n)
    ]


def test_body_items_hard_distractors_and_context() -> None:
    from llm_sparsity.tasks import BodyLevel, BodyRetrievalTask

    task = BodyRetrievalTask(_passages(20, "train"), _passages(24, "dev"), max_overlap=1.01)
    items = task.items(BodyLevel("distractors", 1.0, n_candidates=3, hard=1.0), seed=0)
    assert len(items) == 24
    for i, it in enumerate(items):
        assert it.candidates[it.gold] == task.eval[i].body
        topic = task.eval[i].body.split()[3]
        assert all(topic in c for c in it.candidates)  # the lexically closest bodies share the topic word
    short = task.items(BodyLevel("context", 2, n_candidates=3, query_words=2), seed=0)
    assert all(len(it.question.split()) == 2 for it in short)
    assert task.items(BodyLevel("options", 4, n_candidates=4), seed=1) == task.items(
        BodyLevel("options", 4, n_candidates=4), seed=1
    )
    with pytest.raises(ValueError, match="has 24 passages"):
        task.items(BodyLevel("options", 64, n_candidates=64))
    # with an overlap cap, same-topic bodies (identical content words) are near-copies and
    # never serve as distractors of each other
    strict = BodyRetrievalTask(_passages(20, "train"), _passages(24, "dev"), max_overlap=0.9)
    for i, it in enumerate(strict.items(BodyLevel("options", 3, n_candidates=3), seed=0)):
        topic = strict.eval[i].body.split()[3]
        assert sum(topic in c for c in it.candidates) == 1


def test_mc_suite_on_tiny_model() -> None:
    from llm_sparsity.models import build_word_tokenizer, create_model
    from llm_sparsity.probe import MCSuite
    from llm_sparsity.tasks import BODY_LEVELS, BodyRetrievalTask

    task = BodyRetrievalTask(_passages(40, "train"), _passages(40, "dev"))
    tok = build_word_tokenizer([p.question + " " + p.body for p in task.train + task.eval], 256)
    suite = MCSuite(task, tok, BODY_LEVELS, seeds=[0, 1])
    rows = suite.evaluate(create_model("tiny_bert", vocab_size=256))
    assert len(rows) == 2 * len(BODY_LEVELS)
    assert {r["axis"] for r in rows} == {"options", "distractors", "context"}
    assert all(0.0 <= r["accuracy"] <= 1.0 and r["n_eval"] == 40 for r in rows)


def test_real_question_bodies(arithmetic_dir) -> None:
    from llm_sparsity.tasks import load_question_bodies

    passages = load_question_bodies(arithmetic_dir)
    bodies = [p.body.lower() for p in passages]
    assert len(bodies) == len(set(bodies)) > 1000
    assert {p.split for p in passages} == {"train", "dev"}
    assert len(load_question_bodies(arithmetic_dir, "svamp")) > 500


def test_no_model_floors_by_hand() -> None:
    from llm_sparsity.floors import jaccard, no_model_floors
    from llm_sparsity.models import build_word_tokenizer, create_model
    from llm_sparsity.tasks import MCItem

    assert jaccard("How many apples?", "Sam has apples and pears") == pytest.approx(1 / 7)
    items = [
        MCItem("how many apples", ("sam has apples", "a red car", "the dog ran"), 0),  # overlap picks gold
        MCItem("how many pears", ("sam has apples", "pears are green", "many pears"), 1),  # picks 2: wrong
        MCItem("what color", ("blue sky", "red car"), 0),  # no overlap anywhere: tie of 2 -> 1/2
    ]
    tok = build_word_tokenizer(
        [w for it in items for c in (it.question, *it.candidates) for w in c.split()], 64
    )
    floors = no_model_floors(items, create_model("tiny_bert", vocab_size=64), tok)
    assert floors["chance"] == pytest.approx((1 / 3 + 1 / 3 + 1 / 2) / 3)
    assert floors["word_overlap"] == pytest.approx((1 + 0 + 0.5) / 3)
    assert 0.0 <= floors["mean_input_embeddings"] <= 1.0
    assert floors["best_floor"] == max(
        floors["chance"], floors["word_overlap"], floors["mean_input_embeddings"]
    )
