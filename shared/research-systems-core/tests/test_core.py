"""Core (torch-free) helpers: validation, registry, config, results, data dir, seeding, metadata."""

from __future__ import annotations

import dataclasses
import json
import pathlib
import random
import subprocess
import sys

import numpy as np
import pytest

from research_systems_core.config import ConfigError, config_to_dict, load_config, parse_overrides
from research_systems_core.data import (
    DatasetNotFoundError,
    load_mnist,
    read_idx,
    require_path,
    resolve_data_dir,
)
from research_systems_core.files import atomic_write
from research_systems_core.metadata import run_metadata
from research_systems_core.registry import Registry
from research_systems_core.results import JsonlWriter, plot_curves, read_jsonl, results_dir, write_json
from research_systems_core.seeding import seed_everything
from research_systems_core.validation import (
    UnknownNameError,
    check_choice,
    check_finite,
    check_int,
    check_positive,
    check_range,
)


def test_core_modules_do_not_import_torch() -> None:
    code = (
        "import sys\n"
        "import research_systems_core, research_systems_core.seeding, research_systems_core.config, research_systems_core.results,"
        " research_systems_core.checkpoint, research_systems_core.data, research_systems_core.logs, research_systems_core.validation,"
        " research_systems_core.registry, research_systems_core.metadata, research_systems_core.files\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_validation_messages_name_value_and_range() -> None:
    with pytest.raises(ValueError, match=r"sparsity must be in \[0, 1\), got 1.5"):
        check_range("sparsity", 1.5, 0, 1, high_inclusive=False)
    assert check_range("sparsity", 0.0, 0, 1, high_inclusive=False) == 0.0
    with pytest.raises(TypeError, match="sparsity must be a real number"):
        check_range("sparsity", "0.5", 0, 1)
    with pytest.raises(ValueError, match="got nan"):
        check_range("x", float("nan"))
    with pytest.raises(ValueError, match="eps must be >= 0, got -1"):
        check_positive("eps", -1, strict=False)
    with pytest.raises(ValueError, match="steps must be >= 1, got 0"):
        check_int("steps", 0, minimum=1)
    with pytest.raises(TypeError, match="must be an integer"):
        check_int("steps", True)
    with pytest.raises(UnknownNameError, match="unknown model 'resnet9'; choose one of: 'a', 'b'"):
        check_choice("model", "resnet9", ["a", "b"])
    with pytest.raises(ValueError, match="NaN or infinite"):
        check_finite("X", np.array([1.0, np.inf]))


def test_registry_create_and_unknown_name() -> None:
    reg = Registry("model")

    @reg.register("double")
    def make(scale: int = 2) -> int:
        return 21 * scale

    @reg.register()
    def triple() -> int:
        return 3

    assert reg.create("double") == 42 and reg.create("double", scale=1) == 21
    assert reg.names() == ["double", "triple"] and "triple" in reg and len(reg) == 2
    with pytest.raises(UnknownNameError, match="unknown model 'quad'; choose one of: 'double', 'triple'"):
        reg.get("quad")
    with pytest.raises(ValueError, match="already registered"):
        reg.register("double")(make)


@dataclasses.dataclass
class Optim:
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False


@dataclasses.dataclass
class TrainConfig:
    epochs: int = 10
    name: str = "run"
    optim: Optim = dataclasses.field(default_factory=Optim)
    sparsities: list[float] = dataclasses.field(default_factory=lambda: [0.5])
    out: pathlib.Path | None = None


def test_config_file_and_overrides(tmp_path: pathlib.Path) -> None:
    (tmp_path / "c.yaml").write_text("epochs: 3\noptim:\n  lr: 0.5\n")
    cfg = load_config(
        TrainConfig, tmp_path / "c.yaml", ["optim.momentum=0", "sparsities=[0.1, 0.2]", "out=/tmp/x"]
    )
    assert cfg.epochs == 3 and cfg.optim.lr == 0.5 and cfg.optim.momentum == 0.0
    assert cfg.sparsities == [0.1, 0.2] and cfg.out == pathlib.Path("/tmp/x")
    (tmp_path / "c.toml").write_text("name = 'x'\n[optim]\nnesterov = true\n")
    cfg = load_config(TrainConfig, tmp_path / "c.toml")
    assert cfg.name == "x" and cfg.optim.nesterov is True and cfg.optim.lr == 0.1
    assert config_to_dict(cfg)["optim"] == {"lr": 0.1, "momentum": 0.9, "nesterov": True}
    assert parse_overrides(["a.b=1", "a.c=x"]) == {"a": {"b": 1, "c": "x"}}


def test_config_misspelled_key_and_wrong_type_are_refused(tmp_path: pathlib.Path) -> None:
    (tmp_path / "bad.yaml").write_text("epoch: 3\n")
    with pytest.raises(ConfigError, match="unknown config key 'epoch'"):
        load_config(TrainConfig, tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="unknown config key 'optim.lrr'"):
        load_config(TrainConfig, overrides=["optim.lrr=1"])
    with pytest.raises(ConfigError, match="config key 'epochs' must be an integer, got 'ten'"):
        load_config(TrainConfig, overrides=["epochs=ten"])
    with pytest.raises(ConfigError, match="config key 'optim.nesterov' must be true or false"):
        load_config(TrainConfig, overrides=["optim.nesterov=3"])
    with pytest.raises(ConfigError, match="must look like key=value"):
        load_config(TrainConfig, overrides=["epochs"])
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(TrainConfig, tmp_path / "missing.yaml")


def test_write_json_is_atomic_and_jsonable(tmp_path: pathlib.Path) -> None:
    path = write_json(
        tmp_path / "r.json", {"a": np.float32(0.5), "b": np.arange(3), "p": tmp_path, "n": float("nan")}
    )
    assert json.loads(path.read_text()) == {"a": 0.5, "b": [0, 1, 2], "p": str(tmp_path), "n": None}
    with pytest.raises(RuntimeError), atomic_write(tmp_path / "r.json") as handle:
        handle.write("partial")
        raise RuntimeError("killed")
    assert json.loads(path.read_text())["a"] == 0.5  # old content intact
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]  # no temp file left behind


