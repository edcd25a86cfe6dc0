"""Benchmark scenarios: map, true current field, start/goal pairs and horizon."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from research_systems_core.registry import Registry
from usv_planner.currents import (
    CurrentField,
    DoubleGyre,
    PeninsulaFlow,
    RankineVortex,
    ShearJet,
    UniformCurrent,
)
from usv_planner.environment import Environment, OccupancyMap

__all__ = ["SCENARIOS", "Scenario", "generated_scenario", "make_scenario"]

SCENARIOS = Registry("scenario")


@dataclass
class Scenario:
    """A planning problem family: several start/goal pairs on one map and current field."""

    name: str
    description: str
    env: Environment
    current: CurrentField
    pairs: list[tuple[tuple[float, float], tuple[float, float]]]
    horizon: float
    water_speed: float
    extra: dict = field(default_factory=dict)


def make_scenario(name: str) -> Scenario:
    """Build a registered scenario by name."""
    return SCENARIOS.create(name)


@SCENARIOS.register("jet-island")
def jet_island() -> Scenario:
    """3 km x 1.5 km; an island of radius 250 m at the centre; an eastward 1 m/s jet 400 m north of it."""
    occ = OccupancyMap.from_shapes(3000.0, 1500.0, 20.0, circles=[(1500.0, 750.0, 250.0)])
    current = ShearJet(speed=1.0, y0=1150.0, width=180.0)
    pairs = [
        ((150.0, 750.0), (2850.0, 750.0)),
        ((150.0, 600.0), (2850.0, 900.0)),
        ((150.0, 900.0), (2850.0, 600.0)),
    ]
    return Scenario("jet-island", jet_island.__doc__ or "", Environment(occ), current, pairs, 3000.0, 1.2)


@SCENARIOS.register("double-gyre")
def double_gyre() -> Scenario:
    """4 km x 2 km time-varying double gyre (peak 0.8 m/s, period 1 h, eps 0.25) with three islands."""
    islands = [(1300.0, 1300.0, 180.0), (2700.0, 700.0, 180.0), (2000.0, 1700.0, 120.0)]
    occ = OccupancyMap.from_shapes(4000.0, 2000.0, 25.0, circles=islands)
    current = DoubleGyre(speed=0.8, length=2000.0, epsilon=0.25, period=3600.0)
    pairs = [
        ((300.0, 300.0), (3700.0, 1700.0)),
        ((300.0, 1700.0), (3700.0, 300.0)),
        ((300.0, 1000.0), (3700.0, 1000.0)),
        ((3700.0, 1000.0), (300.0, 1000.0)),
    ]
    return Scenario("double-gyre", double_gyre.__doc__ or "", Environment(occ), current, pairs, 4000.0, 1.2)


@SCENARIOS.register("peninsula")
def peninsula() -> Scenario:
    """3 km x 1.5 km coast along the south edge with a 400 m headland; 0.6 m/s flow around it."""
    xs = np.linspace(0.0, 3000.0, 61)
    coast = np.concatenate([[[0.0, -50.0]], np.stack([xs, np.full_like(xs, 100.0)], 1), [[3000.0, -50.0]]])
    occ = OccupancyMap.from_shapes(3000.0, 1500.0, 20.0, circles=[(1500.0, 100.0, 400.0)], polygons=[coast])
    current = PeninsulaFlow(speed=0.6, center=(1500.0, 100.0), radius=400.0)
    pairs = [((200.0, 300.0), (2800.0, 300.0)), ((200.0, 700.0), (2800.0, 400.0))]
    return Scenario("peninsula", peninsula.__doc__ or "", Environment(occ), current, pairs, 3000.0, 1.2)


@SCENARIOS.register("vortex")
def vortex() -> Scenario:
    """2 km x 2 km Rankine vortex (0.8 m/s at r = 400 m) with two rocks; crossing the eddy."""
    occ = OccupancyMap.from_shapes(
        2000.0, 2000.0, 20.0, circles=[(1000.0, 1000.0, 120.0), (600.0, 1500.0, 100.0)]
    )
    current = RankineVortex(center=(1000.0, 1000.0), peak_speed=0.8, radius=400.0)
    pairs = [((150.0, 1000.0), (1850.0, 1000.0)), ((1000.0, 150.0), (1000.0, 1850.0))]
    return Scenario("vortex", vortex.__doc__ or "", Environment(occ), current, pairs, 2000.0, 1.2)


@SCENARIOS.register("open-water")
def open_water() -> Scenario:
    """2 km x 1 km without obstacles in a uniform 0.3 m/s northward current (sanity case)."""
    occ = OccupancyMap.from_shapes(2000.0, 1000.0, 20.0)
    return Scenario(
        "open-water",
        open_water.__doc__ or "",
        Environment(occ),
        UniformCurrent(0.0, 0.3),
        [((100.0, 500.0), (1900.0, 500.0))],
        1800.0,
        1.2,
    )


def _wall(x: float, y0: float, y1: float, width: float = 60.0) -> np.ndarray:
    return np.array([[x - width / 2, y0], [x + width / 2, y0], [x + width / 2, y1], [x - width / 2, y1]])


@SCENARIOS.register("staggered-walls")
def staggered_walls() -> Scenario:
    """3 km x 1.6 km; two staggered breakwaters (gap south of the first, north of the second); 0.2 m/s eastward.

    Only the S-shaped homotopy class is open: every preset bulge (an arc to one side) meets a
    wall, so local starts fail where the global search does not."""
    occ = OccupancyMap.from_shapes(
        3000.0, 1600.0, 20.0, polygons=[_wall(1000.0, 450.0, 1700.0), _wall(2000.0, -100.0, 1150.0)]
    )
    return Scenario(
        "staggered-walls",
        staggered_walls.__doc__ or "",
        Environment(occ),
        UniformCurrent(0.2, 0.0),
        [((200.0, 800.0), (2800.0, 800.0))],
        3000.0,
        1.2,
        extra={"epsilon": 40.0},
    )


class _SumField(CurrentField):
    """Sum of two current fields (a background flow plus an eddy)."""

    def __init__(self, a: CurrentField, b: CurrentField) -> None:
        self.a, self.b = a, b

    def velocity(self, points, t=0.0):
        ca, ja = self.a.velocity(points, t)
        cb, jb = self.b.velocity(points, t)
        return ca + cb, ja + jb


def generated_scenario(seed: int = 0) -> Scenario:
    """An unseen problem of the built-in size, drawn with ``seed``: 3 km x 1.5 km, three round islands
    (radius 100-220 m) away from start and goal, a Rankine eddy (0.5-0.9 m/s) on a 0-0.3 m/s drift."""
    rng = np.random.default_rng(seed)
    start, goal = (150.0, float(rng.uniform(400, 1100))), (2850.0, float(rng.uniform(400, 1100)))
    islands: list[tuple[float, float, float]] = []
    while len(islands) < 3:
        c = (float(rng.uniform(600, 2400)), float(rng.uniform(250, 1250)), float(rng.uniform(100, 220)))
        far_from_ends = all(np.hypot(c[0] - p[0], c[1] - p[1]) > c[2] + 300 for p in (start, goal))
        apart = all(np.hypot(c[0] - o[0], c[1] - o[1]) > c[2] + o[2] + 150 for o in islands)
        if far_from_ends and apart:
            islands.append(c)
    eddy = RankineVortex(
        center=(float(rng.uniform(800, 2200)), float(rng.uniform(400, 1100))),
        peak_speed=float(rng.uniform(0.5, 0.9)),
        radius=float(rng.uniform(250, 450)),
    )
    drift = UniformCurrent(float(rng.uniform(-0.3, 0.3)), float(rng.uniform(-0.15, 0.15)))
    occ = OccupancyMap.from_shapes(3000.0, 1500.0, 20.0, circles=islands)
    return Scenario(
        f"generated-{seed}",
        generated_scenario.__doc__ or "",
        Environment(occ),
        _SumField(drift, eddy),
        [(start, goal)],
        3000.0,
        1.2,
        extra={"seed": seed},
    )
