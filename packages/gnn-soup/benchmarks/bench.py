"""gnn-soup benchmarks on Cora, side by side with plain PyG; writes ``<out>/bench.json``.

1. parallel speedup: K=4 ingredients with 1 vs 2 worker processes (cold = pool start included);
2. epoch time: PyG's example GCN loop (dense input dropout) vs the gnn-soup training step;
3. soup search: an 11-point interpolation grid with torch.func.functional_call vs load_state_dict;
4. partition time: pymetis METIS vs a random partition (and their edge cuts).

Run: python packages/gnn-soup/benchmarks/bench.py --out DIR [--quick] [--data-dir DIR]
The parallel benchmark needs both cores of the machine free to mean anything.
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
from research_systems_core.results import write_json

log = logging.getLogger("gnn_soup.bench")


def bench_parallel(data: GraphData, steps: int) -> dict:
    config = TrainConfig(hidden_dim=64, steps=steps, eval_every=10)
    plan = make_plan(data.name, 4, config, samplers=["full"], seed=0)
    out: dict = {"ingredients": 4, "steps_per_ingredient": steps}
    reference = None
    for workers in (1, 2):
        executor = ProcessExecutor(workers=workers)
        try:
            start = time.perf_counter()
            executor.warm_up(data)
            started = time.perf_counter()
            results = train_plan(plan, data, executor)
            done = time.perf_counter()
        finally:
            executor.close()
        out[f"workers_{workers}"] = {
            "ingredient_seconds": [round(r.seconds, 2) for r in results],
            "cold_seconds": round(done - start, 3),
            "warm_seconds": round(done - started, 3),
            "pool_start_seconds": round(started - start, 3),
        }
        states = [r.state_dict for r in results]
        if reference is None:
            reference = states
        else:
            out["identical_weights"] = all(
                torch.equal(a[k], b[k]) for a, b in zip(reference, states, strict=True) for k in a
            )
    w1, w2 = out["workers_1"], out["workers_2"]
    out["speedup_warm"] = round(w1["warm_seconds"] / w2["warm_seconds"], 3)
    out["speedup_cold"] = round(w1["cold_seconds"] / w2["cold_seconds"], 3)
    out["goal"] = ">= 1.7x with 2 workers"
    return out


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

    def reload() -> list[float]:
        scores = []
        for alpha in alphas:
            fresh = copy.deepcopy(reload_model)
            fresh.load_state_dict(interpolate_state_dicts(a, b, alpha))
            with torch.no_grad():
                logits = fresh(data.features, evaluators.structure)
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


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, type=pathlib.Path, help="output directory for bench.json")
    parser.add_argument("--quick", action="store_true", help="fewer repeats and steps")
    parser.add_argument("--data-dir", default=None, help="data directory with planetoid/Cora/raw")
    parser.add_argument("--skip-parallel", action="store_true", help="skip the 2-worker benchmark")
    parser.add_argument("--only-parallel", action="store_true", help="run only the 2-worker benchmark")
    args = parser.parse_args()
    setup_logging("INFO")
    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    cache = pathlib.Path(tempfile.mkdtemp(prefix="gnn-soup-bench-"))
    data = load_dataset("Cora", data_dir=args.data_dir, cache_dir=cache)
    results: dict = {"dataset": data.summary(), "quick": args.quick}
    if not args.only_parallel:
        log.info("epoch time")
        results["epoch_time"] = bench_epoch(data, 60 if args.quick else 200, [0] if args.quick else [0, 1, 2])
        log.info("soup search")
        results["soup_search"] = bench_soup_search(data, 3 if args.quick else 10)
        log.info("partition")
        results["partition"] = bench_partition(data, [8, 32, 128], 3 if args.quick else 10)
    if not args.skip_parallel:
        log.info("parallel speedup")
        load_before = os.getloadavg()
        results["parallel"] = bench_parallel(data, 150 if args.quick else 600)
        results["parallel"]["load_average_before"] = load_before
    results["peer"] = (
        "PyG 2.8 (examples/gcn.py loop). PyG's ClusterData, NeighborLoader and GraphSAINT samplers need "
        "pyg-lib or torch-sparse, which are not installed here, so they cannot be timed side by side."
    )
    results["load_average"] = os.getloadavg()
    results["metadata"] = run_metadata(packages=["gnn-soup", "torch-geometric", "pymetis"])
    name = "bench_parallel.json" if args.only_parallel else "bench.json"
    path = write_json(args.out / name, results)
    log.info("wrote %s", path)


if __name__ == "__main__":
    main()
