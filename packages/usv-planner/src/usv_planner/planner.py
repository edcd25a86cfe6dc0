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

import dataclasses
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
    SegmentEvaluator,
    checked_custom_factor,
    current_energy_error,
    obstacle_hinge_error,
)
from usv_planner.global_search import homotopy_paths, resample_polyline
from usv_planner.gp_interp import interpolate_states
from usv_planner.limits import check_field_on_map, check_limits, check_reachable_in_time
from usv_planner.metrics import trajectory_metrics, trapezoid

__all__ = [
    "CURRENT_MODES",
    "INITS",
    "SOLVERS",
    "GPMP2Planner",
    "PlannerConfig",
    "Trajectory",
    "check_positive_finite",
]

log = logging.getLogger(__name__)

SOLVERS = ("lm", "gn", "dogleg")
INTERP_BACKENDS = ("batched", "native")
CURRENT_MODES = ("spatiotemporal", "frozen", "blind")
INITS = ("global", "bulges", "both")


def _pkey(i: int) -> int:
    return gtsam.symbol("x", i)


def _vkey(i: int) -> int:
    return gtsam.symbol("v", i)


def _ipkey(i: int) -> int:
    return gtsam.symbol("a", i)


def _ivkey(i: int) -> int:
    return gtsam.symbol("b", i)


