"""Command-line interface of usv-planner."""

from __future__ import annotations

import dataclasses
import json
import logging
import pathlib

import numpy as np
import typer

from research_systems_core.cli import create_app
from usv_planner import __version__

app = create_app(
    "usv-planner",
    "GPMP2 path planning for unmanned surface vehicles with a spatiotemporal ocean-current factor.",
    __version__,
)

log = logging.getLogger("usv_planner")


def _pair(name: str, text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError:
        raise typer.BadParameter(
            f"{name} must be 'x,y' (two numbers separated by a comma), got {text!r}"
        ) from None
    return x, y


@app.command("scenarios")
def scenarios_cmd() -> None:
    """List the built-in benchmark scenarios with their start/goal pairs."""
    from usv_planner.scenarios import SCENARIOS, make_scenario

    for name in SCENARIOS.names():
        scn = make_scenario(name)
        typer.echo(f"{name}: {scn.description.strip()}")
        for k, (s, g) in enumerate(scn.pairs):
            typer.echo(f"    pair {k}: start {s} -> goal {g}, horizon {scn.horizon:g} s")


@app.command("plan")
def plan_cmd(
    scenario: str = typer.Option("double-gyre", help="Built-in scenario (see `usv-planner scenarios`)."),
    pair: int = typer.Option(0, help="Index of the scenario's start/goal pair."),
    start: str | None = typer.Option(
        None, help="Start 'x,y' in metres (or 'lon,lat' with --netcdf); overrides the pair."
    ),
    goal: str | None = typer.Option(
        None, help="Goal 'x,y' in metres (or 'lon,lat' with --netcdf); overrides the pair."
    ),
    netcdf: pathlib.Path | None = typer.Option(
        None, help="Plan on a CMEMS/HYCOM NetCDF current file instead of a scenario."
    ),
    planner: str = typer.Option("gpmp2", help="gpmp2, astar-length or astar-time."),
    mode: str = typer.Option("spatiotemporal", help="GPMP2 current model: spatiotemporal, frozen or blind."),
    solver: str = typer.Option(
        "lm", help="GPMP2 solver: lm (Levenberg-Marquardt), gn (Gauss-Newton) or dogleg."
    ),
    n_states: int = typer.Option(40, help="Number of GPMP2 support states."),
    horizon: float | None = typer.Option(None, help="Time horizon in seconds (default: the scenario's)."),
    energy_weight: float = typer.Option(20.0, help="Weight of the current-energy factor (0 disables it)."),
    out: pathlib.Path = typer.Option(
        pathlib.Path("results/plan"), help="Output directory for plan.json and plan.png."
    ),
) -> None:
    """Plan one path and write its metrics (plan.json) and a plot over the current field (plan.png)."""
    from research_systems_core.results import write_json
    from research_systems_core.validation import check_choice
    from usv_planner.astar import GridAStar
    from usv_planner.planner import GPMP2Planner, PlannerConfig
    from usv_planner.plotting import plot_paths
    from usv_planner.scenarios import make_scenario

    check_choice("planner", planner, ("gpmp2", "astar-length", "astar-time"))
    if netcdf is not None:
        from usv_planner.ocean_data import load_currents

        data = load_currents(netcdf)
        env, current = data.env, data.field
        if start is None or goal is None:
            raise typer.BadParameter("--start and --goal (lon,lat) are required with --netcdf")
        s_ll, g_ll = _pair("start", start), _pair("goal", goal)
        start_p, goal_p = data.to_local(*s_ll), data.to_local(*g_ll)  # type: ignore[misc]
        default_horizon = float(np.hypot(*np.subtract(goal_p, start_p))) / 1.0
        water_speed, name = 1.2, netcdf.name
    else:
        scn = make_scenario(scenario)
        if not 0 <= pair < len(scn.pairs):
            raise typer.BadParameter(f"pair must be in [0, {len(scn.pairs) - 1}] for {scenario}, got {pair}")
        env, current = scn.env, scn.current
        start_p = _pair("start", start) or scn.pairs[pair][0]
        goal_p = _pair("goal", goal) or scn.pairs[pair][1]
        default_horizon, water_speed, name = scn.horizon, scn.water_speed, scenario
    T = horizon if horizon is not None else default_horizon
    if planner == "gpmp2":
        cfg = PlannerConfig(
            n_states=n_states,
            horizon=T,
            current_mode=mode,
            solver=solver,
            energy_weight=energy_weight,
            qc=4.0,
            obstacle_sigma=0.003,
        )
        traj = GPMP2Planner(cfg).plan(start_p, goal_p, env, current)
        metrics = traj.metrics(env, current)
        points = traj.dense_positions
        extra = {
            "config": dataclasses.asdict(cfg),
            "candidates": traj.candidates,
            "times": traj.times,
            "positions": traj.positions,
            "velocities": traj.velocities,
        }
    else:
        astar = GridAStar(
            env,
            max(env.occupancy.cell_size, 25.0),
            PlannerConfig().epsilon,
            current,
            water_speed,
            np.linspace(0, 2 * T, 25),
        )
        res = astar.search(np.asarray(start_p), np.asarray(goal_p), planner.split("-")[1])
        metrics = res.metrics(env, current)
        points = res.positions
        extra = {"times": res.times, "positions": res.positions}
    out.mkdir(parents=True, exist_ok=True)
    write_json(
        out / "plan.json", {"scenario": name, "planner": planner, "mode": mode, "metrics": metrics, **extra}
    )
    plot_paths(
        out / "plan.png",
        env,
        current,
        {f"{planner} ({mode})" if planner == "gpmp2" else planner: points},
        t=0.0,
    )
    typer.echo(
        json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in metrics.items()}, indent=1)
    )
    typer.echo(f"wrote {out / 'plan.json'} and {out / 'plan.png'}")


@app.command("reproduce")
def reproduce_cmd(
    out: pathlib.Path = typer.Option(pathlib.Path("results/reproduce/usv-planner"), help="Output directory."),
    data_dir: pathlib.Path | None = typer.Option(
        None,
        help="Data directory (accepted for uniformity; the experiments use analytic fields and need no data).",
    ),
    quick: bool = typer.Option(False, "--quick", help="Small run (about 15 s on one core) for demos and CI."),
    seed: int = typer.Option(0, help="Seed of the GP observations and sensor noise."),
) -> None:
    """Reproduce the paper's main effect (jet, double gyre, GP-predicted field); writes summary.json last."""
    from usv_planner.reproduce import run_reproduction

    if data_dir is not None:
        log.info("--data-dir %s is not needed: the reproduction uses analytic current fields", data_dir)
    summary = run_reproduction(out, quick=quick, seed=seed)
    typer.echo(f"verdict: {summary['verdict']} -- {summary['verdict_reason']}")
    typer.echo(f"wrote {out / 'summary.json'}")
