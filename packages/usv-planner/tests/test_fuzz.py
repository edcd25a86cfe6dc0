"""Property-based bad-input tests (issue 23): every bad value gives one clear error naming the parameter.

API: ValueError/TypeError/FileNotFoundError whose message names the parameter, never another
exception. CLI: exit code 2 with one ``error:``/usage line naming the option, never a traceback.
``FUZZ_EXAMPLES`` (default 12) bounds the examples per property.
"""

import math
import os

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from usv_planner.cli import app
from usv_planner.free_time import plan_free_arrival
from usv_planner.gp_current import SparseSpatioTemporalGP
from usv_planner.ocean_data import load_currents
from usv_planner.planner import GPMP2Planner, PlannerConfig
from usv_planner.scenarios import make_scenario

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "12"))
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
runner = CliRunner()
API_ERRORS = (ValueError, TypeError, FileNotFoundError)

nonfinite = st.sampled_from([math.nan, math.inf, -math.inf])
negative = st.floats(max_value=-1e-9, allow_nan=False, allow_infinity=False)
not_a_number = st.sampled_from(["fast", None, [1.0], {"a": 1}])
bad_positive = st.one_of(nonfinite, negative, st.just(0.0), not_a_number)

POSITIVE_FIELDS = [
    "horizon",
    "qc",
    "obstacle_sigma",
    "speed_limit",
    "accel_limit",
    "min_clearance",
    "limit_sigma",
]
INT_FIELDS = [
    "n_states",
    "n_interp",
    "max_iterations",
    "batch_intervals",
    "max_classes",
    "workers",
    "max_escalations",
]
CHOICE_FIELDS = ["current_mode", "solver", "interp_backend", "init"]


@FUZZ
@given(name=st.sampled_from(POSITIVE_FIELDS), value=bad_positive)
def test_config_rejects_bad_positive_numbers(name, value):
    assume(not (value is None and name in ("speed_limit", "accel_limit", "min_clearance")))  # None = no limit
    with pytest.raises((ValueError, TypeError)) as info:
        PlannerConfig(**{name: value}).validate()
    assert name in str(info.value)


@FUZZ
@given(
    name=st.sampled_from(INT_FIELDS),
    value=st.one_of(st.integers(max_value=-1), st.floats(allow_nan=True), st.text(max_size=3)),
)
def test_config_rejects_bad_integers(name, value):
    with pytest.raises((ValueError, TypeError)) as info:
        PlannerConfig(**{name: value}).validate()
    assert name in str(info.value)


@FUZZ
@given(name=st.sampled_from(CHOICE_FIELDS), value=st.text(min_size=0, max_size=8))
def test_config_rejects_unknown_names(name, value):
    with pytest.raises(ValueError) as info:
        PlannerConfig(**{name: value + "?"}).validate()
    assert name.replace("_", " ") in str(info.value) or name in str(info.value)


@pytest.fixture(scope="module")
def vortex():
    return make_scenario("vortex")


bad_points = st.one_of(
    st.tuples(nonfinite, st.floats(0, 2000)),
    st.tuples(st.floats(2001, 1e9), st.floats(0, 2000)),  # outside the map
    st.tuples(st.floats(-1e9, -1), st.floats(-1e9, 2000)),
    st.builds(
        lambda a, r: (1000 + r * math.cos(a), 1000 + r * math.sin(a)), st.floats(0, 6.28), st.floats(0, 110)
    ),  # in a rock
    st.just((1.0, 2.0, 3.0)),
)


@FUZZ
@given(point=bad_points, which=st.sampled_from(["start", "goal"]))
def test_plan_rejects_bad_start_and_goal(vortex, point, which):
    planner = GPMP2Planner(PlannerConfig(n_states=6, horizon=2000.0))
    start, goal = vortex.pairs[0]
    args = {"start": start, "goal": goal, which: point}
    with pytest.raises(ValueError) as info:
        planner.plan(args["start"], args["goal"], vortex.env, vortex.current)
    assert which in str(info.value)


@FUZZ
@given(data=st.binary(max_size=64))
def test_corrupt_netcdf_files_are_value_errors(tmp_path_factory, data):
    path = tmp_path_factory.mktemp("nc") / "bad.nc"
    path.write_bytes(data)
    with pytest.raises(ValueError, match=r"cannot read .*bad.nc as NetCDF|no current velocity variables"):
        load_currents(path)


@FUZZ
@given(
    shape=st.sampled_from([(5, 2), (0, 3), (5, 3, 1), (4,)]),
    poison=st.sampled_from([None, math.nan, math.inf]),
)
def test_gp_rejects_bad_observations(shape, poison):
    xyt = np.ones(shape)
    vel = np.ones((shape[0], 2)) if len(shape) == 2 else np.ones((3, 2))
    if poison is not None and shape == (5, 2):
        xyt = np.ones((5, 3))
        vel[0, 0] = poison
    with pytest.raises(ValueError, match="observation inputs|observed velocities"):
        SparseSpatioTemporalGP(n_inducing=3).fit(xyt, vel)


