import pytest
import torch

from research_systems_core.data import resolve_data_dir


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)
    torch.manual_seed(0)


@pytest.fixture
def mnist_dir():
    path = resolve_data_dir()
    if not (path / "MNIST" / "raw").is_dir():
        pytest.skip(f"MNIST not found under {path} (set RESEARCH_DATA_DIR)")
    return path
