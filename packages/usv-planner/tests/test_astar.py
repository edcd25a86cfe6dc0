import numpy as np
import pytest
from scipy.sparse import lil_matrix
from scipy.sparse.csgraph import dijkstra

from usv_planner.astar import _MOVES, GridAStar, ground_speed
from usv_planner.currents import ShearJet, UniformCurrent
from usv_planner.environment import Environment, OccupancyMap


def _dijkstra_cost(astar, start, goal, cost):
    ny, nx = astar.free.shape
    graph = lil_matrix((ny * nx, ny * nx))
    for i in range(ny):
        for j in range(nx):
            for move in _MOVES:
                c = astar.edge_cost((i, j), move, 0.0, cost)
                if np.isfinite(c):
                    graph[i * nx + j, (i + move[0]) * nx + (j + move[1])] = c
    s, g = astar.node(start), astar.node(goal)
    return dijkstra(graph.tocsr(), indices=s[0] * nx + s[1])[g[0] * nx + g[1]]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_astar_is_optimal_on_small_random_grids(seed):
    rng = np.random.default_rng(seed)
    occ = rng.random((12, 15)) < 0.25
    occ[0, 0] = occ[-1, -1] = False
    env = Environment(OccupancyMap(occ, (0.0, 0.0), 1.0))
    current = ShearJet(0.6, y0=6.0, width=2.0)
    astar = GridAStar(env, 1.0, clearance=0.0, current=current, water_speed=1.0)
    start, goal = np.array([0.0, 0.0]), np.array([14.0, 11.0])
    for cost in ("length", "time"):
        try:
            res = astar.search(start, goal, cost)
        except RuntimeError:
            assert np.isinf(_dijkstra_cost(astar, start, goal, cost))
            continue
        assert np.isclose(res.cost, _dijkstra_cost(astar, start, goal, cost))
        if cost == "time":
            assert np.isclose(res.times[-1], res.cost)


def test_length_cost_in_open_water_is_octile_distance():
    env = Environment(OccupancyMap(np.zeros((6, 9), dtype=bool), (0.0, 0.0), 1.0))
    res = GridAStar(env, 1.0).search(np.array([0.0, 0.0]), np.array([8.0, 3.0]))
    assert np.isclose(res.cost, 5 + 3 * np.sqrt(2))


def test_zermelo_ground_speed():
    d = np.array([[1.0, 0.0]])
    assert np.isclose(ground_speed(d, np.array([[0.5, 0.0]]), 1.0)[0], 1.5)  # following current
    assert np.isclose(ground_speed(d, np.array([[-0.5, 0.0]]), 1.0)[0], 0.5)  # head current
    assert np.isclose(ground_speed(d, np.array([[0.0, 0.6]]), 1.0)[0], 0.8)  # cross current
    assert np.isnan(ground_speed(d, np.array([[-1.5, 0.0]]), 1.0)[0])  # too strong: infeasible
    assert np.isnan(ground_speed(d, np.array([[0.0, 1.2]]), 1.0)[0])


def test_time_cost_avoids_an_adverse_current_and_reports_infeasible_goal():
    env = Environment(OccupancyMap(np.zeros((5, 5), dtype=bool), (0.0, 0.0), 1.0))
    against = GridAStar(env, 1.0, current=UniformCurrent(-2.0, 0.0), water_speed=1.0)
    with pytest.raises(RuntimeError, match="no path"):
        against.search(np.array([0.0, 2.0]), np.array([4.0, 2.0]), "time")
    occ = np.zeros((5, 5), dtype=bool)
    occ[2, :] = True
    walled = GridAStar(Environment(OccupancyMap(occ, (0.0, 0.0), 1.0)), 1.0)
    with pytest.raises(ValueError, match="goal node"):
        walled.search(np.array([0.0, 0.0]), np.array([2.0, 2.0]))
