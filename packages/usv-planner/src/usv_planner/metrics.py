"""Path metrics evaluated on a dense timed trajectory against the true current field."""

from __future__ import annotations

from typing import Any

import numpy as np

from usv_planner.currents import CurrentField
from usv_planner.environment import Environment

__all__ = ["trajectory_metrics", "trapezoid"]


def trapezoid(values: np.ndarray, times: np.ndarray) -> float:
    """Trapezoidal integral of ``values`` over ``times``."""
    values, times = np.asarray(values, dtype=float), np.asarray(times, dtype=float)
    if len(times) < 2:
        return 0.0
    return float(np.sum(0.5 * (values[1:] + values[:-1]) * np.diff(times)))


def trajectory_metrics(
    times: np.ndarray, positions: np.ndarray, velocities: np.ndarray, env: Environment, current: CurrentField
) -> dict[str, Any]:
    """Length, clearance, smoothness, energy and time of a dense trajectory.

    * ``energy``: integral of ``|v - c(p, t)|^3 dt`` (drag power of the through-water speed, the
      planner's own energy model with unit drag coefficient), in m^3/s^2.
    * ``smoothness``: integral of ``|dv/dt|^2 dt`` from finite differences of the velocities.
    * ``collision_free``: every dense point inside the map with a positive signed distance.
    * ``min_clearance_m``: the true (exact-geometry) distance to the nearest obstacle.
    """
    times = np.asarray(times, dtype=float)
    positions = np.asarray(positions, dtype=float)
    velocities = np.asarray(velocities, dtype=float)
    seg = np.linalg.norm(np.diff(positions, axis=0), axis=1)
    clearance = env.clearance(positions)
    inside = env.inside(positions)
    c, _ = current.velocity(positions, times)
    through_water = np.linalg.norm(velocities - c, axis=1)
    accel = np.gradient(velocities, times, axis=0) if len(times) > 2 else np.zeros_like(velocities)
    return {
        "length_m": float(seg.sum()),
        "min_clearance_m": float(clearance.min()),
        "collision_free": bool((clearance > 0).all() and inside.all()),
        "smoothness": trapezoid((accel**2).sum(axis=1), times),
        "energy": trapezoid(through_water**3, times),
        "travel_time_s": float(times[-1] - times[0]),
        "mean_water_speed": float(trapezoid(through_water, times) / max(times[-1] - times[0], 1e-12)),
        "max_water_speed": float(through_water.max()),
    }
