import numpy as np
import pytest

from usv_planner.currents import (
    DoubleGyre,
    FrozenField,
    GriddedField,
    PeninsulaFlow,
    RankineVortex,
    ShearJet,
    UniformCurrent,
    sample_to_grid,
)
from usv_planner.factors import numerical_jacobian as fd_jacobian

FIELDS = [
    UniformCurrent(0.3, -0.2),
    ShearJet(1.0, y0=2.0, width=1.5),
    RankineVortex((1.0, 1.0), 0.8, 1.2),
    DoubleGyre(0.7, length=3.0, epsilon=0.25, period=5.0),
    PeninsulaFlow(0.6, (2.0, 0.0), 1.0),
]


@pytest.mark.parametrize("field", FIELDS, ids=lambda f: type(f).__name__)
def test_jacobians_match_finite_differences(field, rng):
    for p in rng.uniform([0.1, 0.3], [5.5, 2.9], size=(12, 2)):
        if isinstance(field, RankineVortex) and abs(np.hypot(*(p - 1.0)) - 1.2) < 1e-3:
            continue
        _, jac = field(p, 1.3)
        num = fd_jacobian(lambda q: field(q, 1.3)[0], p, 1e-6)
        np.testing.assert_allclose(jac, num, atol=1e-6)


def test_analytic_properties():
    # Rankine: peak speed at the core radius, 1/r decay outside.
    vortex = RankineVortex((0.0, 0.0), 0.8, 2.0)
    assert np.isclose(np.linalg.norm(vortex((2.0, 0.0))[0]), 0.8)
    assert np.isclose(np.linalg.norm(vortex((0.0, 4.0))[0]), 0.4)
    np.testing.assert_allclose(vortex((2.0, 0.0))[0], [0.0, 0.8])  # counter-clockwise
    # Double gyre and potential flow are divergence-free.
    for field in (DoubleGyre(1.0, 2.0, 0.3, 4.0), PeninsulaFlow(1.0, (0.0, 0.0), 1.0)):
        pts = np.random.default_rng(1).uniform([-0.0, 1.1], [3.9, 1.9], size=(20, 2))
        _, jac = field.velocity(pts, 0.7)
        np.testing.assert_allclose(jac[:, 0, 0] + jac[:, 1, 1], 0.0, atol=1e-12)
    # Peninsula: flow tangent to the coast and to the headland, free stream far away.
    pen = PeninsulaFlow(0.6, (0.0, 0.0), 1.0)
    assert np.isclose(pen((3.0, 0.0))[0][1], 0.0)
    c = pen((np.cos(1.0), np.sin(1.0)))[0]
    assert np.isclose(c @ [np.cos(1.0), np.sin(1.0)], 0.0, atol=1e-12)
    np.testing.assert_allclose(pen((0.0, 1.0))[0], [1.2, 0.0])  # twice the free stream on top
    np.testing.assert_allclose(pen((1e4, 1e4))[0], [0.6, 0.0], atol=1e-8)
    # Frozen field ignores time.
    gyre = DoubleGyre(1.0, 1.0, 0.25, 10.0)
    frozen = FrozenField(gyre, 2.0)
    np.testing.assert_allclose(frozen((0.5, 0.5), 7.0)[0], gyre((0.5, 0.5), 2.0)[0])


def test_gridded_trilinear_is_exact_for_linear_fields_and_clamped():
    x, y, t = np.linspace(0, 4, 5), np.linspace(0, 2, 3), np.array([0.0, 10.0])
    tt, yy, xx = np.meshgrid(t, y, x, indexing="ij")
    field = GriddedField(x, y, 0.1 * xx + 0.2 * yy + 0.01 * tt, -0.3 * xx, t)
    c, jac = field.velocity(np.array([[1.3, 0.7], [3.9, 1.9]]), 5.0)
    np.testing.assert_allclose(c[:, 0], 0.1 * np.array([1.3, 3.9]) + 0.2 * np.array([0.7, 1.9]) + 0.05)
    np.testing.assert_allclose(jac[0], [[0.1, 0.2], [-0.3, 0.0]])
    c_out, jac_out = field.velocity(np.array([[10.0, 10.0]]), 50.0)
    np.testing.assert_allclose(c_out[0], [0.1 * 4 + 0.2 * 2 + 0.1, -1.2])
    np.testing.assert_allclose(jac_out, 0.0)
    num = fd_jacobian(lambda q: field(q, 3.0)[0], np.array([2.2, 1.4]))
    np.testing.assert_allclose(field((2.2, 1.4), 3.0)[1], num, atol=1e-8)


def test_gridded_rejects_nan_and_bad_shapes():
    u = np.zeros((3, 4))
    u[1, 2] = np.nan
    with pytest.raises(ValueError, match="current field u contains NaN"):
        GriddedField(np.arange(4.0), np.arange(3.0), u, np.zeros((3, 4)))
    with pytest.raises(ValueError, match="do not match"):
        GriddedField(np.arange(5.0), np.arange(3.0), np.zeros((3, 4)), np.zeros((3, 4)))


def test_sample_to_grid_caches_a_field():
    gyre = DoubleGyre(0.5, 1000.0, 0.25, 3600.0)
    grid = sample_to_grid(gyre, np.linspace(0, 2000, 81), np.linspace(0, 1000, 41), np.linspace(0, 3600, 13))
    pts = np.random.default_rng(2).uniform([0, 0], [2000, 1000], size=(50, 2))
    err = np.abs(grid.velocity(pts, 1234.0)[0] - gyre.velocity(pts, 1234.0)[0]).max()
    assert err < 0.02
