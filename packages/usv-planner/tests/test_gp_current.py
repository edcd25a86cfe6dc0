import numpy as np
import pytest

from usv_planner.currents import DoubleGyre, UniformCurrent
from usv_planner.gp_current import GPHyperparameters, SpatioTemporalGP


def _observe(field, n, rng, noise=0.03):
    xyt = np.column_stack([rng.uniform(0, 2000, n), rng.uniform(0, 1000, n), rng.uniform(0, 3600, n)])
    vel = field.velocity(xyt[:, :2], xyt[:, 2])[0] + noise * rng.normal(size=(n, 2))
    return xyt, vel


def test_gp_recovers_a_known_spatiotemporal_field():
    rng = np.random.default_rng(0)
    gyre = DoubleGyre(0.6, 1000.0, 0.25, 7200.0)
    xyt, vel = _observe(gyre, 250, rng)
    gp = SpatioTemporalGP(GPHyperparameters(400.0, 400.0, 3000.0, 0.5, 0.05)).fit(xyt, vel)
    q = np.column_stack(
        [rng.uniform(100, 1900, 400), rng.uniform(100, 900, 400), rng.uniform(300, 3300, 400)]
    )
    mean, std = gp.predict(q)
    truth = gyre.velocity(q[:, :2], q[:, 2])[0]
    rmse = np.sqrt(((mean - truth) ** 2).mean())
    assert rmse < 0.06, rmse  # peak speed 0.6 m/s
    # calibrated-ish: most errors within 3 sigma
    assert np.mean(np.abs(mean - truth) < 3 * std[:, None] + 0.03) > 0.9
    # the fitted noise level is close to the true 0.03
    assert 0.01 < gp.hyper.noise_std < 0.08


def test_uncertainty_grows_away_from_data_and_grid_cache():
    rng = np.random.default_rng(1)
    xyt = np.column_stack([rng.uniform(0, 500, 40), rng.uniform(0, 500, 40), np.zeros(40)])
    vel = np.tile([0.2, -0.1], (40, 1))
    gp = SpatioTemporalGP(GPHyperparameters(200.0, 200.0, 1000.0, 0.3, 0.02)).fit(
        xyt, vel, optimize_hyper=False
    )
    _, s_near = gp.predict(np.array([[250.0, 250.0, 0.0]]))
    _, s_far = gp.predict(np.array([[3000.0, 3000.0, 0.0]]))
    assert s_near[0] < 0.05 and np.isclose(s_far[0], 0.3, atol=1e-6)
    field = gp.to_field(np.linspace(0, 3000, 31), np.linspace(0, 3000, 31), [0.0, 500.0])
    assert field.has_uncertainty
    s, ds = field.std(np.array([[250.0, 250.0], [2900.0, 2900.0]]), 0.0)
    assert s[0] < s[1] and ds.shape == (2, 2)
    np.testing.assert_allclose(field.velocity(np.array([[250.0, 250.0]]), 0.0)[0][0], [0.2, -0.1], atol=0.02)


def test_residual_gp_on_a_forecast():
    rng = np.random.default_rng(2)
    truth = DoubleGyre(0.6, 1000.0, 0.25, 7200.0)
    forecast = DoubleGyre(0.45, 1000.0, 0.25, 7200.0)  # biased forecast: 25 % too weak
    xyt, vel = _observe(truth, 120, rng)
    plain = SpatioTemporalGP(GPHyperparameters(400.0, 400.0, 3000.0, 0.5, 0.05)).fit(xyt, vel)
    residual = SpatioTemporalGP(GPHyperparameters(400.0, 400.0, 3000.0, 0.2, 0.05), prior=forecast).fit(
        xyt, vel
    )
    q = np.column_stack([rng.uniform(0, 2000, 300), rng.uniform(0, 1000, 300), rng.uniform(0, 3600, 300)])
    t = truth.velocity(q[:, :2], q[:, 2])[0]
    err_fc = np.sqrt(((forecast.velocity(q[:, :2], q[:, 2])[0] - t) ** 2).mean())
    err_res = np.sqrt(((residual.predict(q)[0] - t) ** 2).mean())
    err_plain = np.sqrt(((plain.predict(q)[0] - t) ** 2).mean())
    assert err_res < err_fc and err_res < err_plain


