"""The large-graph paths: symmetric full-graph GCN operator, forkserver workers and their memory,
target-batched layer-wise scoring, the SBM generator's dedupe, smaps_rollup PSS."""

import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from gnn_soup.executors import ProcessExecutor, resolve_start_method
from gnn_soup.inference import layerwise_forward
from gnn_soup.memory import _smaps_rollup, process_memory
from gnn_soup.models import SymmetricNormAdjacency, create_model
from gnn_soup.sbm import _sorted_unique, make_sbm_graph
from gnn_soup.training import TrainConfig, TrainingContext, accuracy, build_model, final_scores

FUZZ = int(os.environ.get("FUZZ_EXAMPLES", "20"))


def _dense_gcn(graph) -> torch.Tensor:
    """``D^-1/2 (A + I) D^-1/2`` by hand from the edge list."""
    n = graph.num_nodes
    a = torch.zeros(n, n)
    a[graph.edge_index[1], graph.edge_index[0]] = 1.0
    a += torch.eye(n)
    dinv = a.sum(1).rsqrt()
    return dinv[:, None] * a * dinv[None, :]


def test_symmetric_operator_is_the_gcn_normalisation(graph) -> None:
    adjacency = SymmetricNormAdjacency(graph.graph.indptr, graph.graph.indices, graph.num_nodes)
    assert torch.allclose(adjacency.dense(), _dense_gcn(graph), atol=1e-6)
    h = torch.randn(graph.num_nodes, 5)
    assert torch.allclose(adjacency @ h, _dense_gcn(graph) @ h, atol=1e-5)


def test_full_graph_gcn_forward_and_gradients_equal_pygs_path(graph) -> None:
    torch.manual_seed(0)
    model = create_model("gcn", in_dim=graph.features.shape[1], out_dim=3, hidden_dim=64, dropout=0.0)
    reference = model.prepare(graph.edge_index, graph.num_nodes)  # PyG gcn_norm, torch sparse CSR
    symmetric = model.prepare_graph(graph.graph)
    grads = []
    for structure in (reference, symmetric):
        model.zero_grad()
        out = model(graph.features, structure)
        F.cross_entropy(out[graph.train_mask], graph.y[graph.train_mask]).backward()
        grads.append((out.detach(), [p.grad.clone() for p in model.parameters()]))
    (out_a, grads_a), (out_b, grads_b) = grads
    assert torch.allclose(out_a, out_b, atol=1e-5)
    for a, b in zip(grads_a, grads_b, strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def test_narrow_input_is_propagated_before_the_linear_map(graph) -> None:
    """(A_hat h) W == A_hat (h W): the narrow-side order gives the same layer output."""
    torch.manual_seed(1)
    model = create_model("gcn", in_dim=4, out_dim=3, hidden_dim=32, dropout=0.0).eval()
    x = torch.randn(graph.num_nodes, 4)
    with torch.no_grad():
        a = model(x, model.prepare(graph.edge_index, graph.num_nodes))
        b = model(x, model.prepare_graph(graph.graph))
    assert torch.allclose(a, b, atol=1e-5)


def test_target_batched_layerwise_scoring_equals_the_full_forward(graph) -> None:
    torch.manual_seed(2)
    model = create_model("gcn", in_dim=graph.features.shape[1], out_dim=3, hidden_dim=8).eval()
    with torch.no_grad():
        full = model(graph.features, model.prepare(graph.edge_index, graph.num_nodes))
    nodes = torch.tensor([9, 3, 150, 3, 77, 239, 0])
    batched = layerwise_forward(model, graph.graph, graph.features, nodes=nodes, chunk_size=5, target_batch=2)
    assert torch.allclose(full[nodes], batched, atol=1e-5)
    with pytest.raises(ValueError, match="target_batch"):
        layerwise_forward(model, graph.graph, graph.features, nodes=nodes, target_batch=0)


@pytest.mark.parametrize("method", ["full", "layerwise"])
def test_final_scores_are_the_accuracy_on_every_val_and_test_node(graph, method) -> None:
    config = TrainConfig(hidden_dim=8, eval_method=method)
    torch.manual_seed(3)
    model = build_model(config, graph).eval()
    with torch.no_grad():
        logits = model(graph.features, model.prepare(graph.edge_index, graph.num_nodes))
    val, test = final_scores(TrainingContext(graph), model, config)
    assert val == pytest.approx(accuracy(logits, graph.y, graph.val_mask))
    assert test == pytest.approx(accuracy(logits, graph.y, graph.test_mask))


@settings(max_examples=FUZZ, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=60), max_size=200))
def test_sorted_unique_is_numpys_unique(values) -> None:
    keys = np.array(values, dtype=np.int64)
    assert np.array_equal(_sorted_unique(keys.copy()), np.unique(keys))


