import gtsam
import numpy as np
from gtsam.symbol_shorthand import V, X

from usv_planner.gp_interp import interpolate_states, lambda_psi


def test_constant_velocity_motion_is_interpolated_exactly():
    times = np.array([0.0, 2.0, 4.0])
    vel = np.array([[1.0, -0.5]] * 3)
    pos = np.array([[0.0, 0.0], [2.0, -1.0], [4.0, -2.0]])
    t, p, v = interpolate_states(times, pos, vel, 3)
    assert len(t) == 9
    np.testing.assert_allclose(p, t[:, None] * np.array([1.0, -0.5]), atol=1e-12)
    np.testing.assert_allclose(v, np.tile([1.0, -0.5], (9, 1)), atol=1e-12)


def test_lambda_psi_limits():
    lam, psi = lambda_psi(2.0, 0.0)
    np.testing.assert_allclose(lam, np.eye(2))
    lam, psi = lambda_psi(2.0, 1e-9)
    np.testing.assert_allclose(lam, np.eye(2), atol=1e-6)
    np.testing.assert_allclose(psi, 0.0, atol=1e-6)


def test_matches_gtsam_wnoa_interpolation():
    dt, tau = 1.5, 0.4
    s0, s1 = gtsam.StateData(X(0), V(0), 0.0), gtsam.StateData(X(1), V(1), dt)
    si = gtsam.StateData(X(9), V(9), tau)
    values = gtsam.Values()
    p0, v0, p1, v1 = np.array([0.0, 1.0]), np.array([1.0, 0.5]), np.array([2.0, 0.0]), np.array([-0.5, 1.0])
    for k, a in ((X(0), p0), (V(0), v0), (X(1), p1), (V(1), v1)):
        values.insert(k, a)
    noise = gtsam.noiseModel.Unit.Create(2)
    inner_p = gtsam.PriorFactorPoint2(X(9), np.zeros(2), noise)
    inner_v = gtsam.PriorFactorPoint2(V(9), np.zeros(2), noise)
    q = np.array([3.0, 3.0])
    gp = gtsam.WnoaInterpFactorPoint2(inner_p, {s0, s1}, {si}, q, True).unwhitenedError(values)
    gv = gtsam.WnoaInterpFactorPoint2(inner_v, {s0, s1}, {si}, q, True).unwhitenedError(values)
    lam, psi = lambda_psi(dt, tau)
    x = lam @ np.stack([p0, v0]) + psi @ np.stack([p1, v1])
    np.testing.assert_allclose(x[0], gp, atol=1e-10)
    np.testing.assert_allclose(x[1], gv, atol=1e-10)
