"""Receding-horizon planning while a spatiotemporal GP tracks the current from onboard measurements.

Loop: fit the GP to all current observations so far (optionally on top of a forecast), cache
its mean and uncertainty on a grid, plan from the vehicle's state to the goal over the remaining
time, execute the first ``execute_intervals`` support intervals (the vehicle tracks the plan),
measure the true current (plus sensor noise) at the visited support states, and repeat.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from research_systems_core.logs import progress
from research_systems_core.validation import check_int, check_positive
from usv_planner.currents import CurrentField
from usv_planner.environment import Environment
from usv_planner.gp_current import GPHyperparameters, SpatioTemporalGP
from usv_planner.metrics import trajectory_metrics
from usv_planner.planner import GPMP2Planner, Trajectory

__all__ = ["RecedingHorizonResult", "receding_horizon"]

log = logging.getLogger(__name__)


@dataclass
class RecedingHorizonResult:
    """Executed dense trajectory, the plans made, and the observations gathered."""

    times: np.ndarray
    positions: np.ndarray
    velocities: np.ndarray
    plans: list[Trajectory] = field(default_factory=list)
    observations: int = 0
    all_ok: bool = True
    fallbacks: int = 0

    def metrics(self, env: Environment, current: CurrentField) -> dict[str, Any]:
        out = trajectory_metrics(self.times, self.positions, self.velocities, env, current)
        out.update(
            replans=len(self.plans),
            observations=self.observations,
            planner_ok=self.all_ok,
            fallbacks=self.fallbacks,
        )
        out["planning_time_s"] = float(sum(p.planning_time_s for p in self.plans))
        return out


def receding_horizon(
    planner: GPMP2Planner,
    start: np.ndarray,
    goal: np.ndarray,
    env: Environment,
    true_current: CurrentField,
    horizon: float,
    execute_intervals: int = 5,
    sensor_noise: float = 0.03,
    initial_observations: tuple[np.ndarray, np.ndarray] | None = None,
    hyper: GPHyperparameters | None = None,
    prior: CurrentField | None = None,
    grid_cells: int = 41,
    seed: int = 0,
    optimize_hyper: bool = False,
) -> RecedingHorizonResult:
    """Plan, execute part, measure, re-estimate the current, replan until the goal time.

    The GP keeps the given hyperparameters unless ``optimize_hyper`` (fitted once, on the first
    10+ observations: few, collinear onboard samples can give degenerate fits). A replan that
    fails (not converged or colliding) is not executed: the vehicle keeps its previous plan.
    """
    check_positive("horizon", horizon)
    check_int("execute_intervals", execute_intervals, minimum=1)
    check_positive("sensor_noise", sensor_noise, strict=False)
    rng = np.random.default_rng(seed)
    xyt = (
        np.zeros((0, 3)) if initial_observations is None else np.asarray(initial_observations[0], dtype=float)
    )
    vel_obs = (
        np.zeros((0, 2)) if initial_observations is None else np.asarray(initial_observations[1], dtype=float)
    )
    xmin, xmax, ymin, ymax = env.bounds
    gx = np.linspace(xmin, xmax, grid_cells)
    gy = np.linspace(ymin, ymax, max(2, int(grid_cells * (ymax - ymin) / max(xmax - xmin, 1e-9))))
    gp = SpatioTemporalGP(hyper, prior=prior)
    position, velocity, t = np.asarray(start, dtype=float), None, 0.0
    out_t, out_p, out_v = [], [], []
    plans: list[Trajectory] = []
    fitted_once = False
    following: Trajectory | None = None
    k0 = 0
    fallbacks = 0
    n = planner.config.n_states
    bar = progress(desc="receding horizon", total=int(np.ceil((n - 1) / execute_intervals)))
    while horizon - t > 1e-6:
        remaining = horizon - t
        if len(xyt):
            gp.fit(xyt, vel_obs, optimize_hyper=optimize_hyper and not fitted_once and len(xyt) >= 10)
            fitted_once = fitted_once or len(xyt) >= 10
            model = gp.to_field(gx, gy, np.linspace(t, horizon, 4))
        else:
            model = prior
        # Keep the support spacing of the first plan: fewer states for the remaining time.
        n_now = max(2, round((n - 1) * remaining / horizon) + 1)
        step_planner = GPMP2Planner(dataclasses.replace(planner.config, n_states=n_now))
        plan = step_planner.plan(position, goal, env, model, t0=t, start_velocity=velocity, horizon=remaining)
        plans.append(plan)
        if plan.ok or following is None:
            following, k0 = plan, 0
        else:
            # Keep following the previous (valid) plan rather than executing a failed replan.
            log.warning(
                "replan at t = %.0f s failed (converged=%s, collision-free=%s); keeping the previous plan",
                t,
                plan.converged,
                plan.collision_free,
            )
            fallbacks += 1
        path = following
        last = min(k0 + execute_intervals, len(path.times) - 1)
        t_end = path.times[last]
        keep = (path.dense_times >= path.times[k0] - 1e-9) & (path.dense_times <= t_end + 1e-9)
        start_k = 0 if not out_t else 1  # do not repeat the state we start from
        out_t.extend(path.dense_times[keep][start_k:])
        out_p.extend(path.dense_positions[keep][start_k:])
        out_v.extend(path.dense_velocities[keep][start_k:])
        visited = path.positions[k0 + 1 : last + 1]
        times = path.times[k0 + 1 : last + 1]
        measured = true_current.velocity(visited, times)[0] + sensor_noise * rng.normal(size=visited.shape)
        xyt = np.vstack([xyt, np.column_stack([visited, times])])
        vel_obs = np.vstack([vel_obs, measured])
        position, velocity, t = path.positions[last], path.velocities[last], float(t_end)
        k0 = last
        bar.update(1)
        if last == len(path.times) - 1:
            break
    bar.close()
    return RecedingHorizonResult(
        np.asarray(out_t),
        np.asarray(out_p),
        np.asarray(out_v),
        plans,
        len(xyt),
        following is not None and following.ok,
        fallbacks,
    )
