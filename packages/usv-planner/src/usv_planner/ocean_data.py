"""Load surface currents from CMEMS or HYCOM NetCDF files into a local metric frame.

Recognised names: CMEMS ``uo``/``vo`` on ``longitude``/``latitude``; HYCOM ``water_u``/``water_v``
on ``lon``/``lat``; an optional ``time`` and ``depth`` axis (the shallowest level is used).
Longitudes/latitudes become metres with an equirectangular projection about the grid centre
(``x = R cos(lat0) dlon``, ``y = R dlat``), which keeps a regular lon/lat grid regular.
Land cells (NaN velocities) become obstacles; their velocity is set to zero.

Reading NetCDF needs the ``netcdf`` extra (``pip install usv-planner[netcdf]``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

from usv_planner.currents import GriddedField
from usv_planner.environment import Environment, OccupancyMap

__all__ = ["EARTH_RADIUS_M", "OceanData", "load_currents"]

EARTH_RADIUS_M = 6_371_000.0
_NAMES = {
    "cmems": {"u": "uo", "v": "vo", "lon": "longitude", "lat": "latitude"},
    "hycom": {"u": "water_u", "v": "water_v", "lon": "lon", "lat": "lat"},
}


@dataclass
class OceanData:
    """A loaded current field with its land mask as an environment and the projection used."""

    field: GriddedField
    env: Environment
    lon0: float
    lat0: float
    convention: str

    def to_local(self, lon: float, lat: float) -> tuple[float, float]:
        """Project a longitude/latitude (degrees) to local metres."""
        x = EARTH_RADIUS_M * np.cos(np.radians(self.lat0)) * np.radians(lon - self.lon0)
        y = EARTH_RADIUS_M * np.radians(lat - self.lat0)
        return float(x), float(y)


def _detect(ds) -> str:
    for name, names in _NAMES.items():
        if names["u"] in ds.variables and names["v"] in ds.variables:
            return name
    found = ", ".join(sorted(str(v) for v in ds.data_vars)) or "(none)"
    raise ValueError(
        "NetCDF file has no current velocity variables: expected CMEMS 'uo'/'vo' or HYCOM "
        f"'water_u'/'water_v', found data variables: {found}"
    )


def load_currents(path: str | os.PathLike[str], max_frames: int | None = None) -> OceanData:
    """Read a CMEMS or HYCOM NetCDF file (or an opened ``xarray.Dataset``) into an :class:`OceanData`."""
    import xarray as xr

    if isinstance(path, xr.Dataset):
        ds = path
    else:
        if not os.path.exists(path):
            raise FileNotFoundError(f"NetCDF file not found: {path}")
        ds = xr.open_dataset(path)
    convention = _detect(ds)
    names = _NAMES[convention]
    for axis in ("lon", "lat"):
        if names[axis] not in ds.variables:
            raise ValueError(f"{convention.upper()} file lacks its {axis} coordinate {names[axis]!r}")
    u = ds[names["u"]]
    v = ds[names["v"]]
    if "depth" in u.dims:
        u, v = u.isel(depth=0), v.isel(depth=0)
    if "time" not in u.dims:
        u, v = u.expand_dims("time"), v.expand_dims("time")
    u = u.transpose("time", names["lat"], names["lon"])
    v = v.transpose("time", names["lat"], names["lon"])
    if max_frames is not None:
        u, v = u.isel(time=slice(0, max_frames)), v.isel(time=slice(0, max_frames))
    lon = np.asarray(ds[names["lon"]].values, dtype=float)
    lat = np.asarray(ds[names["lat"]].values, dtype=float)
    uu = np.asarray(u.values, dtype=float)
    vv = np.asarray(v.values, dtype=float)
    if lat[0] > lat[-1]:  # some products store latitude north-to-south
        lat, uu, vv = lat[::-1], uu[:, ::-1], vv[:, ::-1]
    if "time" in ds.coords and np.issubdtype(ds["time"].dtype, np.datetime64):
        t = ds["time"].values[: uu.shape[0]]
        seconds = (t - t[0]) / np.timedelta64(1, "s")
    else:
        seconds = np.arange(uu.shape[0], dtype=float) * 3600.0
    land = ~(np.isfinite(uu) & np.isfinite(vv)).all(axis=0)
    uu = np.where(np.isfinite(uu), uu, 0.0)
    vv = np.where(np.isfinite(vv), vv, 0.0)
    lon0, lat0 = float(lon.mean()), float(lat.mean())
    x = EARTH_RADIUS_M * np.cos(np.radians(lat0)) * np.radians(lon - lon0)
    y = EARTH_RADIUS_M * np.radians(lat - lat0)
    # Equirectangular with a constant cos(lat0): regular lon/lat spacing stays regular in metres.
    dx, dy = float(np.mean(np.diff(x))), float(np.mean(np.diff(y)))
    x = x[0] + dx * np.arange(len(x))
    y = y[0] + dy * np.arange(len(y))
    field = GriddedField(x, y, uu, vv, seconds if len(seconds) > 1 else None)
    if abs(dx - dy) > 0.05 * max(dx, dy):
        # The occupancy grid needs square cells: resample the land mask at the finer spacing.
        cell = min(dx, dy)
        nx, ny = int((x[-1] - x[0]) / cell) + 1, int((y[-1] - y[0]) / cell) + 1
        gx = np.clip(np.rint((x[0] + cell * np.arange(nx) - x[0]) / dx).astype(int), 0, len(x) - 1)
        gy = np.clip(np.rint((y[0] + cell * np.arange(ny) - y[0]) / dy).astype(int), 0, len(y) - 1)
        mask = land[np.ix_(gy, gx)]
    else:
        cell, mask = dx, land
    env = Environment(OccupancyMap(mask, (float(x[0]), float(y[0])), cell))
    return OceanData(field, env, lon0, lat0, convention)
