"""Benchmarks of usv-planner: planning time, scaling, energy ratio, and grid A* side by side.

Usage: python packages/usv-planner/benchmarks/bench.py --out DIR [--quick]
Writes DIR/bench.json. Peers run in the same process on the same problems: grid A* with length
cost and with Zermelo minimum-time cost (this package's implementation), and current-blind GPMP2.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import pathlib
import statistics
import time

import numpy as np

from research_systems_core.logs import setup_logging
from research_systems_core.metadata import run_metadata
from research_systems_core.results import write_json
from usv_planner.astar import GridAStar
from usv_planner.currents import ShearJet
from usv_planner.environment import Environment, OccupancyMap
from usv_planner.planner import GPMP2Planner, PlannerConfig
from usv_planner.scenarios import make_scenario

log = logging.getLogger("usv_planner.bench")
BASE = {"qc": 4.0, "energy_weight": 20.0, "obstacle_sigma": 0.003}


def _median_time(fn, repeats: int) -> tuple[float, list[float], float]:
    """Median wall time, all wall times, and median CPU time of the process (robust to a loaded machine)."""
    times, cpu = [], []
    for _ in range(repeats):
        tic, cpu_tic = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - tic)
        cpu.append(time.process_time() - cpu_tic)
    return statistics.median(times), times, statistics.median(cpu)


def planning_time(repeats: int) -> dict:
    scn = make_scenario("jet-island")
    out = {}
    for backend in ("batched", "native"):
        cfg = PlannerConfig(
            n_states=50, n_interp=3, horizon=scn.horizon, bulges=(0.0,), interp_backend=backend, **BASE
        )
        planner = GPMP2Planner(cfg)
        med, all_t, cpu = _median_time(lambda p=planner: p.plan(*scn.pairs[0], scn.env, scn.current), repeats)
        out[backend] = {"median_s": med, "median_cpu_s": cpu, "runs_s": all_t}
    cfg = PlannerConfig(n_states=50, n_interp=3, horizon=scn.horizon, **BASE)
    med, _, cpu = _median_time(
        lambda: GPMP2Planner(cfg).plan(*scn.pairs[0], scn.env, scn.current), max(1, repeats // 2)
    )
    out["batched_multistart_5"] = {"median_s": med, "median_cpu_s": cpu}
    out["goal_median_s"] = 0.3
    out["goal_met_wall"] = out["batched"]["median_s"] < 0.3
    out["goal_met_cpu"] = out["batched"]["median_cpu_s"] < 0.3
    out["load_average_1min"] = os.getloadavg()[0]
    return out


def scaling(states: list[int], map_scales: list[float], repeats: int) -> dict:
    scn = make_scenario("jet-island")
    by_states = {}
    for n in states:
        cfg = PlannerConfig(n_states=n, horizon=scn.horizon, bulges=(0.0,), **BASE)
        by_states[n] = _median_time(
            lambda c=cfg: GPMP2Planner(c).plan(*scn.pairs[0], scn.env, scn.current), repeats
        )[0]
    by_map = {}
    for s in map_scales:
        w, h = 3000.0 * s, 1500.0 * s
        tic = time.perf_counter()
        env = Environment(OccupancyMap.from_shapes(w, h, 20.0, circles=[(w / 2, h / 2, 250.0 * s)]))
        sdf_time = time.perf_counter() - tic
        current = ShearJet(1.0, y0=h / 2 + 400.0 * s, width=180.0 * s)
        start, goal = (150.0 * s, h / 2), (w - 150.0 * s, h / 2)
        cfg = PlannerConfig(n_states=50, horizon=3000.0 * s, bulges=(0.0,), **BASE)
        med, _, cpu = _median_time(
            lambda c=cfg, e=env, cu=current, s0=start, g0=goal: GPMP2Planner(c).plan(s0, g0, e, cu), repeats
        )
        by_map[f"{w:.0f}x{h:.0f}m ({env.occupancy.shape[1]}x{env.occupancy.shape[0]} cells)"] = {
            "plan_median_s": med,
            "plan_median_cpu_s": cpu,
            "sdf_build_s": sdf_time,
        }
    return {"plan_median_s_by_states": by_states, "by_map_size": by_map}


def energy_ratio() -> dict:
    scn = make_scenario("jet-island")
    rows = []
    for pair in range(len(scn.pairs)):
        res = {}
        for mode in ("spatiotemporal", "blind"):
            cfg = PlannerConfig(n_states=50, horizon=scn.horizon, current_mode=mode, **BASE)
            traj = GPMP2Planner(cfg).plan(*scn.pairs[pair], scn.env, scn.current)
            res[mode] = traj.metrics(scn.env, scn.current)
        rows.append(
            {
                "pair": pair,
                "energy_aware": res["spatiotemporal"]["energy"],
                "energy_blind": res["blind"]["energy"],
                "ratio": res["spatiotemporal"]["energy"] / res["blind"]["energy"],
                "min_clearance_aware_m": res["spatiotemporal"]["min_clearance_m"],
                "min_clearance_blind_m": res["blind"]["min_clearance_m"],
            }
        )
    eps = PlannerConfig().epsilon
    ratios = [r["ratio"] for r in rows]
    return {
        "pairs": rows,
        "mean_ratio": float(np.mean(ratios)),
        "max_ratio": float(np.max(ratios)),
        "goal_ratio": 0.4,
        "epsilon_m": eps,
        "goal_met": bool(np.max(ratios) <= 0.4 and min(r["min_clearance_aware_m"] for r in rows) >= eps),
    }


def versus_astar(scenarios: list[str]) -> list[dict]:
    rows = []
    for name in scenarios:
        scn = make_scenario(name)
        start, goal = scn.pairs[0]
        cfg = PlannerConfig(n_states=50, horizon=scn.horizon, **BASE)
        traj = GPMP2Planner(cfg).plan(start, goal, scn.env, scn.current)
        m = traj.metrics(scn.env, scn.current)
        rows.append({"scenario": name, "planner": "GPMP2 current-aware", **_pick(m)})
        blind = GPMP2Planner(dataclasses.replace(cfg, current_mode="blind")).plan(
            start, goal, scn.env, scn.current
        )
        rows.append(
            {"scenario": name, "planner": "GPMP2 current-blind", **_pick(blind.metrics(scn.env, scn.current))}
        )
        tic = time.perf_counter()
        astar = GridAStar(
            scn.env, 50.0, cfg.epsilon, scn.current, scn.water_speed, np.linspace(0, 2 * scn.horizon, 25)
        )
        build = time.perf_counter() - tic
        for cost in ("length", "time"):
            try:
                res = astar.search(np.array(start), np.array(goal), cost)
            except RuntimeError as exc:
                rows.append({"scenario": name, "planner": f"A* {cost}", "failed": str(exc)})
                continue
            row = _pick(res.metrics(scn.env, scn.current))
            row["planning_time_s"] = res.planning_time_s + build
            rows.append({"scenario": name, "planner": f"A* {cost}", **row, "grid_build_s": build})
    return rows


def _pick(m: dict) -> dict:
    keys = (
        "planning_time_s",
        "energy",
        "travel_time_s",
        "length_m",
        "min_clearance_m",
        "smoothness",
        "collision_free",
    )
    return {k: m[k] for k in keys if k in m}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=pathlib.Path, required=True, help="Output directory for bench.json.")
    parser.add_argument("--quick", action="store_true", help="Fewer repeats and sizes.")
    args = parser.parse_args()
    setup_logging("WARNING")
    repeats = 3 if args.quick else 7
    tic = time.perf_counter()
    result = {
        "planning_time_50_states_3_interp": planning_time(repeats),
        "scaling": scaling(
            [10, 25, 50] if args.quick else [10, 25, 50, 100, 200],
            [0.5, 1.0] if args.quick else [0.5, 1.0, 2.0, 4.0],
            1 if args.quick else 3,
        ),
        "energy_ratio_jet": energy_ratio(),
        "versus_astar": versus_astar(
            ["jet-island", "double-gyre"]
            if args.quick
            else ["jet-island", "double-gyre", "peninsula", "vortex"]
        ),
        "quick": args.quick,
    }
    result["wall_time_s"] = time.perf_counter() - tic
    result["metadata"] = run_metadata(packages=("usv-planner", "gtsam", "scipy"))
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "bench.json", result)
    print(f"wrote {args.out / 'bench.json'}")


if __name__ == "__main__":
    main()
