"""Property-based bad-input tests (issue 23): every generated bad value for an option of the
public API or the CLI gives ValueError/TypeError (API) or exit code 2 (CLI) with one message that
names the parameter; never another exception, a traceback or a hang. ``FUZZ_EXAMPLES`` sets the
number of examples per property (default 12; ``nox -s fuzz`` runs more)."""

import json
import logging
import math
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from robust_at.attacks import pgd
from robust_at.cli import app
from robust_at.train import build_config
from robust_at.wot import WOTConfig

torch.set_num_threads(1)
runner = CliRunner()
FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "12")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

not_a_number = st.sampled_from([math.nan, math.inf, -math.inf, "abc", "", None, [1], {"a": 1}])
negative = st.floats(max_value=-1e-6, allow_nan=False, allow_infinity=False) | st.integers(max_value=-1)
# config key -> strategy of values that must be rejected
BAD_CONFIG = {
    "epochs": st.integers(max_value=0) | not_a_number | st.floats(0.1, 5.5).filter(lambda v: v != int(v)),
    "batch_size": st.integers(max_value=0) | not_a_number,
    "val_size": negative | not_a_number,
    "lr": st.floats(max_value=0, allow_nan=False) | not_a_number,
    "momentum": st.floats(min_value=1.0, allow_nan=False) | negative | not_a_number,
    "weight_decay": negative | not_a_number,
    "lr_decay": st.floats(min_value=1.0001, allow_nan=False) | st.floats(max_value=0, allow_nan=False),
    "label_noise": st.floats(min_value=1.0001, allow_nan=False) | negative | not_a_number,
    "eps": negative | not_a_number,
    "step_size": st.floats(max_value=0, allow_nan=False) | not_a_number,
    "attack_steps": st.integers(max_value=0) | not_a_number,
    "eval_steps": st.integers(max_value=0) | not_a_number,
    "norm": st.text(max_size=8).filter(lambda s: s not in ("linf", "l2")),
    "method": st.text(max_size=8).filter(lambda s: s not in ("at-pgd", "trades", "awp")),
    "precision": st.text(max_size=6).filter(lambda s: s not in ("fp32", "bf16", "fp16")),
    "dataset": st.text(min_size=1, max_size=10).filter(
        lambda s: s.isalnum() and s not in ("digits", "mnist", "svhn")
    ),
    "model": st.sampled_from(["resnet9000", "preact-resnet", "not a model", "timm:nope"]),
    "milestones": st.lists(st.integers(max_value=0), min_size=1, max_size=3),
    "keep_checkpoints": st.integers(max_value=0),
}
BAD_WOT = {
    "gap": st.integers(max_value=0) | not_a_number,
    "num_gaps": st.integers(max_value=0),
    "grouping": st.text(max_size=6).filter(lambda s: s not in ("model", "block", "layer")),
    "init": st.text(max_size=6).filter(lambda s: s not in ("zero", "one", "random")),
    "lr": st.floats(max_value=0, allow_nan=False) | not_a_number,
    "passes": st.integers(max_value=0),
    "start_epoch": st.integers(max_value=-2),
    "train_mode_epoch": st.integers(max_value=-2),
    "times": st.integers(max_value=0),
    "meta_loss": st.text(max_size=4).filter(lambda s: s not in ("ce", "kl")),
    "bn_batches": st.integers(max_value=-1),
}


@pytest.fixture(autouse=True)
def _restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _names(message: str, key: str) -> bool:
    return key.split(".")[-1] in message


@FUZZ
@given(data=st.data(), key=st.sampled_from(sorted(BAD_CONFIG)))
def test_bad_config_values_raise_a_value_or_type_error_naming_the_key(data, key: str) -> None:
    value = data.draw(BAD_CONFIG[key])
    with pytest.raises((ValueError, TypeError)) as info:
        build_config("digits-pilot", {key: value})
    assert _names(str(info.value), key), (key, value, str(info.value))


@FUZZ
@given(data=st.data(), key=st.sampled_from(sorted(BAD_WOT)))
def test_bad_wot_values_raise_naming_the_key(data, key: str) -> None:
    value = data.draw(BAD_WOT[key])
    with pytest.raises((ValueError, TypeError)) as info:
        WOTConfig(**{key: value})
    assert _names(str(info.value), key), (key, value, str(info.value))
    with pytest.raises((ValueError, TypeError)) as info:
        build_config("digits-pilot", {"wot": {key: value}})
    assert _names(str(info.value), key)


