"""GPMP2 planner for a USV with the ocean-current energy factor (gtsam, Python).

The trajectory is ``N`` support states ``(p_i, v_i)`` at evenly spaced times over the horizon,
linked by the constant-velocity GP prior. Obstacle hinge factors act on the support states and,
through ``gtsam.WnoaInterpFactorPoint2``, on ``n_interp`` GP-interpolated states per interval;
current-energy factors act on the same points, so together they approximate
``lambda * integral |v - c(p, t)|^3 dt``.

Internally everything is solved in normalised units (length ``L = |goal - start|``, time ``T`` =
the horizon), so the weights in :class:`PlannerConfig` do not depend on the map scale.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import gtsam
import numpy as np

from research_systems_core.validation import (
    check_choice,
    check_finite,
    check_int,
    check_positive,
    check_range,
)
from usv_planner.currents import CurrentField, FrozenField, UniformCurrent
from usv_planner.environment import Environment
from usv_planner.factors import (
    checked_custom_factor,
    current_energy_error,
    obstacle_hinge_error,
    segment_error,
)
from usv_planner.gp_interp import interpolate_states
from usv_planner.metrics import trajectory_metrics, trapezoid

__all__ = ["CURRENT_MODES", "SOLVERS", "GPMP2Planner", "PlannerConfig", "Trajectory"]

log = logging.getLogger(__name__)

SOLVERS = ("lm", "gn", "dogleg")
INTERP_BACKENDS = ("batched", "native")
CURRENT_MODES = ("spatiotemporal", "frozen", "blind")


def _pkey(i: int) -> int:
    return gtsam.symbol("x", i)


def _vkey(i: int) -> int:
    return gtsam.symbol("v", i)


def _ipkey(i: int) -> int:
    return gtsam.symbol("a", i)


def _ivkey(i: int) -> int:
    return gtsam.symbol("b", i)


@dataclass
class PlannerConfig:
    """GPMP2 settings. Lengths in metres, times in seconds, weights in normalised units."""

    n_states: int = 30
    horizon: float = 2600.0
    n_interp: int = 3
    qc: float = 1.0
    epsilon: float = 60.0
    obstacle_sigma: float = 0.01
    energy_weight: float = 20.0
    kappa: float = 1.0
    current_mode: str = "spatiotemporal"
    current_at_interp: bool = True
    interp_backend: str = "batched"
    batch_intervals: int = 8
    solver: str = "lm"
    max_iterations: int = 100
    bulges: tuple[float, ...] = (0.0, 0.25, -0.25, 0.5, -0.5)
    endpoint_sigma: float = 1e-4
    velocity_sigma: float = 3.0
    dense_per_interval: int = 8

    def validate(self) -> PlannerConfig:
        check_int("n_states", self.n_states, minimum=2)
        check_positive("horizon", self.horizon)
        check_int("n_interp", self.n_interp, minimum=0)
        check_positive("qc", self.qc)
        check_positive("epsilon", self.epsilon, strict=False)
        check_positive("obstacle_sigma", self.obstacle_sigma)
        check_positive("energy_weight", self.energy_weight, strict=False)
        check_positive("kappa", self.kappa, strict=False)
        check_choice("current_mode", self.current_mode, CURRENT_MODES)
        check_choice("solver", self.solver, SOLVERS)
        check_choice("interp_backend", self.interp_backend, INTERP_BACKENDS)
        check_int("max_iterations", self.max_iterations, minimum=1)
        check_int("batch_intervals", self.batch_intervals, minimum=1)
        check_int("dense_per_interval", self.dense_per_interval, minimum=0)
        for b in self.bulges:
            check_range("bulge", b, -2.0, 2.0)
        if not self.bulges:
            raise ValueError("bulges must hold at least one initialisation (0.0 is the straight line)")
        return self


@dataclass
class Trajectory:
    """A planned trajectory: support states, dense GP interpolation, flags and diagnostics."""

    times: np.ndarray
    positions: np.ndarray
    velocities: np.ndarray
    dense_times: np.ndarray
    dense_positions: np.ndarray
    dense_velocities: np.ndarray
    converged: bool
    collision_free: bool
    cost: float
    iterations: int
    planning_time_s: float
    init_bulge: float
    cost_terms: dict[str, float] = field(default_factory=dict)
    candidates: list[dict[str, Any]] = field(default_factory=list)
    planning_field: CurrentField | None = field(default=None, repr=False)
    kappa: float = 0.0

    @property
    def ok(self) -> bool:
        return self.converged and self.collision_free

    def metrics(self, env: Environment, current: CurrentField) -> dict[str, Any]:
        """:func:`usv_planner.metrics.trajectory_metrics` on the dense trajectory, plus solver flags."""
        out = trajectory_metrics(self.dense_times, self.dense_positions, self.dense_velocities, env, current)
        if self.planning_field is not None:
            # The planner's own energy model on the field it planned with (mean and uncertainty).
            c, _ = self.planning_field.velocity(self.dense_positions, self.dense_times)
            s, _ = self.planning_field.std(self.dense_positions, self.dense_times)
            u2 = ((self.dense_velocities - c) ** 2).sum(axis=1) + 2.0 * self.kappa * s**2
            out["model_energy"] = trapezoid(u2**1.5, self.dense_times)
        out.update(
            converged=self.converged,
            planner_collision_free=self.collision_free,
            model_cost=self.cost,
            planning_time_s=self.planning_time_s,
            iterations=self.iterations,
        )
        return out


class GPMP2Planner:
    """``GPMP2Planner(config).plan(start, goal, env, current) -> Trajectory``."""

    def __init__(self, config: PlannerConfig | None = None) -> None:
        self.config = (config or PlannerConfig()).validate()

    # ------------------------------------------------------------------ graph
    def build_graph(
        self, scaled: _Scaled, start_velocity: np.ndarray | None, goal_velocity: np.ndarray | None
    ) -> dict[str, gtsam.NonlinearFactorGraph]:
        """Factor graphs by term (prior, obstacle, current) in normalised units."""
        cfg = self.config
        n = cfg.n_states
        dt = 1.0 / (n - 1)
        q = np.full(2, cfg.qc)
        states = [gtsam.StateData(_pkey(i), _vkey(i), i * dt) for i in range(n)]
        names = ["prior", "obstacle", "current"]
        if cfg.interp_backend == "batched":
            names.append("obstacle+current (batched)")
        graphs = {name: gtsam.NonlinearFactorGraph() for name in names}
        prior = graphs["prior"]
        goal_n = np.array([1.0, 0.0])
        endpoint = gtsam.noiseModel.Isotropic.Sigma(2, cfg.endpoint_sigma)
        prior.add(gtsam.PriorFactorPoint2(_pkey(0), np.zeros(2), endpoint))
        prior.add(gtsam.PriorFactorPoint2(_pkey(n - 1), goal_n, endpoint))
        vel_noise = gtsam.noiseModel.Isotropic.Sigma(2, cfg.velocity_sigma)
        vel_tight = gtsam.noiseModel.Isotropic.Sigma(2, 1e-3)
        to_n = scaled.T / scaled.L
        for key, given in ((_vkey(0), start_velocity), (_vkey(n - 1), goal_velocity)):
            if given is None:
                prior.add(gtsam.PriorFactorPoint2(key, goal_n, vel_noise))
            else:
                prior.add(gtsam.PriorFactorPoint2(key, np.asarray(given, dtype=float) * to_n, vel_tight))
        for i in range(n - 1):
            prior.add(gtsam.WnoaMotionFactorPoint2(states[i], states[i + 1], q))

        eps_n = cfg.epsilon / scaled.L
        obs_noise = gtsam.noiseModel.Isotropic.Sigma(1, cfg.obstacle_sigma)
        use_current = cfg.energy_weight > 0
        std_fn = scaled.std if (scaled.current.has_uncertainty and cfg.kappa > 0) else None
        h = dt / (cfg.n_interp + 1)  # spacing of the evaluation points, normalised time

        def current_noise(weight: float) -> gtsam.noiseModel.Base:
            return gtsam.noiseModel.Isotropic.Sigma(3, 1.0 / np.sqrt(cfg.energy_weight * weight))

        hinge = obstacle_hinge_error(scaled.sdf, eps_n)
        if cfg.interp_backend == "batched":
            taus = h * np.arange(cfg.n_interp + 1)
            per = 4 if use_current else 1
            for i0 in range(0, n - 1, cfg.batch_intervals):
                k_int = min(cfg.batch_intervals, n - 1 - i0)
                weights = np.full((k_int, len(taus)), h)
                if not cfg.current_at_interp:
                    weights[:, 0], weights[:, 1:] = dt, 0.0
                if i0 == 0:
                    weights[0, 0] /= 2
                fn = segment_error(
                    scaled.sdf,
                    eps_n,
                    cfg.obstacle_sigma,
                    dt,
                    i0 * dt,
                    taus,
                    cfg.energy_weight * weights,
                    scaled.velocity if use_current else None,
                    std_fn,
                    cfg.kappa,
                    n_intervals=k_int,
                )
                keys = [k for i in range(i0, i0 + k_int + 1) for k in (_pkey(i), _vkey(i))]
                dim = per * len(taus) * k_int
                graphs["obstacle+current (batched)"].add(
                    checked_custom_factor(gtsam.noiseModel.Unit.Create(dim), keys, fn, dim)
                )
            graphs["obstacle"].add(checked_custom_factor(obs_noise, [_pkey(n - 1)], hinge, 1))
            if use_current:
                last_w = h / 2 if cfg.current_at_interp else dt / 2
                fn = current_energy_error(scaled.velocity, 1.0, std_fn, cfg.kappa)
                graphs["current"].add(
                    checked_custom_factor(current_noise(last_w), [_pkey(n - 1), _vkey(n - 1)], fn, 3)
                )
            return graphs
        for i in range(n):
            graphs["obstacle"].add(checked_custom_factor(obs_noise, [_pkey(i)], hinge, 1))
            if use_current:
                weight = h / 2 if i in (0, n - 1) else h
                if not cfg.current_at_interp:
                    weight = dt / 2 if i in (0, n - 1) else dt
                fn = current_energy_error(scaled.velocity, i * dt, std_fn, cfg.kappa)
                graphs["current"].add(
                    checked_custom_factor(current_noise(weight), [_pkey(i), _vkey(i)], fn, 3)
                )
        counter = 0
        for i in range(n - 1):
            borders = {states[i], states[i + 1]}
            for j in range(1, cfg.n_interp + 1):
                tau = i * dt + j * h
                interp = gtsam.StateData(_ipkey(counter), _ivkey(counter), tau)
                inner = checked_custom_factor(obs_noise, [_ipkey(counter)], hinge, 1)
                graphs["obstacle"].add(gtsam.WnoaInterpFactorPoint2(inner, borders, {interp}, q, True))
                if use_current and cfg.current_at_interp:
                    fn = current_energy_error(scaled.velocity, tau, std_fn, cfg.kappa)
                    inner_c = checked_custom_factor(
                        current_noise(h), [_ipkey(counter), _ivkey(counter)], fn, 3
                    )
                    graphs["current"].add(gtsam.WnoaInterpFactorPoint2(inner_c, borders, {interp}, q, True))
                counter += 1
        return graphs

    def _initial(self, bulge: float) -> gtsam.Values:
        n = self.config.n_states
        s = np.linspace(0.0, 1.0, n)
        values = gtsam.Values()
        for i, si in enumerate(s):
            p = np.array([si, bulge * 4.0 * si * (1.0 - si)])
            v = np.array([1.0, bulge * 4.0 * (1.0 - 2.0 * si)])
            values.insert(_pkey(i), p)
            values.insert(_vkey(i), v)
        return values

    def _optimize(
        self, graph: gtsam.NonlinearFactorGraph, init: gtsam.Values
    ) -> tuple[gtsam.Values, int, bool]:
        cfg = self.config
        if cfg.solver == "lm":
            params = gtsam.LevenbergMarquardtParams()
            params.setMaxIterations(cfg.max_iterations)
            params.setRelativeErrorTol(1e-5)
            params.setAbsoluteErrorTol(1e-7)
            optimizer = gtsam.LevenbergMarquardtOptimizer(graph, init, params)
        elif cfg.solver == "gn":
            params = gtsam.GaussNewtonParams()
            params.setMaxIterations(cfg.max_iterations)
            params.setRelativeErrorTol(1e-5)
            params.setAbsoluteErrorTol(1e-7)
            optimizer = gtsam.GaussNewtonOptimizer(graph, init, params)
        else:
            params = gtsam.DoglegParams()
            params.setMaxIterations(cfg.max_iterations)
            params.setRelativeErrorTol(1e-5)
            params.setAbsoluteErrorTol(1e-7)
            optimizer = gtsam.DoglegOptimizer(graph, init, params)
        result = optimizer.optimize()
        iterations = int(optimizer.iterations())
        converged = iterations < cfg.max_iterations and np.isfinite(graph.error(result))
        return result, iterations, bool(converged)

    # ------------------------------------------------------------------ public
    def plan(
        self,
        start: Sequence[float],
        goal: Sequence[float],
        env: Environment,
        current: CurrentField | None = None,
        t0: float = 0.0,
        start_velocity: Sequence[float] | None = None,
        goal_velocity: Sequence[float] | None = None,
        horizon: float | None = None,
    ) -> Trajectory:
        """Plan from ``start`` to ``goal`` over ``horizon`` seconds (config default) starting at time ``t0``."""
        cfg = self.config
        tic = time.perf_counter()
        start_p = env.check_free_point("start", start)
        goal_p = env.check_free_point("goal", goal)
        horizon = check_positive("horizon", cfg.horizon if horizon is None else horizon)
        length = float(np.linalg.norm(goal_p - start_p))
        if length == 0.0:
            raise ValueError(f"start and goal are the same point {tuple(start_p.tolist())}")
        current = current if current is not None else UniformCurrent()
        if cfg.current_mode == "frozen":
            current = FrozenField(current, t0)
        elif cfg.current_mode == "blind":
            current = UniformCurrent()
        probe = np.stack([start_p, goal_p, 0.5 * (start_p + goal_p)])
        check_finite("current field velocity at start/goal", current.velocity(probe, t0)[0])
        for name, vel in (("start_velocity", start_velocity), ("goal_velocity", goal_velocity)):
            if vel is not None and np.asarray(vel, dtype=float).shape != (2,):
                raise ValueError(f"{name} must be a (vx, vy) pair, got {vel!r}")

        # Rotate so the start->goal direction is +x in normalised coordinates.
        direction = (goal_p - start_p) / length
        rot = np.array([[direction[0], -direction[1]], [direction[1], direction[0]]])  # normalised -> world
        scaled = _Scaled(env, current, start_p, length, horizon, t0, rot)
        to_n = lambda v: None if v is None else rot.T @ np.asarray(v, dtype=float)  # noqa: E731
        graphs = self.build_graph(scaled, to_n(start_velocity), to_n(goal_velocity))
        graph = gtsam.NonlinearFactorGraph()
        for g in graphs.values():
            graph.push_back(g)

        candidates: list[dict[str, Any]] = []
        best: tuple[float, dict[str, Any]] | None = None
        for bulge in cfg.bulges:
            result, iterations, converged = self._optimize(graph, self._initial(bulge))
            traj = self._extract(result, scaled, rot)
            dense_free = env.path_is_free(traj["dense_positions"])
            cost = float(graph.error(result))
            info = {
                "bulge": bulge,
                "cost": cost,
                "iterations": iterations,
                "converged": converged,
                "collision_free": dense_free,
            }
            candidates.append(info)
            rank = (0 if dense_free else 1, cost)
            if best is None or rank < best[0]:
                best = (
                    rank,
                    {**traj, **info, "terms": {k: float(g.error(result)) for k, g in graphs.items()}},
                )
        assert best is not None
        chosen = best[1]
        if not chosen["collision_free"]:
            log.warning(
                "GPMP2 found no collision-free trajectory among %d initialisations; returning the lowest-cost one flagged",
                len(cfg.bulges),
            )
        elif not chosen["converged"]:
            log.warning(
                "GPMP2 did not converge within %d iterations; returning its best collision-free result",
                cfg.max_iterations,
            )
        return Trajectory(
            times=chosen["times"],
            positions=chosen["positions"],
            velocities=chosen["velocities"],
            dense_times=chosen["dense_times"],
            dense_positions=chosen["dense_positions"],
            dense_velocities=chosen["dense_velocities"],
            converged=chosen["converged"],
            collision_free=chosen["collision_free"],
            cost=chosen["cost"],
            iterations=chosen["iterations"],
            planning_time_s=time.perf_counter() - tic,
            init_bulge=chosen["bulge"],
            cost_terms=chosen["terms"],
            candidates=candidates,
            planning_field=current,
            kappa=cfg.kappa if current.has_uncertainty else 0.0,
        )

    def _extract(self, result: gtsam.Values, scaled: _Scaled, rot: np.ndarray) -> dict[str, np.ndarray]:
        n = self.config.n_states
        pn = np.array([result.atPoint2(_pkey(i)) for i in range(n)])
        vn = np.array([result.atPoint2(_vkey(i)) for i in range(n)])
        times = scaled.t0 + scaled.T * np.linspace(0.0, 1.0, n)
        positions = scaled.origin + scaled.L * pn @ rot.T
        velocities = (scaled.L / scaled.T) * vn @ rot.T
        dt_, dp, dv = interpolate_states(times, positions, velocities, self.config.dense_per_interval)
        return {
            "times": times,
            "positions": positions,
            "velocities": velocities,
            "dense_times": dt_,
            "dense_positions": dp,
            "dense_velocities": dv,
        }


class _Scaled:
    """Normalised, rotated views of the SDF and current: ``p = origin + L R p_n``, ``t = t0 + T t_n``.

    ``R`` rotates the normalised frame (goal at ``(1, 0)``) into the world frame.
    """

    def __init__(
        self,
        env: Environment,
        current: CurrentField,
        origin: np.ndarray,
        length: float,
        horizon: float,
        t0: float,
        rot: np.ndarray,
    ) -> None:
        self.env, self.current = env, current
        self.origin, self.L, self.T, self.t0, self.rot = origin, length, horizon, t0, rot

    def _world(self, pn: np.ndarray) -> np.ndarray:
        return self.origin + self.L * pn @ self.rot.T

    def sdf(self, pn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d, g = self.env.sdf.distance_and_gradient(self._world(pn))
        return d / self.L, g @ self.rot

    def velocity(self, pn: np.ndarray, tn: float) -> tuple[np.ndarray, np.ndarray]:
        c, j = self.current.velocity(self._world(pn), self.t0 + self.T * tn)
        # c_n = R^T c T / L ;  dc_n / dp_n = R^T J R T
        return (c @ self.rot) * (self.T / self.L), np.einsum("ki,mkl,lj->mij", self.rot, j, self.rot) * self.T

    def std(self, pn: np.ndarray, tn: float) -> tuple[np.ndarray, np.ndarray]:
        s, ds = self.current.std(self._world(pn), self.t0 + self.T * tn)
        return s * (self.T / self.L), (ds @ self.rot) * self.T
