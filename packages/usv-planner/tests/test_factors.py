import gtsam
import numpy as np
import pytest
from gtsam.symbol_shorthand import V, X

from usv_planner.currents import DoubleGyre, GriddedField
from usv_planner.environment import OccupancyMap, PlanarSDF, signed_distance_field
from usv_planner.factors import (
    checked_custom_factor,
    current_energy_error,
    gp_prior_covariance,
    gp_prior_error,
    numerical_jacobian,
    obstacle_hinge_error,
    segment_error,
)


def _fd_check(fn, xs, atol=1e-6):
    """Compare every analytic Jacobian block of ``fn`` with central differences."""
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


@pytest.fixture
def sdf():
    occ = OccupancyMap.from_shapes(10.0, 6.0, 0.25, circles=[(5.0, 3.0, 1.0)])
    return PlanarSDF(signed_distance_field(occ.occupied, 0.25), occ.origin, 0.25)


def test_obstacle_hinge_value_and_jacobian(sdf):
    fn = obstacle_hinge_error(sdf.distance_and_gradient, epsilon=0.8)
    far = fn([np.array([1.0, 1.0])])
    assert far[0][0] == 0.0 and np.all(far[1][0] == 0)
    p = np.array([5.0, 4.35])  # ~0.35 m outside the circle: hinge 0.8 - d
    err = _fd_check(fn, [p + np.array([0.013, 0.0])])
    d = sdf.distance(p + np.array([0.013, 0.0]))[0]
    assert np.isclose(err[0], 0.8 - d) and err[0] > 0


@pytest.mark.parametrize("with_std", [False, True])
def test_current_energy_residual_and_jacobians(with_std):
    gyre = DoubleGyre(0.8, 3.0, 0.25, 5.0)
    t = 1.7
    x, y = np.linspace(0, 6, 31), np.linspace(0, 3, 16)
    xx, yy = np.meshgrid(x, y)
    std_grid = GriddedField(
        x, y, np.zeros_like(xx), np.zeros_like(xx), std=0.1 + 0.05 * np.sin(xx) * np.cos(yy)
    )
    std = std_grid.std if with_std else None
    kappa = 1.5
    fn = current_energy_error(gyre.velocity, t, std, kappa)
    p, v = np.array([1.37, 2.11]), np.array([0.4, -0.9])
    err = _fd_check(fn, [p, v], atol=2e-6)
    u = v - gyre((1.37, 2.11), t)[0]
    s = std_grid.std(p[None], t)[0][0] if with_std else 0.0
    assert np.isclose(err @ err, (u @ u + 2 * kappa * s**2) ** 1.5)


def test_native_and_custom_gp_prior_give_the_same_error():
    dt, qc = 0.7, 2.5
    s0, s1 = gtsam.StateData(X(0), V(0), 0.0), gtsam.StateData(X(1), V(1), dt)
    native = gtsam.WnoaMotionFactorPoint2(s0, s1, np.array([qc, qc]))
    noise = gtsam.noiseModel.Gaussian.Covariance(gp_prior_covariance(dt, qc))
    custom = checked_custom_factor(noise, [X(0), V(0), X(1), V(1)], gp_prior_error(dt), 4)
    rng = np.random.default_rng(3)
    for _ in range(5):
        values = gtsam.Values()
        for key in (X(0), V(0), X(1), V(1)):
            values.insert(key, rng.normal(size=2))
        np.testing.assert_allclose(custom.unwhitenedError(values), native.unwhitenedError(values), atol=1e-12)
        assert np.isclose(custom.error(values), native.error(values), rtol=1e-10)
        np.testing.assert_allclose(
            custom.linearize(values).jacobian()[0], native.linearize(values).jacobian()[0], atol=1e-9
        )
    xs = [rng.normal(size=2) for _ in range(4)]
    _fd_check(gp_prior_error(dt), xs)


