"""Free arrival time: choose the horizon that minimises energy, time, or energy plus a time cost.

GPMP2 solves a fixed-horizon problem; the arrival time is a one-dimensional outer search around
it. The objective of a horizon ``T`` is read from the returned plan (against the field it was
planned with): ``energy`` = ``integral |v - c|^3 dt`` (unit drag coefficient), ``weighted`` =
energy + ``time_weight * T`` (``time_weight`` is a hotel load in the same units, m^3/s^3), and
``time`` = ``T`` itself, where only plans that are collision-free and within the vehicle limits
count (``time`` needs a speed limit; without one, any horizon is feasible). The search evaluates a
geometric grid of horizons (the trade-off curve, returned) and refines around the best grid point
by golden-section search on ``log T`` (bisection on feasibility for ``time``).
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from research_systems_core.validation import check_choice, check_int
from usv_planner.currents import CurrentField, UniformCurrent
from usv_planner.environment import Environment
from usv_planner.limits import water_samples
from usv_planner.metrics import trapezoid
from usv_planner.planner import GPMP2Planner, Trajectory, check_positive_finite

__all__ = ["ARRIVAL_OBJECTIVES", "ArrivalSearch", "plan_free_arrival", "trajectory_energy"]

log = logging.getLogger(__name__)

ARRIVAL_OBJECTIVES = ("energy", "time", "weighted")
_GOLDEN = (math.sqrt(5.0) - 1.0) / 2.0


@dataclass
class ArrivalSearch:
    """The chosen plan, its horizon, and every evaluated horizon (sorted) as the trade-off curve."""

    best: Trajectory
    horizon: float
    objective: str
    curve: list[dict[str, Any]] = field(default_factory=list)
    at_bound: bool = False


def trajectory_energy(traj: Trajectory, current: CurrentField | None = None) -> float:
    """``integral |v - c(p, t)|^3 dt`` of the dense trajectory (the planning field by default)."""
    field_ = current or traj.planning_field or UniformCurrent()
    c, _ = field_.velocity(traj.dense_positions, traj.dense_times)
    speed = np.linalg.norm(traj.dense_velocities - c, axis=1)
    return trapezoid(speed**3, traj.dense_times)


def _default_bounds(
    planner: GPMP2Planner, distance: float, env: Environment, current: CurrentField, t0: float
) -> tuple[float, float]:
    cfg = planner.config
    if cfg.speed_limit is None:
        return 0.25 * cfg.horizon, 4.0 * cfg.horizon
    pts = water_samples(env)
    c_max = float(np.linalg.norm(current.velocity(pts, t0)[0], axis=1).max()) if len(pts) else 0.0
    low = distance / (cfg.speed_limit + c_max)
    return low, max(4.0 * low, 3.0 * distance / cfg.speed_limit)


def plan_free_arrival(
    planner: GPMP2Planner,
    start: Sequence[float],
    goal: Sequence[float],
    env: Environment,
    current: CurrentField | None = None,
    objective: str = "energy",
    time_weight: float = 0.0,
    bounds: tuple[float, float] | None = None,
    n_grid: int = 6,
    refine: int = 6,
    t0: float = 0.0,
) -> ArrivalSearch:
    """Plan with a free arrival time; see the module docstring for the objectives."""
    check_choice("objective", objective, ARRIVAL_OBJECTIVES)
    check_positive_finite("time_weight", time_weight, strict=False)
    check_int("n_grid", n_grid, minimum=2)
    check_int("refine", refine, minimum=0)
    if objective == "time" and planner.config.speed_limit is None:
        raise ValueError("objective='time' needs a speed_limit (without one every horizon is feasible)")
    if objective == "weighted" and time_weight <= 0:
        raise ValueError("objective='weighted' needs time_weight > 0 (energy per second of travel)")
    start_p = env.check_free_point("start", start)
    goal_p = env.check_free_point("goal", goal)
    current = current if current is not None else UniformCurrent()
    distance = float(np.linalg.norm(goal_p - start_p))
    low, high = bounds if bounds is not None else _default_bounds(planner, distance, env, current, t0)
    check_positive_finite("bounds[0]", low)
    check_positive_finite("bounds[1]", high)
    if not high > low:
        raise ValueError(f"bounds must be (low, high) with high > low > 0, got ({low:g}, {high:g})")
    evaluated: dict[float, tuple[dict[str, Any], Trajectory | None]] = {}

    def evaluate(horizon: float) -> dict[str, Any]:
        if horizon in evaluated:
            return evaluated[horizon][0]
        try:
            with _quiet_planner():
                traj = planner.plan(start_p, goal_p, env, current, t0=t0, horizon=horizon)
        except ValueError as error:  # e.g. too short for the speed limit: infeasible, not fatal
            row = {"horizon": horizon, "feasible": False, "energy": math.inf, "reason": str(error)}
            evaluated[horizon] = (row, None)
            return row
        energy = trajectory_energy(traj)
        row = {
            "horizon": horizon,
            "energy": energy,
            "feasible": traj.collision_free and bool(traj.limits.get("ok", True)),
            "max_water_speed": traj.limits.get("max_water_speed"),
            "converged": traj.converged,
        }
        evaluated[horizon] = (row, traj)
        return row

    def score(row: dict[str, Any]) -> float:
        if not row["feasible"]:
            return math.inf
        if objective == "energy":
            return row["energy"]
        if objective == "weighted":
            return row["energy"] + time_weight * row["horizon"]
        return row["horizon"]

    grid = np.geomspace(low, high, n_grid)
    rows = [evaluate(float(h)) for h in grid]
    scores = [score(r) for r in rows]
    if not np.isfinite(scores).any():
        raise ValueError(
            f"no feasible plan for any arrival time in [{low:.0f}, {high:.0f}] s "
            "(collisions or vehicle limits everywhere); widen bounds or relax the limits"
        )
    best_i = int(np.argmin(scores))
    if objective == "time":
        _bisect_feasible(evaluate, grid, best_i, refine)
    else:
        lo = float(grid[max(best_i - 1, 0)])
        hi = float(grid[min(best_i + 1, n_grid - 1)])
        _golden(lambda h: score(evaluate(h)), lo, hi, refine)
    horizon = min(evaluated, key=lambda h: (score(evaluated[h][0]), h))
    row, traj = evaluated[horizon]
    assert traj is not None and math.isfinite(score(row))
    curve = [evaluated[h][0] for h in sorted(evaluated)]
    for r in curve:
        r["objective"] = score(r)
    at_bound = horizon in (float(grid[0]), float(grid[-1]))
    if at_bound and objective != "time":
        log.warning("the best arrival time %.0f s is at the search bound; widen bounds", horizon)
    return ArrivalSearch(traj, horizon, objective, curve, at_bound)


@contextlib.contextmanager
def _quiet_planner():
    """Infeasible horizons are expected while searching: keep the planner's warnings out of the log."""
    planner_log = logging.getLogger("usv_planner.planner")
    level = planner_log.level
    planner_log.setLevel(logging.ERROR)
    try:
        yield
    finally:
        planner_log.setLevel(level)


def _golden(f, lo: float, hi: float, steps: int) -> None:
    """Golden-section search of ``f`` on ``log T`` in ``[lo, hi]`` (results land in the caller's cache)."""
    a, b = math.log(lo), math.log(hi)
    c, d = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
    fc, fd = f(math.exp(c)), f(math.exp(d))
    for _ in range(max(steps - 2, 0)):
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - _GOLDEN * (b - a)
            fc = f(math.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + _GOLDEN * (b - a)
            fd = f(math.exp(d))


def _bisect_feasible(evaluate, grid: np.ndarray, first_feasible: int, steps: int) -> None:
    """Bisect (on ``log T``) between the last infeasible and the first feasible grid horizon."""
    if first_feasible == 0:
        return
    lo, hi = math.log(grid[first_feasible - 1]), math.log(grid[first_feasible])
    for _ in range(steps):
        mid = 0.5 * (lo + hi)
        if evaluate(math.exp(mid))["feasible"]:
            hi = mid
        else:
            lo = mid
