"""SMC-style task scores on tiny random models of the right family (issue 16)."""

from __future__ import annotations

import json

import pytest
import torch

from llm_sparsity import task_scores
from llm_sparsity.models import build_word_tokenizer

AMINO = list("ACDEFGHIKLMNPQRSTVWY")


@pytest.fixture(scope="module")
def tok():
    t = build_word_tokenizer([*AMINO, "the", "cat", "sat", "le", "chat", "what", "is", "2", "3", "5"], 64)
    t.add_special_tokens({"eos_token": "[SEP]", "bos_token": "[CLS]"})
    return t


def test_first_number_and_exact_match_rule(tok, monkeypatch) -> None:
    assert task_scores.first_number("the answer is 1,250.5 apples, not 3") == 1250.5
    assert task_scores.first_number("-4 degrees") == -4.0 and task_scores.first_number("none") is None
    monkeypatch.setattr(task_scores, "_generate", lambda m, t, qs, n: ["it is 5", "7.00001 left", "no idea"])
    assert task_scores.arithmetic_exact_match(None, tok, ["a", "b", "c"], [5.0, 7.0, 1.0]) == pytest.approx(
        2 / 3
    )


def test_generation_runs_on_a_tiny_causal_lm(tok) -> None:
    from llm_sparsity.models import tiny_lm

    model = tiny_lm("gpt2", vocab_size=64)
    score = task_scores.arithmetic_exact_match(
        model, tok, ["what is 2 3", "what is 5"], [5.0, 5.0], max_new_tokens=3
    )
    assert 0.0 <= score <= 1.0


def test_spearman_of_a_tiny_protein_regressor_matches_scipy(tok) -> None:
    from scipy.stats import spearmanr
    from transformers import EsmConfig, EsmForSequenceClassification

    torch.manual_seed(0)
    cfg = EsmConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=64,
        num_labels=1,
        pad_token_id=0,
        position_embedding_type="absolute",
    )
    model = EsmForSequenceClassification(cfg).eval()
    g = torch.Generator().manual_seed(0)
    seqs = [" ".join(AMINO[int(i)] for i in torch.randint(0, 20, (12,), generator=g)) for _ in range(10)]
    targets = [float(i) for i in range(10)]
    rho = task_scores.spearman_regression(model, tok, seqs, targets, batch_size=4)
    with torch.no_grad():
        enc = tok(seqs, padding=True, return_tensors="pt")
        preds = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits[:, 0]
    assert rho == pytest.approx(spearmanr(preds.numpy(), targets).statistic, abs=1e-6)


def test_bleu_of_a_tiny_seq2seq_model(tok, monkeypatch) -> None:
    from transformers import T5Config, T5ForConditionalGeneration

    torch.manual_seed(0)
    cfg = T5Config(
        vocab_size=64,
        d_model=32,
        d_ff=64,
        num_layers=1,
        num_heads=4,
        d_kv=8,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=3,
    )
    model = T5ForConditionalGeneration(cfg).eval()
    refs = ["le chat est sur le tapis", "le chat a mangé le poisson"]
    score = task_scores.translation_bleu(model, tok, ["the cat", "the cat sat"], refs, max_new_tokens=4)
    assert 0.0 <= score <= 100.0
    monkeypatch.setattr(task_scores, "_generate", lambda m, t, s, n: list(refs))
    assert task_scores.translation_bleu(model, tok, ["x", "y"], refs) == pytest.approx(100.0)
    from llm_sparsity.models import tiny_lm

    with pytest.raises(ValueError, match="seq2seq"):
        task_scores.translation_bleu(tiny_lm("gpt2", vocab_size=64), tok, ["x"], ["y"])


