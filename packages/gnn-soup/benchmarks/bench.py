"""gnn-soup benchmarks, side by side with plain PyG; writes ``<out>/bench.json`` (shared schema).

1. epoch time on Cora: PyG's example GCN loop (dense input dropout) vs the gnn-soup training step;
2. soup search: an 11-point interpolation grid with torch.func.functional_call vs load_state_dict;
3. partition time: pymetis METIS vs a random partition (and their edge cuts);
4. workers on a generated SBM graph (1M nodes / 10M edges; --quick 200k, --smoke 5k): K=4
   ingredients with 1, 2 and 4 worker processes forked from one preloaded forkserver, mapping one
   shared graph: throughput (pool start-up reported apart) and memory (peak summed PSS of the
   whole pool, forkserver included, the same way for every worker count);
5. layer-wise inference vs one full-batch forward on the SBM graph: CPU seconds and peak PSS,
   each in a fresh worker.

Run: python packages/gnn-soup/benchmarks/bench.py --out DIR [--quick | --smoke] [--data-dir DIR]
The worker benchmarks need both cores of the machine free to mean anything.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import pathlib
import statistics
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch
import torch.nn.functional as F

from gnn_soup.data import GraphData, load_dataset
from gnn_soup.executors import ProcessExecutor
from gnn_soup.ingredients import make_plan, train_plan
from gnn_soup.partition import edge_cut, metis_partition, random_partition
from gnn_soup.soup import make_evaluators
from gnn_soup.training import IngredientSpec, TrainConfig, TrainingContext, build_model, train_ingredient
from research_systems_core.logs import setup_logging
from research_systems_core.metadata import run_metadata

log = logging.getLogger("gnn_soup.bench")


def _pyg_example_loop(data: GraphData, epochs: int, seed: int) -> tuple[float, float]:
    """PyG's examples/gcn.py model and loop: dense X, dropout on it, GCNConv(cached=True)."""
    from torch_geometric.nn import GCNConv

    torch.manual_seed(seed)
    x = data.features.to_dense()

    class GCN(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = GCNConv(x.shape[1], 16, cached=True)
            self.conv2 = GCNConv(16, data.num_classes, cached=True)

        def forward(self, x, edge_index):
            x = F.dropout(x, p=0.5, training=self.training)
            x = self.conv1(x, edge_index).relu()
            x = F.dropout(x, p=0.5, training=self.training)
            return self.conv2(x, edge_index)

    model = GCN()
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=5e-4)
    times = []
    for _ in range(epochs):
        t = time.perf_counter()
        model.train()
        optimizer.zero_grad()
        out = model(x, data.edge_index)
        F.cross_entropy(out[data.train_mask], data.y[data.train_mask]).backward()
        optimizer.step()
        times.append(time.perf_counter() - t)
    model.eval()
    with torch.no_grad():
        pred = model(x, data.edge_index).argmax(-1)
    acc = float((pred[data.test_mask] == data.y[data.test_mask]).float().mean())
    return statistics.median(times[5:]) * 1000, acc


def _gnn_soup_loop(data: GraphData, epochs: int, seed: int) -> tuple[float, float]:
    """The same model (2-layer GCN, 16 hidden, dropout 0.5 on input and hidden) as gnn-soup trains it."""
    torch.manual_seed(seed)
    config = TrainConfig(hidden_dim=16, dropout=0.5)
    model = build_model(config, data)
    graph = model.prepare(data.edge_index, data.num_nodes)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01, weight_decay=5e-4)
    times = []
    for _ in range(epochs):
        t = time.perf_counter()
        model.train()
        optimizer.zero_grad()
        out = model(data.features, graph)
        F.cross_entropy(out[data.train_mask], data.y[data.train_mask]).backward()
        optimizer.step()
        times.append(time.perf_counter() - t)
    model.eval()
    with torch.no_grad():
        pred = model(data.features, graph).argmax(-1)
    acc = float((pred[data.test_mask] == data.y[data.test_mask]).float().mean())
    return statistics.median(times[5:]) * 1000, acc


