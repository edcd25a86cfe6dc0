"""Property-based bad-input tests of the shared API: every generated bad value is refused with a
ValueError/TypeError (or the module's documented error) whose message names the parameter; nothing
else escapes, and corrupt files are never taken for good ones."""

from __future__ import annotations

import dataclasses
import math
import os
import pathlib
import re

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from research_systems_core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from research_systems_core.config import ConfigError, config_from_dict
from research_systems_core.masks import MaskSet
from research_systems_core.precision import check_precision
from research_systems_core.torch_utils import resolve_device
from research_systems_core.validation import check_choice, check_int, check_range

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))
FUZZ = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
not_numbers = st.one_of(st.text(max_size=5), st.none(), st.lists(st.integers(), max_size=2), st.booleans())


@FUZZ
@given(value=st.one_of(not_numbers, st.floats(allow_nan=True, allow_infinity=True)))
def test_check_range_refuses_anything_outside_or_not_a_number(value: object) -> None:
    ok = isinstance(value, float) and math.isfinite(value) and 0.0 <= value < 1.0
    if ok:
        assert check_range("sparsity", value, 0.0, 1.0, high_inclusive=False) == value
        return
    with pytest.raises((ValueError, TypeError), match="sparsity"):
        check_range("sparsity", value, 0.0, 1.0, high_inclusive=False)


@FUZZ
@given(value=st.one_of(not_numbers, st.floats(), st.integers(max_value=0)))
def test_check_int_names_the_parameter(value: object) -> None:
    with pytest.raises((ValueError, TypeError), match="epochs"):
        check_int("epochs", value, minimum=1)


@FUZZ
@given(name=st.text(max_size=12))
def test_unknown_names_are_refused_by_name(name: str) -> None:
    if name in ("fp32", "bf16", "fp16"):
        assert check_precision(name) == name
    else:
        with pytest.raises(ValueError, match="precision"):
            check_precision(name)
    if name not in ("a", "b"):
        with pytest.raises(ValueError, match="method"):
            check_choice("method", name, ["a", "b"])


@FUZZ
@given(name=st.text(max_size=12))
def test_resolve_device_refuses_with_one_clear_error(name: str) -> None:
    try:
        device = resolve_device(name)
    except ValueError as error:
        assert "device" in str(error)
    else:
        assert isinstance(device, torch.device)


@dataclasses.dataclass
class _Optim:
    lr: float = 0.1
    steps: int = 10


@dataclasses.dataclass
class _Config:
    optim: _Optim = dataclasses.field(default_factory=_Optim)
    name: str = "run"


@FUZZ
@given(key=st.text(min_size=1, max_size=8), value=st.one_of(not_numbers, st.floats()))
def test_config_refuses_unknown_keys_and_wrong_types_by_name(key: str, value: object) -> None:
    if key in ("optim", "name"):
        return
    with pytest.raises(ConfigError, match=re.escape(repr(key))):
        config_from_dict(_Config, {key: value})
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        with pytest.raises(ConfigError, match="steps"):
            config_from_dict(_Config, {"optim": {"steps": value}})


@FUZZ
@given(cut=st.integers(min_value=1, max_value=200), flip=st.integers(min_value=0, max_value=10_000))
def test_a_damaged_checkpoint_is_never_loaded(tmp_path: pathlib.Path, cut: int, flip: int) -> None:
    path = save_checkpoint(tmp_path / f"c{cut}-{flip}", 1, {"w": torch.arange(64, dtype=torch.float32)})
    data = bytearray(path.read_bytes())
    if flip % 2:
        data[flip % len(data)] ^= 0xFF
    else:
        data = data[: max(0, len(data) - cut)]
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError):
        load_checkpoint(path)


@FUZZ
@given(
    sparsity=st.one_of(st.floats(allow_nan=True), not_numbers),
    n=st.integers(min_value=-2, max_value=6),
    m=st.integers(min_value=-2, max_value=6),
)
def test_mask_allocation_refuses_bad_sparsity_and_n_m(sparsity: object, n: int, m: int) -> None:
    scores = {"w": torch.rand(4, 8)}
    good = isinstance(sparsity, float) and math.isfinite(sparsity) and 0.0 <= sparsity < 1.0
    if not good:
        with pytest.raises((ValueError, TypeError), match="sparsity"):
            MaskSet.from_scores(scores, sparsity, allocation="global")
    if not (0 < n < m and 8 % m == 0):
        with pytest.raises((ValueError, TypeError), match=r"\bn\b|\bm\b|N:M|divisible"):
            MaskSet.from_nm(scores, n, m)
    else:
        mask = MaskSet.from_nm(scores, n, m).masks["w"]
        assert int(mask.sum()) == 4 * (8 // m) * n
