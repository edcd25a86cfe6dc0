import numpy as np
import pytest

xr = pytest.importorskip("xarray")

from usv_planner.ocean_data import EARTH_RADIUS_M, load_currents  # noqa: E402


def _dataset(names, depth=True):
    lon = np.linspace(10.0, 10.2, 11)
    lat = np.linspace(43.0, 43.1, 6)
    times = np.array(["2024-01-01T00", "2024-01-01T01", "2024-01-01T02"], dtype="datetime64[ns]")
    u = np.full((3, 1, 6, 11), 0.3)
    u[:, :, :, :] += np.arange(3)[:, None, None, None] * 0.1
    v = np.full_like(u, -0.2)
    u[:, :, 0, :3] = np.nan  # a patch of land in the south-west corner
    v[:, :, 0, :3] = np.nan
    dims = ("time", "depth", names["lat"], names["lon"])
    if not depth:
        u, v, dims = u[:, 0], v[:, 0], ("time", names["lat"], names["lon"])
    coords = {"time": times, names["lat"]: lat, names["lon"]: lon}
    if depth:
        coords["depth"] = [0.5]
    return xr.Dataset({names["u"]: (dims, u), names["v"]: (dims, v)}, coords=coords)


@pytest.mark.parametrize(
    ("names", "convention"),
    [
        ({"u": "uo", "v": "vo", "lon": "longitude", "lat": "latitude"}, "cmems"),
        ({"u": "water_u", "v": "water_v", "lon": "lon", "lat": "lat"}, "hycom"),
    ],
)
def test_loads_cmems_and_hycom_netcdf(tmp_path, names, convention):
    pytest.importorskip("netCDF4")
    path = tmp_path / f"{convention}.nc"
    _dataset(names, depth=convention == "cmems").to_netcdf(path)
    data = load_currents(path)
    assert data.convention == convention
    field = data.field
    # 0.2 deg of longitude at 43.05 N in metres
    width = EARTH_RADIUS_M * np.cos(np.radians(43.05)) * np.radians(0.2)
    assert np.isclose(field.x[-1] - field.x[0], width, rtol=1e-9)
    assert np.isclose(field.y[-1] - field.y[0], EARTH_RADIUS_M * np.radians(0.1), rtol=1e-9)
    np.testing.assert_allclose(field.times, [0.0, 3600.0, 7200.0])
    c, _ = field.velocity(np.array([[0.0, 0.0]]), 5400.0)
    np.testing.assert_allclose(c[0], [0.45, -0.2], atol=1e-12)
    # land became obstacles; the centre is water
    x0, y0 = data.to_local(10.0, 43.0)
    assert data.env.sdf.distance(np.array([x0, y0]))[0] < 0
    assert data.env.sdf.distance(np.array([0.0, 0.0]))[0] > 0


def test_missing_velocity_variables_are_named(tmp_path):
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
