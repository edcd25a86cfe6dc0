import numpy as np
import pytest

from usv_planner.currents import CurrentField, UniformCurrent
from usv_planner.environment import Environment, OccupancyMap
from usv_planner.metrics import trapezoid
from usv_planner.planner import GPMP2Planner, PlannerConfig
from usv_planner.replanning import receding_horizon
from usv_planner.scenarios import make_scenario

FAST = {"n_states": 16, "bulges": (0.0, 0.3, -0.3), "qc": 4.0, "obstacle_sigma": 0.003}


@pytest.fixture(scope="module")
def jet():
    return make_scenario("jet-island")


def test_open_water_plan_is_a_straight_constant_velocity_line():
    env = Environment(OccupancyMap.from_shapes(1000.0, 500.0, 10.0))
    traj = GPMP2Planner(PlannerConfig(n_states=10, horizon=1000.0, energy_weight=0.0, bulges=(0.0,))).plan(
        (100.0, 250.0), (900.0, 250.0), env
    )
    assert traj.ok
    np.testing.assert_allclose(traj.positions[:, 1], 250.0, atol=1e-3)
    np.testing.assert_allclose(traj.velocities, np.tile([0.8, 0.0], (10, 1)), atol=1e-3)
    np.testing.assert_allclose(traj.dense_times[[0, -1]], [0.0, 1000.0])


def test_current_aware_plan_takes_the_jet_side_and_keeps_clearance(jet):
    start, goal = jet.pairs[0]
    results = {}
    for mode in ("spatiotemporal", "blind"):
        cfg = PlannerConfig(horizon=3000.0, current_mode=mode, **FAST)
        traj = GPMP2Planner(cfg).plan(start, goal, jet.env, jet.current)
        m = traj.metrics(jet.env, jet.current)
        assert traj.ok and m["collision_free"]
        assert m["min_clearance_m"] >= 0.9 * cfg.epsilon
        results[mode] = (traj, m)
    aware, blind = results["spatiotemporal"], results["blind"]
    # the model's own energy equals the true energy when planning on the true field
    assert np.isclose(aware[1]["model_energy"], aware[1]["energy"])
    speed = np.linalg.norm(blind[0].dense_velocities, axis=1)
    assert np.isclose(blind[1]["model_energy"], trapezoid(speed**3, blind[0].dense_times))
    assert aware[0].dense_positions[:, 1].max() > 1000.0  # rides the jet north of the island
    assert aware[1]["energy"] < 0.5 * blind[1]["energy"]


def test_batched_and_native_interpolation_backends_agree(jet):
    start, goal = jet.pairs[0]
    trajs = []
    for backend in ("batched", "native"):
        cfg = PlannerConfig(
            horizon=3000.0, interp_backend=backend, n_states=10, bulges=(0.3,), n_interp=2, qc=4.0
        )
        trajs.append(GPMP2Planner(cfg).plan(start, goal, jet.env, jet.current))
    assert np.isclose(trajs[0].cost, trajs[1].cost, rtol=1e-4)
    np.testing.assert_allclose(trajs[0].positions, trajs[1].positions, atol=1.0)


@pytest.mark.parametrize("solver", ["gn", "dogleg"])
def test_other_solvers(jet, solver):
    cfg = PlannerConfig(horizon=3000.0, solver=solver, n_states=12, bulges=(0.3,), qc=4.0)
    traj = GPMP2Planner(cfg).plan(*jet.pairs[0], jet.env, jet.current)
    assert traj.collision_free