def test_sbm_graph_is_symmetric_loop_free_and_class_dependent() -> None:
    data = make_sbm_graph(num_nodes=2000, num_edges=20_000, homophily=0.8, signal=2.0, seed=1)
    edges = data.edge_index
    assert not bool((edges[0] == edges[1]).any())
    keys = set((edges[0] * 2000 + edges[1]).tolist())
    assert keys == set((edges[1] * 2000 + edges[0]).tolist())  # symmetric
    assert len(keys) == edges.shape[1]  # no duplicates
    same = (data.y[edges[0]] == data.y[edges[1]]).float().mean()
    assert same > 0.75  # homophily 0.8 plus chance 0.1 * 0.2
    x = data.features.to_dense()
    centres = torch.stack([x[data.y == c].mean(0) for c in range(10)])
    spread = torch.cdist(centres, centres)
    assert spread[~torch.eye(10, dtype=torch.bool)].min() > 0.5  # class means stand apart


def test_smaps_rollup_gives_pss_between_private_and_resident() -> None:
    sample = _smaps_rollup(os.getpid())
    if sample is None:
        pytest.skip("no /proc/<pid>/smaps_rollup on this platform")
    assert 0 < sample.uss <= sample.pss <= sample.rss
    assert process_memory(os.getpid()) is not None
    assert process_memory(2**31 - 5) is None  # no such process


def test_start_methods() -> None:
    import multiprocessing

    expected = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    assert resolve_start_method("auto") == expected
    assert resolve_start_method("spawn") == "spawn"
    with pytest.raises(ValueError, match="start_method"):
        resolve_start_method("threads")
    with pytest.raises(ValueError, match="start_method"):
        ProcessExecutor(workers=1, start_method="fork")


def test_forkserver_workers_share_the_preloaded_runtime(graph) -> None:
    """Workers forked from the preloaded forkserver: torch is already imported there, and each
    worker's private memory is a small fraction of what it maps (the runtime pages are shared)."""
    if resolve_start_method("auto") != "forkserver":
        pytest.skip("no forkserver on this platform")
    executor = ProcessExecutor(workers=4)
    warm = ProcessExecutor(workers=1)  # a forkserver that is already running starts workers fast
    try:
        warm.warm_up(graph)
        executor.warm_up(graph)
        servers, workers = executor.server_pids(), executor.worker_pids()
        assert len(servers) == 1 and len(workers) == 4  # every worker started, none left for later
        assert executor.pool_pids() == servers + workers
        for pid in workers:
            memory = process_memory(pid)
            if memory is None:
                pytest.skip("process memory is not readable here")
            assert memory.uss < 0.5 * memory.rss, (memory.uss, memory.rss)
    finally:
        executor.close()
        warm.close()


def test_layerwise_gcn_with_a_narrow_input_equals_the_full_forward(graph) -> None:
    """The block layer aggregates before the linear map when the input is narrower (16 -> 32 here)."""
    torch.manual_seed(4)
    model = create_model("gcn", in_dim=4, out_dim=3, hidden_dim=32, num_layers=3).eval()
    from gnn_soup.features import NodeFeatures

    x = NodeFeatures(torch.randn(graph.num_nodes, 4), sparse=False)
    with torch.no_grad():
        full = model(x, model.prepare(graph.edge_index, graph.num_nodes))
    assert torch.allclose(full, layerwise_forward(model, graph.graph, x, chunk_size=29), atol=1e-5)
    nodes = torch.tensor([1, 100, 7])
    assert torch.allclose(full[nodes], layerwise_forward(model, graph.graph, x, nodes=nodes), atol=1e-5)
