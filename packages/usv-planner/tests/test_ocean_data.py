import importlib.util

import numpy as np
import pytest
import xarray as xr
from pyproj import Geod

from usv_planner.ocean_data import load_currents

# scipy writes NetCDF3 (always installed); netCDF4 (the `netcdf` extra) writes NetCDF4/HDF5
ENGINES = ["scipy"] + (["netcdf4"] if importlib.util.find_spec("netCDF4") else [])
NAMES = {
    "cmems": {"u": "uo", "v": "vo", "lon": "longitude", "lat": "latitude", "units": "m s-1"},
    "hycom": {"u": "water_u", "v": "water_v", "lon": "lon", "lat": "lat", "units": "m/s"},
}


def _dataset(convention: str) -> xr.Dataset:
    names = NAMES[convention]
    lon = np.linspace(10.0, 10.2, 11)
    lat = np.linspace(43.0, 43.1, 6)
    times = np.array(["2024-01-01T00", "2024-01-01T01", "2024-01-01T02"], dtype="datetime64[ns]")
    depth = np.array([0.494, 10.0])
    u = np.full((3, 2, 6, 11), 0.3) + np.arange(3)[:, None, None, None] * 0.1
    v = np.full_like(u, -0.2)
    u[:, 1], v[:, 1] = 1.0, 1.0  # the 10 m level differs
    u[:, :, 0, :3] = np.nan  # land in the south-west corner
    v[:, :, 0, :3] = np.nan
    dims = ("time", "depth", names["lat"], names["lon"])
    ds = xr.Dataset(
        {names["u"]: (dims, u, {"units": names["units"]}), names["v"]: (dims, v, {"units": names["units"]})},
        coords={"time": times, "depth": depth, names["lat"]: lat, names["lon"]: lon},
    )
    return ds


def _write(ds: xr.Dataset, path, engine: str, convention: str) -> None:
    names = NAMES[convention]
    encoding = {
        "time": {
            "units": "hours since 1950-01-01" if convention == "cmems" else "hours since 2000-01-01 00:00:00"
        }
    }
    if convention == "hycom":  # HYCOM packs velocities as int16 with a scale factor and a fill value
        for var in (names["u"], names["v"]):
            encoding[var] = {"dtype": "int16", "scale_factor": 0.001, "_FillValue": -30000}
    ds.to_netcdf(path, engine=engine, encoding=encoding)


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("convention", ["cmems", "hycom"])
def test_reads_each_convention_from_a_written_file(tmp_path, convention, engine):
    path = tmp_path / f"{convention}-{engine}.nc"
    _write(_dataset(convention), path, engine, convention)
    data = load_currents(path)
    assert data.convention == convention and data.depth == pytest.approx(0.494)
    np.testing.assert_allclose(data.field.times, [0.0, 3600.0, 7200.0])
    assert data.time0.startswith("2024-01-01T00")
    c, _ = data.field.velocity(np.array([data.to_local(10.1, 43.05)]), 5400.0)
    # east/north (0.45, -0.2) rotated by the meridian convergence (tiny at the centre meridian)
    np.testing.assert_allclose(c[0], [0.45, -0.2], atol=2e-3)
    # distances in the local transverse Mercator frame match the geodesic ones
    a, b = (10.02, 43.02), (10.18, 43.09)
    xa, xb = np.array(data.to_local(*a)), np.array(data.to_local(*b))
    geodesic = Geod(ellps="WGS84").inv(a[0], a[1], b[0], b[1])[2]
    assert np.linalg.norm(xb - xa) == pytest.approx(geodesic, rel=1e-4)
    # land became an obstacle with its true (cell-rectangle) outline; the centre is water
    assert data.env.clearance(np.array([data.to_local(10.0, 43.0)]))[0] < 0
    assert data.env.clearance(np.array([data.to_local(10.1, 43.05)]))[0] > 0
    # the second level is selected by depth
    deep = load_currents(path, depth=9.0)
    assert deep.depth == pytest.approx(10.0)
    c, _ = deep.field.velocity(np.array([deep.to_local(10.1, 43.05)]), 0.0)
    assert np.linalg.norm(c[0]) == pytest.approx(np.sqrt(2.0), abs=1e-2)


def test_utm_projection_and_0_360_longitudes(tmp_path):
    ds = _dataset("hycom").isel(depth=0)
    ds = ds.assign_coords(lon=(ds.lon - 20.0) % 360.0)  # -10..-9.8 stored as 350..350.2
    path = tmp_path / "hycom360.nc"
    ds.to_netcdf(path, engine="scipy")
    data = load_currents(path, projection="utm")
    assert data.crs == "EPSG:32629" and data.depth is None
    x, y = data.to_local(-9.9, 43.05)
    lon, lat = data.to_lonlat(x, y)
    assert lon == pytest.approx(-9.9) and lat == pytest.approx(43.05)
    assert data.env.clearance(np.array([[x, y]]))[0] > 0


def test_bad_files_get_one_clear_message(tmp_path):
    ds = xr.Dataset(
        {"temperature": (("lat", "lon"), np.zeros((2, 2)))}, coords={"lat": [0.0, 1.0], "lon": [0.0, 1.0]}
    )
    with pytest.raises(
        ValueError,
        match=r"expected CMEMS 'uo'/'vo' or HYCOM 'water_u'/'water_v', found data variables: temperature",
    ):
        load_currents(ds)
    with pytest.raises(FileNotFoundError, match="NetCDF file not found"):
        load_currents(tmp_path / "missing.nc")
    bad_units = _dataset("cmems")
    bad_units["uo"].attrs["units"] = "furlongs/fortnight"
    with pytest.raises(ValueError, match="unknown units 'furlongs/fortnight'"):
        load_currents(bad_units)
    no_units = _dataset("cmems")
    del no_units["vo"].attrs["units"]
    with pytest.raises(ValueError, match="'vo' has no units attribute"):
        load_currents(no_units)
    gap = _dataset("cmems")
    gap["uo"][1, 0, 3, 5] = np.nan  # one frame missing in open water
    with pytest.raises(ValueError, match="NaN in some frames only at 1 water cells"):
        load_currents(gap)
    text = tmp_path / "notes.nc"
    text.write_text("not a netcdf file")
    with pytest.raises(ValueError, match="cannot read .* as NetCDF"):
        load_currents(text)
    with pytest.raises(ValueError, match="projection must be one of"):
        load_currents(_dataset("cmems"), projection="mercator")
    with pytest.raises(ValueError, match="depth=5 m requested but the file has no depth axis"):
        load_currents(_dataset("cmems").isel(depth=0), depth=5.0)


def test_cm_per_second_is_converted():
    ds = _dataset("cmems")
    ds["uo"] = ds["uo"] * 100.0
    ds["vo"] = ds["vo"] * 100.0
    ds["uo"].attrs["units"] = ds["vo"].attrs["units"] = "cm/s"
    data = load_currents(ds)
    c, _ = data.field.velocity(np.array([data.to_local(10.1, 43.05)]), 0.0)
    np.testing.assert_allclose(c[0], [0.3, -0.2], atol=2e-3)


def test_static_field_without_time_axis(tmp_path):
    ds = _dataset("cmems").isel(time=0, depth=0).drop_vars(["time", "depth"])
    path = tmp_path / "static.nc"
    ds.to_netcdf(path, engine="scipy")
    data = load_currents(path)
    assert data.time0 is None and data.depth is None
    c, _ = data.field.velocity(np.array([data.to_local(10.1, 43.05)]), 1e6)
    np.testing.assert_allclose(c[0], [0.3, -0.2], atol=2e-3)
