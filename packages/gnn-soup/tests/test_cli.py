import json

from typer.testing import CliRunner

from gnn_soup import __version__
from gnn_soup.cli import app, parse_sampler_options

runner = CliRunner()


def test_help_and_version() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    for command in ("train-ingredients", "soup", "reproduce", "list"):
        assert command in result.output
        sub = runner.invoke(app, [command, "--help"])
        assert sub.exit_code == 0, sub.output
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


def test_train_ingredients_then_soup(tmp_path) -> None:
    run = tmp_path / "run"
    args = [
        "train-ingredients",
        "--out",
        str(run),
        "--dataset",
        "synthetic",
        "-k",
        "3",
        "--hidden",
        "8",
        "--steps",
        "10",
        "--executor",
        "sequential",
        "--sampler",
        "full",
        "--sampler",
        "neighbor",
        "--sampler-option",
        "neighbor.batch_size=8",
        "--sampler-option",
        "neighbor.fanouts=[3,3]",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert sum(line.startswith("ingredient ") for line in result.output.splitlines()) == 3
    assert len(list((run / "ingredients").glob("*/ckpt-*.safetensors"))) == 3
    plan = json.loads((run / "plan.json").read_text())
    assert [s["sampler"] for s in plan["specs"]] == ["full", "neighbor", "full"]
    assert plan["specs"][1]["sampler_kwargs"] == {"batch_size": 8, "fanouts": [3, 3]}
    result = runner.invoke(app, ["soup", "--run", str(run), "--grid", "3"])
    assert result.exit_code == 0, result.output
    soup = json.loads((run / "soup" / "soup.json").read_text())
    assert soup["greedy_interpolation"]["val"] >= soup["best_ingredient"]["val"]
    assert (run / "soup" / "soup.png").stat().st_size > 0
    assert list((run / "soup" / "weights" / "greedy_interpolation").glob("*.safetensors"))


def test_bad_input_exits_with_a_message(tmp_path) -> None:
    base = [
        "train-ingredients",
        "--out",
        str(tmp_path / "x"),
        "--dataset",
        "synthetic",
        "--executor",
        "sequential",
    ]
    result = runner.invoke(app, [*base, "-k", "0"])
    assert result.exit_code == 2 and "num_ingredients must be >= 1, got 0" in result.output
    result = runner.invoke(app, [*base, "--model", "gin"])
    assert result.exit_code == 2 and "gin" in result.output
    result = runner.invoke(app, ["train-ingredients", "--out", str(tmp_path / "y"), "--dataset", "Nope"])
    assert result.exit_code == 2 and "Nope" in result.output
    result = runner.invoke(app, ["soup", "--run", str(tmp_path / "x"), "--grid", "1"])
    assert result.exit_code == 2 and "grid must be >= 2, got 1" in result.output
    result = runner.invoke(app, ["soup", "--run", str(tmp_path / "empty")])
    assert result.exit_code == 2 and "no ingredient plan" in result.output


def test_parse_sampler_options() -> None:
    assert parse_sampler_options(["cluster.num_parts=16", "cluster.method=random"]) == {
        "cluster": {"num_parts": 16, "method": "random"}
    }
    try:
        parse_sampler_options(["num_parts=3"])
    except ValueError as exc:
        assert "sampler.key=value" in str(exc)
    else:
        raise AssertionError("expected a ValueError")
