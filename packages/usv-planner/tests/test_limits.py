import numpy as np
import pytest

from usv_planner.currents import DoubleGyre, UniformCurrent
from usv_planner.factors import hermite_accelerations, numerical_jacobian, segment_error
from usv_planner.free_time import plan_free_arrival, trajectory_energy
from usv_planner.gp_interp import interpolate_states
from usv_planner.planner import GPMP2Planner, PlannerConfig
from usv_planner.scenarios import make_scenario


def _fd_check(fn, xs, atol):
    err, jacs = fn(xs)
    for k in range(len(xs)):

        def f(xk, k=k):
            ys = [x.copy() for x in xs]
            ys[k] = xk
            return fn(ys)[0]

        np.testing.assert_allclose(
            jacs[k], numerical_jacobian(f, xs[k], 1e-6), atol=atol, err_msg=f"block {k}"
        )
    return err


def test_speed_and_acceleration_hinges_have_finite_difference_jacobians():
    gyre = DoubleGyre(0.5, 5.0, 0.25, 8.0)

    def sdf(p):
        return np.full(len(p), 10.0), np.zeros((len(p), 2))

    taus = 0.25 * np.arange(4) * 0.5
    fn = segment_error(
        sdf,
        0.1,
        0.1,
        0.5,
        0.0,
        taus,
        np.full(4, 0.1),
        gyre.velocity,
        None,
        1.0,
        2,
        speed_limit=0.8,
        speed_sigma=0.05,
        accel_limit=1.5,
        accel_sigma=0.05,
    )
    xs = [
        np.array([3.2, 4.3]),
        np.array([1.0, 0.2]),
        np.array([3.8, 4.4]),
        np.array([1.1, -0.9]),
        np.array([4.3, 4.1]),
        np.array([0.2, -0.4]),
    ]
    err = _fd_check(fn, xs, atol=2e-5)
    rows = err.reshape(2, -1)
    speed = rows[:, : 4 * 5].reshape(2, 4, 5)[:, :, 4]
    accel = rows[:, 4 * 5 :]
    assert (speed > 0).any() and (accel > 0).any()  # both limits are active at this point
    assert (speed >= 0).all() and (accel >= 0).all()


def test_hermite_acceleration_is_the_gp_mean_acceleration():
    times = np.array([0.0, 2.0])
    p = np.array([[0.0, 0.0], [3.0, 1.0]])
    v = np.array([[1.0, 0.5], [2.0, -0.5]])
    t, _, dv = interpolate_states(times, p, v, 199)
    a0, a1 = hermite_accelerations(p[0], v[0], p[1], v[1], 2.0)
    acc = np.gradient(dv, t, axis=0)
    np.testing.assert_allclose(acc[0], a0, atol=2e-2)
    np.testing.assert_allclose(acc[-1], a1, atol=2e-2)
    # linear in time in between, so the norm peaks at an end
    assert np.linalg.norm(acc, axis=1).max() <= max(np.linalg.norm(a0), np.linalg.norm(a1)) + 2e-2


@pytest.fixture(scope="module")
def jet():
    return make_scenario("jet-island")


def test_speed_limited_plan_respects_the_limit(jet):
    base = {"n_states": 20, "horizon": 2400.0, "qc": 4.0, "obstacle_sigma": 0.003}
    free = GPMP2Planner(PlannerConfig(**base)).plan(*jet.pairs[0], jet.env, jet.current)
    free_speed = free.metrics(jet.env, jet.current)["max_water_speed"]
    limit = 0.9 * free_speed  # binding: without the limit the plan needs more
    cfg = PlannerConfig(**base, speed_limit=limit, accel_limit=0.02)
    traj = GPMP2Planner(cfg).plan(*jet.pairs[0], jet.env, jet.current)
    assert traj.ok and traj.limits["within_limits"]
    assert traj.limits["max_water_speed"] <= limit * (1 + cfg.limit_tolerance)
    assert traj.limits["max_accel"] <= 0.02 * (1 + cfg.limit_tolerance)
    # the reported speed is the through-water speed on the dense trajectory
    assert traj.metrics(jet.env, jet.current)["max_water_speed"] == pytest.approx(
        traj.limits["max_water_speed"]
    )


def test_infeasible_limits_are_reported_before_planning(jet):
    cfg = PlannerConfig(n_states=10, horizon=3000.0, speed_limit=0.1)
    with pytest.raises(ValueError, match="speed_limit 0.1 m/s is below the current speed everywhere"):
        GPMP2Planner(cfg).plan((150.0, 750.0), (2850.0, 750.0), jet.env, UniformCurrent(0.5, 0.0))
    cfg = PlannerConfig(n_states=10, horizon=300.0, speed_limit=1.0)
    with pytest.raises(ValueError, match="horizon 300 s is too short"):
        GPMP2Planner(cfg).plan((150.0, 750.0), (2850.0, 750.0), jet.env, jet.current)


