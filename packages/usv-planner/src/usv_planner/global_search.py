"""Global initial paths: shortest paths in distinct homotopy classes on a visibility graph (shapely).

Obstacles are inflated by the clearance; the graph's nodes are the vertices of a slightly larger,
simplified outline of every inflated obstacle, plus start and goal; an edge joins two nodes whose
segment stays out of the inflated obstacles. A homotopy class here is the side (left or right of
the start->goal line) on which the path passes each obstacle in the corridor between start and
goal. To force "pass obstacle o on the left" the graph loses every edge that crosses the ray from
o's interior to the map border on the right (perpendicular to start->goal); each combination of
sides is one Dijkstra (scipy), so classes come out exactly, shortest first.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import shapely
from scipy.sparse import csr_matrix
from scipy.sparse.csgraph import dijkstra

from usv_planner.environment import Environment
from usv_planner.geometry import ObstacleShapes

__all__ = ["HomotopyPath", "homotopy_paths", "passing_sides", "resample_polyline"]


@dataclass
class HomotopyPath:
    """A polyline ``(K, 2)`` from start to goal, its length and its side (+1 left, -1 right) per obstacle."""

    points: np.ndarray
    length: float
    sides: tuple[int, ...]


def _obstacle_parts(env: Environment, clearance: float):
    shapes = env.shapes or ObstacleShapes.from_cells(
        env.occupancy.occupied, env.occupancy.origin, env.occupancy.cell_size
    )
    if shapes.empty:
        return shapely.Polygon(), []
    inflated = shapes.union.buffer(clearance, quad_segs=3) if clearance > 0 else shapes.union
    parts = list(getattr(inflated, "geoms", [inflated]))
    return inflated, [p for p in parts if not p.is_empty]


def _graph_nodes(parts, margin: float, env: Environment, inflated) -> np.ndarray:
    nodes = []
    for part in parts:
        outline = part.buffer(margin, join_style="mitre", mitre_limit=3.0).simplify(margin / 2.0)
        polys = getattr(outline, "geoms", [outline])
        for poly in polys:
            nodes.append(np.asarray(poly.exterior.coords)[:-1])
    if not nodes:
        return np.zeros((0, 2))
    pts = np.concatenate(nodes)
    keep = env.inside(pts) & ~shapely.intersects_xy(inflated, pts[:, 0], pts[:, 1])
    return pts[keep]


def passing_sides(
    path: np.ndarray, start: np.ndarray, goal: np.ndarray, anchors: np.ndarray
) -> tuple[int, ...]:
    """Side on which ``path`` passes each anchor point: +1 left of start->goal, -1 right, 0 not crossed.

    The side is read where the path crosses the line through the anchor perpendicular to
    start->goal (the first crossing; a path that crosses it several times winds around)."""
    axis = (goal - start) / np.linalg.norm(goal - start)
    normal = np.array([-axis[1], axis[0]])
    along = (path - start) @ axis
    lateral = (path - start) @ normal
    sides = []
    for anchor in anchors:
        ax, ay = (anchor - start) @ axis, (anchor - start) @ normal
        side = 0
        for k in range(len(path) - 1):
            a, b = along[k] - ax, along[k + 1] - ax
            if a == b or a * b > 0:
                continue
            f = a / (a - b)
            y = lateral[k] + f * (lateral[k + 1] - lateral[k])
            side = 1 if y > ay else -1
            break
        sides.append(side)
    return tuple(sides)


def homotopy_paths(
    env: Environment,
    start: np.ndarray,
    goal: np.ndarray,
    clearance: float,
    max_classes: int = 4,
    max_obstacles: int = 4,
    max_detour: float = 2.5,
) -> list[HomotopyPath]:
    """Up to ``max_classes`` shortest collision-free polylines, one per homotopy class, shortest first.

    Only obstacles whose anchor lies between start and goal along the start->goal axis count
    (at most ``max_obstacles``, nearest to the line first); paths longer than ``max_detour``
    times the straight distance are dropped. Returns ``[]`` when no path exists at this clearance.
    """
    start, goal = np.asarray(start, dtype=float), np.asarray(goal, dtype=float)
    clearance = max(0.0, min(clearance, 0.9 * float(env.clearance(np.stack([start, goal])).min())))
    inflated, parts = _obstacle_parts(env, clearance)
    span = float(np.linalg.norm(goal - start))
    margin = max(0.1 * clearance, 1e-3 * span)
    nodes = np.concatenate([start[None], goal[None], _graph_nodes(parts, margin, env, inflated)])
    n = len(nodes)
    ii, jj = np.triu_indices(n, k=1)
    lines = shapely.linestrings(np.stack([nodes[ii], nodes[jj]], axis=1))
    shapely.prepare(inflated)
    free = ~shapely.intersects(inflated, lines) if not inflated.is_empty else np.ones(len(ii), bool)
    ii, jj, lines = ii[free], jj[free], lines[free]
    lengths = np.linalg.norm(nodes[ii] - nodes[jj], axis=1)

    axis = (goal - start) / span
    normal = np.array([-axis[1], axis[0]])
    anchors, rays = [], []
    xmin, xmax, ymin, ymax = env.bounds
    reach = 2.0 * float(np.hypot(xmax - xmin, ymax - ymin))
    for part in parts:
        anchor = np.asarray(part.representative_point().coords[0])
        along = (anchor - start) @ axis
        if 0.0 < along < span:
            anchors.append(anchor)
    anchors.sort(key=lambda a: abs((a - start) @ normal))
    anchors = anchors[:max_obstacles]
    seg_a, seg_b = nodes[ii], nodes[jj]
    for anchor in anchors:
        # rays[o][0] blocks passing on the right (forces left), rays[o][1] the reverse
        crosses = [_segments_cross(seg_a, seg_b, anchor, anchor + s * reach * normal) for s in (-1, 1)]
        rays.append(crosses)
    results: list[HomotopyPath] = []
    seen: set[tuple[int, ...]] = set()
    for combo in itertools.product((1, -1), repeat=len(anchors)):
        keep = np.ones(len(ii), dtype=bool)
        for o, side in enumerate(combo):
            keep &= ~rays[o][0 if side == 1 else 1]
        path = _shortest(n, ii[keep], jj[keep], lengths[keep], nodes)
        if path is None:
            continue
        sides = passing_sides(path, start, goal, np.asarray(anchors).reshape(-1, 2))
        if sides in seen:
            continue
        seen.add(sides)
        length = float(np.linalg.norm(np.diff(path, axis=0), axis=1).sum())
        if length <= max_detour * span:
            results.append(HomotopyPath(path, length, sides))
    results.sort(key=lambda r: r.length)
    return results[:max_classes]


def _segments_cross(a: np.ndarray, b: np.ndarray, p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Whether segments ``a[k]-b[k]`` ``(K, 2)`` intersect the segment ``p-q`` (touching counts)."""

    def orient(u, v, w):
        return np.sign(
            (v[..., 0] - u[..., 0]) * (w[..., 1] - u[..., 1])
            - (v[..., 1] - u[..., 1]) * (w[..., 0] - u[..., 0])
        )

    o1, o2 = orient(a, b, p), orient(a, b, q)
    o3, o4 = orient(p, q, a), orient(p, q, b)
    return (o1 * o2 <= 0) & (o3 * o4 <= 0)


def _shortest(n: int, ii: np.ndarray, jj: np.ndarray, w: np.ndarray, nodes: np.ndarray) -> np.ndarray | None:
    graph = csr_matrix((w, (ii, jj)), shape=(n, n))
    dist, pred = dijkstra(graph, directed=False, indices=0, return_predecessors=True)
    if not np.isfinite(dist[1]):
        return None
    order = [1]
    while order[-1] != 0:
        order.append(int(pred[order[-1]]))
    return nodes[order[::-1]]


def resample_polyline(points: np.ndarray, count: int) -> np.ndarray:
    """``count`` points evenly spaced in arc length along a polyline (first and last kept)."""
    points = np.asarray(points, dtype=float)
    seg = np.linalg.norm(np.diff(points, axis=0), axis=1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    target = np.linspace(0.0, s[-1], count)
    return np.stack([np.interp(target, s, points[:, k]) for k in range(2)], axis=1)