@FUZZ
@given(
    eps=negative | st.just(math.nan),
    step=st.floats(max_value=0, allow_nan=False),
    steps=st.integers(max_value=0),
    shift=st.floats(1.01, 100),
)
def test_attacks_reject_bad_settings_and_inputs(eps, step, steps, shift) -> None:
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    x, y = torch.rand(2, 1, 2, 2), torch.tensor([0, 1])
    for kwargs, name in (
        ({"eps": eps, "step_size": 0.1, "steps": 1}, "eps"),
        ({"eps": 0.1, "step_size": step, "steps": 1}, "step_size"),
        ({"eps": 0.1, "step_size": 0.1, "steps": steps}, "steps"),
    ):
        with pytest.raises(ValueError, match=name):
            pgd(model, x, y, **kwargs)
    with pytest.raises(ValueError, match="input range"):
        pgd(model, x + shift, y, eps=0.1, step_size=0.1, steps=1)


def _cli_ok(result, key: str) -> None:
    assert result.exit_code == 2, (key, result.exit_code, result.output)
    assert "Traceback" not in result.output
    assert _names(result.output, key), (key, result.output)


@FUZZ
@given(data=st.data(), key=st.sampled_from(sorted(BAD_CONFIG)))
def test_cli_train_bad_set_values_exit_2_before_any_work(tmp_path_factory, data, key: str) -> None:
    value = data.draw(BAD_CONFIG[key])
    out = tmp_path_factory.mktemp("fuzz")
    result = runner.invoke(app, ["train", "--out", str(out), "--set", f"{key}={json.dumps(value)}"])
    _cli_ok(result, key)
    assert not (out / "checkpoints").exists()


@FUZZ
@given(
    option=st.sampled_from(
        ["--device", "--precision", "--dataset", "--model", "--method", "--preset", "--epochs"]
    ),
    value=st.sampled_from(["", "nonsense", "-3", "cuda:9", "fp8", "folder:/nonexistent/x", "0", "nan"]),
)
def test_cli_train_bad_options_exit_2(tmp_path_factory, option: str, value: str) -> None:
    valid = {"--device": ("cpu", "auto"), "--epochs": ()}
    if value in valid.get(option, ()):
        return
    if option == "--epochs" and value not in ("-3", "0", "nan", "", "nonsense"):
        return
    out = tmp_path_factory.mktemp("fuzz")
    result = runner.invoke(app, ["train", "--out", str(out), option, value])
    assert result.exit_code == 2, (option, value, result.output)
    assert "Traceback" not in result.output
    hint = {"--epochs": "epochs", "--preset": "preset", "--device": "device", "--precision": "precision",
            "--dataset": "dataset", "--model": "model", "--method": "method"}[option]  # fmt: skip
    assert hint in result.output.lower(), (option, value, result.output)


@FUZZ
@given(content=st.binary(max_size=200))
def test_cli_eval_on_corrupt_weights_exits_2(tmp_path_factory, content: bytes) -> None:
    run = tmp_path_factory.mktemp("corrupt")
    cfg = build_config("digits-pilot", {"width": 4, "depth": 2})
    from research_systems_core.config import config_to_dict

    (run / "config.json").write_text(json.dumps({"config": config_to_dict(cfg)}))
    (run / "model_last.safetensors").write_bytes(content)
    result = runner.invoke(app, ["eval", str(run), "--device", "cpu", "--n", "4", "--steps", "1"])
    assert result.exit_code == 2, result.output
    assert "model_last.safetensors" in result.output and "Traceback" not in result.output


@FUZZ
@given(text=st.text(max_size=40))
def test_cli_eval_on_a_broken_config_exits_2(tmp_path_factory, text: str) -> None:
    run = tmp_path_factory.mktemp("badcfg")
    (run / "config.json").write_text(text)
    result = runner.invoke(app, ["eval", str(run), "--device", "cpu"])
    assert result.exit_code == 2, result.output
    assert "config" in result.output and "Traceback" not in result.output