def test_jsonl_keeps_valid_rows_of_a_corrupt_file(
    tmp_path: pathlib.Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "rows.jsonl"
    writer = JsonlWriter(path)
    writer.append({"i": 0})
    writer.append({"i": 1})
    with open(path, "a") as handle:
        handle.write('{"i": 2, "trunc')  # a kill mid-write
    writer = JsonlWriter(path)  # reopening starts a fresh line
    writer.append({"i": 3})
    rows = read_jsonl(path)
    assert [r["i"] for r in rows] == [0, 1, 3]
    assert "skipped 1 corrupt line" in caplog.text
    assert read_jsonl(tmp_path / "none.jsonl") == []


def test_results_dir_and_plot(tmp_path: pathlib.Path) -> None:
    d = results_dir("demo", "pkg", root=tmp_path)
    assert d == tmp_path / "demo" / "pkg" and d.is_dir()
    with pytest.raises(ValueError, match="kind must be one of"):
        results_dir("other", "pkg", root=tmp_path)
    png = plot_curves(
        d / "c.png",
        {"a": ([0, 1], [1, 2]), "b": ([0, 1], [2, 1], [0.1, 0.1])},
        "x",
        "y",
        vlines={"a: knee": 0.5},
    )
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="x has 2 points, y has 1"):
        plot_curves(d / "bad.png", {"a": ([0, 1], [1])}, "x", "y")


