"""Planar environment: occupancy grid, circle/polygon obstacles and the signed distance field (SDF).

Conventions (shared with GPMP2's ``PlanarSDF``): cell ``(row i, col j)`` has its centre at
``origin + (j * cell_size, i * cell_size)``; rows go along +y, columns along +x. Positions are
metres in a local frame.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from research_systems_core.validation import check_finite, check_positive
from usv_planner.geometry import ObstacleShapes

__all__ = ["GEOMETRIES", "Environment", "OccupancyMap", "PlanarSDF", "signed_distance_field"]


def signed_distance_field(occupied: np.ndarray, cell_size: float) -> np.ndarray:
    """Signed distance (metres) of every cell centre: edt(free) - edt(occupied), times the cell size.

    Positive in free space (distance to the nearest occupied cell centre), negative inside
    obstacles. A map without any obstacle gets a constant distance larger than the map
    diagonal (the reference would call the EDT on an empty set, which is undefined).
    """
    occupied = np.asarray(occupied, dtype=bool)
    if occupied.ndim != 2:
        raise ValueError(f"occupancy grid must be 2-D (rows, cols), got shape {occupied.shape}")
    check_positive("cell_size", cell_size)
    if not occupied.any():
        diagonal = float(np.hypot(*occupied.shape)) * cell_size
        return np.full(occupied.shape, 2.0 * diagonal + cell_size)
    if occupied.all():
        return (
            -ndimage.distance_transform_edt(np.pad(occupied, 1, constant_values=False))[1:-1, 1:-1]
            * cell_size
        )
    outside = ndimage.distance_transform_edt(~occupied)  # free cells: distance to nearest occupied
    inside = ndimage.distance_transform_edt(occupied)  # occupied cells: distance to nearest free
    return (outside - inside) * cell_size


@dataclass(frozen=True)
class PlanarSDF:
    """Signed distance field on a regular grid with bilinear lookup and its exact gradient.

    Queries outside the grid are clamped to the border (the value is then constant across the
    border, so the gradient component across it is zero); the upper border is handled by using
    the last cell pair, never reading past the array.
    """

    field: np.ndarray
    origin: tuple[float, float]
    cell_size: float

    def __post_init__(self) -> None:
        field = np.asarray(self.field, dtype=float)
        if field.ndim != 2 or min(field.shape) < 2:
            raise ValueError(f"SDF field must be 2-D with at least 2x2 cells, got shape {field.shape}")
        check_finite("SDF field", field)
        check_positive("cell_size", self.cell_size)
        object.__setattr__(self, "field", field)

    def distance_and_gradient(self, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Signed distance ``(M,)`` and its gradient ``(M, 2)`` (d/dx, d/dy) at points ``(M, 2)``."""
        points = np.atleast_2d(np.asarray(points, dtype=float))
        rows, cols = self.field.shape
        gx = (points[:, 0] - self.origin[0]) / self.cell_size
        gy = (points[:, 1] - self.origin[1]) / self.cell_size
        inside_x = (gx >= 0.0) & (gx <= cols - 1)
        inside_y = (gy >= 0.0) & (gy <= rows - 1)
        gx = np.clip(gx, 0.0, cols - 1)
        gy = np.clip(gy, 0.0, rows - 1)
        j0 = np.minimum(np.floor(gx).astype(int), cols - 2)
        i0 = np.minimum(np.floor(gy).astype(int), rows - 2)
        fx = gx - j0
        fy = gy - i0
        f00 = self.field[i0, j0]
        f01 = self.field[i0, j0 + 1]
        f10 = self.field[i0 + 1, j0]
        f11 = self.field[i0 + 1, j0 + 1]
        value = (1 - fy) * ((1 - fx) * f00 + fx * f01) + fy * ((1 - fx) * f10 + fx * f11)
        dx = ((1 - fy) * (f01 - f00) + fy * (f11 - f10)) / self.cell_size
        dy = ((1 - fx) * (f10 - f00) + fx * (f11 - f01)) / self.cell_size
        grad = np.stack([np.where(inside_x, dx, 0.0), np.where(inside_y, dy, 0.0)], axis=1)
        return value, grad

    def distance(self, points: np.ndarray) -> np.ndarray:
        """Signed distance at points ``(M, 2)`` (or a single point)."""
        return self.distance_and_gradient(points)[0]