def test_checked_custom_factor_raises_instead_of_crashing():
    values = gtsam.Values()
    values.insert(X(0), np.zeros(2))
    noise = gtsam.noiseModel.Unit.Create(2)
    wrong_shape = checked_custom_factor(noise, [X(0)], lambda xs: (xs[0], [np.eye(3)]), 2)
    with pytest.raises(ValueError, match=r"Jacobian 0 has shape \(3, 3\), expected \(2, 2\)"):
        wrong_shape.linearize(values)
    missing = checked_custom_factor(noise, [X(0)], lambda xs: (xs[0], []), 2)
    with pytest.raises(ValueError, match="returned 0 Jacobians for 1 keys"):
        missing.linearize(values)
    bad_error = checked_custom_factor(noise, [X(0)], lambda xs: (np.zeros(3), [np.eye(2)]), 2)
    with pytest.raises(ValueError, match=r"error has shape \(3,\)"):
        bad_error.error(values)
    nan = checked_custom_factor(noise, [X(0)], lambda xs: (np.full(2, np.nan), [np.eye(2)]), 2)
    with pytest.raises(ValueError, match="not finite"):
        nan.error(values)
    with pytest.raises(ValueError, match="noise model dimension"):
        checked_custom_factor(noise, [X(0)], lambda xs: (xs[0], [np.eye(2)]), 3)


def test_segment_factor_matches_native_interpolated_factors(sdf):
    """The batched interval factor equals per-point factors wrapped in WnoaInterpFactorPoint2."""
    gyre = DoubleGyre(0.5, 5.0, 0.25, 8.0)
    dt, eps, sig, lam, q = 0.5, 1.2, 0.05, 3.0, np.array([2.0, 2.0])
    n_int, n_interp = 2, 3
    h = dt / (n_interp + 1)
    taus = h * np.arange(n_interp + 1)
    weights = lam * np.full((n_int, len(taus)), h)
    fn = segment_error(
        sdf.distance_and_gradient, eps, sig, dt, 0.0, taus, weights, gyre.velocity, None, 1.0, n_int
    )
    rng = np.random.default_rng(5)
    xs = [
        np.array([3.2, 4.3]),
        np.array([1.0, 0.2]),
        np.array([3.8, 4.4]),
        np.array([1.1, -0.3]),
        np.array([4.3, 4.1]),
        np.array([0.9, -0.4]),
    ]
    err, _ = fn(xs)
    # The same model from native wrappers around per-point factors.
    states = [gtsam.StateData(X(i), V(i), i * dt) for i in range(n_int + 1)]
    values = gtsam.Values()
    for i in range(n_int + 1):
        values.insert(X(i), xs[2 * i])
        values.insert(V(i), xs[2 * i + 1])
    obs_noise = gtsam.noiseModel.Isotropic.Sigma(1, sig)
    hinge = obstacle_hinge_error(sdf.distance_and_gradient, eps)
    total = 0.0
    for i in range(n_int):
        for j, tau in enumerate(taus):
            t = i * dt + tau
            cur_noise = gtsam.noiseModel.Isotropic.Sigma(3, 1.0 / np.sqrt(lam * h))
            cur = current_energy_error(gyre.velocity, t, None, 1.0)
            if j == 0:
                total += checked_custom_factor(obs_noise, [X(i)], hinge, 1).error(values)
                total += checked_custom_factor(cur_noise, [X(i), V(i)], cur, 3).error(values)
                continue
            interp = gtsam.StateData(gtsam.symbol("a", 10 * i + j), gtsam.symbol("b", 10 * i + j), t)
            inner_o = checked_custom_factor(obs_noise, [interp.pose], hinge, 1)
            inner_c = checked_custom_factor(cur_noise, [interp.pose, interp.velocity], cur, 3)
            for inner in (inner_o, inner_c):
                total += gtsam.WnoaInterpFactorPoint2(
                    inner, {states[i], states[i + 1]}, {interp}, q, True
                ).error(values)
    assert total > 1.0  # the obstacle is active for some points
    assert np.isclose(0.5 * err @ err, total, rtol=1e-9)
    _fd_check(fn, xs, atol=5e-5)
    del rng
