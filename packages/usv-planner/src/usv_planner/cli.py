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
        raise ValueError(f"{name} must be 'x,y' (two numbers separated by a comma), got {text!r}") from None
    if not (np.isfinite(x) and np.isfinite(y)):
        raise ValueError(f"{name} must be two finite numbers, got {text!r}")
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


ARRIVALS = ("fixed", "energy", "time", "weighted")


def _planner_config(**kwargs):
    """A validated :class:`~usv_planner.planner.PlannerConfig` (imported lazily: gtsam is slow to load)."""
    from usv_planner.planner import PlannerConfig

    return PlannerConfig(**kwargs).validate()


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
    depth: float | None = typer.Option(None, help="NetCDF depth level (m; nearest; default the shallowest)."),
    projection: str = typer.Option(
        "tmerc", help="NetCDF projection: tmerc (local transverse Mercator) or utm."
    ),
    planner: str = typer.Option("gpmp2", help="gpmp2, astar-length or astar-time."),
    mode: str = typer.Option("spatiotemporal", help="GPMP2 current model: spatiotemporal, frozen or blind."),
    solver: str = typer.Option(
        "lm", help="GPMP2 solver: lm (Levenberg-Marquardt), gn (Gauss-Newton) or dogleg."
    ),
    n_states: int = typer.Option(40, help="Number of GPMP2 support states."),
    horizon: float | None = typer.Option(None, help="Time horizon in seconds (default: the scenario's)."),
    energy_weight: float = typer.Option(20.0, help="Weight of the current-energy factor (0 disables it)."),
    speed_limit: float | None = typer.Option(None, help="Maximum through-water speed (m/s), a hinge factor."),
    accel_limit: float | None = typer.Option(None, help="Maximum acceleration (m/s^2), a hinge factor."),
    min_clearance: float | None = typer.Option(
        None, help="Hard clearance (m): re-optimise with stiffer obstacle costs until it holds."
    ),
    arrival: str = typer.Option(
        "fixed", help="Arrival time: fixed (the horizon), or free minimising energy, time or weighted."
    ),
    time_weight: float = typer.Option(0.0, help="With --arrival weighted: energy cost per second (m^3/s^3)."),
    init: str = typer.Option("global", help="Initial paths: global (homotopy classes), bulges or both."),
    workers: int = typer.Option(1, help="Processes optimising the initial paths in parallel."),
    out: pathlib.Path = typer.Option(
        pathlib.Path("results/plan"), help="Output directory for plan.json and plan.png."
    ),
) -> None:
    """Plan one path and write its metrics (plan.json) and a plot over the current field (plan.png)."""
    from research_systems_core.results import write_json
    from research_systems_core.validation import check_choice, check_int

    # Validate every option before any data is loaded.
    check_choice("planner", planner, ("gpmp2", "astar-length", "astar-time"))
    check_choice("arrival", arrival, ARRIVALS)
    check_choice("projection", projection, ("tmerc", "utm"))
    check_int("pair", pair, minimum=0)
    s_xy, g_xy = _pair("start", start), _pair("goal", goal)
    if horizon is not None:
        from usv_planner.planner import check_positive_finite

        check_positive_finite("horizon", horizon)
    if depth is not None and not np.isfinite(depth):
        raise ValueError(f"depth must be a finite number of metres, got {depth}")
    if arrival == "weighted" and not time_weight > 0:
        raise ValueError(f"--time-weight must be > 0 with --arrival weighted, got {time_weight}")
    if arrival == "time" and speed_limit is None:
        raise ValueError("--arrival time needs --speed-limit (without one every arrival time is feasible)")
    if netcdf is not None and (s_xy is None or g_xy is None):
        raise ValueError("--start and --goal (lon,lat) are required with --netcdf")
    cfg = _planner_config(
        n_states=n_states,
        horizon=horizon if horizon is not None else 1000.0,
        current_mode=mode,
        solver=solver,
        energy_weight=energy_weight,
        qc=4.0,
        obstacle_sigma=0.003,
        speed_limit=speed_limit,
        accel_limit=accel_limit,
        min_clearance=min_clearance,
        init=init,
        workers=workers,
    )
    env, current, start_p, goal_p, default_horizon, water_speed, name = _problem(
        scenario, pair, s_xy, g_xy, netcdf, depth, projection, speed_limit
    )
    cfg.horizon = horizon if horizon is not None else default_horizon
    if planner == "gpmp2":
        metrics, points, extra = _run_gpmp2(cfg, arrival, time_weight, start_p, goal_p, env, current)
    else:
        metrics, points, extra = _run_astar(planner, cfg, start_p, goal_p, env, current, water_speed)
    out.mkdir(parents=True, exist_ok=True)
    write_json(
        out / "plan.json", {"scenario": name, "planner": planner, "mode": mode, "metrics": metrics, **extra}
    )
    _plot(out / "plan.png", env, current, planner, mode, points)
    shown = {k: (round(v, 3) if isinstance(v, float) else v) for k, v in metrics.items() if k != "limits"}
    typer.echo(json.dumps(shown, indent=1, default=str))
    typer.echo(f"wrote {out / 'plan.json'} and {out / 'plan.png'}")


