"""Evaluation from run directories, checkpoint directories and single weights files; clear
errors for missing, truncated and mismatched files; bf16 autocast attacks as strong as fp32."""

import json
import logging
import pathlib

import pytest
import torch
from typer.testing import CliRunner

from robust_at.cli import app
from robust_at.data import load_dataset
from robust_at.evaluate import pgd_accuracy
from robust_at.train import build_config, train

torch.set_num_threads(1)
runner = CliRunner()
TINY = {
    "dataset": "digits", "train_size": 120, "val_size": 40, "model": "small-cnn", "width": 4, "depth": 2,
    "epochs": 2, "batch_size": 32, "milestones": [1], "eps": 0.1, "step_size": 0.05, "attack_steps": 2,
    "eval_steps": 2, "eval_size": 40,
}  # fmt: skip


@pytest.fixture(autouse=True)
def _restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("run")
    train(build_config(None, TINY), out)
    return out


def _eval(*args: str):
    return runner.invoke(app, ["eval", *args, "--steps", "2", "--n", "20", "--device", "cpu"])


def _json(output: str) -> dict:
    return json.loads(output[output.index("{\n") :])


def test_eval_from_run_dir_checkpoint_dir_and_single_file_agree(run_dir, tmp_path) -> None:
    a = _eval(str(run_dir))
    assert a.exit_code == 0, a.output
    b = _eval(str(run_dir / "checkpoints"))  # latest checkpoint = the last epoch's weights
    assert b.exit_code == 0, b.output
    c = _eval(str(run_dir / "model_last.safetensors"))  # config.json beside it
    assert c.exit_code == 0, c.output
    lone = tmp_path / "lone.safetensors"
    lone.write_bytes((run_dir / "model_last.safetensors").read_bytes())
    d = _eval(str(lone))
    assert d.exit_code == 2 and "no config.json beside" in d.output and "--preset" in d.output
    sets = [f"{k}={json.dumps(v)}" for k, v in TINY.items()]
    e = _eval(str(lone), *[x for s in sets for x in ("--set", s)])
    assert e.exit_code == 0, e.output
    results = [_json(r.output) for r in (a, b, c, e)]
    assert len({(r["clean_acc"], r["robust_acc"]) for r in results}) == 1


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("missing", "does not exist"),
        ("empty", "not a readable safetensors file"),
        ("truncated", "not a readable safetensors file"),
        ("garbage", "not a readable safetensors file"),
    ],
)
def test_bad_weights_files_give_one_line_not_a_traceback(
    run_dir, tmp_path, damage: str, message: str
) -> None:
    bad = tmp_path / "run"
    bad.mkdir()
    (bad / "config.json").write_text((run_dir / "config.json").read_text())
    good = (run_dir / "model_last.safetensors").read_bytes()
    content = {"empty": b"", "truncated": good[: len(good) // 2], "garbage": b"\x00\x01notsafetensors" * 10}
    if damage != "missing":
        (bad / "model_last.safetensors").write_bytes(content[damage])
    result = _eval(str(bad))
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert "SafetensorError" not in result.output.split("error:")[0]


def test_weights_of_another_model_are_a_clear_mismatch(run_dir) -> None:
    sets = [f"{k}={json.dumps(v)}" for k, v in {**TINY, "width": 8}.items()]
    result = _eval(str(run_dir / "model_last.safetensors"), *[x for s in sets for x in ("--set", s)])
    assert result.exit_code == 2, result.output
    assert "does not fit the model" in result.output and "shape mismatch" in result.output


def test_eval_rejects_bad_options_before_loading(run_dir) -> None:
    for args, message in (
        (["--device", "cuda:7"], "cuda"),
        (["--precision", "fp8"], "precision"),
        (["--weights", "best"], "weights"),
        (["--attack", "cw"], "attack"),
    ):
        result = runner.invoke(app, ["eval", str(run_dir), *args])
        assert result.exit_code == 2 and message in result.output, (args, result.output)


def test_bf16_autocast_attack_is_as_strong_as_fp32() -> None:
    import torch.nn.functional as F

    from research_systems_core.precision import autocast
    from robust_at.data import batches
    from robust_at.evaluate import clean_accuracy
    from robust_at.models import create_model

    data = load_dataset("digits", val_size=0, train_size=1000)
    torch.manual_seed(0)
    model = create_model("small-cnn", 10, 1, width=16, depth=4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for epoch in range(5):  # a model that classifies (clean ~0.99), so the attack has work to do
        for xb, yb in batches(
            data.x_train, data.y_train, 64, shuffle=True, generator=torch.Generator().manual_seed(epoch)
        ):
            opt.zero_grad()
            F.cross_entropy(model(xb), yb).backward()
            opt.step()
    model.eval()
    x, y = data.x_test[:400], data.y_test[:400]
    clean = clean_accuracy(model, x, y)["acc"]
    accs = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        accs[precision] = pgd_accuracy(
            model, x, y, eps=0.05, step_size=0.0125, steps=10, precision=precision, batch_size=200
        )["acc"]
    assert clean > 0.9 and accs["fp32"] < clean - 0.05  # the attack bites
    with autocast("cpu", "bf16"):  # autocast really ran in bf16
        assert model(x[:2]).dtype == torch.bfloat16
    assert abs(accs["bf16"] - accs["fp32"]) <= 0.01, accs


def test_bf16_training_runs_and_is_finite(tmp_path) -> None:
    result = train(build_config(None, {**TINY, "epochs": 1, "precision": "bf16"}), tmp_path / "bf16")
    assert 0.0 <= result["last"]["test_robust_acc"] <= 1.0