def test_bad_inputs_get_clear_errors(jet):
    planner = GPMP2Planner(PlannerConfig(n_states=5))
    with pytest.raises(ValueError, match=r"start \(1500.0, 750.0\) is inside or too close to an obstacle"):
        planner.plan((1500.0, 750.0), (2800.0, 750.0), jet.env, jet.current)
    with pytest.raises(ValueError, match=r"goal .* is outside the map"):
        planner.plan((150.0, 750.0), (5000.0, 750.0), jet.env, jet.current)
    with pytest.raises(ValueError, match=r"horizon must be > 0, got -5"):
        planner.plan((150.0, 750.0), (2800.0, 750.0), jet.env, jet.current, horizon=-5.0)
    with pytest.raises(ValueError, match="horizon must be > 0"):
        PlannerConfig(horizon=0.0).validate()
    with pytest.raises(ValueError, match="n_states must be >= 2, got 1"):
        GPMP2Planner(PlannerConfig(n_states=1))
    with pytest.raises(ValueError, match="unknown solver 'newton'"):
        GPMP2Planner(PlannerConfig(solver="newton"))

    class NanField(CurrentField):
        def velocity(self, points, t=0.0):
            p = np.atleast_2d(points)
            return np.full(p.shape, np.nan), np.zeros((len(p), 2, 2))

    with pytest.raises(ValueError, match="current field is NaN/inf in open water"):
        planner.plan((150.0, 750.0), (2800.0, 750.0), jet.env, NanField())


def test_unreachable_goal_is_flagged_not_silent(caplog):
    occ = OccupancyMap.from_shapes(
        1000.0, 1000.0, 10.0, polygons=[np.array([[480, -10], [520, -10], [520, 1010], [480, 1010]])]
    )
    env = Environment(occ)
    # The global search proves it: no route exists, one clear error.
    cfg = PlannerConfig(n_states=8, horizon=1000.0, epsilon=20.0)
    with pytest.raises(ValueError, match=r"goal \(900.0, 500.0\) is unreachable from start"):
        GPMP2Planner(cfg).plan((100.0, 500.0), (900.0, 500.0), env, UniformCurrent())
    # Local starts only (no global search): the best attempt comes back flagged, with a warning.
    cfg = PlannerConfig(n_states=8, horizon=1000.0, bulges=(0.0, 0.5), epsilon=20.0, init="bulges")
    traj = GPMP2Planner(cfg).plan((100.0, 500.0), (900.0, 500.0), env, UniformCurrent())
    assert not traj.collision_free and not traj.ok
    assert "no collision-free trajectory" in caplog.text


def test_receding_horizon_gathers_observations_and_reaches_the_goal(jet):
    cfg = PlannerConfig(horizon=3000.0, n_states=13, bulges=(0.0, 0.3), qc=4.0)
    res = receding_horizon(
        GPMP2Planner(cfg),
        np.array(jet.pairs[0][0]),
        np.array(jet.pairs[0][1]),
        jet.env,
        jet.current,
        3000.0,
        execute_intervals=4,
        grid_cells=21,
    )
    assert len(res.plans) == 3 and res.observations == 12
    np.testing.assert_allclose(res.positions[-1], jet.pairs[0][1], atol=1.0)
    assert np.isclose(res.times[-1], 3000.0)
    assert np.all(np.diff(res.times) > 0)
    assert res.metrics(jet.env, jet.current)["collision_free"]


@pytest.mark.parametrize("name", ["double-gyre", "peninsula", "vortex"])
def test_planned_paths_keep_clearance_on_the_scenarios(name):
    scn = make_scenario(name)
    cfg = PlannerConfig(horizon=scn.horizon, **FAST)
    traj = GPMP2Planner(cfg).plan(*scn.pairs[0], scn.env, scn.current)
    m = traj.metrics(scn.env, scn.current)
    assert traj.ok and m["collision_free"]
    assert m["min_clearance_m"] >= 0.9 * cfg.epsilon


def test_nan_inside_a_current_field_is_reported(jet):
    class HoleyJet(CurrentField):
        """The jet with NaN in a patch between start and goal (a broken forecast cell)."""

        def velocity(self, points, t=0.0):
            c, j = jet.current.velocity(points, t)
            p = np.atleast_2d(points)
            hole = (np.abs(p[:, 0] - 800.0) < 200.0) & (p[:, 1] > 700.0)
            c[hole] = np.nan
            return c, j

    planner = GPMP2Planner(PlannerConfig(n_states=10, bulges=(0.0,), horizon=3000.0))
    with pytest.raises(ValueError, match=r"current field is NaN/inf in open water at \(675.0, 712.5\) m"):
        planner.plan(*jet.pairs[0], jet.env, HoleyJet())
