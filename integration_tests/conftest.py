"""Integration tests run every member in one venv; one torch thread (2-core machines)."""

from __future__ import annotations

import pathlib

import pytest
import torch

from research_systems_core.data import resolve_data_dir

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def data_dir() -> pathlib.Path:
    """The shared data directory (``$RESEARCH_DATA_DIR``); tests needing it skip when it is absent."""
    path = resolve_data_dir()
    if not path.is_dir():
        pytest.skip(f"data directory {path} not found; set RESEARCH_DATA_DIR")
    return path
