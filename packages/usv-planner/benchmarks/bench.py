"""Benchmarks of usv-planner, each measure beside a peer, written through research_systems_core.bench.

Usage: python packages/usv-planner/benchmarks/bench.py --out DIR [--quick | --smoke]

Sections (peers are this package's own baselines, on the same problems in the same process;
timings are process CPU time, interleaved repeats, medians):
* default plan (global search over homotopy classes, 50 states, 3 interpolation checks) on the
  built-in scenarios and a generated unseen one (fixed seed) vs the 0.2.0 default (five preset
  bulges); goal <= 0.3 s median.
* current model: sparse GP fit on 10,000 observations (goal <= 10 s); prediction error of the
  sparse GP vs the exact GP on 2,000 observations (same hyperparameters).
* energy: free-arrival (minimum time under a speed limit, and energy + hotel load) vs fixed-time
  GPMP2 and vs the grid A* Zermelo minimum-time path at the same through-water speed.
* the paper's effect: current-aware vs current-blind energy on jet-island (goal ratio <= 0.4).
"""

from __future__ import annotations

import argparse
import logging
import pathlib
import time

import numpy as np

from research_systems_core.bench import bench_environment, ratio_row, write_bench_json
from research_systems_core.logs import setup_logging
from research_systems_core.timing import compare_calls, time_call
from usv_planner.astar import GridAStar
from usv_planner.currents import DoubleGyre
from usv_planner.free_time import plan_free_arrival, trajectory_energy
from usv_planner.gp_current import GPHyperparameters, SparseSpatioTemporalGP, SpatioTemporalGP
from usv_planner.planner import GPMP2Planner, PlannerConfig
from usv_planner.scenarios import generated_scenario, make_scenario

log = logging.getLogger("usv_planner.bench")
BASE = {"qc": 4.0, "energy_weight": 20.0, "obstacle_sigma": 0.003, "n_interp": 3}
SIZES = {
    "smoke": {
        "states": 12,
        "scenarios": ["jet-island"],
        "repeats": 1,
        "gp_n": 1000,
        "gp_exact": 300,
        "grid": 3,
    },
    "quick": {
        "states": 50,
        "scenarios": ["jet-island", "double-gyre", "vortex"],
        "repeats": 3,
        "gp_n": 10000,
        "gp_exact": 2000,
        "grid": 5,
    },
    "full": {
        "states": 50,
        "scenarios": ["jet-island", "double-gyre", "vortex", "peninsula", "staggered-walls"],
        "repeats": 7,
        "gp_n": 10000,
        "gp_exact": 2000,
        "grid": 6,
    },
}


def _scenario(name: str):
    return (
        generated_scenario(int(name.split("-")[1])) if name.startswith("generated-") else make_scenario(name)
    )


def default_plan_rows(size: dict) -> list[dict]:
    """Default plan (global search) vs the 0.2.0 default (five preset bulges), CPU-time medians."""
    rows = []
    for name in [*size["scenarios"], "generated-7"]:
        scn = _scenario(name)
        eps = scn.extra.get("epsilon", 60.0)
        ours_cfg = PlannerConfig(n_states=size["states"], horizon=scn.horizon, epsilon=eps, **BASE)
        peer_cfg = PlannerConfig(
            n_states=size["states"], horizon=scn.horizon, epsilon=eps, init="bulges", **BASE
        )
        start, goal = scn.pairs[0]
        ours_planner, peer_planner = GPMP2Planner(ours_cfg), GPMP2Planner(peer_cfg)
        timings = compare_calls(
            {
                "ours": lambda p=ours_planner, s=scn, a=start, b=goal: p.plan(a, b, s.env, s.current),
                "peer": lambda p=peer_planner, s=scn, a=start, b=goal: p.plan(a, b, s.env, s.current),
            },
            warmup=1,
            repeats=size["repeats"],
        )
        ours_traj = ours_planner.plan(start, goal, scn.env, scn.current)
        peer_traj = peer_planner.plan(start, goal, scn.env, scn.current)
        ours_s, peer_s = timings["ours"].median_s, timings["peer"].median_s
        rows.append(
            ratio_row(
                f"default plan time {name} ({size['states']} states, 3 interp)",
                ours_s,
                peer_s,
                unit="s (CPU)",
                goal="<= 0.3 s",
                higher_is_better=False,
                met=bool(ours_s <= 0.3),
                peer_name="5 preset bulges (the 0.2.0 initialisation) through the same solver pipeline",
                ours_feasible=ours_traj.ok,
                peer_feasible=peer_traj.ok,
                ours_cost=ours_traj.cost,
                peer_cost=peer_traj.cost,
                runs_s=timings["ours"].times_s,
            )
        )
    return rows


