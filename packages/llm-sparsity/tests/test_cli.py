import json

import pytest
import torch
from typer.testing import CliRunner

from llm_sparsity import __version__
from llm_sparsity.cli import app

COMMANDS = ["prune", "curve", "junk-dna", "isp", "smc-bench", "smc-report", "reproduce"]


def test_help_and_version() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    for command in COMMANDS:
        assert command in result.output
        sub = runner.invoke(app, [command, "--help"])
        assert sub.exit_code == 0, sub.output
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


@pytest.fixture
def tiny_dir(tmp_path):
    from llm_sparsity.models import build_word_tokenizer, create_model

    model = create_model("tiny_bert", vocab_size=64)
    tok = build_word_tokenizer(["a b c d"], 64)
    model.save_pretrained(str(tmp_path / "tiny"))
    tok.save_pretrained(str(tmp_path / "tiny"))
    return tmp_path / "tiny"


def test_prune_command_saves_a_loadable_pruned_model(tiny_dir, tmp_path) -> None:
    from llm_sparsity.saving import load_pruned

    runner = CliRunner()
    out = tmp_path / "pruned"
    res = runner.invoke(app, ["prune", "--model", str(tiny_dir), "--sparsity", "0.6", "--out", str(out)])
    assert res.exit_code == 0, res.output
    _model, masks, meta = load_pruned(out)
    assert masks.sparsity() == pytest.approx(0.6, abs=1e-4) and meta["method"] == "magnitude"
    res = runner.invoke(
        app, ["prune", "--model", str(tiny_dir), "--allocation", "nm", "--nm", "4:4", "--out", str(out)]
    )
    assert res.exit_code == 2 and "0 < N < M" in res.output
    res = runner.invoke(app, ["prune", "--model", str(tmp_path / "missing"), "--out", str(out)])
    assert res.exit_code == 2 and "does not exist" in res.output


def test_smc_report_keeps_valid_rows_of_a_corrupt_file(tmp_path) -> None:
    rows = [
        {
            "task": "t",
            "method": "dense",
            "sparsity": 0.0,
            "seed": 0,
            "accuracy": 0.8,
            "method_seconds": 1.0,
            "overhead_seconds": 0.01,
        },
        {
            "task": "t",
            "method": "random",
            "sparsity": 0.5,
            "seed": 0,
            "accuracy": 0.6,
            "method_seconds": 1.0,
            "overhead_seconds": 0.01,
        },
    ]
    path = tmp_path / "results.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + '\n{"task": "t", "meth')
    res = CliRunner().invoke(app, ["smc-report", "--results", str(path)])
    assert res.exit_code == 0, res.output
    report = json.loads((tmp_path / "smc_report.json").read_text())
    assert report["first_failing_sparsity"] == {"t": {"random": 0.5}}
    assert (tmp_path / "smc_t.png").is_file()
    res = CliRunner().invoke(app, ["smc-report", "--results", str(tmp_path / "none.jsonl")])
    assert res.exit_code == 2


def test_smc_bench_rejects_bad_names(tmp_path) -> None:
    runner = CliRunner()
    res = runner.invoke(app, ["smc-bench", "--out", str(tmp_path), "--methods", "lottery"])
    assert res.exit_code == 2 and "unknown method 'lottery'" in res.output
    res = runner.invoke(app, ["smc-bench", "--out", str(tmp_path), "--tasks", "glue"])
    assert res.exit_code == 2 and "unknown task 'glue'" in res.output
    res = runner.invoke(app, ["smc-bench", "--out", str(tmp_path), "--sparsities", " , "])
    assert res.exit_code != 0
    assert torch.get_num_threads() >= 1
