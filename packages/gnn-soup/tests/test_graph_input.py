"""Any graph in: PyG Data / data sets, edge-list files, stores; validated once with clear errors."""

import pathlib

import numpy as np
import pytest
import torch
from torch_geometric.data import Data

from gnn_soup.data import GraphDataError, as_graph_data, build_graph_data, load_dataset, load_edge_list
from gnn_soup.executors import SequentialExecutor
from gnn_soup.ingredients import make_plan, train_plan
from gnn_soup.samplers import create_sampler
from gnn_soup.store import open_graph, save_graph
from gnn_soup.training import TrainConfig
from research_systems_core.data import DatasetNotFoundError


def _pyg_data(graph) -> Data:
    return Data(
        x=graph.features.to_dense(),
        edge_index=graph.edge_index,
        y=graph.y,
        train_mask=graph.train_mask,
        val_mask=graph.val_mask,
        test_mask=graph.test_mask,
    )


def test_train_plan_takes_a_pyg_data_object(graph) -> None:
    config = TrainConfig(hidden_dim=8, steps=6, eval_every=3)
    results = train_plan(
        make_plan("mine", 2, config, samplers=["full", "neighbor"]), _pyg_data(graph), SequentialExecutor()
    )
    assert [r.index for r in results] == [0, 1]
    reference = train_plan(
        make_plan("mine", 2, config, samplers=["full", "neighbor"]), graph, SequentialExecutor()
    )
    for a, b in zip(results, reference, strict=True):  # same graph either way: same weights
        assert all(torch.equal(a.state_dict[k], b.state_dict[k]) for k in a.state_dict)


def test_pyg_dataset_object_and_random_split() -> None:
    from torch_geometric.datasets import FakeDataset

    dataset = FakeDataset(num_graphs=1, avg_num_nodes=60, num_channels=5, num_classes=3)
    data = as_graph_data(dataset)
    assert data.num_nodes == dataset[0].num_nodes and data.num_classes == 3
    masks = data.train_mask.int() + data.val_mask.int() + data.test_mask.int()
    assert bool((masks == 1).all())  # random 60/20/20 split covers every node once
    with pytest.raises(TypeError, match="one graph"):
        as_graph_data(FakeDataset(num_graphs=2, avg_num_nodes=20))
    with pytest.raises(TypeError, match="'edge_index'"):
        as_graph_data(Data(x=torch.ones(3, 2), y=torch.zeros(3)))


def test_edges_are_symmetrised_and_loops_dropped() -> None:
    data = build_graph_data("g", torch.ones(4, 2), [[0, 1, 2, 3], [1, 2, 2, 0]], [0, 1, 0, 1], split_seed=1)
    assert data.graph.num_edges == 6  # 0-1, 1-2, 3-0 in both directions; the loop 2-2 is gone
    e = data.edge_index
    assert set(zip(e[0].tolist(), e[1].tolist(), strict=True)) == {
        (0, 1),
        (1, 0),
        (1, 2),
        (2, 1),
        (0, 3),
        (3, 0),
    }


def test_edge_list_files(tmp_path, graph) -> None:
    edges = graph.edge_index.T.numpy()
    np.savetxt(tmp_path / "edges.txt", edges, fmt="%d")
    np.save(tmp_path / "x.npy", graph.features.to_dense().numpy())
    np.save(tmp_path / "y.npy", graph.y.numpy())
    np.savez(
        tmp_path / "masks.npz",
        train=graph.train_mask.numpy(),
        val=graph.val_mask.numpy(),
        test=graph.test_mask.numpy(),
    )
    data = load_edge_list(
        tmp_path / "edges.txt", tmp_path / "x.npy", tmp_path / "y.npy", tmp_path / "masks.npz"
    )
    assert torch.equal(data.graph.indptr, graph.graph.indptr) and torch.equal(
        data.graph.indices, graph.graph.indices
    )
    assert torch.equal(data.val_mask, graph.val_mask)
    spec = f"files:{tmp_path / 'edges.txt'},{tmp_path / 'x.npy'},{tmp_path / 'y.npy'}"
    assert load_dataset(spec).num_nodes == graph.num_nodes
    (tmp_path / "bad.txt").write_text("0 1\n1 x\n")
    with pytest.raises(ValueError, match="edges"):
        load_edge_list(tmp_path / "bad.txt", tmp_path / "x.npy", tmp_path / "y.npy")
    with pytest.raises(FileNotFoundError, match="labels"):
        load_edge_list(tmp_path / "edges.txt", tmp_path / "x.npy", tmp_path / "nope.npy")


