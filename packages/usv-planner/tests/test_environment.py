import numpy as np
import pytest

from usv_planner.environment import Environment, OccupancyMap, PlanarSDF, signed_distance_field
from usv_planner.factors import numerical_jacobian as fd_jacobian


def test_sdf_single_obstacle_cell_is_euclidean_distance():
    occ = np.zeros((9, 11), dtype=bool)
    occ[4, 5] = True
    field = signed_distance_field(occ, cell_size=0.5)
    ii, jj = np.mgrid[0:9, 0:11]
    expected = 0.5 * np.hypot(ii - 4, jj - 5)
    expected[4, 5] = -0.5  # inside: edt(occupied) = 1 cell to the nearest free cell
    np.testing.assert_allclose(field, expected)


def test_sdf_block_inside_is_negative_and_empty_map_is_explicit():
    occ = np.zeros((20, 20), dtype=bool)
    occ[5:15, 5:15] = True
    field = signed_distance_field(occ, 1.0)
    assert field[10, 10] == -5.0  # 5 cells from the nearest free cell
    assert field[10, 0] == 5.0
    empty = signed_distance_field(np.zeros((4, 6), dtype=bool), 2.0)
    assert np.all(empty == empty[0, 0]) and empty[0, 0] > 2.0 * np.hypot(4, 6)


def test_bilinear_lookup_and_gradient():
    # A linear field is reproduced exactly by bilinear interpolation.
    ys, xs = np.mgrid[0:5, 0:6].astype(float)
    sdf = PlanarSDF(2.0 * xs - 3.0 * ys + 1.0, origin=(10.0, -5.0), cell_size=1.0)
    pts = np.array([[10.3, -4.2], [12.75, -2.5], [14.9, -1.1]])
    d, g = sdf.distance_and_gradient(pts)
    np.testing.assert_allclose(d, 2.0 * (pts[:, 0] - 10) - 3.0 * (pts[:, 1] + 5) + 1.0)
    np.testing.assert_allclose(g, np.tile([2.0, -3.0], (3, 1)))


def test_gradient_matches_finite_differences(rng):
    sdf = PlanarSDF(rng.normal(size=(7, 8)), origin=(0.0, 0.0), cell_size=0.7)
    for p in rng.uniform([0.1, 0.1], [4.8, 4.1], size=(10, 2)):
        _, g = sdf.distance_and_gradient(p)
        num = fd_jacobian(lambda q: sdf.distance(q), p, 1e-7)
        np.testing.assert_allclose(g[0], num[0], atol=1e-5)


def test_lookup_clamps_at_borders_without_reading_out_of_bounds():
    field = np.arange(12.0).reshape(3, 4)
    sdf = PlanarSDF(field, (0.0, 0.0), 1.0)
    # exactly on the upper-right corner and beyond it: the corner value, zero gradient outside
    d, g = sdf.distance_and_gradient(np.array([[3.0, 2.0], [10.0, 7.0], [-5.0, -5.0]]))
    np.testing.assert_allclose(d, [11.0, 11.0, 0.0])
    np.testing.assert_allclose(g[1:], 0.0)


def test_shapes_rasterise_and_validation_errors():
    occ = OccupancyMap.from_shapes(
        10.0, 10.0, 0.5, circles=[(5, 5, 1.0)], polygons=[np.array([[0, 0], [2, 0], [2, 2], [0, 2]])]
    )
    env = Environment(occ)
    assert env.sdf.distance(np.array([5.0, 5.0]))[0] < 0
    assert env.sdf.distance(np.array([1.0, 1.0]))[0] < 0
    assert env.sdf.distance(np.array([8.0, 8.0]))[0] > 2.0
    with pytest.raises(ValueError, match="inside or too close"):
        env.check_free_point("start", (5.0, 5.0))
    with pytest.raises(ValueError, match=r"goal \(20.0, 1.0\) is outside the map"):
        env.check_free_point("goal", (20.0, 1.0))
    with pytest.raises(ValueError, match="start contains NaN"):
        env.check_free_point("start", (np.nan, 1.0))
    with pytest.raises(ValueError, match="cell_size must be > 0"):
        OccupancyMap.from_shapes(1.0, 1.0, 0.0)