@dataclass(frozen=True)
class OccupancyMap:
    """Boolean occupancy grid (True = obstacle / land) with its placement in metres."""

    occupied: np.ndarray
    origin: tuple[float, float] = (0.0, 0.0)
    cell_size: float = 1.0
    shapes: ObstacleShapes | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        occ = np.asarray(self.occupied, dtype=bool)
        if occ.ndim != 2 or min(occ.shape) < 2:
            raise ValueError(f"occupancy grid must be 2-D with at least 2x2 cells, got shape {occ.shape}")
        check_positive("cell_size", self.cell_size)
        object.__setattr__(self, "occupied", occ)
        object.__setattr__(self, "origin", (float(self.origin[0]), float(self.origin[1])))

    @property
    def shape(self) -> tuple[int, int]:
        return self.occupied.shape  # type: ignore[return-value]

    @property
    def x(self) -> np.ndarray:
        return self.origin[0] + self.cell_size * np.arange(self.shape[1])

    @property
    def y(self) -> np.ndarray:
        return self.origin[1] + self.cell_size * np.arange(self.shape[0])

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(xmin, xmax, ymin, ymax) of the cell centres."""
        return (self.x[0], self.x[-1], self.y[0], self.y[-1])

    @classmethod
    def from_shapes(
        cls,
        width: float,
        height: float,
        cell_size: float,
        circles: Iterable[Sequence[float]] = (),
        polygons: Iterable[np.ndarray] = (),
        origin: tuple[float, float] = (0.0, 0.0),
    ) -> OccupancyMap:
        """Rasterise circles ``(cx, cy, r)`` and polygons ``(K, 2)`` onto a ``width x height`` map."""
        check_positive("width", width)
        check_positive("height", height)
        check_positive("cell_size", cell_size)
        nx = round(width / cell_size) + 1
        ny = round(height / cell_size) + 1
        xs = origin[0] + cell_size * np.arange(nx)
        ys = origin[1] + cell_size * np.arange(ny)
        xx, yy = np.meshgrid(xs, ys)
        circles = [tuple(float(v) for v in c) for c in circles]
        for circle in circles:
            if len(circle) != 3:
                raise ValueError(f"a circle obstacle is (cx, cy, r), got {circle}")
            check_positive("circle radius", circle[2])
        shapes = ObstacleShapes.from_arrays(circles, list(polygons))
        pts = np.stack([xx.ravel(), yy.ravel()], axis=1)
        occ = (shapes.signed_distance(pts) <= 0.0).reshape(xx.shape) if not shapes.empty else xx < -np.inf
        return cls(occ, origin, cell_size, shapes)


GEOMETRIES = ("exact", "cells", "edt")


class Environment:
    """An occupancy map plus its SDF; answers inside-map, clearance and collision queries.

    ``geometry`` says what the obstacles are: ``exact`` (the shapes the map was built from; the
    default when it has them), ``cells`` (the union of the occupied cells' squares; the default
    for a bare grid such as a land mask) or ``edt`` (GPMP2's distance to occupied cell centres,
    kept for comparison). With ``exact``/``cells`` the planner's grid SDF holds the exact signed
    distance at the cell centres (bilinear in between) and :meth:`clearance` is exact everywhere.
    """

    def __init__(self, occupancy: OccupancyMap, geometry: str | None = None) -> None:
        self.occupancy = occupancy
        if geometry is None:
            geometry = "exact" if occupancy.shapes is not None else "cells"
        if geometry not in GEOMETRIES:
            raise ValueError(f"geometry must be one of {', '.join(GEOMETRIES)}, got {geometry!r}")
        if geometry == "exact" and occupancy.shapes is None:
            raise ValueError(
                "geometry='exact' needs an occupancy map built from shapes (OccupancyMap.from_shapes)"
            )
        self.geometry = geometry
        if geometry == "exact":
            self.shapes: ObstacleShapes | None = occupancy.shapes
        elif geometry == "cells":
            self.shapes = ObstacleShapes.from_cells(occupancy.occupied, occupancy.origin, occupancy.cell_size)
        else:
            self.shapes = None
        if self.shapes is None:
            field_values = signed_distance_field(occupancy.occupied, occupancy.cell_size)
        elif self.shapes.empty:
            field_values = signed_distance_field(np.zeros_like(occupancy.occupied), occupancy.cell_size)
        else:
            xx, yy = np.meshgrid(occupancy.x, occupancy.y)
            pts = np.stack([xx.ravel(), yy.ravel()], axis=1)
            field_values = self.shapes.signed_distance(pts).reshape(xx.shape)
        self.sdf = PlanarSDF(field_values, occupancy.origin, occupancy.cell_size)

    def clearance(self, points: np.ndarray) -> np.ndarray:
        """True signed distance ``(M,)`` to the obstacles (exact geometry; the grid SDF for ``edt``)."""
        points = np.atleast_2d(np.asarray(points, dtype=float))
        if self.shapes is None:
            return self.sdf.distance(points)
        if self.shapes.empty:
            return self.sdf.distance(points)
        return self.shapes.signed_distance(points)

    def path_is_free(self, points: np.ndarray) -> bool:
        """Whether every point lies inside the map with a positive true clearance."""
        return bool((self.clearance(points) > 0).all() and self.inside(points).all())

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return self.occupancy.bounds

    def inside(self, points: np.ndarray) -> np.ndarray:
        """Whether points ``(M, 2)`` lie inside the map rectangle."""
        points = np.atleast_2d(np.asarray(points, dtype=float))
        xmin, xmax, ymin, ymax = self.bounds
        return (
            (points[:, 0] >= xmin) & (points[:, 0] <= xmax) & (points[:, 1] >= ymin) & (points[:, 1] <= ymax)
        )

    def check_free_point(self, name: str, point: Sequence[float], clearance: float = 0.0) -> np.ndarray:
        """Validate a start/goal: finite 2-vector, inside the map, at least ``clearance`` from obstacles."""
        p = np.asarray(point, dtype=float)
        if p.shape != (2,):
            raise ValueError(f"{name} must be an (x, y) pair, got shape {p.shape}")
        check_finite(name, p)
        xmin, xmax, ymin, ymax = self.bounds
        if not self.inside(p)[0]:
            raise ValueError(
                f"{name} {tuple(p.tolist())} is outside the map; x must be in [{xmin:g}, {xmax:g}], y in [{ymin:g}, {ymax:g}]"
            )
        d = float(self.clearance(p)[0])
        if d <= clearance:
            raise ValueError(
                f"{name} {tuple(p.tolist())} is inside or too close to an obstacle "
                f"(signed distance {d:.3g} m, must be > {clearance:g} m)"
            )
        return p