def _gyre_observations(n: int, rng: np.random.Generator):
    gyre = DoubleGyre(0.8, 2000.0, 0.25, 3600.0)
    xyt = np.column_stack([rng.uniform(0, 4000, n), rng.uniform(0, 2000, n), rng.uniform(0, 3600, n)])
    return gyre, xyt, gyre.velocity(xyt[:, :2], xyt[:, 2])[0] + 0.05 * rng.normal(size=(n, 2))


def gp_rows(size: dict) -> list[dict]:
    """Sparse GP fit time on ``gp_n`` observations; sparse vs exact prediction error on ``gp_exact``."""
    rng = np.random.default_rng(0)
    hyper = GPHyperparameters(500.0, 500.0, 1800.0, 0.5, 0.1)
    _, xyt, vel = _gyre_observations(size["gp_n"], rng)
    fit = time_call(
        lambda: SparseSpatioTemporalGP(hyper, accuracy="balanced").fit(xyt, vel), warmup=0, repeats=1
    )
    rows = [
        ratio_row(
            f"sparse GP fit {size['gp_n']} observations (balanced, 300 inducing)",
            fit.median_s,
            None,
            unit="s (CPU)",
            goal="<= 10 s",
            higher_is_better=False,
            met=bool(fit.median_s <= 10.0),
        )
    ]
    gyre, xyt, vel = _gyre_observations(size["gp_exact"], rng)
    sparse = SparseSpatioTemporalGP(hyper, accuracy="balanced").fit(xyt, vel)
    tic = time.process_time()
    exact = SpatioTemporalGP(sparse.hyper).fit(xyt, vel, optimize_hyper=False)
    exact_s = time.process_time() - tic
    q = np.column_stack([rng.uniform(0, 4000, 3000), rng.uniform(0, 2000, 3000), rng.uniform(0, 3600, 3000)])
    truth = gyre.velocity(q[:, :2], q[:, 2])[0]
    m_sparse, _ = sparse.predict(q)
    m_exact, _ = exact.predict(q)
    rmse_sparse = float(np.sqrt(((m_sparse - truth) ** 2).mean()))
    rmse_exact = float(np.sqrt(((m_exact - truth) ** 2).mean()))
    rows.append(
        ratio_row(
            f"current RMSE vs truth, {size['gp_exact']} observations (sparse vs exact GP)",
            rmse_sparse,
            rmse_exact,
            unit="m/s",
            goal="<= 1.25x the exact GP's error",
            higher_is_better=False,
            met=bool(rmse_sparse <= 1.25 * rmse_exact),
            sparse_vs_exact_mean_rmse=float(np.sqrt(((m_sparse - m_exact) ** 2).mean())),
            exact_posterior_s=exact_s,
            hyperparameters=str(sparse.hyper),
        )
    )
    return rows