def test_data_dir_resolution_order(tmp_path: pathlib.Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RESEARCH_DATA_DIR", str(tmp_path / "env"))
    assert resolve_data_dir(tmp_path / "cli") == tmp_path / "cli"
    assert resolve_data_dir() == tmp_path / "env"
    monkeypatch.delenv("RESEARCH_DATA_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert resolve_data_dir() == tmp_path / "cache" / "research-systems-core" / "data"
    with pytest.raises(DatasetNotFoundError, match="does not exist; pass --data-dir"):
        resolve_data_dir(tmp_path / "nope", must_exist=True)
    with pytest.raises(DatasetNotFoundError, match=r"Cora not found in the data directory .* Download it"):
        require_path(tmp_path, "Cora", "Download it")


def test_idx_reader_and_mnist(tmp_path: pathlib.Path) -> None:
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    (raw / "t10k-images-idx3-ubyte").write_bytes(
        bytes([0, 0, 8, 3, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4]) + images.tobytes()
    )
    (raw / "t10k-labels-idx1-ubyte").write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 2, 7, 9]))
    x, y = load_mnist(tmp_path, train=False)
    np.testing.assert_array_equal(x, images)
    assert y.tolist() == [7, 9] and y.dtype == np.int64
    (raw / "bad").write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 5, 1]))
    with pytest.raises(ValueError, match="truncated or corrupt"):
        read_idx(raw / "bad")
    with pytest.raises(DatasetNotFoundError, match="train-images-idx3-ubyte not found"):
        load_mnist(tmp_path, train=True)


def test_seed_everything_repeats_python_and_numpy() -> None:
    seed_everything(7)
    a = (random.random(), np.random.rand())
    seed_everything(7)
    assert (random.random(), np.random.rand()) == a
    with pytest.raises(ValueError, match="seed must be >= 0"):
        seed_everything(-1)


def test_run_metadata_records_versions_seed_config() -> None:
    meta = run_metadata(seed=3, config=Optim(), packages=["pyyaml"])
    assert meta["seed"] == 3 and meta["config"] == {"lr": 0.1, "momentum": 0.9, "nesterov": False}
    assert "research-systems-core" in meta["versions"] and "numpy" in meta["versions"]
    assert meta["machine"]["cpu_count"] >= 1
    json.dumps(meta)


def test_cli_app_has_version_and_log_level() -> None:
    from typer.testing import CliRunner

    from research_systems_core.cli import create_app, fail

    app = create_app("demo-tool", "A demo tool.", "1.2.3")

    @app.command()
    def hello(name: str = "x") -> None:
        """Say hello."""
        if name == "bad":
            fail(ValueError("name must not be 'bad'"))
        print(f"hello {name}")

    runner = CliRunner()
    assert runner.invoke(app, ["--version"]).output.strip() == "demo-tool 1.2.3"
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0 and "A demo tool." in result.output and "hello" in result.output
    assert runner.invoke(app, ["--log-level", "debug", "hello", "--name", "y"]).output.strip() == "hello y"
    bad_level = runner.invoke(app, ["--log-level", "LOUD", "hello"])
    assert bad_level.exit_code == 2 and "must be one of" in bad_level.output
    bad = runner.invoke(app, ["hello", "--name", "bad"])
    assert bad.exit_code == 2 and "error: name must not be 'bad'" in bad.output


def test_setup_logging_follows_a_swapped_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    import io
    import logging

    from research_systems_core.logs import setup_logging

    first = io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    setup_logging("INFO")
    first.close()  # as a test runner does after a command
    second = io.StringIO()
    monkeypatch.setattr(sys, "stderr", second)
    logging.getLogger("x").info("still works")
    assert "still works" in second.getvalue()
    setup_logging("WARNING")


def test_cli_app_threads_option() -> None:
    import torch
    from typer.testing import CliRunner

    from research_systems_core.cli import create_app

    app = create_app("t", "T.", "0", default_threads=1)

    @app.command()
    def threads() -> None:
        print(torch.get_num_threads())

    runner = CliRunner()
    before = torch.get_num_threads()
    try:
        assert runner.invoke(app, ["threads"]).output.strip() == "1"
        assert runner.invoke(app, ["--threads", "2", "threads"]).output.strip() == "2"
        assert runner.invoke(app, ["--threads", "0", "threads"]).exit_code == 2
    finally:
        torch.set_num_threads(before)