def test_task_files_name_missing_and_non_numeric_columns(tmp_path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_text("\n".join(json.dumps({"Question": "q", "answer": a}) for a in ("3", "four")))
    with pytest.raises(ValueError, match=r"column 'input' is missing.*columns present: Question, answer"):
        task_scores.read_pairs(path, "input", "answer", numeric=True)
    with pytest.raises(ValueError, match=r"row 2: answer column 'answer' is not numeric"):
        task_scores.read_pairs(path, "Question", "answer", numeric=True)
    empty = tmp_path / "e.csv"
    empty.write_text("")
    with pytest.raises(ValueError, match="is empty"):
        task_scores.read_pairs(empty, "input", "target", numeric=False)


def _write_smc_task(root, name, tok) -> None:
    import csv

    from transformers import EsmConfig, EsmForSequenceClassification, T5Config, T5ForConditionalGeneration

    folder = root / name
    torch.manual_seed(0)
    if name == "protein":
        cfg = EsmConfig(
            vocab_size=64,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            max_position_embeddings=64,
            num_labels=1,
            pad_token_id=0,
            position_embedding_type="absolute",
            architectures=["EsmForSequenceClassification"],
        )
        model = EsmForSequenceClassification(cfg)
        g = torch.Generator().manual_seed(1)
        rows = [
            (" ".join(AMINO[int(i)] for i in torch.randint(0, 20, (10,), generator=g)), float(k))
            for k in range(8)
        ]
        header = ("sequence", "target")
    else:
        cfg = T5Config(
            vocab_size=64,
            d_model=32,
            d_ff=64,
            num_layers=1,
            num_heads=4,
            d_kv=8,
            decoder_start_token_id=0,
            pad_token_id=0,
            eos_token_id=3,
            architectures=["T5ForConditionalGeneration"],
        )
        model = T5ForConditionalGeneration(cfg)
        rows = [("the cat sat", "le chat est sur le tapis"), ("the cat", "le chat a mangé le poisson")] * 3
        header = ("source", "target")
    model.save_pretrained(str(folder / "model"))
    tok.save_pretrained(str(folder / "model"))
    for split in ("train", "test"):
        with (folder / f"{split}.csv").open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            writer.writerows(rows)


def test_smc_protein_and_translation_run_end_to_end_on_their_own_models(tok, tmp_path) -> None:
    import math

    from llm_sparsity.models import create_model
    from llm_sparsity.smc_bench import Budget, TaskUnavailable, load_task, run_benchmark
    from llm_sparsity.targets import select_targets

    budget = Budget(steps=1, batch_size=2)
    with pytest.raises(TaskUnavailable, match="protein/model"):
        load_task("protein", tmp_path, tok, budget)
    for name in ("protein", "translation"):
        _write_smc_task(tmp_path, name, tok)
    bundles = {
        name: load_task(name, tmp_path, tok, budget, n_train=6, n_eval=6)
        for name in ("protein", "translation")
    }
    main = create_model("tiny_bert", vocab_size=64)
    rows = run_benchmark(main, select_targets(main, "essential"), bundles, ["dense", "omp_before", "random"], [0.5],
                         [0], tmp_path / "results.jsonl", budget)  # fmt: skip
    assert {(r["task"], r["method"]) for r in rows} == {
        (t, m) for t in bundles for m in ("dense", "omp_before", "random")
    }
    for r in rows:
        assert math.isfinite(r["accuracy"])
        if r["method"] != "dense":
            assert r["actual_sparsity"] >= 0.5 - 1e-6
    assert all(-1.0 <= r["accuracy"] <= 1.0 for r in rows if r["task"] == "protein")
    assert all(0.0 <= r["accuracy"] <= 100.0 for r in rows if r["task"] == "translation")


def _write_causal_smc_data(root, tok) -> None:
    """csqa rows (JSONL, question/choices/label) and arithmetic rows (CSV, question/answer)."""
    import csv

    from llm_sparsity.models import tiny_lm

    (root / "csqa").mkdir(parents=True)
    rows = [
        {"question": "the cat sat", "choices": ["le", "chat", "what"], "label": 1},
        {"question": "what is 2", "choices": "2|3|5", "label": "5"},
        {"question": "the cat", "choices": ["sat", "is"], "label": 0},
    ]
    for split in ("train", "test"):
        (root / "csqa" / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    (root / "arithmetic-gen").mkdir()
    for split in ("train", "test"):
        with (root / "arithmetic-gen" / f"{split}.csv").open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(("question", "answer"))
            writer.writerows([("what is 2 3", "5"), ("what is 3 2", "5"), ("what is 5", "5")])
    tiny_lm("gpt2", vocab_size=64).save_pretrained(str(root / "lm"))
    tok.save_pretrained(str(root / "lm"))


def test_answer_lm_loss_equals_hand_computed_loglikelihood(tok) -> None:
    from llm_sparsity.evaluation import _continuation_pair, choice_loglikelihoods
    from llm_sparsity.models import tiny_lm
    from llm_sparsity.smc_causal import answer_lm_loss

    model = tiny_lm("gpt2", vocab_size=64).eval()
    items = [("the cat sat", " le chat"), ("what is 2 3", " 5")]
    n_tokens = [len(_continuation_pair(tok, p, a)[1]) for p, a in items]
    lls = [choice_loglikelihoods(model, tok, p, [a.strip()])[0] for p, a in items]
    with torch.no_grad():
        loss = float(answer_lm_loss(model, tok, items))
    assert loss == pytest.approx(-sum(lls) / sum(n_tokens), rel=1e-5)


def test_smc_causal_tasks_run_end_to_end_on_a_tiny_causal_lm(tok, tmp_path) -> None:
    from llm_sparsity.evaluation import mc_accuracy, read_mc_file
    from llm_sparsity.models import load_model
    from llm_sparsity.smc_bench import Budget, TaskUnavailable, load_task, run_benchmark
    from llm_sparsity.targets import select_targets

    _write_causal_smc_data(tmp_path, tok)
    model, ltok = load_model(str(tmp_path / "lm"), device="cpu", dtype="fp32")
    budget = Budget(steps=2, batch_size=2)
    bundles = {
        t: load_task(t, tmp_path, ltok, budget, family="causal-lm", n_train=3, n_eval=3)
        for t in ("csqa", "arithmetic")
    }
    with pytest.raises(TaskUnavailable, match="encoder retrieval task"):
        load_task("svamp-hard", tmp_path, ltok, budget, family="causal-lm")
    with pytest.raises(TaskUnavailable, match="race/train.jsonl"):
        load_task("race", tmp_path / "nowhere", ltok, budget, family="causal-lm")
    # the csqa score is the log-likelihood accuracy of the package's evaluator, on the test rows
    expected = mc_accuracy(model, ltok, read_mc_file(tmp_path / "csqa" / "test.jsonl"))["acc"]
    assert bundles["csqa"].evaluate(model) == pytest.approx(expected)
    rows = run_benchmark(model, select_targets(model, "essential"), bundles, ["dense", "omp_before", "random"],
                         [0.5], [0], tmp_path / "results.jsonl", budget)  # fmt: skip
    assert {(r["task"], r["method"]) for r in rows} == {
        (t, m) for t in bundles for m in ("dense", "omp_before", "random")
    }
    for r in rows:
        assert r["accuracy"] in {0.0, 1 / 3, 2 / 3, 1.0}  # 3 evaluation rows per task
        if r["method"] != "dense":
            assert r["train_steps"] == 2 and r["actual_sparsity"] >= 0.5 - 1e-6


def test_smc_bench_cli_scores_a_causal_lm_by_loglikelihood_and_generation(tok, tmp_path) -> None:
    from typer.testing import CliRunner

    from llm_sparsity.cli import app

    _write_causal_smc_data(tmp_path, tok)
    args = ["smc-bench", "--model", str(tmp_path / "lm"), "--data-dir", str(tmp_path), "--out", str(tmp_path / "o"),
            "--methods", "omp_before", "--sparsities", "0.5", "--steps", "1", "--n-train", "3", "--n-eval", "3"]  # fmt: skip
    result = CliRunner().invoke(app, [*args, "--tasks", "csqa,arithmetic"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (tmp_path / "o" / "results.jsonl").read_text().splitlines()]
    assert {r["task"] for r in rows} == {"csqa", "arithmetic"} and len(rows) == 4


def test_winogrande_partial_scoring_matches_a_hand_loop(tok, tmp_path) -> None:
    from llm_sparsity.models import tiny_lm
    from llm_sparsity.smc_bench import Budget, load_task
    from llm_sparsity.smc_causal import read_winogrande, winogrande_accuracy

    rows = [
        {"sentence": "the cat sat _ what is 2", "option1": "le", "option2": "chat", "answer": "2"},
        {"sentence": "_ cat is 3", "option1": "the", "option2": "what", "answer": 1},
        {"sentence": "what is _ sat 5", "option1": "the cat", "option2": "chat", "answer": "1"},
    ]
    (tmp_path / "winogrande").mkdir()
    for split in ("train", "test"):
        (tmp_path / "winogrande" / f"{split}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    items = read_winogrande(tmp_path / "winogrande" / "test.jsonl")
    assert items[0].partial() == (["the cat sat le", "the cat sat chat"], "what is 2")
    model = tiny_lm("gpt2", vocab_size=64).eval()

    def loglik(context: str, target: str) -> float:  # token loop, one position at a time
        ctx = tok(context, add_special_tokens=False)["input_ids"] or [tok.bos_token_id]
        full = tok(context + " " + target, add_special_tokens=False)["input_ids"]
        cont = full[len(tok(context, add_special_tokens=False)["input_ids"]) :]
        seq, total = list(ctx), 0.0
        for t in cont:
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=torch.tensor([seq])).logits[0, -1].float(), -1)
            total += float(logp[t])
            seq.append(t)
        return total

    hand = 0
    for r in rows:
        idx = r["sentence"].index("_")
        target = r["sentence"][idx + 1 :].strip()
        lls = [loglik(r["sentence"][:idx] + r[f"option{k}"], target) for k in (1, 2)]
        hand += int(lls.index(max(lls)) == int(r["answer"]) - 1)
    assert winogrande_accuracy(model, tok, items) == pytest.approx(hand / 3)
    bundle = load_task(
        "winogrande", tmp_path, tok, Budget(steps=1, batch_size=2), family="causal-lm", n_eval=3
    )
    assert bundle.evaluate(model) == pytest.approx(hand / 3)
    assert bundle.trainer.train(model, None, 1).steps == 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"sentence": "no blank", "option1": "a", "option2": "b", "answer": 1}) + "\n")
    with pytest.raises(ValueError, match="row 1: sentence has no '_'"):
        read_winogrande(bad)
