import json

import pytest
from typer.testing import CliRunner

from vision_kd import __version__
from vision_kd.cli import _model_kwargs, app

runner = CliRunner()


def test_help_and_version() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    for command in ("train-teacher", "distill", "erf", "reproduce", "convert-slak", "presets"):
        assert command in result.output
        sub = runner.invoke(app, [command, "--help"])
        assert sub.exit_code == 0, sub.output
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_model_kwargs_parsing():
    assert _model_kwargs(
        ["kernel_sizes=17,9,5,3", "patch_size=4", "decompose=false", "name=x"], "--model-arg"
    ) == {
        "kernel_sizes": (17, 9, 5, 3),
        "patch_size": 4,
        "decompose": False,
        "name": "x",
    }


def test_train_distill_erf_end_to_end(tmp_path):
    teacher_dir, student_dir = tmp_path / "teacher", tmp_path / "student"
    common = ["--dataset", "digits", "--n-train", "128", "--n-test", "64", "--epochs", "1"]
    result = runner.invoke(
        app,
        ["train-teacher", "--model", "slak_pico", "--model-arg", "patch_size=1", "--model-arg", "kernel_sizes=7,5,3,3",
         "--out", str(teacher_dir), *common],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert json.loads((teacher_dir / "result.json").read_text())["model"] == "slak_pico"
    result = runner.invoke(
        app,
        ["distill", "--teacher", str(teacher_dir / "weights"), "--student", "kd_convnext_micro", "--student-arg",
         "patch_size=1", "--loss", "fd", "--student-tap", "2", "--teacher-tap", "1", "--out", str(student_dir), *common],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    row = json.loads((student_dir / "result.json").read_text())
    assert row["loss"] == "fd" and 0 <= row["test_acc"] <= 1
    result = runner.invoke(
        app,
        ["erf", "--weights", str(teacher_dir / "weights"), "--weights", str(student_dir / "weights"), "--dataset",
         "digits", "--num-images", "8", "--out", str(tmp_path / "erf")],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "erf" / "erf.json").read_text())
    assert record["device"] == "cpu" and len(record["erf"]) == 2
    assert (tmp_path / "erf" / "erf_heatmaps.png").stat().st_size > 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train-teacher", "--model", "resnet_nope", "--dataset", "digits"], "unknown model 'resnet_nope'"),
        (
            ["train-teacher", "--model", "slak_pico", "--dataset", "imagenet22k"],
            "unknown dataset 'imagenet22k'",
        ),
        (["train-teacher", "--model", "slak_pico", "--dataset", "digits", "--lr", "-1"], "lr must be > 0"),
        (
            ["train-teacher", "--model", "slak_pico", "--dataset", "digits", "--device", "cuda"],
            "CUDA is not available",
        ),
        (["train-teacher", "--model", "slak_pico", "--dataset", "digits", "--precision", "fp8"], "precision"),
        (["train-teacher", "--model", "slak_pico", "--dataset", "digits", "--sparsity", "1.2"], "sparsity"),
        (
            ["distill", "--teacher", "/no/such/dir", "--student", "kd_resnet_micro", "--dataset", "digits"],
            "looks like a path but does not exist",
        ),
        (
            [
                "distill",
                "--teacher",
                "slak_pico",
                "--student",
                "kd_resnet_micro",
                "--dataset",
                "cifar10",
                "--cache-teacher",
                "--mixup",
                "0.8",
            ],
            "exact only",
        ),
    ],
)
def test_bad_input_gives_clear_errors(tmp_path, args, message):
    result = runner.invoke(app, [*args, "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert message in result.output


def test_distill_rejects_bad_temperature_alpha_and_class_mismatch(tmp_path):
    teacher_dir = tmp_path / "teacher"
    result = runner.invoke(
        app,
        ["train-teacher", "--model", "kd_resnet_micro", "--dataset", "digits", "--n-train", "64", "--n-test", "32",
         "--epochs", "1", "--out", str(teacher_dir)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    base = ["distill", "--teacher", str(teacher_dir / "weights"), "--student", "kd_resnet_micro", "--dataset", "digits",
            "--n-train", "64", "--out", str(tmp_path / "s")]  # fmt: skip
    result = runner.invoke(app, [*base, "--temperature", "0"])
    assert result.exit_code == 2 and "temperature must be > 0, got 0" in result.output
    result = runner.invoke(app, [*base, "--alpha", "1.5"])
    assert result.exit_code == 2 and "alpha must be in [0, 1], got 1.5" in result.output
    result = runner.invoke(app, [*base, "--loss", "dkd"])
    assert result.exit_code == 2 and "unknown loss 'dkd'" in result.output
    result = runner.invoke(app, [*base, "--student-arg", "num_classes=5"])
    assert result.exit_code == 2 and "teacher has 10 classes but the student has 5" in result.output
    # a corrupt teacher file: one clear line, not a traceback or "sidecar incomplete"
    weights = next((teacher_dir / "weights").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])
    result = runner.invoke(app, [*base])
    assert result.exit_code == 2 and "truncated or altered" in result.output
    (teacher_dir / "empty").mkdir()
    result = runner.invoke(app, [*base[:2], str(teacher_dir / "empty"), *base[3:]])
    assert result.exit_code == 2 and "holds no complete vision-kd checkpoint" in result.output


def test_presets_list_and_show():
    result = runner.invoke(app, ["presets"])
    assert result.exit_code == 0 and "83.1%" in result.output
    result = runner.invoke(app, ["presets", "convnext-tiny-from-slak-tiny"])
    assert (
        result.exit_code == 0
        and "not run here" in result.output
        and "--student convnext_tiny" in result.output
    )
    result = runner.invoke(app, ["presets", "nope"])
    assert result.exit_code == 2 and "unknown preset" in result.output
