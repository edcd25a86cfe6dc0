import json
import logging

import pytest
from typer.testing import CliRunner

from robust_at import __version__
from robust_at.cli import app

runner = CliRunner()


@pytest.fixture(autouse=True)
def _restore_logging():
    """The CLI attaches a log handler to the runner's (then closed) stderr; detach it afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_help_and_version() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    for command in ("train", "eval", "reproduce", "list"):
        assert command in result.output
        sub = runner.invoke(app, [command, "--help"])
        assert sub.exit_code == 0, sub.output
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_list_shows_the_registries() -> None:
    result = runner.invoke(app, ["list"])
    assert result.exit_code == 0
    assert "wrn-34-10" in result.output and "trades" in result.output and "digits-pilot" in result.output
    assert "cifar10-preact18" in result.output and "folder:PATH" in result.output


@pytest.mark.parametrize("method", ["at-pgd", "trades", "awp"])
def test_train_then_eval_a_tiny_run(tmp_path, method: str) -> None:
    out = tmp_path / method
    args = ["train", "--out", str(out), "--method", method, "--epochs", "2", "--wot", "--swa"]
    sets = [
        "train_size=64", "val_size=32", "width=4", "depth=2", "batch_size=32", "milestones=[1]",
        "attack_steps=2", "eval_steps=2", "eval_size=40", "wot.gap=1", "wot.num_gaps=2", "wot.passes=1",
        "wot.bn_batches=1",
    ]  # fmt: skip
    for s in sets:
        args += ["--set", s]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output[result.output.index("{\n") :])
    assert summary["last"]["epoch"] == 1
    for name in ("last", "best_val", "best_test", "swa"):
        assert (out / f"model_{name}.safetensors").is_file()
    result = runner.invoke(app, ["eval", str(out), "--weights", "swa", "--steps", "3", "--n", "30"])
    assert result.exit_code == 0, result.output
    evaluation = json.loads(result.output[result.output.index("{\n") :])
    assert evaluation["n"] == 30 and evaluation["robust_acc"] <= evaluation["clean_acc"] + 1e-9


def test_bad_input_gives_a_clear_error_not_a_traceback(tmp_path) -> None:
    result = runner.invoke(app, ["train", "--out", str(tmp_path), "--set", "eps=-1"])
    assert result.exit_code == 2
    assert "eps must be >= 0, got -1" in result.output
    result = runner.invoke(app, ["train", "--out", str(tmp_path), "--wot", "--set", "val_size=0"])
    assert result.exit_code == 2 and "val_size must be > 0 when WOT is on" in result.output
    result = runner.invoke(app, ["eval", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and "does not exist" in result.output
    (tmp_path / "empty").mkdir()
    result = runner.invoke(app, ["eval", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "no config.json" in result.output
    result = runner.invoke(app, ["train", "--out", str(tmp_path), "--device", "cuda:3"])
    assert result.exit_code == 2 and "cuda" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["eval", str(tmp_path), "--attack", "cw"])
    assert result.exit_code == 2 and "attack" in result.output


def test_wot_diagnose_on_a_saved_trajectory(tmp_path) -> None:
    out = tmp_path / "wot"
    args = ["train", "--out", str(out), "--epochs", "2", "--wot"]
    sets = [
        "train_size=64", "val_size=32", "width=4", "depth=2", "batch_size=32", "milestones=[1]", "attack_steps=2",
        "eval_steps=1", "eval_size=20", "wot.gap=1", "wot.num_gaps=2", "wot.passes=1", "wot.bn_batches=1",
        "wot.save_trajectory=true",
    ]  # fmt: skip
    for s in sets:
        args += ["--set", s]
    assert runner.invoke(app, args).exit_code == 0
    assert (out / "wot_trajectory.safetensors").is_file()
    result = runner.invoke(app, ["wot-diagnose", str(out), "--points", "3"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output[result.output.index("{\n") :])
    assert len(report["line"]) == 3 and report["line"][0]["t"] == 0.0 and report["line"][-1]["t"] == 1.0
    for rule in ("ours", "reference"):
        assert all(0.0 <= w <= 1.0 for row in report[rule]["weights"] for w in row)
    assert "explanation" in report
    missing = runner.invoke(app, ["wot-diagnose", str(tmp_path)])
    assert missing.exit_code == 2 and "config.json" in missing.output


def test_folder_dataset_with_a_timm_model_and_wot_b_end_to_end(tmp_path, caplog) -> None:
    from research_systems_core.vision import make_image_folder

    root = make_image_folder(tmp_path / "images", classes=3, per_class=6, size=16)
    out = tmp_path / "run"
    args = ["train", "--dataset", f"folder:{root}", "--model", "resnet10t", "--image-size", "16", "--wot",
            "--epochs", "1", "--out", str(out)]  # fmt: skip
    sets = ["val_size=4", "train_size=null", "label_noise=0", "batch_size=7", "attack_steps=1", "eval_steps=1",
            "milestones=[1]", "wot.gap=1", "wot.num_gaps=2", "wot.passes=1", "wot.bn_batches=1", "wot.start_epoch=0",
            "width=null", "depth=null"]  # fmt: skip
    for s in sets:
        args += ["--set", s]
    with caplog.at_level(logging.INFO, logger="robust_at"):
        result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    logged = caplog.text + result.output
    assert "WOT block groups: stem:" in logged and "layer4:" in logged and "head:" in logged
    report = json.loads((out / "result.json").read_text())
    assert report["wot"]["groups"] == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
    assert report["wot"]["refinements"] >= 1
    evaluation = runner.invoke(app, ["eval", str(out), "--steps", "1", "--device", "cpu"])
    assert evaluation.exit_code == 0, evaluation.output
