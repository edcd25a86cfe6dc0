"""Grid A* baselines: shortest path (length cost) and current-aware minimum time (Zermelo).

Nodes are the cells of a regular grid over the map (8-connected); nodes closer than
``clearance`` to an obstacle, and edges whose midpoint is, are blocked. With ``cost="time"``
the vehicle keeps a fixed through-water speed ``s``; on an edge of direction ``d`` in current
``c`` its ground speed solves ``|g d - c| = s``, i.e. ``g = c.d + sqrt((c.d)^2 - |c|^2 + s^2)``;
the edge is infeasible when the root is imaginary or ``g <= 0``. Currents are taken at the edge
midpoint at the departure time (time-dependent A*, currents cached on time slices).
"""

from __future__ import annotations

import heapq
import itertools
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from research_systems_core.validation import check_choice, check_positive
from usv_planner.currents import CurrentField, UniformCurrent
from usv_planner.environment import Environment
from usv_planner.metrics import trajectory_metrics

__all__ = ["AStarResult", "GridAStar", "ground_speed"]

_MOVES = [(-1, -1), (-1, 0), (-1, 1), (0, -1), (0, 1), (1, -1), (1, 0), (1, 1)]


def ground_speed(direction: np.ndarray, current: np.ndarray, water_speed: float) -> np.ndarray:
    """Ground speed along unit ``direction`` (M, 2) in ``current`` (M, 2); NaN where infeasible."""
    cd = (direction * current).sum(axis=-1)
    disc = cd**2 - (current**2).sum(axis=-1) + water_speed**2
    with np.errstate(invalid="ignore"):
        g = cd + np.sqrt(disc)
    return np.where((disc >= 0) & (g > 1e-9), g, np.nan)


