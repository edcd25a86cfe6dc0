import numpy as np
import pytest
import shapely

from usv_planner.environment import Environment, OccupancyMap
from usv_planner.geometry import ObstacleShapes


def test_circle_clearance_is_the_true_distance_not_the_cell_centre_one():
    # The case: a path point 34 m from a circle of radius 250 m on a 20 m grid.
    occ = OccupancyMap.from_shapes(3000.0, 1500.0, 20.0, circles=[(1500.0, 750.0, 250.0)])
    exact = Environment(occ)
    edt = Environment(occ, geometry="edt")
    p = np.array([[1500.0 + 284.0 * np.cos(0.3), 750.0 + 284.0 * np.sin(0.3)]])
    assert exact.clearance(p)[0] == pytest.approx(34.0, abs=1e-9)
    # GPMP2's cell-centre EDT is off by up to a cell; the exact geometry is not.
    assert abs(edt.clearance(p)[0] - 34.0) > 1.0
    # Grid nodes hold exact values, so the bilinear SDF is within a few metres between them.
    assert exact.sdf.distance(p)[0] == pytest.approx(34.0, abs=2.0)
    # Inside the island: minus the depth.
    assert exact.clearance(np.array([[1400.0, 750.0]]))[0] == pytest.approx(-150.0, abs=1e-9)


def test_polygon_signed_distance_matches_hand_values():
    square = np.array([[0.0, 0.0], [10.0, 0.0], [10.0, 10.0], [0.0, 10.0]])
    shapes = ObstacleShapes.from_arrays(polygons=[square])
    pts = np.array([[13.0, 14.0], [5.0, 12.0], [5.0, 4.0], [-3.0, 5.0]])
    np.testing.assert_allclose(shapes.signed_distance(pts), [5.0, 2.0, -4.0, 3.0], atol=1e-12)


def test_overlapping_shapes_depth_uses_the_union_boundary():
    shapes = ObstacleShapes.from_arrays(circles=[(0.0, 0.0, 2.0), (3.0, 0.0, 2.0)])
    # midpoint of the lens: inside both circles, the nearest boundary of the union is vertical
    d = shapes.signed_distance(np.array([[1.5, 0.0], [8.0, 0.0]]))
    assert d[0] == pytest.approx(-np.sqrt(4.0 - 1.5**2), abs=1e-3)
    assert d[1] == pytest.approx(3.0)


def test_land_mask_cells_are_squares_with_sub_cell_distances():
    occ = np.zeros((11, 11), dtype=bool)
    occ[5, 5] = True  # one land cell centred at (50, 50), 10 m cells
    env = Environment(OccupancyMap(occ, (0.0, 0.0), 10.0))
    assert env.geometry == "cells"
    pts = np.array([[50.0, 58.0], [62.0, 50.0], [50.0, 50.0], [58.0, 59.0]])
    np.testing.assert_allclose(env.clearance(pts), [3.0, 7.0, -5.0, np.hypot(3.0, 4.0)], atol=1e-9)
    # grid node values equal the exact ones
    assert env.sdf.field[5, 7] == pytest.approx(15.0)


def test_bad_geometry_names_are_rejected():
    occ = OccupancyMap(np.zeros((3, 3), dtype=bool))
    with pytest.raises(ValueError, match="geometry must be one of"):
        Environment(occ, geometry="voronoi")
    with pytest.raises(ValueError, match="needs an occupancy map built from shapes"):
        Environment(occ, geometry="exact")
    with pytest.raises(ValueError, match="circle radius"):
        ObstacleShapes(np.array([[0.0, 0.0, -1.0]]))
    assert shapely.is_empty(ObstacleShapes().union)
