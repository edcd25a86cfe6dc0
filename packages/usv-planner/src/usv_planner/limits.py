"""Vehicle limits and field checks: what the planner validates before and after optimising.

* Before: the current must be finite over the water of the map during the horizon (NaN inside
  the field -> ``ValueError`` naming where and when); with a speed limit, the vehicle must be able
  to hold a course somewhere (limit above the current speed at some water point) and the goal
  must be within reach (``|goal - start| <= (limit + max current) * horizon``).
* After: the returned plan's largest through-water speed (dense GP-interpolated states, against
  the field it planned with) and largest acceleration (the GP mean is a cubic Hermite per
  interval, so its acceleration peaks at an interval end, which is checked exactly) are compared
  with the limits; violations above ``tolerance`` (relative) flag the plan.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from usv_planner.currents import CurrentField
from usv_planner.environment import Environment
from usv_planner.factors import hermite_accelerations

__all__ = ["check_field_on_map", "check_limits", "check_reachable_in_time", "water_samples"]

_SAMPLES_PER_AXIS = 41
_TIME_SLICES = 5


def water_samples(env: Environment) -> np.ndarray:
    """Points of a ``41 x 41`` lattice over the map that lie in water (outside obstacles)."""
    xmin, xmax, ymin, ymax = env.bounds
    xs = np.linspace(xmin, xmax, _SAMPLES_PER_AXIS)
    ys = np.linspace(ymin, ymax, _SAMPLES_PER_AXIS)
    pts = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
    return pts[env.sdf.distance(pts) > 0]


def _speeds(
    env: Environment, current: CurrentField, t0: float, horizon: float
) -> tuple[np.ndarray, np.ndarray]:
    pts = water_samples(env)
    times = np.linspace(t0, t0 + horizon, _TIME_SLICES)
    speeds = []
    for t in times:
        c = current.velocity(pts, t)[0]
        bad = ~np.isfinite(c).all(axis=1)
        if bad.any():
            x, y = pts[np.argmax(bad)]
            raise ValueError(
                f"current field is NaN/inf in open water at ({x:.1f}, {y:.1f}) m, t = {t:g} s "
                f"({int(bad.sum())} of {len(pts)} sampled water points); land must be an obstacle, "
                "and gaps in ocean data must be filled"
            )
        speeds.append(np.linalg.norm(c, axis=1))
    return pts, np.stack(speeds)


def check_field_on_map(
    env: Environment, current: CurrentField, t0: float, horizon: float, speed_limit: float | None
) -> None:
    """Raise ``ValueError`` if the current is not finite over the water, or exceeds the speed limit everywhere."""
    _, speeds = _speeds(env, current, t0, horizon)
    if speed_limit is not None and speeds.size and float(speeds.min()) >= speed_limit:
        raise ValueError(
            f"speed_limit {speed_limit:g} m/s is below the current speed everywhere on the map "
            f"(slowest sampled current {float(speeds.min()):.3g} m/s): the vehicle could hold no course; "
            "raise speed_limit above the current speed"
        )


def check_reachable_in_time(
    distance: float,
    horizon: float,
    env: Environment,
    current: CurrentField,
    t0: float,
    speed_limit: float | None,
) -> None:
    """With a speed limit, raise ``ValueError`` when ``distance`` cannot be covered within ``horizon``."""
    if speed_limit is None:
        return
    _, speeds = _speeds(env, current, t0, horizon)
    fastest = speed_limit + (float(speeds.max()) if speeds.size else 0.0)
    if distance > fastest * horizon:
        raise ValueError(
            f"horizon {horizon:g} s is too short: {distance:.0f} m at most {fastest:.3g} m/s over ground "
            f"(speed_limit {speed_limit:g} m/s plus the strongest current) needs at least "
            f"{distance / fastest:.0f} s"
        )


def check_limits(
    traj: dict[str, np.ndarray],
    current: CurrentField,
    speed_limit: float | None,
    accel_limit: float | None,
    tolerance: float,
) -> dict[str, Any]:
    """Largest through-water speed and acceleration of a trajectory against its limits (relative ``tolerance``)."""
    c, _ = current.velocity(traj["dense_positions"], traj["dense_times"])
    water = np.linalg.norm(traj["dense_velocities"] - c, axis=1)
    t, p, v = traj["times"], traj["positions"], traj["velocities"]
    dts = np.diff(t)[:, None]
    a0, a1 = hermite_accelerations(p[:-1], v[:-1], p[1:], v[1:], dts)
    accel = float(np.sqrt(np.maximum((a0**2).sum(1), (a1**2).sum(1))).max()) if len(dts) else 0.0
    speed_ok = speed_limit is None or float(water.max()) <= speed_limit * (1.0 + tolerance)
    accel_ok = accel_limit is None or accel <= accel_limit * (1.0 + tolerance)
    return {
        "speed_limit": speed_limit,
        "max_water_speed": float(water.max()),
        "accel_limit": accel_limit,
        "max_accel": accel,
        "tolerance": tolerance,
        "within_limits": bool(speed_ok and accel_ok),
        "ok": bool(speed_ok and accel_ok),
    }