def energy_rows(size: dict) -> list[dict]:
    """Free arrival time vs fixed time vs grid A* (Zermelo minimum time) at the same speed limit."""
    rows = []
    for name in size["scenarios"][:2]:
        scn = make_scenario(name)
        start, goal = scn.pairs[0]
        speed = scn.water_speed
        cfg = PlannerConfig(n_states=size["states"], horizon=scn.horizon, speed_limit=speed, **BASE)
        planner = GPMP2Planner(cfg)
        astar = GridAStar(scn.env, 50.0, cfg.epsilon, scn.current, speed, np.linspace(0, 2 * scn.horizon, 25))
        zermelo = astar.search(np.array(start), np.array(goal), "time").metrics(scn.env, scn.current)
        fastest = plan_free_arrival(
            planner, start, goal, scn.env, scn.current, "time", n_grid=size["grid"], refine=4
        )
        rows.append(
            ratio_row(
                f"minimum arrival time {name} at {speed} m/s (free-time GPMP2 vs Zermelo A*)",
                fastest.horizon,
                zermelo["travel_time_s"],
                unit="s",
                higher_is_better=False,
                ours_energy=trajectory_energy(fastest.best, scn.current),
                peer_energy=zermelo["energy"],
                ours_max_water_speed=fastest.best.limits["max_water_speed"],
            )
        )
        hotel = 0.2  # m^3/s^3: energy per second of travel (hotel load, unit drag coefficient)
        weighted = plan_free_arrival(
            planner,
            start,
            goal,
            scn.env,
            scn.current,
            "weighted",
            time_weight=hotel,
            n_grid=size["grid"],
            refine=4,
        )
        fixed = planner.plan(start, goal, scn.env, scn.current)
        fixed_total = trajectory_energy(fixed, scn.current) + hotel * scn.horizon
        free_total = trajectory_energy(weighted.best, scn.current) + hotel * weighted.horizon
        astar_total = zermelo["energy"] + hotel * zermelo["travel_time_s"]
        rows.append(
            ratio_row(
                f"energy + hotel load {name} (free-time vs fixed-time GPMP2)",
                free_total,
                fixed_total,
                unit="m^3/s^2",
                higher_is_better=False,
                met=bool(free_total <= fixed_total * 1.001),
                goal="free time <= fixed time",
                free_horizon_s=weighted.horizon,
                fixed_horizon_s=scn.horizon,
                astar_total=astar_total,
                curve=[{k: r[k] for k in ("horizon", "energy", "feasible")} for r in weighted.curve],
            )
        )
        rows.append(
            ratio_row(
                f"energy + hotel load {name} (free-time GPMP2 vs Zermelo A*)",
                free_total,
                astar_total,
                unit="m^3/s^2",
                higher_is_better=False,
            )
        )
    return rows


def paper_effect_row(size: dict) -> dict:
    scn = make_scenario("jet-island")
    ratios = []
    for pair in range(len(scn.pairs)):
        energies = {}
        for mode in ("spatiotemporal", "blind"):
            cfg = PlannerConfig(n_states=size["states"], horizon=scn.horizon, current_mode=mode, **BASE)
            traj = GPMP2Planner(cfg).plan(*scn.pairs[pair], scn.env, scn.current)
            energies[mode] = traj.metrics(scn.env, scn.current)["energy"]
        ratios.append(energies["spatiotemporal"] / energies["blind"])
    return ratio_row(
        "energy current-aware / current-blind, jet-island (worst pair)",
        float(max(ratios)),
        None,
        unit="ratio",
        goal="<= 0.4",
        higher_is_better=False,
        met=bool(max(ratios) <= 0.4),
        per_pair=ratios,
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=pathlib.Path, required=True, help="Output directory for bench.json.")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_true", help="Fewer scenarios and repeats (about 3 min).")
    group.add_argument("--smoke", action="store_true", help="Every section on tiny sizes (< 30 s), for CI.")
    args = parser.parse_args()
    setup_logging("WARNING")
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    size = SIZES[mode]
    environment = bench_environment({"gtsam": None, "shapely": None, "pyproj": None, "scipy": None})
    tic = time.perf_counter()
    rows = [*default_plan_rows(size), *gp_rows(size), *energy_rows(size), paper_effect_row(size)]
    path = write_bench_json(
        args.out / "bench.json",
        package="usv-planner",
        mode=mode,
        environment=environment,
        rows=rows,
        extra={"wall_time_s": time.perf_counter() - tic},
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