@dataclass
class AStarResult:
    """Path (node positions), arrival times, total cost, nodes expanded and wall time."""

    positions: np.ndarray
    times: np.ndarray
    cost: float
    expanded: int
    planning_time_s: float
    cost_kind: str
    water_speed: float

    def dense(self, per_edge: int = 4) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Dense ``(times, positions, velocities)`` with constant ground velocity on each edge."""
        ts, ps, vs = [], [], []
        for k in range(len(self.positions) - 1):
            a, b = self.positions[k], self.positions[k + 1]
            t0, t1 = self.times[k], self.times[k + 1]
            vel = (b - a) / max(t1 - t0, 1e-12)
            for j in range(per_edge):
                s = j / per_edge
                ts.append(t0 + s * (t1 - t0))
                ps.append(a + s * (b - a))
                vs.append(vel)
        ts.append(self.times[-1])
        ps.append(self.positions[-1])
        vs.append(vs[-1] if vs else np.zeros(2))
        return np.asarray(ts), np.asarray(ps), np.asarray(vs)

    def metrics(self, env: Environment, current: CurrentField) -> dict[str, Any]:
        out = trajectory_metrics(*self.dense(), env, current)
        out.update(planning_time_s=self.planning_time_s, expanded=self.expanded, model_cost=self.cost)
        return out


class GridAStar:
    """8-connected grid A* over an :class:`Environment` with length or current-aware time cost."""

    def __init__(
        self,
        env: Environment,
        resolution: float,
        clearance: float = 0.0,
        current: CurrentField | None = None,
        water_speed: float = 1.0,
        time_slices: np.ndarray | None = None,
    ) -> None:
        self.env = env
        self.resolution = check_positive("resolution", resolution)
        self.water_speed = check_positive("water_speed", water_speed)
        xmin, xmax, ymin, ymax = env.bounds
        self.xs = np.arange(xmin, xmax + 1e-9, resolution)
        self.ys = np.arange(ymin, ymax + 1e-9, resolution)
        xx, yy = np.meshgrid(self.xs, self.ys)
        self.free = (env.sdf.distance(np.stack([xx.ravel(), yy.ravel()], 1)) >= clearance).reshape(xx.shape)
        self.current = current if current is not None else UniformCurrent()
        self.slices = np.array([0.0]) if time_slices is None else np.asarray(time_slices, dtype=float)
        ny, nx = self.free.shape
        # Per move: edge length, unit direction, free flag, and ground speeds per time slice.
        self._length = {}
        self._speed = {}
        self._edge_free = {}
        for di, dj in _MOVES:
            vec = np.array([dj, di], dtype=float) * resolution
            length = float(np.hypot(*vec))
            mid = np.stack([xx + vec[0] / 2, yy + vec[1] / 2], axis=-1).reshape(-1, 2)
            self._length[(di, dj)] = length
            self._edge_free[(di, dj)] = (env.sdf.distance(mid) >= clearance).reshape(ny, nx)
            direction = np.broadcast_to(vec / length, mid.shape)
            speeds = [
                ground_speed(direction, self.current.velocity(mid, t)[0], water_speed) for t in self.slices
            ]
            self._speed[(di, dj)] = np.stack(speeds).reshape(len(self.slices), ny, nx)
        self.max_ground_speed = float(
            np.nanmax([np.nanmax(s) if np.isfinite(s).any() else 0.0 for s in self._speed.values()])
        )

    def node(self, point: np.ndarray) -> tuple[int, int]:
        j = round((point[0] - self.xs[0]) / self.resolution)
        i = round((point[1] - self.ys[0]) / self.resolution)
        return min(max(i, 0), len(self.ys) - 1), min(max(j, 0), len(self.xs) - 1)

    def position(self, node: tuple[int, int]) -> np.ndarray:
        return np.array([self.xs[node[1]], self.ys[node[0]]])

    def _slice_speed(self, move: tuple[int, int], i: int, j: int, t: float) -> float:
        sp = self._speed[move]
        if len(self.slices) == 1:
            return float(sp[0, i, j])
        k = float(np.interp(t, self.slices, np.arange(len(self.slices))))
        k0 = min(int(k), len(self.slices) - 2)
        f = k - k0
        return float((1 - f) * sp[k0, i, j] + f * sp[k0 + 1, i, j])

    def edge_cost(self, node: tuple[int, int], move: tuple[int, int], t: float, cost: str) -> float:
        """Cost of leaving ``node`` by ``move`` at time ``t`` (inf if blocked or infeasible)."""
        i, j = node
        ni, nj = i + move[0], j + move[1]
        if not (0 <= ni < self.free.shape[0] and 0 <= nj < self.free.shape[1]):
            return math.inf
        if not (self.free[ni, nj] and self._edge_free[move][i, j]):
            return math.inf
        if cost == "length":
            return self._length[move]
        g = self._slice_speed(move, i, j, t)
        return math.inf if not g > 0 else self._length[move] / g

    def search(
        self, start: np.ndarray, goal: np.ndarray, cost: str = "length", t0: float = 0.0
    ) -> AStarResult:
        """A* from ``start`` to ``goal`` (snapped to the grid); ``cost`` is ``length`` or ``time``."""
        check_choice("A* cost", cost, ("length", "time"))
        tic = time.perf_counter()
        s, g = self.node(np.asarray(start, float)), self.node(np.asarray(goal, float))
        for name, nd in (("start", s), ("goal", g)):
            if not self.free[nd]:
                raise ValueError(
                    f"A* {name} node {tuple(self.position(nd).tolist())} is blocked (closer than the clearance to an obstacle)"
                )
        goal_pos = self.position(g)
        speed_bound = self.max_ground_speed if cost == "time" else 1.0

        def heuristic(nd: tuple[int, int]) -> float:
            return float(np.hypot(*(self.position(nd) - goal_pos))) / speed_bound

        best = {s: 0.0}
        arrival = {s: t0}
        parent: dict[tuple[int, int], tuple[int, int] | None] = {s: None}
        heap = [(heuristic(s), 0.0, s)]
        closed: set[tuple[int, int]] = set()
        expanded = 0
        while heap:
            _, gcost, nd = heapq.heappop(heap)
            if nd in closed:
                continue
            closed.add(nd)
            expanded += 1
            if nd == g:
                break
            for move in _MOVES:
                c = self.edge_cost(nd, move, arrival[nd], cost)
                if not math.isfinite(c):
                    continue
                nb = (nd[0] + move[0], nd[1] + move[1])
                new = gcost + c
                if new < best.get(nb, math.inf) - 1e-12:
                    best[nb] = new
                    parent[nb] = nd
                    arrival[nb] = arrival[nd] + (c if cost == "time" else 0.0)
                    heapq.heappush(heap, (new + heuristic(nb), new, nb))
        if g not in closed:
            raise RuntimeError(
                f"A* found no path from {tuple(np.round(start, 1))} to {tuple(np.round(goal, 1))} ({cost} cost)"
            )
        nodes = [g]
        while parent[nodes[-1]] is not None:
            nodes.append(parent[nodes[-1]])  # type: ignore[arg-type]
        nodes.reverse()
        positions = np.array([self.position(nd) for nd in nodes])
        times = self.traverse_times(nodes, t0)
        return AStarResult(
            positions, times, best[g], expanded, time.perf_counter() - tic, cost, self.water_speed
        )

    def traverse_times(self, nodes: list[tuple[int, int]], t0: float = 0.0) -> np.ndarray:
        """Arrival times along a node path at the fixed through-water speed (inf after an infeasible edge)."""
        times = [t0]
        for a, b in itertools.pairwise(nodes):
            c = self.edge_cost(a, (b[0] - a[0], b[1] - a[1]), times[-1], "time")
            times.append(times[-1] + c)
        return np.asarray(times)