def check_positive_finite(name: str, value: Any, strict: bool = True) -> float:
    """A finite number ``> 0`` (``>= 0`` unless strict); ValueError/TypeError naming ``name`` otherwise."""
    value = check_positive(name, value, strict=strict)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return value


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
    init: str = "global"
    max_classes: int = 3
    speed_limit: float | None = None
    accel_limit: float | None = None
    limit_sigma: float = 0.003
    limit_tolerance: float = 0.02
    min_clearance: float | None = None
    max_escalations: int = 3
    workers: int = 1
    screen_iterations: int = 5
    coarse_states: int = 13
    relative_tolerance: float = 1e-4

    def validate(self) -> PlannerConfig:
        check_int("n_states", self.n_states, minimum=2)
        check_positive_finite("horizon", self.horizon)
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
        check_choice("init", self.init, INITS)
        check_int("max_classes", self.max_classes, minimum=1)
        for name in ("speed_limit", "accel_limit", "min_clearance"):
            if getattr(self, name) is not None:
                check_positive_finite(name, getattr(self, name))
        for name in ("qc", "epsilon", "energy_weight", "kappa", "obstacle_sigma"):
            check_positive_finite(name, getattr(self, name), strict=name in ("qc", "obstacle_sigma"))
        for name in ("limit_sigma", "endpoint_sigma", "velocity_sigma"):
            check_positive_finite(name, getattr(self, name))
        check_range("limit_tolerance", self.limit_tolerance, 0.0, 1.0)
        check_int("max_escalations", self.max_escalations, minimum=0)
        check_int("workers", self.workers, minimum=1)
        check_int("screen_iterations", self.screen_iterations, minimum=0)
        check_int("coarse_states", self.coarse_states, minimum=0)
        check_range("relative_tolerance", self.relative_tolerance, 0.0, 0.5)
        if self.interp_backend == "native" and (self.speed_limit or self.accel_limit):
            raise ValueError(
                "speed_limit/accel_limit need interp_backend='batched' (the native backend has no limit factors)"
            )
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
    limits: dict[str, Any] = field(default_factory=dict)
    min_clearance_m: float = float("nan")
    escalations: int = 0

    @property
    def ok(self) -> bool:
        return self.converged and self.collision_free and bool(self.limits.get("ok", True))

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
            limits=self.limits,
            escalations=self.escalations,
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
        self,
        scaled: _Scaled,
        start_velocity: np.ndarray | None,
        goal_velocity: np.ndarray | None,
        stiffness: dict[str, float] | None = None,
    ) -> dict[str, gtsam.NonlinearFactorGraph]:
        """Factor graphs by term (prior, obstacle, current, limits) in normalised units.

        ``stiffness`` divides the hinge sigmas (keys ``obstacle``, ``limits``): the escalation
        loop raises it when the returned plan violates a hard clearance or a vehicle limit.
        """
        cfg = self.config
        stiff = {"obstacle": 1.0, "limits": 1.0, **(stiffness or {})}
        obstacle_sigma = cfg.obstacle_sigma / stiff["obstacle"]
        limit_sigma = cfg.limit_sigma / stiff["limits"]
        speed_n = None if cfg.speed_limit is None else cfg.speed_limit * scaled.T / scaled.L
        accel_n = None if cfg.accel_limit is None else cfg.accel_limit * scaled.T**2 / scaled.L
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

        eps_n = max(cfg.epsilon, cfg.min_clearance or 0.0) / scaled.L
        obs_noise = gtsam.noiseModel.Isotropic.Sigma(1, obstacle_sigma)
        use_current = cfg.energy_weight > 0
        std_fn = scaled.std if (scaled.current.has_uncertainty and cfg.kappa > 0) else None
        h = dt / (cfg.n_interp + 1)  # spacing of the evaluation points, normalised time

        def current_noise(weight: float) -> gtsam.noiseModel.Base:
            return gtsam.noiseModel.Isotropic.Sigma(3, 1.0 / np.sqrt(cfg.energy_weight * weight))

        hinge = obstacle_hinge_error(scaled.sdf, eps_n)
        if cfg.interp_backend == "batched":
            taus = h * np.arange(cfg.n_interp + 1)
            weights = np.zeros((n - 1, len(taus) + 1))  # the extra column is the final state
            weights[:, :-1] = h
            if not cfg.current_at_interp:
                weights[:, 0], weights[:, 1:-1] = dt, 0.0
            weights[0, 0] /= 2
            weights[-1, -1] = h / 2 if cfg.current_at_interp else dt / 2
            evaluator = SegmentEvaluator(
                scaled.sdf,
                eps_n,
                obstacle_sigma,
                dt,
                0.0,
                taus,
                cfg.energy_weight * weights,
                scaled.velocity if (use_current or speed_n is not None) else None,
                std_fn,
                cfg.kappa,
                n - 1,
                energy=use_current,
                speed_limit=speed_n,
                speed_sigma=limit_sigma,
                accel_limit=accel_n,
                accel_sigma=limit_sigma,
                include_end=True,
            )
            seen: dict[str, gtsam.Values] = {}
            all_keys = [(_pkey(i), _vkey(i)) for i in range(n)]

            def remember(values: gtsam.Values) -> None:
                seen["values"] = values

            def read_all() -> np.ndarray:
                v = seen["values"]
                return np.array([[v.atPoint2(pk), v.atPoint2(vk)] for pk, vk in all_keys])

            evaluator.bind(read_all)
            for i0 in range(0, n - 1, cfg.batch_intervals):
                k_int = min(cfg.batch_intervals, n - 1 - i0)
                fn = evaluator.block_fn(i0, k_int)
                keys = [k for i in range(i0, i0 + k_int + 1) for k in (_pkey(i), _vkey(i))]
                dim = evaluator.rows * k_int
                graphs["obstacle+current (batched)"].add(
                    checked_custom_factor(gtsam.noiseModel.Unit.Create(dim), keys, fn, dim, before=remember)
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

    def _optimizer(self, graph: gtsam.NonlinearFactorGraph, init: gtsam.Values) -> gtsam.NonlinearOptimizer:
        cfg = self.config
        kinds = {
            "lm": (gtsam.LevenbergMarquardtParams, gtsam.LevenbergMarquardtOptimizer),
            "gn": (gtsam.GaussNewtonParams, gtsam.GaussNewtonOptimizer),
            "dogleg": (gtsam.DoglegParams, gtsam.DoglegOptimizer),
        }
        params_cls, optimizer_cls = kinds[cfg.solver]
        params = params_cls()
        params.setMaxIterations(cfg.max_iterations)
        params.setRelativeErrorTol(cfg.relative_tolerance)
        params.setAbsoluteErrorTol(1e-7)
        return optimizer_cls(graph, init, params)

    def _iterate(self, optimizer: gtsam.NonlinearOptimizer, budget: int) -> tuple[int, bool]:
        """Run up to ``budget`` iterations; returns (iterations run, converged) by gtsam's criteria."""
        cfg = self.config
        done = 0
        for _ in range(budget):
            before = optimizer.error()
            optimizer.iterate()
            done += 1
            after = optimizer.error()
            if not np.isfinite(after):
                return done, False
            decrease = before - after
            if after <= 1e-12 or abs(decrease) <= 1e-7 or abs(decrease) <= cfg.relative_tolerance * before:
                return done, True
        return done, False

    def _optimize(
        self, graph: gtsam.NonlinearFactorGraph, init: gtsam.Values
    ) -> tuple[gtsam.Values, int, bool]:
        optimizer = self._optimizer(graph, init)
        iterations, converged = self._iterate(optimizer, self.config.max_iterations)
        return optimizer.values(), iterations, converged

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
        horizon = check_positive_finite("horizon", cfg.horizon if horizon is None else horizon)
        check_finite("t0", t0)
        length = float(np.linalg.norm(goal_p - start_p))
        if length == 0.0:
            raise ValueError(f"start and goal are the same point {tuple(start_p.tolist())}")
        current = current if current is not None else UniformCurrent()
        if cfg.current_mode == "frozen":
            current = FrozenField(current, t0)
        elif cfg.current_mode == "blind":
            current = UniformCurrent()
        for name, vel in (("start_velocity", start_velocity), ("goal_velocity", goal_velocity)):
            if vel is not None and np.asarray(vel, dtype=float).shape != (2,):
                raise ValueError(f"{name} must be a (vx, vy) pair, got {vel!r}")
        check_field_on_map(env, current, t0, horizon, cfg.speed_limit)
        check_reachable_in_time(length, horizon, env, current, t0, cfg.speed_limit)

        # Rotate so the start->goal direction is +x in normalised coordinates.
        direction = (goal_p - start_p) / length
        rot = np.array([[direction[0], -direction[1]], [direction[1], direction[0]]])  # normalised -> world
        scaled = _Scaled(env, current, start_p, length, horizon, t0, rot)
        to_n = lambda v: None if v is None else rot.T @ np.asarray(v, dtype=float)  # noqa: E731
        job = _Job(self, scaled, to_n(start_velocity), to_n(goal_velocity))
        inits = self._initial_values(env, start_p, goal_p, rot, length)
        if 2 <= cfg.coarse_states < cfg.n_states and len(inits) > 1 and cfg.workers == 1:
            solved = self._coarse_to_fine(job, inits)
        else:
            solved = job.solve_all([values for _, values in inits], cfg.workers)
        candidates: list[dict[str, Any]] = []
        best: tuple[tuple[int, float], dict[str, Any]] | None = None
        for (label, _), (result, iterations, converged) in zip(inits, solved, strict=True):
            info = {"init": label, "iterations": iterations, "converged": converged}
            if label.startswith("bulge"):
                info["bulge"] = float(label.split()[1])
            chosen = self._assess(job, result, info)
            candidates.append({k: v for k, v in chosen.items() if k in _CANDIDATE_KEYS})
            rank = (0 if chosen["feasible"] else 1, chosen["cost"])
            if best is None or rank < best[0]:
                best = (rank, chosen)
        assert best is not None
        chosen = self._escalate(job, best[1])
        self._warn_if_flagged(chosen, len(inits))
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
            init_bulge=chosen.get("bulge", float("nan")),
            cost_terms=chosen["terms"],
            candidates=candidates,
            planning_field=current,
            kappa=cfg.kappa if current.has_uncertainty else 0.0,
            limits=chosen["limits"],
            min_clearance_m=chosen["min_clearance_m"],
            escalations=chosen["escalations"],
        )

    def _initial_values(
        self, env: Environment, start: np.ndarray, goal: np.ndarray, rot: np.ndarray, length: float
    ) -> list[tuple[str, gtsam.Values]]:
        """Initial trajectories: shortest paths per homotopy class and/or the preset bulges."""
        cfg = self.config
        inits: list[tuple[str, gtsam.Values]] = []
        if cfg.init in ("global", "both"):
            clearance = max(cfg.epsilon, cfg.min_clearance or 0.0)
            paths = homotopy_paths(env, start, goal, clearance, max_classes=cfg.max_classes)
            if not paths:
                paths = homotopy_paths(env, start, goal, 0.0, max_classes=cfg.max_classes)
                if not paths:
                    raise ValueError(
                        f"goal {tuple(goal.tolist())} is unreachable from start {tuple(start.tolist())}: "
                        "obstacles or the map border block every route"
                    )
            for path in paths:
                points_n = (path.points - start) @ rot / length
                inits.append((f"class {path.sides}", self._initial_from_path(points_n)))
        if cfg.init in ("bulges", "both"):
            inits.extend((f"bulge {b:g}", self._initial(b)) for b in cfg.bulges)
        return inits

    def _coarse_to_fine(
        self, job: _Job, inits: list[tuple[str, gtsam.Values]]
    ) -> list[tuple[gtsam.Values, int, bool]]:
        """Screen and finish on ``coarse_states`` support states (same check density), then refine
        the winner on the full trajectory; the other candidates come back upsampled, unrefined."""
        cfg = self.config
        n_c = cfg.coarse_states
        n_interp_c = max(cfg.n_interp, round((cfg.n_interp + 1) * (cfg.n_states - 1) / (n_c - 1)) - 1)
        coarse = GPMP2Planner(
            dataclasses.replace(cfg, n_states=n_c, n_interp=n_interp_c, coarse_states=0, dense_per_interval=0)
        )
        coarse_job = _Job(coarse, job.scaled, job.start_velocity, job.goal_velocity)
        coarse_inits = [_resample_values(values, cfg.n_states, n_c) for _, values in inits]
        solved = coarse_job.screen_and_finish(coarse_inits, cfg.screen_iterations)
        best = min(
            range(len(solved)), key=lambda i: (not solved[i][2], coarse_job.graph().error(solved[i][0]))
        )
        out = []
        for i, (values, iterations, converged) in enumerate(solved):
            fine = _resample_values(values, n_c, cfg.n_states)
            if i == best:
                fine, more, converged = job.solve(fine)
                iterations += more
            out.append((fine, iterations, converged if i == best else False))
        return out

    def _initial_from_path(self, points_n: np.ndarray) -> gtsam.Values:
        """Support states evenly spaced in arc length along a normalised polyline, velocities by differences."""
        n = self.config.n_states
        positions = resample_polyline(points_n, n)
        velocities = np.gradient(positions, np.linspace(0.0, 1.0, n), axis=0)
        values = gtsam.Values()
        for i in range(n):
            values.insert(_pkey(i), positions[i])
            values.insert(_vkey(i), velocities[i])
        return values

    def _assess(self, job: _Job, result: gtsam.Values, info: dict[str, Any]) -> dict[str, Any]:
        """Extract a solved trajectory and check it: true clearance, collisions, vehicle limits."""
        cfg = self.config
        env, scaled = job.scaled.env, job.scaled
        traj = self._extract(result, scaled, scaled.rot)
        dense = traj["dense_positions"]
        clearance = env.clearance(dense)
        collision_free = bool((clearance > 0).all() and env.inside(dense).all())
        limits = check_limits(traj, scaled.current, cfg.speed_limit, cfg.accel_limit, cfg.limit_tolerance)
        clearance_ok = cfg.min_clearance is None or float(clearance.min()) >= cfg.min_clearance
        limits["min_clearance_required_m"] = cfg.min_clearance
        limits["clearance_ok"] = clearance_ok
        limits["ok"] = limits["within_limits"] and clearance_ok
        graph = job.graph()
        return {
            **traj,
            **info,
            "result": result,
            "cost": float(graph.error(result)),
            "terms": {k: float(g.error(result)) for k, g in job.graphs.items()},
            "collision_free": collision_free,
            "min_clearance_m": float(clearance.min()),
            "limits": limits,
            "feasible": collision_free and limits["within_limits"] and clearance_ok,
            "escalations": 0,
        }

    def _escalate(self, job: _Job, chosen: dict[str, Any]) -> dict[str, Any]:
        """Re-optimise with stiffer hinges while the chosen plan violates a limit or the hard clearance."""
        cfg = self.config
        stiffness = {"obstacle": 1.0, "limits": 1.0}
        for round_ in range(1, cfg.max_escalations + 1):
            if chosen["feasible"] or not (
                cfg.speed_limit or cfg.accel_limit or cfg.min_clearance or not chosen["collision_free"]
            ):
                break
            if not chosen["collision_free"] or not chosen["limits"]["clearance_ok"]:
                stiffness["obstacle"] *= 10.0
            if not chosen["limits"]["within_limits"]:
                stiffness["limits"] *= 10.0
            log.info("plan violates a constraint; re-optimising with hinge stiffness %s", stiffness)
            stiff_job = _Job(self, job.scaled, job.start_velocity, job.goal_velocity, stiffness)
            result, iterations, converged = stiff_job.solve(chosen["result"])
            info = {
                "init": chosen["init"],
                "iterations": chosen["iterations"] + iterations,
                "converged": converged,
            }
            candidate = self._assess(stiff_job, result, info)
            candidate["escalations"] = round_
            if candidate["feasible"] or not chosen["feasible"]:
                chosen = candidate
        return chosen

    def _warn_if_flagged(self, chosen: dict[str, Any], n_inits: int) -> None:
        cfg = self.config
        if not chosen["collision_free"]:
            log.warning(
                "GPMP2 found no collision-free trajectory among %d initialisations; returning the lowest-cost one flagged",
                n_inits,
            )
        elif not chosen["limits"]["ok"]:
            log.warning("the plan violates a vehicle limit or the hard clearance: %s", chosen["limits"])
        elif not chosen["converged"]:
            log.warning(
                "GPMP2 did not converge within %d iterations; returning its best collision-free result",
                cfg.max_iterations,
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


def _resample_values(values: gtsam.Values, n_from: int, n_to: int) -> gtsam.Values:
    """Support states on ``n_to`` even times from ``n_from`` ones by the GP mean (cubic Hermite)."""
    from usv_planner.gp_interp import lambda_psi

    states = np.array([[values.atPoint2(_pkey(i)), values.atPoint2(_vkey(i))] for i in range(n_from)])
    if n_from == n_to:
        out = states
    else:
        dt = 1.0 / (n_from - 1)
        out = np.empty((n_to, 2, 2))
        for j, t in enumerate(np.linspace(0.0, 1.0, n_to)):
            k = min(int(t / dt), n_from - 2)
            lam, psi = lambda_psi(dt, t - k * dt)
            out[j] = lam @ states[k] + psi @ states[k + 1]
    result = gtsam.Values()
    for i in range(n_to):
        result.insert(_pkey(i), out[i, 0])
        result.insert(_vkey(i), out[i, 1])
    return result


_CANDIDATE_KEYS = ("init", "cost", "iterations", "converged", "collision_free", "feasible", "min_clearance_m")
_FORK_JOB: tuple[_Job, list[gtsam.Values]] | None = None


class _Job:
    """One planning problem in normalised units: builds its graph and optimises initial values."""

    def __init__(
        self,
        planner: GPMP2Planner,
        scaled: _Scaled,
        start_velocity: np.ndarray | None,
        goal_velocity: np.ndarray | None,
        stiffness: dict[str, float] | None = None,
    ) -> None:
        self.planner, self.scaled = planner, scaled
        self.start_velocity, self.goal_velocity = start_velocity, goal_velocity
        self.graphs = planner.build_graph(scaled, start_velocity, goal_velocity, stiffness)
        self._graph: gtsam.NonlinearFactorGraph | None = None

    def graph(self) -> gtsam.NonlinearFactorGraph:
        if self._graph is None:
            self._graph = gtsam.NonlinearFactorGraph()
            for g in self.graphs.values():
                self._graph.push_back(g)
        return self._graph

    def solve(self, init: gtsam.Values) -> tuple[gtsam.Values, int, bool]:
        return self.planner._optimize(self.graph(), init)

    def screen_and_finish(
        self, inits: list[gtsam.Values], screen: int
    ) -> list[tuple[gtsam.Values, int, bool]]:
        """Successive halving: ``screen`` iterations from every start, then only the cheapest runs on.

        The others are returned as screened (flagged not converged), so the candidate list still
        shows every homotopy class with its early cost."""
        planner = self.planner
        runs = []
        for init in inits:
            optimizer = planner._optimizer(self.graph(), init)
            done, converged = planner._iterate(optimizer, screen)
            runs.append([optimizer, done, converged])
        best = min(range(len(runs)), key=lambda i: runs[i][0].error())
        optimizer, done, converged = runs[best]
        if not converged:
            more, converged = planner._iterate(optimizer, planner.config.max_iterations - done)
            runs[best][1:] = [done + more, converged]
        return [
            (opt.values(), done, conv if i == best else False) for i, (opt, done, conv) in enumerate(runs)
        ]

    def solve_all(self, inits: list[gtsam.Values], workers: int) -> list[tuple[gtsam.Values, int, bool]]:
        """Optimise every initialisation; with ``workers > 1`` in forked processes (POSIX only)."""
        import multiprocessing as mp

        screen = self.planner.config.screen_iterations
        if workers <= 1 or len(inits) <= 1 or "fork" not in mp.get_all_start_methods():
            if screen > 0 and len(inits) > 1:
                return self.screen_and_finish(inits, screen)
            return [self.solve(init) for init in inits]
        global _FORK_JOB
        _FORK_JOB = (self, inits)
        try:
            with mp.get_context("fork").Pool(min(workers, len(inits))) as pool:
                raw = pool.map(_solve_forked, range(len(inits)))
        finally:
            _FORK_JOB = None
        n = self.planner.config.n_states
        out = []
        for states, iterations, converged in raw:
            values = gtsam.Values()
            for i in range(n):
                values.insert(_pkey(i), states[i, 0])
                values.insert(_vkey(i), states[i, 1])
            out.append((values, iterations, converged))
        return out


def _solve_forked(index: int) -> tuple[np.ndarray, int, bool]:
    """Worker of :meth:`_Job.solve_all`: the job was inherited through fork (gtsam graphs do not pickle)."""
    assert _FORK_JOB is not None
    job, inits = _FORK_JOB
    result, iterations, converged = job.solve(inits[index])
    n = job.planner.config.n_states
    states = np.array([[result.atPoint2(_pkey(i)), result.atPoint2(_vkey(i))] for i in range(n)])
    return states, iterations, converged


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
