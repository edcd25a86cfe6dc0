import json

from typer.testing import CliRunner

from feature_select import __version__
from feature_select.cli import app

runner = CliRunner()


def test_help_and_version() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    for command in ("run", "benchmark", "reproduce", "datasets"):
        assert command in result.output
        sub = runner.invoke(app, [command, "--help"])
        assert sub.exit_code == 0, sub.output
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_run_and_benchmark_on_bundled_data(tmp_path) -> None:
    out = tmp_path / "run"
    result = runner.invoke(
        app, ["run", "--dataset", "wine", "--k", "4", "--epochs", "4", "--hidden", "16,16", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    data = json.loads((out / "result.json").read_text())
    assert len(data["selected_features"]) == 4 and 0 <= data["accuracy"]["svc"] <= 1
    assert list((out / "model").glob("ckpt-*.safetensors"))
    bench = tmp_path / "bench"
    args = [
        "benchmark",
        "--datasets",
        "wine",
        "--ks",
        "2,4",
        "--seeds",
        "0",
        "--methods",
        "neurofs,f_classif,random",
    ]
    result = runner.invoke(app, [*args, "--epochs", "3", "--hidden", "8,8", "--out", str(bench)])
    assert result.exit_code == 0, result.output
    summary = json.loads((bench / "summary.json").read_text())
    assert set(summary["ranking_scores"]["svc"]) == {"neurofs", "f_classif", "random"}
    assert len((bench / "results.jsonl").read_text().splitlines()) == 6
    # resuming runs nothing new
    result = runner.invoke(app, [*args, "--epochs", "3", "--hidden", "8,8", "--out", str(bench)])
    assert len((bench / "results.jsonl").read_text().splitlines()) == 6


def test_bad_cli_values_are_reported() -> None:
    result = runner.invoke(app, ["run", "--dataset", "nope"])
    assert result.exit_code != 0
    assert "unknown dataset 'nope'" in str(result.exception) + result.output
    result = runner.invoke(app, ["benchmark", "--ks", "a,b"])
    assert result.exit_code != 0


def test_run_on_a_file_path_and_datasets_lists_files(tmp_path) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.normal(size=(60, 8))
    y = (x[:, 2] > 0).astype(int)
    np.savez(tmp_path / "mine.npz", X=x, y=y)
    listing = runner.invoke(app, ["datasets", "--data-dir", str(tmp_path)])
    assert listing.exit_code == 0 and "mine\t" in listing.output
    out = tmp_path / "out"
    args = ["run", "--dataset", "mine", "--data-dir", str(tmp_path), "--k", "3", "--epochs", "3"]
    paper = ["--epsilon", "30", "--zeta-in", "0.2", "--zeta-hid", "0.3"]  # the reference README's command
    result = runner.invoke(app, [*args, *paper, "--hidden", "8,8", "--out", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "result.json").read_text())
    config = data["metadata"]["config"]
    assert (config["zeta_in"], config["zeta_hid"], config["epsilon"]) == (0.2, 0.3, 30.0)
    assert sorted(data["ranking"]) == list(range(8)) and data["ranking"][:3] == data["selected_features"]
    assert data["device"] == "cpu" and data["batch_size"] == 16  # clip(48 // 8, 16, 100)
    bad = runner.invoke(app, ["run", "--dataset", str(tmp_path / "mine.npz"), "--k", "9", "--epochs", "1"])
    assert bad.exit_code == 2 and "--k must be <= the 8 features" in bad.output


def test_run_on_bad_data_files_exits_2_with_the_problem_named(tmp_path) -> None:
    """Issue 21's bad-input list through the CLI: one clear line, exit 2, no traceback."""
    import numpy as np
    import scipy.io
    import scipy.sparse as sp

    rng = np.random.default_rng(1)
    x = rng.normal(size=(40, 6))
    y = np.arange(40) % 2
    cases = {
        "no_keys.mat": ({"A": x}, "has no X or Y"),
        "one_class.mat": ({"X": x, "Y": np.ones(40)}, "single class (every label is 1.0)"),
        "nan_column.mat": (
            {"X": np.where(np.arange(6) == 3, np.nan, x), "Y": y},
            "NaN or infinite values (columns [3]",
        ),
        "constant.mat": ({"X": np.full((40, 6), 2.0), "Y": y}, "constant"),
        "sparse_nan.mat": ({"X": sp.csc_matrix(np.where(x > 1.0, np.nan, 0.0)), "Y": y}, "NaN"),
    }
    for name, (content, message) in cases.items():
        scipy.io.savemat(tmp_path / name, content)
        args = ["run", "--dataset", str(tmp_path / name), "--k", "2", "--epochs", "1", "--hidden", "4"]
        result = runner.invoke(app, [*args, "--out", str(tmp_path / "out"), "--device", "cpu"])
        assert result.exit_code == 2, (name, result.output)
        assert message in result.output and "Traceback" not in result.output, (name, result.output)