@FUZZ
@given(objective=st.text(max_size=6), weight=st.one_of(negative, nonfinite))
def test_free_arrival_rejects_bad_objectives_and_weights(vortex, objective, weight):
    planner = GPMP2Planner(PlannerConfig(n_states=6, horizon=2000.0))
    start, goal = vortex.pairs[0]
    with pytest.raises((ValueError, TypeError), match="objective|time_weight"):
        plan_free_arrival(planner, start, goal, vortex.env, vortex.current, objective + "!", time_weight=1.0)
    with pytest.raises((ValueError, TypeError), match="time_weight"):
        plan_free_arrival(planner, start, goal, vortex.env, vortex.current, "weighted", time_weight=weight)


CLI_BAD = {
    "--n-states": ["1", "-3", "x", "2.5"],
    "--horizon": ["-1", "0", "nan", "inf", "abc"],
    "--energy-weight": ["-1", "nan"],
    "--speed-limit": ["0", "-2", "nan", "0.001"],
    "--accel-limit": ["0", "-1", "inf"],
    "--min-clearance": ["-5", "nan"],
    "--planner": ["rrt", ""],
    "--mode": ["psychic"],
    "--solver": ["adam"],
    "--arrival": ["never", "weighted"],
    "--init": ["random"],
    "--workers": ["0", "-1"],
    "--scenario": ["atlantis"],
    "--pair": ["-1", "99"],
    "--start": ["1;2", "nan,1", "1", "99999,1", "1000,1000"],
    "--goal": ["a,b", "inf,0"],
    "--projection": ["mercator"],
    "--netcdf": ["/nonexistent/file.nc"],
}
OPTION_WORDS = {"--arrival": "time-weight", "--speed-limit": "speed", "--start": "start", "--goal": "goal"}


@FUZZ
@given(option=st.sampled_from(sorted(CLI_BAD)), data=st.data())
def test_cli_bad_options_exit_2_with_one_line(tmp_path_factory, option, data):
    value = data.draw(st.sampled_from(CLI_BAD[option]))
    out = tmp_path_factory.mktemp("out")
    args = ["plan", "--scenario", "vortex", "--n-states", "6", "--out", str(out), option, value]
    if option == "--netcdf":
        args += ["--start", "1,1", "--goal", "2,2"]
    result = runner.invoke(app, args)
    text = result.output
    assert result.exit_code == 2, (option, value, text)
    assert "Traceback" not in text
    word = OPTION_WORDS.get(option, option.strip("-").replace("-", "_"))
    lowered = text.lower().replace("-", "_")
    assert word.replace("-", "_") in lowered or option in text or value in text, (option, value, text)


def test_cli_netcdf_without_velocities_and_with_unknown_units(tmp_path):
    import xarray as xr

    lat, lon = np.linspace(43, 43.1, 4), np.linspace(10, 10.2, 5)
    ds = xr.Dataset(
        {"temp": (("latitude", "longitude"), np.zeros((4, 5)))}, coords={"latitude": lat, "longitude": lon}
    )
    path = tmp_path / "temp.nc"
    ds.to_netcdf(path, engine="scipy")
    args = [
        "plan",
        "--netcdf",
        str(path),
        "--start",
        "10.05,43.05",
        "--goal",
        "10.15,43.05",
        "--out",
        str(tmp_path),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "no current velocity variables" in result.output
    u = np.full((4, 5), 0.1)
    ds = xr.Dataset(
        {
            "uo": (("latitude", "longitude"), u, {"units": "knots-ish"}),
            "vo": (("latitude", "longitude"), u, {"units": "m/s"}),
        },
        coords={"latitude": lat, "longitude": lon},
    )
    ds.to_netcdf(path, engine="scipy")
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "unknown units 'knots-ish'" in result.output


def test_cli_unreachable_goal_behind_a_land_strip(tmp_path):
    import xarray as xr

    lat, lon = np.linspace(43, 43.1, 11), np.linspace(10, 10.2, 21)
    u = np.full((11, 21), 0.1)
    u[:, 10] = np.nan  # a north-south land strip splits the field
    ds = xr.Dataset(
        {
            "uo": (("latitude", "longitude"), u, {"units": "m s-1"}),
            "vo": (("latitude", "longitude"), 0 * u, {"units": "m s-1"}),
        },
        coords={"latitude": lat, "longitude": lon},
    )
    path = tmp_path / "strip.nc"
    ds.to_netcdf(path, engine="scipy")
    args = [
        "plan",
        "--netcdf",
        str(path),
        "--start",
        "10.04,43.05",
        "--goal",
        "10.16,43.05",
        "--out",
        str(tmp_path),
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert "is unreachable from start" in result.output and "Traceback" not in result.output
