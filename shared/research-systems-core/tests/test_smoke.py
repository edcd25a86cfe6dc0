"""Release smoke test: the installed core imports without torch and round-trips a result file."""

from __future__ import annotations

import importlib.metadata

import research_systems_core
from research_systems_core.results import read_json, write_json


def test_version_and_a_json_round_trip(tmp_path) -> None:
    assert research_systems_core.__version__ == importlib.metadata.version("research-systems-core")
    path = write_json(tmp_path / "x.json", {"a": [1, 2.5]})
    assert read_json(path) == {"a": [1, 2.5]}
