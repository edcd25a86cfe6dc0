import pathlib

import pytest
import torch

from gnn_soup.data import GraphData, load_dataset


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def graph() -> GraphData:
    return load_dataset("synthetic", num_nodes=240, num_classes=3, num_features=45, seed=3)


@pytest.fixture(scope="session")
def cora_root() -> pathlib.Path:
    from research_systems_core.data import resolve_data_dir

    data_dir = resolve_data_dir()
    if not (data_dir / "planetoid" / "Cora" / "raw" / "ind.cora.graph").exists():
        pytest.skip(f"offline Cora not found under {data_dir}/planetoid/Cora/raw")
    return data_dir