def test_store_round_trip_is_memory_mapped(tmp_path, graph) -> None:
    path = save_graph(graph, tmp_path / "g")
    opened = open_graph(path)
    assert opened.source_dir == path and opened.summary() == graph.summary()
    assert torch.equal(opened.features.to_dense(), graph.features.to_dense())
    assert torch.equal(opened.graph.indices.long(), graph.graph.indices)
    assert opened.graph.indices.dtype == torch.int32  # compact on disk
    maps = pathlib.Path("/proc/self/maps").read_text()
    assert str(path / "indices.npy") in maps and str(path / "x_values.npy") in maps  # mapped, not copied
    assert load_dataset(f"store:{path}").num_nodes == graph.num_nodes
    with pytest.raises(FileExistsError):
        save_graph(graph, path)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            lambda d: d.update(x=torch.where(torch.arange(5)[:, None] == 2, float("nan"), torch.ones(5, 3))),
            "NaN",
        ),
        (lambda d: d.update(x=torch.full((5, 3), float("inf"))), "NaN/inf"),
        (
            lambda d: d.update(
                masks=(
                    torch.zeros(5, dtype=torch.bool),
                    torch.tensor([0, 0, 1, 0, 0]).bool(),
                    torch.zeros(5).bool(),
                )
            ),
            "train_mask is empty",
        ),
        (
            lambda d: d.update(
                masks=(torch.tensor([1, 1, 0, 0, 0]).bool(), torch.zeros(5).bool(), torch.zeros(5).bool())
            ),
            "val_mask is empty",
        ),
        (
            lambda d: d.update(
                masks=(
                    torch.tensor([1, 1, 0, 0, 0]).bool(),
                    torch.tensor([0, 1, 1, 0, 0]).bool(),
                    torch.zeros(5).bool(),
                )
            ),
            "overlap",
        ),
        (lambda d: d.update(edge_index=torch.tensor([[0, 1], [1, 7]])), r"edge ids must be in \[0, 5\)"),
        (lambda d: d.update(edge_index=torch.tensor([[0.0], [1.0]])), "integers"),
        (lambda d: d.update(y=torch.tensor([0, 1, 5, 0, 1])), "labels"),
        (lambda d: d.update(y=torch.tensor([0, 1])), "one entry per node"),
    ],
)
def test_bad_graphs_are_clear_errors(change, message) -> None:
    fields = {
        "x": torch.ones(5, 3),
        "edge_index": torch.tensor([[0, 1, 2], [1, 2, 3]]),
        "y": torch.tensor([0, 1, 0, 1, 0]),
        "masks": (
            torch.tensor([1, 1, 0, 0, 0]).bool(),
            torch.tensor([0, 0, 1, 0, 0]).bool(),
            torch.tensor([0, 0, 0, 1, 1]).bool(),
        ),
    }
    change(fields)
    with pytest.raises(GraphDataError, match=message):
        build_graph_data(
            "g", fields["x"], fields["edge_index"], fields["y"], masks=fields["masks"], num_classes=2
        )


def test_samplers_on_a_graph_without_edges_are_clear_errors() -> None:
    masks = (
        torch.tensor([1, 1, 0, 0]).bool(),
        torch.tensor([0, 0, 1, 0]).bool(),
        torch.tensor([0, 0, 0, 1]).bool(),
    )
    data = build_graph_data(
        "empty", torch.ones(4, 2), torch.empty(2, 0, dtype=torch.long), [0, 1, 0, 1], masks=masks
    )
    for name in ("saint_rw", "saint_edge", "cluster"):
        with pytest.raises(ValueError, match=f"sampler '{name}' needs a graph with edges"):
            create_sampler(name, data.graph, data.train_mask, seed=0)
    (result,) = train_plan(
        make_plan("empty", 1, TrainConfig(hidden_dim=4, steps=2, eval_every=1)), data, SequentialExecutor()
    )
    assert 0.0 <= result.val_acc <= 1.0  # full-graph training on isolated nodes still works


def test_offline_loaders_say_how_to_get_the_data(tmp_path) -> None:
    with pytest.raises(DatasetNotFoundError, match="download"):
        load_dataset("ogbn-arxiv", data_dir=tmp_path)
    with pytest.raises(DatasetNotFoundError, match="download"):
        load_dataset("ogbn-papers100M", data_dir=tmp_path)
    with pytest.raises(DatasetNotFoundError, match="download"):
        load_dataset("pyg:Amazon/Computers", data_dir=tmp_path)
    with pytest.raises(ValueError, match="Amazonn"):
        load_dataset("pyg:Amazonn/Computers", data_dir=tmp_path)
    with pytest.raises(ValueError, match="3 or 4 paths"):
        load_dataset("files:a,b")