def bench_epoch(data: GraphData, epochs: int, seeds: list[int]) -> dict:
    naive = [_pyg_example_loop(data, epochs, s) for s in seeds]
    ours = [_gnn_soup_loop(data, epochs, s) for s in seeds]
    naive_ms = statistics.median(t for t, _ in naive)
    ours_ms = statistics.median(t for t, _ in ours)
    # the whole ingredient loop (sampling, validation every 5 steps, best-state copies) per step
    context = TrainingContext(data)
    config = TrainConfig(hidden_dim=16, steps=epochs, eval_every=5)
    full_loop = [
        train_ingredient(context, IngredientSpec(index=0, seed=s), config).seconds / epochs * 1000
        for s in seeds
    ]
    return {
        "train_ingredient_ms_per_step_incl_eval_every_5": round(statistics.median(full_loop), 3),
        "epochs": epochs,
        "seeds": seeds,
        "pyg_example_ms_per_epoch": round(naive_ms, 3),
        "gnn_soup_ms_per_epoch": round(ours_ms, 3),
        "speedup": round(naive_ms / ours_ms, 2),
        "pyg_example_test_acc": [round(a, 4) for _, a in naive],
        "gnn_soup_test_acc": [round(a, 4) for _, a in ours],
        "goal": ">= 5x faster than the naive loop, same model semantics",
        "how": "sparse CSR features with dropout on the stored non-zeros (dropout(0) = 0), sparse-dense "
        "product in the first layer, GCN normalisation precomputed as a sparse adjacency",
    }


def bench_soup_search(data: GraphData, repeats: int) -> dict:
    from research_systems_core.averaging import interpolate_state_dicts

    config = TrainConfig(hidden_dim=64)
    torch.manual_seed(0)
    a = build_model(config, data).state_dict()
    torch.manual_seed(1)
    b = build_model(config, data).state_dict()
    evaluators = make_evaluators(build_model(config, data), data)
    alphas = [i / 10 for i in range(11)]

    def functional() -> list[float]:
        return [evaluators.val(interpolate_state_dicts(a, b, alpha)) for alpha in alphas]

    reload_model = build_model(config, data)
    reload_model.eval()
    structure = reload_model.prepare(data.edge_index, data.num_nodes)

    def reload() -> list[float]:
        scores = []
        for alpha in alphas:
            fresh = copy.deepcopy(reload_model)
            fresh.load_state_dict(interpolate_state_dicts(a, b, alpha))
            with torch.no_grad():
                logits = fresh(data.features, structure)
            mask = data.val_mask
            scores.append(float((logits[mask].argmax(-1) == data.y[mask]).float().mean()))
        return scores

    functional()
    t_func, t_reload = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        s1 = functional()
        t_func.append(time.perf_counter() - t)
        t = time.perf_counter()
        s2 = reload()
        t_reload.append(time.perf_counter() - t)
    return {
        "grid_points": len(alphas),
        "functional_call_seconds": round(statistics.median(t_func), 4),
        "deepcopy_load_state_dict_seconds": round(statistics.median(t_reload), 4),
        "same_scores": s1 == s2,
        "goal": "< 0.2 s for the 11-point grid",
    }


def bench_partition(data: GraphData, parts_list: list[int], repeats: int) -> dict:
    rows = []
    for parts in parts_list:
        t_metis, t_rand = [], []
        for _ in range(repeats):
            t = time.perf_counter()
            metis = metis_partition(data.edge_index, data.num_nodes, parts)
            t_metis.append(time.perf_counter() - t)
            t = time.perf_counter()
            rand = random_partition(data.num_nodes, parts)
            t_rand.append(time.perf_counter() - t)
        rows.append(
            {
                "num_parts": parts,
                "metis_seconds": round(statistics.median(t_metis), 4),
                "random_seconds": round(statistics.median(t_rand), 5),
                "metis_edge_cut": edge_cut(data.edge_index, metis),
                "random_edge_cut": edge_cut(data.edge_index, rand),
                "edges": int(data.edge_index.shape[1]),
            }
        )
    return {"rows": rows, "note": "METIS time includes symmetrising and validating the CSR"}


