"""Exact obstacle geometry with shapely: signed distance to circles, polygons and land-cell squares.

The planner looks distances up on a grid (bilinear, fast, with a gradient); this module gives the
grid its node values and answers the *true* clearance of a returned path. Circles are exact
(analytic); polygons and land masks use shapely's exact point-to-boundary distance. A gridded land
mask is read as the union of its land cells' squares (each cell stands for its whole area), so
its coastline lies half a cell beyond the land cell centres, not on them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np
import shapely

__all__ = ["ObstacleShapes"]

_CIRCLE_SEGMENTS = 128  # quarter-circle segments of a circle's polygon (union and inside depth only)


@dataclass(frozen=True)
class ObstacleShapes:
    """Circles ``(K, 3)`` as ``(cx, cy, r)`` and polygonal obstacles (shapely geometries)."""

    circles: np.ndarray = field(default_factory=lambda: np.zeros((0, 3)))
    polygons: tuple = ()

    def __post_init__(self) -> None:
        circles = np.asarray(self.circles, dtype=float).reshape(-1, 3)
        if len(circles) and not np.isfinite(circles).all():
            raise ValueError("circle obstacles must be finite (cx, cy, r) triples")
        if (circles[:, 2] <= 0).any():
            raise ValueError(f"circle radius must be > 0, got {circles[:, 2].min():g}")
        object.__setattr__(self, "circles", circles)
        object.__setattr__(self, "polygons", tuple(self.polygons))

    @classmethod
    def from_arrays(
        cls, circles: Iterable[Sequence[float]] = (), polygons: Iterable[np.ndarray] = ()
    ) -> ObstacleShapes:
        """From ``(cx, cy, r)`` triples and ``(K >= 3, 2)`` vertex arrays."""
        polys = []
        for poly in polygons:
            arr = np.asarray(poly, dtype=float)
            if arr.ndim != 2 or arr.shape[1] != 2 or len(arr) < 3:
                raise ValueError(f"polygon must be a (K>=3, 2) array of vertices, got shape {arr.shape}")
            geom = shapely.make_valid(shapely.Polygon(arr))
            polys.append(geom)
        return cls(np.asarray(list(circles), dtype=float).reshape(-1, 3), tuple(polys))

    @classmethod
    def from_cells(
        cls, occupied: np.ndarray, origin: tuple[float, float], cell_size: float
    ) -> ObstacleShapes:
        """The union of the occupied cells' squares (side ``cell_size``, centred on the cell centres)."""
        occupied = np.asarray(occupied, dtype=bool)
        rows, cols = np.nonzero(occupied)
        if len(rows) == 0:
            return cls()
        half = cell_size / 2.0
        cx = origin[0] + cols * cell_size
        cy = origin[1] + rows * cell_size
        boxes = shapely.box(cx - half, cy - half, cx + half, cy + half)
        return cls(polygons=(shapely.union_all(boxes),))

    @property
    def empty(self) -> bool:
        return len(self.circles) == 0 and not self.polygons

    @cached_property
    def _polygon_union(self):
        return shapely.union_all(list(self.polygons)) if self.polygons else None

    @cached_property
    def union(self):
        """All obstacles as one shapely geometry (circles as 4 x 128-segment polygons)."""
        parts = [shapely.Point(c[0], c[1]).buffer(c[2], quad_segs=_CIRCLE_SEGMENTS) for c in self.circles]
        if self._polygon_union is not None:
            parts.append(self._polygon_union)
        return shapely.union_all(parts) if parts else shapely.Polygon()

    def signed_distance(self, points: np.ndarray) -> np.ndarray:
        """Signed distance ``(M,)`` to the obstacles: positive outside, negative inside (metres)."""
        pts = np.atleast_2d(np.asarray(points, dtype=float))
        out = np.full(len(pts), np.inf)
        if len(self.circles):
            dc = np.hypot(
                pts[:, None, 0] - self.circles[None, :, 0], pts[:, None, 1] - self.circles[None, :, 1]
            )
            out = np.minimum(out, (dc - self.circles[None, :, 2]).min(axis=1))
        if self._polygon_union is not None:
            geoms = shapely.points(pts)
            dp = shapely.distance(self._polygon_union, geoms)
            inside_poly = shapely.contains_xy(self._polygon_union, pts[:, 0], pts[:, 1]) | (dp == 0)
            out = np.minimum(out, np.where(inside_poly, 0.0, dp))
        inside = out <= 0.0
        if inside.any():
            if self._polygon_union is None and len(self.circles) == 1:
                return out  # a single circle is exact on both sides
            depth = shapely.distance(self.union.boundary, shapely.points(pts[inside]))
            out = out.copy()
            out[inside] = -depth
        return out
