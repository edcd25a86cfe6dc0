"""Property-based bad-input tests (issue 23): every bad value gives a ValueError/TypeError (API) or
exit code 2 (CLI) with a message naming the parameter; never another exception or a hang.

``FUZZ_EXAMPLES`` sets the number of examples per property (default 12; ``nox -s fuzz`` raises it).
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from feature_select.cli import app
from feature_select.data import load_dataset
from feature_select.selector import NeuroFS

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "12"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
TINY = {"hidden": (4,), "epochs": 2, "random_state": 0}
runner = CliRunner()

_rng = np.random.default_rng(0)
X = _rng.normal(size=(30, 6))
Y = np.arange(30) % 3

nan_or_inf = st.sampled_from([math.nan, math.inf, -math.inf])
not_a_number = st.one_of(st.text(max_size=4), st.just(None), st.lists(st.integers(), max_size=2))
# (parameter, strategy of values that must be refused)
BAD_PARAMS = {
    "n_features_to_select": st.one_of(
        st.integers(max_value=0),
        st.integers(min_value=7, max_value=10**6),
        st.floats(allow_nan=True),
        st.text(max_size=3),
    ),
    "epochs": st.one_of(st.integers(max_value=0), st.floats(0.5, 5.0), not_a_number),
    "batch_size": st.one_of(st.integers(max_value=0), st.floats(0.5, 5.0), st.text(max_size=3)),
    "lr": st.one_of(st.floats(max_value=0.0), nan_or_inf, not_a_number),
    "epsilon": st.one_of(st.floats(max_value=0.0), nan_or_inf, not_a_number),
    "momentum": st.one_of(st.floats(min_value=1.0, max_value=1e9), st.floats(max_value=-1e-9), nan_or_inf),
    "weight_decay": st.one_of(st.floats(max_value=-1e-9), nan_or_inf, not_a_number),
    "zeta_in": st.one_of(st.floats(min_value=1.0, max_value=1e3), st.floats(max_value=-1e-9), nan_or_inf),
    "zeta_hid": st.one_of(st.floats(min_value=1.0, max_value=1e3), st.floats(max_value=-1e-9), nan_or_inf),
    "frac_epoch_remove": st.one_of(st.floats(max_value=0.0), st.floats(min_value=1.0001, max_value=9.0)),
    "warmup_epochs": st.one_of(st.integers(max_value=-1), st.floats(0.5, 3.0), st.text(max_size=2)),
    "hidden": st.one_of(
        st.just(()),
        st.lists(st.integers(max_value=0), min_size=1, max_size=3),
        st.lists(st.text(min_size=1, max_size=2), min_size=1, max_size=2),
    ),
    "activation": st.text(max_size=6).filter(lambda s: s not in ("tanh", "relu", "sigmoid")),
    "regrowth": st.text(max_size=6).filter(lambda s: s not in ("gradient", "random")),
    "backend": st.text(max_size=6).filter(lambda s: s not in ("sparse", "dense", "auto")),
    "init": st.text(max_size=6).filter(lambda s: s not in ("sparse", "dense")),
    "final_active": st.text(max_size=6).filter(lambda s: s not in ("reference", "k")),
    "scale": st.text(max_size=6).filter(lambda s: s not in ("standard", "minmax")),
    "device": st.sampled_from(["gpu", "cuda:99", "tpu", "", "cpu:x"]),
    "max_candidates": st.one_of(st.integers(max_value=0), st.floats(0.5, 3.0), st.text(max_size=2)),
}
PARAM_WORDS = {"hidden": "hidden", "n_features_to_select": "n_features_to_select", "device": "device"}


@pytest.mark.parametrize("param", sorted(BAD_PARAMS))
def test_api_refuses_bad_parameter_values_by_name(param):
    @FUZZ
    @given(value=BAD_PARAMS[param])
    def check(value):
        with pytest.raises((ValueError, TypeError)) as info:
            NeuroFS(**{**TINY, param: value}).fit(X, Y)
        message = str(info.value).lower()
        assert PARAM_WORDS.get(param, param).replace("_", " ") in message.replace("_", " ") or (
            param == "device" and ("device" in message or "cuda" in message or "available" in message)
        ), (param, value, message)

    check()


@FUZZ
@given(
    n_rows=st.integers(2, 12),
    n_cols=st.integers(1, 5),
    bad=st.sampled_from(["nan_cell", "nan_column", "inf", "constant", "one_class", "sparse_nan"]),
)
def test_api_refuses_bad_data_with_the_problem_named(n_rows, n_cols, bad):
    rng = np.random.default_rng(n_rows * 7 + n_cols)
    x = rng.normal(size=(n_rows, n_cols))
    y = np.arange(n_rows) % 2
    expected = {
        "nan_cell": "NaN",
        "nan_column": "all-NaN columns",
        "inf": "inf",
        "constant": "constant",
        "one_class": "at least 2 classes",
        "sparse_nan": "explicit NaN",
    }[bad]
    if bad == "nan_cell":
        x[rng.integers(n_rows), rng.integers(n_cols)] = np.nan
    elif bad == "nan_column":
        x[:, rng.integers(n_cols)] = np.nan
    elif bad == "inf":
        x[rng.integers(n_rows), rng.integers(n_cols)] = np.inf
    elif bad == "constant":
        x[:] = 3.0
    elif bad == "one_class":
        y[:] = 1
    else:
        x = sp.csr_matrix(np.where(np.abs(x) > 0.5, x, 0.0))
        x.data[: max(1, x.nnz)] = np.nan
        if x.nnz == 0:
            x = sp.csr_matrix(([np.nan], ([0], [0])), shape=(n_rows, n_cols))
    with pytest.raises(ValueError, match=expected):
        NeuroFS(**TINY).fit(x, y)


# --------------------------------------------------------------------------------------- CLI
CLI_BAD = {
    "--k": st.sampled_from(["0", "-3", "abc", "1.5", "99999"]),
    "--epochs": st.sampled_from(["0", "-1", "x", "2.5"]),
    "--hidden": st.sampled_from(["", "a,b", "0,4", "-2", "4,,x"]),
    "--lr": st.sampled_from(["0", "-1", "nan", "inf", "zz"]),
    "--epsilon": st.sampled_from(["0", "-5", "nan", "q"]),
    "--zeta-in": st.sampled_from(["1", "-0.1", "nan", "1.5", "x"]),
    "--zeta-hid": st.sampled_from(["1", "-0.1", "inf", "z"]),
    "--batch-size": st.sampled_from(["0", "-8", "b"]),
    "--backend": st.sampled_from(["gpu", "fast", ""]),
    "--device": st.sampled_from(["gpu", "cuda:7", "tpu"]),
    "--dataset": st.sampled_from(["nope", "/no/such/file.mat", "madelonn"]),
}
CLI_WORDS = {
    "--k": "k",
    "--hidden": "hidden",
    "--batch-size": "batch",
    "--dataset": "dataset",
    "--zeta-in": "zeta",
    "--zeta-hid": "zeta",
}


@pytest.mark.parametrize("option", sorted(CLI_BAD))
def test_cli_run_refuses_bad_options_with_exit_2(option, tmp_path):
    @FUZZ
    @given(value=CLI_BAD[option])
    def check(value):
        args = ["run", "--dataset", "wine", "--epochs", "1", "--hidden", "4", "--out", str(tmp_path)]
        args += [option, value]
        result = runner.invoke(app, args)
        output = (result.output + str(result.exception or "")).lower()
        assert result.exit_code == 2, (option, value, result.exit_code, output)
        word = CLI_WORDS.get(option, option.lstrip("-"))
        assert word in output or "device" in output or "cuda" in output, (option, value, output)

    check()


@FUZZ
@given(
    kind=st.sampled_from(["truncated_mat", "empty_csv", "garbage_npz", "text_csv", "mat_no_xy"]),
    payload=st.binary(max_size=64),
)
def test_cli_and_loader_refuse_corrupt_files(kind, payload, tmp_path_factory):
    import scipy.io

    folder = tmp_path_factory.mktemp("files")
    suffix = {"truncated_mat": ".mat", "mat_no_xy": ".mat", "garbage_npz": ".npz"}.get(kind, ".csv")
    path = folder / f"data{suffix}"
    if kind == "truncated_mat":
        scipy.io.savemat(path, {"X": np.ones((5, 3)), "Y": np.arange(5) % 2})
        path.write_bytes(path.read_bytes()[: max(1, len(payload))])
    elif kind == "mat_no_xy":
        scipy.io.savemat(path, {"data": np.ones((5, 3))})
    elif kind == "garbage_npz":
        path.write_bytes(b"PK" + payload)
    elif kind == "empty_csv":
        path.write_bytes(b"")
    else:
        path.write_bytes(b"a,b\n" + payload.replace(b"\x00", b"x"))
    with pytest.raises((ValueError, TypeError)) as info:
        load_dataset(str(path))
    assert "data" in str(info.value)  # names the file
    result = runner.invoke(app, ["run", "--dataset", str(path), "--epochs", "1", "--hidden", "4"])
    assert result.exit_code == 2, result.output
    assert "data" in result.output