def _sbm(out: pathlib.Path, num_nodes: int, num_edges: int) -> GraphData:
    from gnn_soup.sbm import write_sbm_store
    from gnn_soup.store import open_graph

    path = write_sbm_store(
        out / f"sbm-{num_nodes}", num_nodes=num_nodes, num_edges=num_edges, split=(0.1, 0.01, 0.01)
    )
    return open_graph(path)


def _sbm_plan(data: GraphData, k: int, steps: int):
    config = TrainConfig(
        hidden_dim=32, dropout=0.0, steps=steps, eval_every=steps, eval_method="layerwise", eval_nodes=500
    )
    kwargs = {"neighbor": {"batch_size": 1024, "fanouts": [10, 5]}}
    return make_plan(data.name, k, config, samplers=["neighbor"], sampler_kwargs=kwargs, seed=0)


def bench_workers(data: GraphData, steps: int, counts: tuple[int, ...] = (1, 2, 4)) -> dict:
    """The same K=4 ingredients with 1, 2 and 4 workers forked from one preloaded forkserver.

    Throughput: wall seconds of training once the pool is started (pool start-up reported
    apart). Memory: the peak, over time, of the summed PSS of the pool's processes (the
    forkserver, which holds the shared interpreter / torch pages, plus every worker), measured
    the same way for every worker count, from ``/proc/<pid>/smaps_rollup``.
    """
    from gnn_soup.memory import MemoryMonitor

    out: dict = {"graph": data.summary(), "steps_per_ingredient": steps, "most_workers": max(counts)}
    for workers in counts:
        executor = ProcessExecutor(workers=workers)
        try:
            start = time.perf_counter()
            executor.warm_up(data)
            started = time.perf_counter()
            pids = executor.pool_pids()
            with MemoryMonitor(pids, interval=0.1) as monitor:
                results = train_plan(_sbm_plan(data, 4, steps), data, executor)
            out[f"workers_{workers}"] = {
                "seconds": round(time.perf_counter() - started, 3),
                "pool_start_seconds": round(started - start, 3),
                "ingredient_seconds": [round(r.seconds, 2) for r in results],
                "start_method": executor.start_method,
                "pool_processes": len(pids),
                "memory": monitor.summary_mib(),
            }
        finally:
            executor.close()
    return out


def bench_layerwise(data: GraphData) -> dict:
    """Layer-wise inference vs one full-batch forward over all nodes, each in a fresh worker forked
    from the preloaded forkserver: CPU seconds and the worker's peak PSS above its idle PSS."""
    from gnn_soup.scaling import layerwise_vs_full

    return layerwise_vs_full(data.source_dir, hidden_dim=32)


