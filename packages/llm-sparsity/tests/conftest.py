from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
torch.set_num_threads(1)


@pytest.fixture
def tiny():
    from llm_sparsity.models import create_model

    return create_model("tiny_bert", seed=0)


@pytest.fixture(scope="session")
def arithmetic_dir():
    from research_systems_core.data import resolve_data_dir

    root = resolve_data_dir()
    if not (root / "arithmetic" / "mawps-asdiv-a_svamp" / "train.csv").is_file():
        pytest.skip(f"arithmetic data not found under {root} (set RESEARCH_DATA_DIR)")
    return root
