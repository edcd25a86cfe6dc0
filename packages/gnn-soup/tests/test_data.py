import pytest
import torch

from gnn_soup.data import DATASETS, load_dataset
from research_systems_core.data import DatasetNotFoundError


def test_cora_loads_offline_into_a_writable_cache(cora_root, tmp_path) -> None:
    data = load_dataset("Cora", data_dir=cora_root, cache_dir=tmp_path)
    assert data.summary() == {
        "name": "Cora",
        "nodes": 2708,
        "edges": 10556,
        "features": 1433,
        "classes": 7,
        "train": 140,
        "val": 500,
        "test": 1000,
        "isolated_nodes": 0,
    }
    assert data.features.sparse
    assert torch.allclose(
        data.features.to_dense().sum(1)[data.features.to_dense().sum(1) > 0], torch.tensor(1.0)
    )
    assert (tmp_path / "planetoid" / "Cora" / "processed").is_dir()  # processed next to the symlinked raw
    assert not bool((data.edge_index[0] == data.edge_index[1]).any())


def test_missing_offline_data_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(DatasetNotFoundError, match=r"planetoid/CiteSeer/raw/ind.citeseer.graph not found"):
        load_dataset("CiteSeer", data_dir=tmp_path, cache_dir=tmp_path / "cache")
    with pytest.raises(DatasetNotFoundError, match="Flickr"):
        load_dataset("Flickr", data_dir=tmp_path, cache_dir=tmp_path / "cache")


def test_unknown_dataset_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="Karate") as info:
        load_dataset("Karate")
    assert "Cora" in str(info.value) and "ogbn-arxiv" in str(info.value)
    assert {"Cora", "CiteSeer", "PubMed", "Flickr", "Reddit", "ogbn-arxiv", "ogbn-products"} <= set(
        DATASETS.names()
    )


def test_synthetic_graph_is_seeded_and_split(graph) -> None:
    again = load_dataset("synthetic", num_nodes=240, num_classes=3, num_features=45, seed=3)
    assert torch.equal(graph.edge_index, again.edge_index)
    masks = graph.train_mask.int() + graph.val_mask.int() + graph.test_mask.int()
    assert int(masks.max()) == 1 and int(masks.sum()) == graph.num_nodes
    src, dst = graph.edge_index
    assert {(int(a), int(b)) for a, b in zip(src, dst, strict=True)} == {
        (int(b), int(a)) for a, b in zip(src, dst, strict=True)
    }