def _rows(results: dict) -> list[dict]:
    from research_systems_core.bench import ratio_row

    rows = []
    if "epoch_time" in results:
        e = results["epoch_time"]
        rows.append(
            ratio_row(
                "epoch time, GCN on Cora (ms)",
                e["gnn_soup_ms_per_epoch"],
                e["pyg_example_ms_per_epoch"],
                unit="ms",
                goal=">= 5x",
                higher_is_better=False,
                met=e["pyg_example_ms_per_epoch"] / e["gnn_soup_ms_per_epoch"] >= 5,
            )
        )
    if "soup_search" in results:
        s = results["soup_search"]
        rows.append(
            ratio_row(
                "soup search, 11-point grid (s)",
                s["functional_call_seconds"],
                s["deepcopy_load_state_dict_seconds"],
                unit="s",
                goal="< 0.2 s",
                higher_is_better=False,
                met=s["functional_call_seconds"] < 0.2,
            )
        )
    if "workers" in results:
        w = results["workers"]
        speed = w["workers_1"]["seconds"] / w["workers_2"]["seconds"]
        rows.append(
            ratio_row(
                "ingredient throughput, 2 vs 1 workers",
                speed,
                None,
                unit="x",
                goal=">= 1.7x",
                met=speed >= 1.7,
            )
        )
        most = w["most_workers"]  # 4, or 2 in --smoke
        one = w["workers_1"]["memory"]["peak_total_pss_mib"]
        many = w[f"workers_{most}"]["memory"]["peak_total_pss_mib"]
        rows.append(
            ratio_row(
                f"memory, pool of {most} workers / pool of 1 worker (peak summed PSS)",
                many / one,
                None,
                unit="x",
                goal="<= 1.5x",
                higher_is_better=False,
                met=many / one <= 1.5,
            )
        )
    if "layerwise" in results:
        lw = results["layerwise"]
        rows.append(
            ratio_row(
                "layer-wise inference, peak PSS added (MiB)",
                lw["layerwise"]["added_pss_mib"],
                lw["full"]["added_pss_mib"],
                unit="MiB",
                higher_is_better=False,
            )
        )
        rows.append(
            ratio_row(
                "layer-wise inference, CPU seconds",
                lw["layerwise"]["cpu_seconds"],
                lw["full"]["cpu_seconds"],
                unit="s",
                higher_is_better=False,
            )
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, type=pathlib.Path, help="output directory for bench.json")
    parser.add_argument("--quick", action="store_true", help="fewer repeats, a 200k-node SBM graph")
    parser.add_argument("--smoke", action="store_true", help="every section on tiny sizes (< 30 s of work)")
    parser.add_argument("--data-dir", default=None, help="data directory with planetoid/Cora/raw")
    parser.add_argument("--graph-dir", default=None, type=pathlib.Path, help="where to keep the SBM stores")
    args = parser.parse_args()
    setup_logging("INFO")
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    from research_systems_core.bench import bench_environment, write_bench_json

    environment = bench_environment({"torch-geometric": None, "pymetis": None})
    cache = pathlib.Path(tempfile.mkdtemp(prefix="gnn-soup-bench-"))
    try:
        data = load_dataset("Cora", data_dir=args.data_dir, cache_dir=cache)
    except FileNotFoundError:
        log.warning("Cora not found: the Cora sections run on the synthetic graph")
        data = load_dataset("synthetic", num_nodes=2000, num_features=500)
    sizes = {
        "smoke": (5_000, 50_000, 5),
        "quick": (200_000, 2_000_000, 60),
        "full": (1_000_000, 10_001_000, 100),
    }
    num_nodes, num_edges, steps = sizes[mode]
    results: dict = {"dataset": data.summary(), "mode": mode}
    log.info("epoch time")
    results["epoch_time"] = bench_epoch(
        data, {"smoke": 10, "quick": 60, "full": 100}[mode], [0] if mode != "full" else [0, 1, 2]
    )
    log.info("soup search")
    results["soup_search"] = bench_soup_search(data, {"smoke": 1, "quick": 3, "full": 10}[mode])
    log.info("partition")
    results["partition"] = bench_partition(
        data, [8, 32] if args.smoke else [8, 32, 128], 1 if args.smoke else 5
    )
    graph_root = args.graph_dir or cache
    sbm = _sbm(graph_root, num_nodes, num_edges)
    log.info("workers: throughput and memory on %s", sbm.summary())
    results["workers"] = bench_workers(sbm, steps, (1, 2) if args.smoke else (1, 2, 4))
    log.info("layer-wise inference")
    results["layerwise"] = bench_layerwise(sbm)
    results["metadata"] = run_metadata(packages=["gnn-soup", "torch-geometric", "pymetis"])
    path = write_bench_json(
        args.out / "bench.json",
        package="gnn-soup",
        mode=mode,
        environment=environment,
        rows=_rows(results),
        extra={"details": results},
    )
    log.info("wrote %s", path)


if __name__ == "__main__":
    main()
