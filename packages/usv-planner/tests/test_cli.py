import json

import pytest
from typer.testing import CliRunner

from usv_planner import __version__
from usv_planner.cli import app

runner = CliRunner()


def test_help_and_version() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.output


@pytest.mark.parametrize("command", ["plan", "reproduce", "scenarios"])
def test_every_command_has_help(command: str) -> None:
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


def test_scenarios_lists_all() -> None:
    result = runner.invoke(app, ["scenarios"])
    assert result.exit_code == 0
    for name in ("jet-island", "double-gyre", "peninsula", "vortex", "open-water"):
        assert name in result.output


def test_plan_writes_json_and_png(tmp_path) -> None:
    out = tmp_path / "plan"
    result = runner.invoke(app, ["plan", "--scenario", "open-water", "--n-states", "8", "--out", str(out)])
    assert result.exit_code == 0, result.output
    data = json.loads((out / "plan.json").read_text())
    assert data["metrics"]["collision_free"] is True
    assert (out / "plan.png").stat().st_size > 1000
    result = runner.invoke(
        app, ["plan", "--scenario", "open-water", "--planner", "astar-time", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output


def test_plan_bad_input_is_reported(tmp_path) -> None:
    result = runner.invoke(
        app, ["plan", "--scenario", "jet-island", "--start", "1500,750", "--out", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "inside or too close to an obstacle" in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    result = runner.invoke(app, ["plan", "--scenario", "nope", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "unknown scenario 'nope'" in result.output
    result = runner.invoke(app, ["plan", "--start", "1;2", "--out", str(tmp_path)])
    assert result.exit_code != 0 and "start must be 'x,y'" in result.output


def test_reproduce_writes_summary_last(tmp_path, monkeypatch) -> None:
    from usv_planner import reproduce

    tiny = reproduce.ReproductionConfig(
        quick=True,
        n_states=12,
        bulges=(0.0, 0.3),
        max_pairs=1,
        gp_observations=30,
        receding_horizon=False,
        gp_sweep=(),
        free_time_grid=3,
        free_time_refine=1,
    )
    monkeypatch.setattr(
        reproduce.ReproductionConfig, "for_mode", classmethod(lambda cls, quick, seed=0: tiny)
    )
    result = runner.invoke(app, ["reproduce", "--out", str(tmp_path), "--quick"])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "summary.json").read_text())
    for key in ("paper", "claim", "verdict", "verdict_reason", "table", "seeds", "pngs"):
        assert key in summary
    ext = summary["checks"]["extensions"]
    assert ext["speed_limited_plans_within_limit"] is True
    assert ext["homotopy"]["global_search_collision_free"] is True
    assert ext["homotopy"]["preset_bulges_collision_free"] is False
    assert "free_time.png" in summary["pngs"]
    assert summary["verdict"] in ("reproduced", "partly", "not reproduced at this scale")
    for png in summary["pngs"]:
        assert (tmp_path / png).is_file()
    assert (tmp_path / "summary.json").stat().st_mtime >= max(
        (tmp_path / p).stat().st_mtime for p in summary["pngs"]
    )
    # a rerun resumes from rows.jsonl
    rows = (tmp_path / "rows.jsonl").read_text().count("\n")
    result = runner.invoke(app, ["reproduce", "--out", str(tmp_path), "--quick"])
    assert result.exit_code == 0
    assert (tmp_path / "rows.jsonl").read_text().count("\n") == rows
