"""Property-based bad-input tests (issue 23): every bad option value is one clear line and exit 2.

Bounded by ``FUZZ_EXAMPLES`` (default 8 per property) so the file stays within ~20 s; ``nox -s fuzz``
raises it. Every generated value is invalid, so no case ever starts a training run.
"""

import math
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from research_systems_core.errors import UserError
from vision_kd.cli import app
from vision_kd.convert import read_reference_state_dict
from vision_kd.losses import create_loss
from vision_kd.models import LargeKernelConv
from vision_kd.sparse import SparseConfig
from vision_kd.train import TrainConfig

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "8"))
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
runner = CliRunner()

nonpositive_int = st.integers(max_value=0)
negative_int = st.integers(max_value=-1)
nonfinite = st.sampled_from(["nan", "inf", "-inf"])
negative_float = st.floats(max_value=-1e-6, allow_nan=False, allow_infinity=False).map(repr)
not_a_number = st.text(alphabet="abcxyz!@", min_size=1, max_size=6)
unit_outside = st.one_of(st.floats(min_value=1.0 + 1e-6, max_value=1e6).map(repr), negative_float, nonfinite)
junk_name = st.text(alphabet="qwxz_-", min_size=1, max_size=8).filter(lambda s: s not in ("auto",))

# option -> strategy of invalid values, per command (values are strings, as a shell would pass them)
COMMON = {
    "--epochs": st.one_of(nonpositive_int.map(str), not_a_number),
    "--batch-size": st.one_of(nonpositive_int.map(str), not_a_number),
    "--lr": st.one_of(negative_float, nonfinite, st.just("0")),
    "--weight-decay": st.one_of(negative_float, nonfinite),
    "--ema-decay": unit_outside,
    "--mixup": st.one_of(negative_float, nonfinite),
    "--cutmix": st.one_of(negative_float, nonfinite),
    "--smoothing": unit_outside,
    "--seed": negative_int.map(str),
    "--device": junk_name,
    "--precision": junk_name,
    "--workers": negative_int.map(str),
    "--n-train": nonpositive_int.map(str),
    "--n-test": nonpositive_int.map(str),
    "--image-size": st.one_of(st.integers(max_value=7), st.integers(min_value=4097)).map(str),
    "--dataset": junk_name,
}
TEACHER = {
    "--sparsity": st.one_of(st.floats(min_value=1.0, max_value=1e6).map(repr), negative_float, nonfinite),
    "--sparse-init": junk_name,
    "--prune-rate": unit_outside,
    "--update-frequency": nonpositive_int.map(str),
}
DISTILL = {
    "--loss": junk_name,
    "--temperature": st.one_of(negative_float, nonfinite, st.just("0")),
    "--alpha": unit_outside,
    "--gamma": st.one_of(negative_float, nonfinite),
    "--fd-weight": st.one_of(negative_float, nonfinite),
}
BASE = {
    "train-teacher": ["train-teacher", "--model", "kd_resnet_micro", "--dataset", "digits", "--epochs", "1"],
    "distill": [
        "distill",
        "--teacher",
        "kd_resnet_micro",
        "--student",
        "kd_resnet_micro",
        "--dataset",
        "digits",
        "--epochs",
        "1",
    ],
}


def _names(option: str) -> tuple[str, ...]:
    bare = option.lstrip("-")
    return (option, bare, bare.replace("-", "_"), {"smoothing": "label_smoothing"}.get(bare, bare))


def _check(result, option: str, value: str) -> None:
    assert result.exit_code == 2, (option, value, result.output, repr(result.exception))
    text = result.output
    assert text.count("\n") <= 12, text  # one line for our errors; click's own usage box is short
    assert "Traceback" not in text, text
    named = any(name in text for name in _names(option)) or "Invalid value" in text
    if option == "--dataset":
        named = "dataset" in text
    if option == "--device":
        named = "device" in text
    assert named, (option, value, text)


def _cases(strategies: dict) -> st.SearchStrategy:
    return st.sampled_from(sorted(strategies)).flatmap(lambda opt: st.tuples(st.just(opt), strategies[opt]))


@FUZZ
@given(case=_cases({**COMMON, **TEACHER}))
def test_train_teacher_rejects_every_bad_option(tmp_path_factory, case):
    option, value = case
    extra = ["--sparsity", "0.4"] if option in TEACHER and option != "--sparsity" else []
    out = tmp_path_factory.mktemp("t")
    args = [*BASE["train-teacher"], *extra, option, value, "--out", str(out)]
    _check(runner.invoke(app, args), option, value)
    assert not (out / "checkpoints").exists()  # validated before any training


@FUZZ
@given(case=_cases({**COMMON, **DISTILL}))
def test_distill_rejects_every_bad_option(tmp_path_factory, case):
    option, value = case
    out = tmp_path_factory.mktemp("d")
    _check(runner.invoke(app, [*BASE["distill"], option, value, "--out", str(out)]), option, value)


@FUZZ
@given(data=st.binary(min_size=0, max_size=400))
def test_convert_slak_rejects_arbitrary_bytes(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("c") / "ck.pth"
    path.write_bytes(data)
    result = runner.invoke(app, ["convert-slak", str(path), "--out", str(path.parent / "o")])
    assert result.exit_code == 2 and result.output.startswith("error: "), result.output
    with pytest.raises(UserError):
        read_reference_state_dict(path)


@FUZZ
@given(
    field=st.sampled_from(
        ["epochs", "batch_size", "lr", "ema_decay", "warmup_frac", "precision", "workers", "mixup"]
    ),
    value=st.one_of(
        st.floats(allow_nan=True, allow_infinity=True),
        st.integers(max_value=-1),
        st.text(max_size=4),
        st.none(),
    ),
)
def test_train_config_api(field, value):
    cfg = TrainConfig(**{field: value})
    try:
        cfg.validate()
    except (ValueError, TypeError) as err:
        assert field in str(err)
        return
    # a value that passed must really be valid
    assert not (isinstance(value, float) and not math.isfinite(value) and field in ("lr", "mixup"))


@FUZZ
@given(
    name=st.sampled_from(["kd", "nkd"]),
    option=st.sampled_from(["temperature", "alpha", "gamma", "label_smoothing"]),
    value=st.one_of(
        st.floats(max_value=-1e-9), st.just(float("nan")), st.just(float("inf")), st.text(max_size=3)
    ),
)
def test_loss_api(name, option, value):
    with pytest.raises((ValueError, TypeError)) as info:
        create_loss(name, **{option: value})
    assert option in str(info.value)


@FUZZ
@given(
    sparsity=st.one_of(st.floats(min_value=1.0), st.floats(max_value=-1e-9), st.just(float("nan"))),
    init=st.text(max_size=5).filter(lambda s: s not in ("snip", "erk", "uniform")),
)
def test_sparse_and_model_api(sparsity, init):
    with pytest.raises(ValueError, match="sparsity"):
        SparseConfig(sparsity=sparsity).validate()
    with pytest.raises(ValueError, match="sparse_init"):
        SparseConfig(init=init).validate()
    with pytest.raises((ValueError, TypeError), match="kernel_size"):
        LargeKernelConv(4, 2 * int(abs(sparsity) if math.isfinite(sparsity) else 1) + 2)


def test_erf_rejects_bad_counts(tmp_path):
    for option, value in (("--num-images", "0"), ("--scale", "0"), ("--scale", "99"), ("--device", "tpu")):
        result = runner.invoke(
            app, ["erf", "--weights", "kd_resnet_micro", option, value, "--out", str(tmp_path)]
        )
        _check(result, option, value)
    assert torch.get_num_threads() >= 1