def test_free_arrival_time_matches_the_still_water_optimum():
    scn = make_scenario("open-water")
    start, goal = scn.pairs[0]
    distance = 1800.0
    planner = GPMP2Planner(PlannerConfig(n_states=16, horizon=1800.0, speed_limit=1.5, qc=4.0))
    # energy L^3/T^2 plus w T is minimal at T* = (2 L^3 / w)^(1/3)
    w = 0.5
    res = plan_free_arrival(planner, start, goal, scn.env, UniformCurrent(), "weighted", time_weight=w)
    assert res.horizon == pytest.approx((2 * distance**3 / w) ** (1 / 3), rel=0.03)
    assert trajectory_energy(res.best) == pytest.approx(distance**3 / res.horizon**2, rel=0.01)
    horizons = [r["horizon"] for r in res.curve]
    assert horizons == sorted(horizons) and len(horizons) >= 8
    # minimum time at the speed limit: L / s
    res = plan_free_arrival(planner, start, goal, scn.env, UniformCurrent(), "time")
    assert res.horizon == pytest.approx(distance / 1.5, rel=0.02)
    assert res.best.limits["within_limits"]
    with pytest.raises(ValueError, match="unknown objective .fastest."):
        plan_free_arrival(planner, start, goal, scn.env, None, "fastest")
    with pytest.raises(ValueError, match="needs time_weight > 0"):
        plan_free_arrival(planner, start, goal, scn.env, None, "weighted")


def test_global_search_finds_the_class_the_preset_bulges_miss():
    scn = make_scenario("staggered-walls")
    base = {"n_states": 30, "horizon": scn.horizon, "qc": 4.0, "obstacle_sigma": 0.003, "epsilon": 40.0}
    local = GPMP2Planner(PlannerConfig(**base, init="bulges")).plan(*scn.pairs[0], scn.env, scn.current)
    assert not local.collision_free and all(not c["collision_free"] for c in local.candidates)
    best = GPMP2Planner(PlannerConfig(**base)).plan(*scn.pairs[0], scn.env, scn.current)
    assert best.ok and best.min_clearance_m > 0
    # the S-shaped class: south of the first wall, north of the second
    at_first = best.dense_positions[np.argmin(np.abs(best.dense_positions[:, 0] - 1000.0)), 1]
    at_second = best.dense_positions[np.argmin(np.abs(best.dense_positions[:, 0] - 2000.0)), 1]
    assert at_first < 450.0 and at_second > 1150.0


def test_hard_clearance_is_met_or_escalated(jet):
    cfg = PlannerConfig(
        n_states=20, horizon=3000.0, qc=4.0, epsilon=10.0, obstacle_sigma=0.05, min_clearance=80.0
    )
    traj = GPMP2Planner(cfg).plan((150.0, 700.0), (2850.0, 800.0), jet.env, jet.current)
    assert traj.min_clearance_m >= 80.0 and traj.limits["clearance_ok"]
    # the reported clearance is the exact distance to the circle (radius 250 at (1500, 750))
    d = np.hypot(*(traj.dense_positions - [1500.0, 750.0]).T) - 250.0
    assert traj.min_clearance_m == pytest.approx(d.min(), abs=1e-9)


def test_parallel_starts_match_serial_ones():
    scn = make_scenario("vortex")
    base = {"n_states": 16, "horizon": scn.horizon, "qc": 4.0, "obstacle_sigma": 0.003, "coarse_states": 0}
    serial = GPMP2Planner(PlannerConfig(**base, screen_iterations=0)).plan(
        *scn.pairs[0], scn.env, scn.current
    )
    forked = GPMP2Planner(PlannerConfig(**base, workers=2)).plan(*scn.pairs[0], scn.env, scn.current)
    assert len(serial.candidates) == len(forked.candidates) >= 2
    np.testing.assert_allclose(forked.positions, serial.positions, atol=1e-9)
    assert [c["cost"] for c in forked.candidates] == pytest.approx([c["cost"] for c in serial.candidates])


def test_coarse_to_fine_keeps_the_best_class_and_cost():
    scn = make_scenario("double-gyre")
    base = {"n_states": 30, "horizon": scn.horizon, "qc": 4.0, "obstacle_sigma": 0.003}
    full = GPMP2Planner(PlannerConfig(**base, coarse_states=0, screen_iterations=0)).plan(
        *scn.pairs[0], scn.env, scn.current
    )
    fast = GPMP2Planner(PlannerConfig(**base)).plan(*scn.pairs[0], scn.env, scn.current)
    assert fast.ok and full.ok
    assert fast.cost <= 1.05 * min(c["cost"] for c in full.candidates)
