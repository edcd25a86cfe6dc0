"""Property-based bad-input tests (issue 23): every bad option value -> exit 2 / ValueError naming it.

``FUZZ_EXAMPLES`` (default 12) bounds the examples per property."""

from __future__ import annotations

import json
import math
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from llm_sparsity.cli import app
from llm_sparsity.layerwise import sparsegpt_prune, wanda_mask
from llm_sparsity.llm import PruneSpec
from llm_sparsity.pruning import parse_nm

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "12"))
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
runner = CliRunner()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from llm_sparsity.models import build_word_tokenizer, tiny_lm

    path = tmp_path_factory.mktemp("fuzz") / "tiny"
    tok = build_word_tokenizer(["the", "cat", "sat", "on", "a", "mat"], 64)
    tok.add_special_tokens({"eos_token": "[SEP]", "bos_token": "[CLS]"})
    tiny_lm("gpt2", vocab_size=64).save_pretrained(str(path))
    tok.save_pretrained(str(path))
    (path.parent / "calib.txt").write_text("the cat sat on a mat " * 40)
    return path


def _prune(model_dir, *extra: str):
    out = model_dir.parent / "out"
    return runner.invoke(app, ["prune", str(model_dir), "--out", str(out), "--device", "cpu", *extra])


def _assert_clean(result, *names: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    text = result.output.lower()
    assert any(n.lower() in text for n in names), result.output
    assert "traceback" not in text


bad_sparsity = st.one_of(
    st.floats(max_value=-1e-9, allow_nan=False), st.floats(min_value=1.0, allow_nan=False), st.just(math.nan)
)


@FUZZ
@given(value=bad_sparsity)
def test_prune_rejects_bad_sparsity(model_dir, value) -> None:
    _assert_clean(_prune(model_dir, "--sparsity", repr(value)), "sparsity")


@FUZZ
@given(
    value=st.text(min_size=0, max_size=8).filter(lambda s: s.strip() not in ("", "2:4", "4:8", "1:2", "1:4"))
)
def test_prune_rejects_bad_nm(model_dir, value) -> None:
    try:
        parse_nm(value)
    except ValueError:
        pass
    else:  # a valid pattern is not a bad input
        return
    _assert_clean(_prune(model_dir, "--nm", value), "n:m", "nm")


@FUZZ
@given(
    option=st.sampled_from(["--method", "--dtype", "--task", "--preset", "--allocation", "--device"]),
    value=st.text(alphabet="abcxyz_-", min_size=1, max_size=10),
)
def test_prune_rejects_unknown_names(model_dir, option, value) -> None:
    known = {
        "magnitude",
        "random",
        "snip",
        "wanda",
        "sparsegpt",
        "auto",
        "bf16",
        "fp16",
        "fp32",
        "causal-lm",
        "masked-lm",
        "base",
        "essential",
        "junk_dna",
        "all_linear",
        "global",
        "layer",
        "row",
        "nm",
        "cpu",
    }
    if value in known:
        return
    _assert_clean(_prune(model_dir, option, value), option.strip("-"), value)


@FUZZ
@given(option=st.sampled_from(["--n-samples", "--seq-len"]), value=st.integers(max_value=0))
def test_prune_rejects_bad_counts(model_dir, option, value) -> None:
    _assert_clean(_prune(model_dir, "--method", "wanda", option, str(value)), option)


@FUZZ
@given(name=st.text(alphabet="abc/._-", min_size=1, max_size=12))
def test_prune_and_eval_reject_missing_models_and_files(model_dir, name) -> None:
    missing = model_dir.parent / "missing" / name.replace("/", "_")
    _assert_clean(_prune(model_dir, "--method", "wanda", "--calib", str(missing)), "--calib")
    res = runner.invoke(app, ["eval", str(model_dir), "--ppl", str(missing), "--device", "cpu"])
    _assert_clean(res, "--ppl")
    res = runner.invoke(app, ["eval", str(model_dir), "--mc", str(missing), "--device", "cpu"])
    _assert_clean(res, "--mc")


def test_prune_bad_inputs_named_in_the_issue(model_dir, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    _assert_clean(runner.invoke(app, ["prune", "facebook/opt-125m", "--out", "x", "--device", "cpu"]), "hub")
    _assert_clean(_prune(model_dir, "--pattern", "no_such_weight"), "matched no parameter")
    _assert_clean(_prune(model_dir, "--nm", "4:2"), "0 < n < m")
    _assert_clean(
        _prune(
            model_dir,
            "--method",
            "wanda",
            "--calib",
            str(model_dir.parent / "calib.txt"),
            "--seq-len",
            "5000",
        ),
        "shorter than one window",
    )
    _assert_clean(_prune(model_dir, "--task", "masked-lm"), "carries no masked-lm head")
    if not torch.cuda.is_available():
        _assert_clean(_prune(model_dir, "--device", "cuda"), "cuda")
    res = runner.invoke(app, ["eval", str(model_dir), "--device", "cpu"])
    _assert_clean(res, "nothing to evaluate")


@FUZZ
@given(
    rows=st.lists(
        st.dictionaries(st.sampled_from(["q", "opts", "answer", "text"]), st.text(max_size=5)), max_size=4
    )
)
def test_eval_mc_files_with_wrong_columns(model_dir, rows) -> None:
    path = model_dir.parent / "mc.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows))
    res = runner.invoke(app, ["eval", str(model_dir), "--mc", str(path), "--device", "cpu"])
    _assert_clean(res, "column 'question' is missing", "empty", "no rows")


@FUZZ
@given(
    sparsity=st.one_of(st.floats(max_value=-1e-6), st.floats(min_value=1.0), st.just(math.nan)),
    nm=st.tuples(st.integers(-3, 6), st.integers(-3, 6)).filter(lambda t: not 0 < t[0] < t[1]),
)
def test_api_rejects_bad_values(sparsity, nm) -> None:
    weight, h = torch.randn(4, 8), torch.eye(8)
    for call in (
        lambda: PruneSpec("wanda", sparsity),
        lambda: PruneSpec("wanda", 0.5, nm),
        lambda: wanda_mask(weight, torch.ones(8), sparsity),
        lambda: sparsegpt_prune(weight, h, sparsity),
        lambda: sparsegpt_prune(weight, h, None, nm),
    ):
        with pytest.raises(ValueError, match=r"sparsity|N:M|N < M"):
            call()


def test_smc_report_names_the_row_and_the_missing_key(tmp_path) -> None:
    row = {"task": "t", "method": "dense", "sparsity": 0.0, "seed": 0, "accuracy": 0.8,
           "method_seconds": 1.0, "overhead_seconds": 0.01}  # fmt: skip
    path = tmp_path / "results.jsonl"
    path.write_text(
        json.dumps(row) + "\n" + json.dumps({k: v for k, v in row.items() if k != "accuracy"}) + "\n"
    )
    res = runner.invoke(app, ["smc-report", "--results", str(path)])
    _assert_clean(res, "results row 2 lacks key 'accuracy'")
    path.write_text(json.dumps({**row, "accuracy": "high"}) + "\n")
    _assert_clean(runner.invoke(app, ["smc-report", "--results", str(path)]), "'accuracy' is not a number")


def _junk(model_dir, *extra: str):
    folder = model_dir.parent
    rows = [{"question": "the cat sat on", "choices": ["a", "mat", "the"], "label": 1}] * 3
    (folder / "mc.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return runner.invoke(app, ["junk-dna", "--model", str(model_dir), "--mc", str(folder / "mc.jsonl"), "--train",
                               str(folder / "mc.jsonl"), "--sparsities", "0.5", "--methods", "magnitude",
                               "--out", str(folder / "junk"), *extra])  # fmt: skip


@FUZZ
@given(
    case=st.one_of(
        st.tuples(st.just("k_shot"), st.integers(4, 10**6).map(str), st.just("training pool")),
        st.tuples(st.just("k_shot"), st.integers(-(10**6), -1).map(str), st.just("k_shot level")),
        st.tuples(st.just("options"), st.integers(4, 10**6).map(str), st.just("options level")),
        st.tuples(st.just("context"), st.floats(1.0001, 1e6).map(str), st.just("context level")),
        st.tuples(st.just("train_fraction"), st.floats(0.01, 1.0).map(str), st.just("--finetune-steps")),
        st.tuples(st.text("xyz_", min_size=1, max_size=8), st.just("1"), st.just("--axis")),
    )
)
def test_junk_dna_user_rejects_bad_levels(model_dir, case) -> None:
    axis, level, name = case
    _assert_clean(_junk(model_dir, "--axis", axis, "--levels", level), name)


@FUZZ
@given(
    mode=st.text(min_size=1, max_size=10).filter(lambda m: m not in ("sparse", "sparse_to_dense", "frozen"))
)
def test_junk_dna_user_rejects_bad_modes(model_dir, mode) -> None:
    _assert_clean(_junk(model_dir, "--axis", "options", "--levels", "2", "--mode", mode), "transfer mode")


def test_curve_finetune_bad_inputs(model_dir) -> None:
    folder = model_dir.parent
    (folder / "mc2.jsonl").write_text(
        json.dumps({"question": "the cat", "choices": ["sat", "on"], "label": 0}) + "\n"
    )
    base = ["curve", "--model", str(model_dir), "--eval", f"mc:{folder / 'mc2.jsonl'}", "--method", "magnitude",
            "--sparsities", "0.3,0.6", "--device", "cpu", "--out", str(folder / "c")]  # fmt: skip
    _assert_clean(runner.invoke(app, [*base, "--finetune", "2"]), "--train")
    _assert_clean(runner.invoke(app, [*base, "--finetune", "2", "--train", "nope.jsonl"]), "does not exist")
    _assert_clean(runner.invoke(app, [*base, "--finetune", "-1"]), "--finetune")
    _assert_clean(runner.invoke(app, [*base, "--finetune", "1", "--train", str(folder / "mc2.jsonl"),
                                      "--finetune-lr", "0"]), "--finetune-lr")  # fmt: skip


_SECTION_NAMES = ("head", "retrieval")


@FUZZ
@given(
    value=st.text(alphabet="abcdefghijklmnopqrstuvwxyz-_,", min_size=1, max_size=20).filter(
        lambda s: any(p.strip() and p.strip() not in _SECTION_NAMES for p in s.split(","))
    )
)
def test_reproduce_sections_and_protocol_bad_values_exit_2(value, tmp_path_factory) -> None:
    out = tmp_path_factory.mktemp("repro")
    _assert_clean(runner.invoke(app, ["reproduce", "--out", str(out), "--sections", value]), "--sections")
    if value not in ("probe", "finetune"):
        _assert_clean(runner.invoke(app, ["reproduce", "--out", str(out), "--protocol", value]), "--protocol")
    assert not list(out.iterdir())  # refused before anything was written or loaded


@FUZZ
@given(steps=st.integers(max_value=-1), epochs=st.integers(max_value=0), layers=st.integers(max_value=0))
def test_head_configs_name_their_bad_parameter(steps, epochs, layers) -> None:
    from llm_sparsity.head_repro import HeadReproConfig
    from llm_sparsity.head_task import ClassifierConfig, HeadConfig

    with pytest.raises(ValueError, match="steps"):
        ClassifierConfig(steps=steps)
    with pytest.raises(ValueError, match="epochs"):
        HeadConfig(epochs=epochs)
    with pytest.raises(ValueError, match="layers"):
        HeadReproConfig(layers=layers)