def test_gp_input_validation():
    gp = SpatioTemporalGP()
    with pytest.raises(ValueError, match=r"shape \(M>0, 3\)"):
        gp.fit(np.zeros((3, 2)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="observed velocities contains NaN"):
        gp.fit(np.zeros((2, 3)), np.array([[np.nan, 0.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="signal_std must be > 0"):
        SpatioTemporalGP(GPHyperparameters(signal_std=0.0))
    with pytest.raises(RuntimeError, match="fit"):
        SpatioTemporalGP(prior=UniformCurrent()).predict(np.zeros((1, 3)))


def test_lml_gradient_matches_finite_differences():
    rng = np.random.default_rng(3)
    gyre = DoubleGyre(0.6, 1000.0, 0.25, 7200.0)
    xyt, vel = _observe(gyre, 60, rng)
    gp = SpatioTemporalGP()
    hyper = GPHyperparameters(350.0, 420.0, 2500.0, 0.4, 0.06)
    _, grad = gp._lml_and_grad(xyt, vel, hyper)
    theta = hyper.as_log()
    for k in range(5):
        d = np.zeros(5)
        d[k] = 1e-5
        num = (
            gp._lml(xyt, vel, GPHyperparameters.from_log(theta + d))
            - gp._lml(xyt, vel, GPHyperparameters.from_log(theta - d))
        ) / 2e-5
        assert grad[k] == pytest.approx(num, rel=1e-4, abs=1e-4)


def test_sparse_gp_equals_exact_with_all_points_and_is_close_with_few():
    from usv_planner.gp_current import SparseSpatioTemporalGP

    rng = np.random.default_rng(4)
    gyre = DoubleGyre(0.6, 1000.0, 0.25, 7200.0)
    xyt, vel = _observe(gyre, 300, rng)
    hyper = GPHyperparameters(400.0, 400.0, 3000.0, 0.5, 0.05)
    exact = SpatioTemporalGP(hyper).fit(xyt, vel, optimize_hyper=False)
    q = np.column_stack(
        [rng.uniform(100, 1900, 200), rng.uniform(100, 900, 200), rng.uniform(300, 3300, 200)]
    )
    m_exact, s_exact = exact.predict(q)
    full = SparseSpatioTemporalGP(hyper, n_inducing=300).fit(xyt, vel, optimize_hyper=False)
    m_full, s_full = full.predict(q)
    np.testing.assert_allclose(m_full, m_exact, atol=2e-3)
    np.testing.assert_allclose(s_full, s_exact, atol=2e-3)
    few = SparseSpatioTemporalGP(hyper, n_inducing=80).fit(xyt, vel, optimize_hyper=False)
    m_few, _ = few.predict(q)
    truth = gyre.velocity(q[:, :2], q[:, 2])[0]
    rmse_exact = np.sqrt(((m_exact - truth) ** 2).mean())
    rmse_few = np.sqrt(((m_few - truth) ** 2).mean())
    assert rmse_few < 2.0 * rmse_exact + 0.02
    with pytest.raises(ValueError, match="accuracy must be one of"):
        SparseSpatioTemporalGP(accuracy="best")
    with pytest.raises(ValueError, match="n_inducing must be a positive integer"):
        SparseSpatioTemporalGP(n_inducing=0)


def test_divergence_free_gp_mean_has_no_divergence_and_helps_with_few_observations():
    from usv_planner.gp_current import DivergenceFreeGP

    rng = np.random.default_rng(6)
    gyre = DoubleGyre(0.6, 1000.0, 0.0, 7200.0)  # epsilon 0: steady, exactly divergence-free
    xyt, vel = _observe(gyre, 60, rng, noise=0.02)
    hyper = GPHyperparameters(350.0, 350.0, 1e5, 0.5, 0.02)
    div_free = DivergenceFreeGP(hyper).fit(xyt, vel, optimize_hyper=False)
    plain = SpatioTemporalGP(hyper).fit(xyt, vel, optimize_hyper=False)
    q = np.column_stack([rng.uniform(200, 1800, 300), rng.uniform(200, 800, 300), rng.uniform(0, 3600, 300)])
    h = 1.0
    ex, ey = np.array([h, 0.0, 0.0]), np.array([0.0, h, 0.0])

    def divergence(model):
        du = model.predict(q + ex)[0][:, 0] - model.predict(q - ex)[0][:, 0]
        dv = model.predict(q + ey)[0][:, 1] - model.predict(q - ey)[0][:, 1]
        return (du + dv) / (2 * h)

    assert np.abs(divergence(div_free)).max() < 1e-8
    assert np.abs(divergence(plain)).max() > 1e-5
    truth = gyre.velocity(q[:, :2], q[:, 2])[0]
    rmse = lambda m: np.sqrt(((m.predict(q)[0] - truth) ** 2).mean())  # noqa: E731
    assert rmse(div_free) < rmse(plain)
    # the posterior mean interpolates the observations
    np.testing.assert_allclose(div_free.predict(xyt[:5])[0], vel[:5], atol=0.05)
