"""Surface currents from CMEMS or HYCOM NetCDF files, projected to a local metric frame with pyproj.

Conventions read (xarray): CMEMS ``uo``/``vo`` on ``longitude``/``latitude``; HYCOM
``water_u``/``water_v`` on ``lon``/``lat`` (0..360 longitudes are wrapped to -180..180; packed
int16 with ``scale_factor``/``_FillValue`` is decoded by xarray). Optional ``depth`` axis (the level
nearest the requested depth; the shallowest by default) and ``time`` axis (CF-decoded to
datetimes; seconds since the first frame; frames must be evenly spaced). Velocity units must be
given and known (m/s variants, or cm/s, converted); unknown units are an error.

Land is where the velocity is NaN (or fill) in every frame; NaN in only some frames of a water
cell is a data gap and an error (it would silently read as land or zero). Each land cell of the
file stands for its lon/lat rectangle: the rectangles, projected, make the exact land geometry
(see :mod:`usv_planner.geometry`), so clearances are true distances to that coast.

The projection is a local transverse Mercator centred on the grid (default) or the UTM zone of
its centre; velocities are re-gridded onto a regular metric grid (bilinear in lon/lat) and
rotated from east/north into the projected grid axes (meridian convergence).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np

from usv_planner.currents import GriddedField
from usv_planner.environment import Environment, OccupancyMap
from usv_planner.geometry import ObstacleShapes

__all__ = ["PROJECTIONS", "VELOCITY_UNITS", "OceanData", "load_currents"]

log = logging.getLogger(__name__)

PROJECTIONS = ("tmerc", "utm")
_NAMES = {
    "cmems": {"u": "uo", "v": "vo", "lon": ("longitude", "lon"), "lat": ("latitude", "lat")},
    "hycom": {"u": "water_u", "v": "water_v", "lon": ("lon", "longitude"), "lat": ("lat", "latitude")},
}
_DEPTH_NAMES = ("depth", "lev", "z")
# metres per second per unit of the file
VELOCITY_UNITS = {
    "m s-1": 1.0,
    "m/s": 1.0,
    "m s**-1": 1.0,
    "m.s-1": 1.0,
    "m s^-1": 1.0,
    "meter/sec": 1.0,
    "meters/second": 1.0,
    "metre/second": 1.0,
    "metres/second": 1.0,
    "m sec-1": 1.0,
    "cm/s": 0.01,
    "cm s-1": 0.01,
    "cm.s-1": 0.01,
    "centimeter/second": 0.01,
}


@dataclass
class OceanData:
    """A loaded current field, its land as an environment, and the projection used."""

    field: GriddedField
    env: Environment
    convention: str
    crs: str
    lon0: float
    lat0: float
    depth: float | None
    time0: Any

    def _transformer(self, inverse: bool = False):
        from pyproj import Transformer

        if inverse:
            return Transformer.from_crs(self.crs, "EPSG:4326", always_xy=True)
        return Transformer.from_crs("EPSG:4326", self.crs, always_xy=True)

    def to_local(self, lon: float, lat: float) -> tuple[float, float]:
        """Project a longitude/latitude (degrees) to local metres."""
        lon = float((float(lon) + 180.0) % 360.0 - 180.0)
        if not -90.0 <= float(lat) <= 90.0:
            raise ValueError(f"latitude must be in [-90, 90] degrees, got {lat}")
        x, y = self._transformer().transform(lon, float(lat))
        return float(x), float(y)

    def to_lonlat(self, x: float, y: float) -> tuple[float, float]:
        """Inverse of :meth:`to_local`."""
        lon, lat = self._transformer(inverse=True).transform(float(x), float(y))
        return float(lon), float(lat)


def _detect(ds) -> str:
    for name, names in _NAMES.items():
        if names["u"] in ds.variables and names["v"] in ds.variables:
            return name
    found = ", ".join(sorted(str(v) for v in ds.data_vars)) or "(none)"
    raise ValueError(
        "NetCDF file has no current velocity variables: expected CMEMS 'uo'/'vo' or HYCOM "
        f"'water_u'/'water_v', found data variables: {found}"
    )


def _units_scale(var) -> float:
    units = var.attrs.get("units")
    if units is None:
        raise ValueError(
            f"velocity variable {var.name!r} has no units attribute; expected one of: {', '.join(VELOCITY_UNITS)}"
        )
    key = " ".join(str(units).strip().lower().split())
    if key not in VELOCITY_UNITS:
        raise ValueError(
            f"velocity variable {var.name!r} has unknown units {units!r}; expected one of: {', '.join(VELOCITY_UNITS)}"
        )
    return VELOCITY_UNITS[key]


def _coordinate(ds, options: tuple[str, ...], convention: str, axis: str) -> str:
    for name in options:
        if name in ds.variables:
            return name
    raise ValueError(f"{convention.upper()} file lacks its {axis} coordinate (tried {', '.join(options)})")


def _select_depth(u, v, depth: float | None):
    dim = next((d for d in _DEPTH_NAMES if d in u.dims), None)
    if dim is None:
        if depth is not None:
            raise ValueError(f"depth={depth:g} m requested but the file has no depth axis")
        return u, v, None
    levels = np.asarray(u[dim].values, dtype=float)
    target = float(np.abs(levels).min()) if depth is None else float(depth)
    k = int(np.argmin(np.abs(np.abs(levels) - abs(target))))
    return u.isel({dim: k}), v.isel({dim: k}), float(levels[k])


def _frame_seconds(u) -> tuple[np.ndarray, Any]:
    if "time" not in u.coords:  # a static field (the time axis was added with one frame)
        return np.zeros(u.sizes.get("time", 1)), None
    t = u["time"].values
    if np.issubdtype(t.dtype, np.datetime64):
        seconds = (t - t[0]) / np.timedelta64(1, "s")
        return np.asarray(seconds, dtype=float), str(t[0])
    if t.dtype == object and len(t) and hasattr(t[0], "timetuple"):  # cftime dates
        seconds = np.array([(ti - t[0]).total_seconds() for ti in t])
        return seconds, str(t[0])
    raise ValueError(
        "the time axis could not be decoded as dates (CF units like 'hours since 2000-01-01' expected), "
        f"got values of type {t.dtype}"
    )


def _open(path):
    import xarray as xr

    if isinstance(path, xr.Dataset):
        return path
    if not os.path.exists(path):
        raise FileNotFoundError(f"NetCDF file not found: {path}")
    try:
        return xr.open_dataset(path)
    except (OSError, ValueError, TypeError) as error:
        raise ValueError(f"cannot read {path} as NetCDF: {error}") from None


def load_currents(
    path: str | os.PathLike[str] | Any,
    max_frames: int | None = None,
    depth: float | None = None,
    projection: str = "tmerc",
    cell_size: float | None = None,
) -> OceanData:
    """Read a CMEMS or HYCOM NetCDF file (or an opened ``xarray.Dataset``) into an :class:`OceanData`."""
    if projection not in PROJECTIONS:
        raise ValueError(f"projection must be one of {', '.join(PROJECTIONS)}, got {projection!r}")
    if max_frames is not None and (not isinstance(max_frames, int) or max_frames < 1):
        raise ValueError(f"max_frames must be a positive integer, got {max_frames!r}")
    if cell_size is not None and not (np.isfinite(cell_size) and cell_size > 0):
        raise ValueError(f"cell_size must be a positive number of metres, got {cell_size!r}")
    ds = _open(path)
    convention = _detect(ds)
    names = _NAMES[convention]
    lon_name = _coordinate(ds, names["lon"], convention, "longitude")
    lat_name = _coordinate(ds, names["lat"], convention, "latitude")
    u, v = ds[names["u"]], ds[names["v"]]
    scale_u, scale_v = _units_scale(u), _units_scale(v)
    u, v, level = _select_depth(u, v, depth)
    if "time" not in u.dims:
        u, v = u.expand_dims("time"), v.expand_dims("time")
    u = u.transpose("time", lat_name, lon_name)
    v = v.transpose("time", lat_name, lon_name)
    if max_frames is not None:
        u, v = u.isel(time=slice(0, max_frames)), v.isel(time=slice(0, max_frames))
    seconds, time0 = _frame_seconds(u)
    lon = np.asarray(ds[lon_name].values, dtype=float)
    lat = np.asarray(ds[lat_name].values, dtype=float)
    uu = np.asarray(u.values, dtype=float) * scale_u
    vv = np.asarray(v.values, dtype=float) * scale_v
    lon, lat, uu, vv = _normalise_axes(lon, lat, uu, vv)
    land = _land_mask(uu, vv, lon, lat, seconds)
    uu, vv = np.where(land, 0.0, uu), np.where(land, 0.0, vv)
    return _project(uu, vv, land, lon, lat, seconds, projection, cell_size, convention, level, time0)


def _normalise_axes(lon, lat, uu, vv):
    if lon.ndim != 1 or lat.ndim != 1 or len(lon) < 2 or len(lat) < 2:
        raise ValueError(
            "longitude and latitude must be 1-D axes with at least 2 values (regular lon/lat grid)"
        )
    if lon.max() > 180.0:  # 0..360 (HYCOM): wrap to -180..180 and re-sort
        lon = (lon + 180.0) % 360.0 - 180.0
    order = np.argsort(lon)
    lon, uu, vv = lon[order], uu[:, :, order], vv[:, :, order]
    if lat[0] > lat[-1]:  # some products store latitude north-to-south
        lat, uu, vv = lat[::-1], uu[:, ::-1], vv[:, ::-1]
    return lon, lat, uu, vv


def _land_mask(uu, vv, lon, lat, seconds) -> np.ndarray:
    missing = ~(np.isfinite(uu) & np.isfinite(vv))
    land = missing.all(axis=0)
    gaps = missing.any(axis=0) & ~land
    if gaps.any():
        i, j = np.argwhere(gaps)[0]
        k = int(np.argmax(missing[:, i, j]))
        raise ValueError(
            f"current data has NaN in some frames only at {int(gaps.sum())} water cells (first at lon "
            f"{lon[j]:.4f}, lat {lat[i]:.4f}, t = {seconds[k]:g} s): a data gap inside the field; "
            "fill it (land must be NaN in every frame)"
        )
    if land.all():
        raise ValueError("every cell of the current file is NaN (all land): nothing to plan on")
    return land


def _crs(projection: str, lon0: float, lat0: float) -> str:
    if projection == "tmerc":
        return f"+proj=tmerc +lat_0={lat0:.8f} +lon_0={lon0:.8f} +k=1 +x_0=0 +y_0=0 +ellps=WGS84 +units=m +no_defs"
    zone = int((lon0 + 180.0) // 6.0) % 60 + 1
    return f"EPSG:{32600 + zone if lat0 >= 0 else 32700 + zone}"


def _project(uu, vv, land, lon, lat, seconds, projection, cell_size, convention, level, time0) -> OceanData:
    from pyproj import Transformer
    from scipy.interpolate import RegularGridInterpolator

    lon0, lat0 = float(lon.mean()), float(lat.mean())
    crs = _crs(projection, lon0, lat0)
    fwd = Transformer.from_crs("EPSG:4326", crs, always_xy=True)
    inv = Transformer.from_crs(crs, "EPSG:4326", always_xy=True)
    lon_g, lat_g = np.meshgrid(lon, lat)
    xs, ys = fwd.transform(lon_g, lat_g)
    # the largest axis-aligned box inside the projected grid
    x_lo, x_hi = float(xs[:, 0].max()), float(xs[:, -1].min())
    y_lo, y_hi = float(ys[0].max()), float(ys[-1].min())
    spacing = min(float(np.diff(xs, axis=1).mean()), float(np.diff(ys, axis=0).mean()))
    cell = float(cell_size) if cell_size is not None else spacing
    nx, ny = int((x_hi - x_lo) / cell) + 1, int((y_hi - y_lo) / cell) + 1
    if nx < 2 or ny < 2:
        raise ValueError(
            f"cell_size {cell:g} m is too large for a {x_hi - x_lo:.0f} x {y_hi - y_lo:.0f} m field"
        )
    x = x_lo + cell * np.arange(nx)
    y = y_lo + cell * np.arange(ny)
    gx, gy = np.meshgrid(x, y)
    glon, glat = inv.transform(gx, gy)
    # east and north unit vectors in the projected axes (meridian convergence), by differences
    d = 1e-5
    ex = np.stack(fwd.transform(glon + d, glat)) - np.stack(fwd.transform(glon - d, glat))
    nv = np.stack(fwd.transform(glon, glat + d)) - np.stack(fwd.transform(glon, glat - d))
    ex /= np.linalg.norm(ex, axis=0)
    nv /= np.linalg.norm(nv, axis=0)
    query = np.stack([glat.ravel(), glon.ravel()], axis=1)
    u_out = np.empty((len(seconds), ny, nx))
    v_out = np.empty_like(u_out)
    for k in range(len(seconds)):
        ue = RegularGridInterpolator((lat, lon), uu[k], bounds_error=False, fill_value=None)(query).reshape(
            ny, nx
        )
        vn = RegularGridInterpolator((lat, lon), vv[k], bounds_error=False, fill_value=None)(query).reshape(
            ny, nx
        )
        u_out[k] = ue * ex[0] + vn * nv[0]
        v_out[k] = ue * ex[1] + vn * nv[1]
    times = seconds if len(seconds) > 1 else None
    field = GriddedField(x, y, u_out, v_out, times)
    shapes = _land_shapes(land, lon, lat, fwd)
    pts = np.stack([gx.ravel(), gy.ravel()], axis=1)
    occupied = (
        (shapes.signed_distance(pts) <= 0.0).reshape(gx.shape)
        if not shapes.empty
        else np.zeros(gx.shape, bool)
    )
    env = Environment(OccupancyMap(occupied, (float(x[0]), float(y[0])), cell, shapes))
    return OceanData(field, env, convention, crs, lon0, lat0, level, time0)


def _land_shapes(land: np.ndarray, lon: np.ndarray, lat: np.ndarray, fwd) -> ObstacleShapes:
    """The projected lon/lat rectangles of the land cells, merged."""
    import shapely

    rows, cols = np.nonzero(land)
    if len(rows) == 0:
        return ObstacleShapes()
    dlon = np.gradient(lon)[cols] / 2.0
    dlat = np.gradient(lat)[rows] / 2.0
    clon, clat = lon[cols], lat[rows]
    corners_lon = np.stack([clon - dlon, clon + dlon, clon + dlon, clon - dlon], axis=1)
    corners_lat = np.stack([clat - dlat, clat - dlat, clat + dlat, clat + dlat], axis=1)
    cx, cy = fwd.transform(corners_lon, corners_lat)
    polys = shapely.polygons(np.stack([cx, cy], axis=-1))
    return ObstacleShapes(polygons=(shapely.union_all(polys),))