def _problem(scenario, pair, s_xy, g_xy, netcdf, depth, projection, speed_limit):
    """Environment, current, start/goal (metres), default horizon, A* water speed and a name."""
    if netcdf is not None:
        from usv_planner.ocean_data import load_currents

        data = load_currents(netcdf, depth=depth, projection=projection)
        start_p, goal_p = data.to_local(*s_xy), data.to_local(*g_xy)
        speed = speed_limit or 1.0
        default_horizon = float(np.hypot(*np.subtract(goal_p, start_p))) / speed
        return data.env, data.field, start_p, goal_p, default_horizon, speed, netcdf.name
    from usv_planner.scenarios import make_scenario

    scn = make_scenario(scenario)
    if not 0 <= pair < len(scn.pairs):
        raise ValueError(f"pair must be in [0, {len(scn.pairs) - 1}] for {scenario}, got {pair}")
    start_p = s_xy or scn.pairs[pair][0]
    goal_p = g_xy or scn.pairs[pair][1]
    return scn.env, scn.current, start_p, goal_p, scn.horizon, speed_limit or scn.water_speed, scenario


def _run_gpmp2(cfg, arrival, time_weight, start_p, goal_p, env, current):
    from usv_planner.planner import GPMP2Planner

    planner = GPMP2Planner(cfg)
    extra: dict = {"config": dataclasses.asdict(cfg)}
    if arrival == "fixed":
        traj = planner.plan(start_p, goal_p, env, current)
    else:
        from usv_planner.free_time import plan_free_arrival

        search = plan_free_arrival(planner, start_p, goal_p, env, current, arrival, time_weight=time_weight)
        traj = search.best
        extra["arrival"] = {"objective": arrival, "horizon_s": search.horizon, "curve": search.curve}
    metrics = traj.metrics(env, current)
    extra.update(
        candidates=traj.candidates, times=traj.times, positions=traj.positions, velocities=traj.velocities
    )
    return metrics, traj.dense_positions, extra


def _run_astar(planner, cfg, start_p, goal_p, env, current, water_speed):
    from usv_planner.astar import GridAStar

    astar = GridAStar(
        env,
        max(env.occupancy.cell_size, 25.0),
        cfg.epsilon,
        current,
        water_speed,
        np.linspace(0, 2 * cfg.horizon, 25),
    )
    res = astar.search(np.asarray(start_p), np.asarray(goal_p), planner.split("-")[1])
    return res.metrics(env, current), res.positions, {"times": res.times, "positions": res.positions}


def _plot(path, env, current, planner, mode, points) -> None:
    from usv_planner.plotting import plot_paths

    label = f"{planner} ({mode})" if planner == "gpmp2" else planner
    plot_paths(path, env, current, {label: points}, t=0.0)


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
