import json
import logging
from collections.abc import Iterator

import pytest
from safetensors.torch import load_file
from typer.testing import CliRunner

from research_systems_core.data import resolve_data_dir
from sparse_dst import __version__
from sparse_dst.cli import app
from sparse_dst.reproduce import ReproConfig, run

runner = CliRunner()


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The CLI points logging at the runner's stream; restore the root handlers afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_help_and_version() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    for command in ("train", "finalize", "reproduce"):
        assert command in result.output
        sub = runner.invoke(app, [command, "--help"])
        assert sub.exit_code == 0, sub.output
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_train_finalize_and_refusals(tmp_path) -> None:
    out = tmp_path / "run"
    args = [
        "train",
        "--out",
        str(out),
        "--epochs",
        "2",
        "--set",
        "width=0.25",
        "--set",
        "sparse.channel_interval=4",
    ]
    result = runner.invoke(app, [*args, "--set", "sparse.update_frequency=4"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "result.json").read_text())
    assert summary["alive_channels"] == 56  # Sc = 0.5 of 8+8+16+16+32+32
    assert (out / "channel_density.png").stat().st_size > 0
    result = runner.invoke(app, ["finalize", "--run", str(out), "--no-export"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "slim.json").read_text())
    assert report["round_to"] == 8  # the default: every group keeps a multiple of 8 channels (exact)
    assert all(w % 8 == 0 for w in report["channel_widths"].values()), report["channel_widths"]
    assert sum(report["channel_widths_before_rounding"].values()) == 56
    assert report["slim_vs_masked_relative_error"] <= 1e-4
    slim_state = load_file(str(out / "slim.safetensors"))
    for name, width in report["channel_widths"].items():
        assert int(slim_state[f"keep/{name}"].sum()) == width
    assert report["params_after"] < report["params_before"]
    assert report["macs_after"] < report["macs_before"]
    again = runner.invoke(app, ["finalize", "--run", str(out)])
    assert again.exit_code != 0 and "finalizing twice is refused" in again.output
    bad = runner.invoke(app, ["train", "--out", str(tmp_path / "bad"), "--density", "1.5"])
    assert bad.exit_code != 0 and "density must be in (0, 1], got 1.5" in bad.output
    bad = runner.invoke(app, ["train", "--out", str(tmp_path / "bad"), "--channel-sparsity", "1"])
    assert bad.exit_code != 0 and "channel_sparsity" in bad.output
    bad = runner.invoke(app, ["train", "--out", str(tmp_path / "bad"), "--method", "gmp"])
    assert bad.exit_code != 0 and "gmp" in bad.output


def test_resume_continues_exactly(tmp_path) -> None:
    from sparse_dst.data import load_data
    from sparse_dst.train import TrainConfig, train

    data = load_data("digits")
    cfg = TrainConfig(method="chase", epochs=2, width=0.25, batch_size=256)
    cfg.sparse.update_frequency = 2
    cfg.sparse.channel_interval = 3
    full = train(cfg, data, checkpoint_dir=tmp_path / "a")
    train(TrainConfig(**{**cfg.__dict__, "epochs": 2}), data, checkpoint_dir=tmp_path / "b")
    (tmp_path / "b" / "ckpt-000000002.json").unlink()  # as if the run had stopped after epoch 1
    resumed = train(cfg, data, checkpoint_dir=tmp_path / "b", resume=True)
    for (name, a), (_, b) in zip(
        full.model.state_dict().items(), resumed.model.state_dict().items(), strict=True
    ):
        assert a.equal(b), name
    other = TrainConfig(method="rigl", epochs=2, width=0.25, batch_size=256)
    with pytest.raises(ValueError, match="different configuration"):
        train(other, data, checkpoint_dir=tmp_path / "b", resume=True)


def test_tiny_reproduction_writes_summary_last(tmp_path) -> None:
    summary = run(ReproConfig.tiny(), tmp_path)
    assert summary["verdict"] in ("reproduced", "partly", "not reproduced at this scale")
    for key in ("paper", "claim", "verdict_reason", "table", "seeds", "pngs"):
        assert key in summary
    for png in summary["pngs"]:
        assert (tmp_path / png).stat().st_size > 0
    files = sorted(tmp_path.iterdir(), key=lambda p: p.stat().st_mtime_ns)
    assert files[-1].name == "summary.json"
    assert json.loads((tmp_path / "details.json").read_text())["slim_vs_masked_max_abs_diff"] < 1e-4


def test_mnist_loads_when_available() -> None:
    from sparse_dst.data import load_data

    root = resolve_data_dir()
    if not (root / "MNIST" / "raw").is_dir():
        pytest.skip(f"MNIST not found under {root}")
    data = load_data("mnist", str(root), image_size=14, train_limit=500)
    assert data.x_train.shape == (500, 1, 14, 14) and data.x_test.shape == (10000, 1, 14, 14)
    assert abs(float(data.x_train.mean())) < 1e-4


def test_folder_dataset_with_a_timm_model_trains_and_finalizes(tmp_path) -> None:
    from research_systems_core.vision import make_image_folder

    root = make_image_folder(tmp_path / "images", classes=3, per_class=6, size=16, seed=0)
    out = tmp_path / "run"
    args = ["train", "--out", str(out), "--dataset", f"folder:{root}", "--model", "timm:mobilenetv3_small_050",
            "--epochs", "1", "--batch-size", "6", "--image-size", "16", "--device", "cpu",
            "--set", "sparse.channel_interval=1", "--set", "sparse.update_frequency=1", "--set", "sparse.density=0.3"]  # fmt: skip
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "result.json").read_text())
    assert summary["alive_channels"] < sum(summary["channel_widths"].values()) * 2  # Sc = 0.5 reached
    result = runner.invoke(app, ["finalize", "--run", str(out), "--no-export", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    report = json.loads((out / "slim.json").read_text())
    assert report["slim_vs_masked_relative_error"] <= 1e-4
    assert report["params_after"] < report["params_before"]


def test_presets_and_conflicting_options() -> None:
    from sparse_dst.cli import _build_config

    result = runner.invoke(app, ["presets"])
    assert result.exit_code == 0 and "imagenet-resnet50" in result.output and "74.03" in result.output
    cfg = _build_config(None, "reference", [], {})
    assert cfg.sparse.memory_bound and cfg.sparse.prune == "global" and cfg.sparse.update_frequency == 1000
    cfg = _build_config(None, "cifar100-vgg19", [], {"epochs": 3})
    assert (cfg.model, cfg.sparse.beta, cfg.sparse.channel_interval, cfg.epochs) == ("vgg19", 0.2, 8000, 3)
    with pytest.raises(ValueError, match="method=rigl grows by gradient"):
        _build_config(None, None, ["method=rigl", "sparse.grow=random"], {})
    with pytest.raises(ValueError, match="width=0.5 applies"):
        _build_config(None, None, ["model=resnet10t", "width=0.5"], {})
