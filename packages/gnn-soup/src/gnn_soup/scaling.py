"""Scaling run on a generated million-node SBM graph (this CPU).

1. The SBM graph (>= 1M nodes, >= 10M undirected edges, class-dependent features) is generated
   with vectorised NumPy and written once as a memory-mapped store.
2. Reference: one GCN trained full-batch on the whole graph in a one-worker pool (capped at
   ``full_steps`` steps); the pool's peak PSS (forkserver + worker) is what one full-graph model
   needs.
3. K GCN ingredients trained on mini-batches (neighbour sampling by default; any sampler) in a
   pool of ``workers`` processes forked from the same preloaded forkserver, mapping the same graph
   files; the pool's peak summed PSS is what the K ingredients need together.
4. Soups (uniform, greedy, greedy interpolation) and the logit ensemble, scored by layer-wise
   inference (validation on a fixed sample of validation nodes, test on all test nodes).
5. Layer-wise inference vs one full-batch forward over all nodes (seconds, peak PSS).

Verdicts: memory (the K-ingredient pool's peak PSS <= the full-graph pool's) and accuracy
(greedy interpolation soup within 2 points of full-graph training; against the best ingredient
and the ensemble).
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from gnn_soup.executors import ProcessExecutor
from gnn_soup.ingredients import IngredientStore, make_plan, train_plan
from gnn_soup.memory import MemoryMonitor, process_memory
from gnn_soup.plots import plot_scaling
from gnn_soup.sbm import write_sbm_store
from gnn_soup.soup import make_evaluators, run_soups
from gnn_soup.store import open_graph
from gnn_soup.training import TrainConfig, TrainingContext, build_model
from research_systems_core.results import write_json

log = logging.getLogger(__name__)


@dataclass
class ScalingConfig:
    num_nodes: int = 1_000_000
    num_edges: int = 10_001_000  # drawn; ~200 duplicates / loops are dropped, >= 10M remain
    num_features: int = 16
    num_classes: int = 10
    split: tuple[float, float, float] = (0.1, 0.01, 0.01)  # 100k train, 10k val, 10k test nodes
    num_ingredients: int = 4
    workers: int = 2
    ingredient_steps: int = 200
    ingredient_eval_every: int = 25
    lr: float = 0.01
    full_steps: int = 100  # capped: about 2 s per full-batch step on one thread at 1M nodes
    full_eval_every: int = 10
    full_lr: float = 0.03  # converges in fewer full-batch steps (checked at 100k nodes)
    hidden_dim: int = 32
    dropout: float = 0.0
    eval_nodes: int = 2000
    samplers: list[str] = field(default_factory=lambda: ["neighbor"])
    sampler_kwargs: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {
            "neighbor": {"batch_size": 1024, "fanouts": [10, 5]},
            "saint_rw": {"num_roots": 3000, "walk_length": 2},
            "fastgcn": {"batch_size": 1024, "layer_size": 8192},
        }
    )
    layerwise_benchmark: bool = True

    @classmethod
    def smoke(cls) -> ScalingConfig:
        return cls(
            num_nodes=20_000,
            num_edges=200_000,
            num_ingredients=2,
            ingredient_steps=20,
            ingredient_eval_every=10,
            full_steps=10,
            full_eval_every=5,
            eval_nodes=500,
        )


def _train_with_monitor(plan, data, store: IngredientStore, workers: int) -> tuple[list[dict], dict, float]:
    """Train ``plan`` in a pool of ``workers``; memory is the pool's (forkserver + workers) PSS."""
    executor = ProcessExecutor(workers=workers)
    try:
        executor.warm_up(data)
        pids = executor.pool_pids()
        idle = MemoryMonitor(pids)
        idle.sample()  # started workers (torch imported, graph mapped) before any training
        start = time.perf_counter()
        with MemoryMonitor(pids, interval=0.1) as monitor:
            metas = train_plan(plan, data, executor, store)
        seconds = time.perf_counter() - start
    finally:
        executor.close()
    memory = monitor.summary_mib()
    memory["start_method"] = executor.start_method
    memory["idle_total_pss_mib"] = idle.summary_mib()["peak_total_pss_mib"]
    memory["training_pss_mib"] = round(memory["peak_total_pss_mib"] - memory["idle_total_pss_mib"], 1)
    return metas, memory, seconds


def _config(cfg: ScalingConfig, eval_every: int, steps: int, lr: float) -> TrainConfig:
    return TrainConfig(
        model="gcn",
        hidden_dim=cfg.hidden_dim,
        dropout=cfg.dropout,
        weight_decay=0.0,
        lr=lr,
        steps=steps,
        eval_every=eval_every,
        eval_method="layerwise",
        eval_nodes=cfg.eval_nodes,
    )


def run_scaling(out: str | pathlib.Path, cfg: ScalingConfig | None = None, graph_dir=None) -> dict[str, Any]:
    """Run the scaling experiment; writes ``scaling.json`` (and ``scaling.png``) into ``out``."""
    cfg = cfg or ScalingConfig()
    out = pathlib.Path(out)
    start = time.perf_counter()
    graph_dir = pathlib.Path(graph_dir) if graph_dir else out / f"sbm-{cfg.num_nodes}"
    write_sbm_store(
        graph_dir,
        num_nodes=cfg.num_nodes,
        num_edges=cfg.num_edges,
        num_features=cfg.num_features,
        num_classes=cfg.num_classes,
        split=cfg.split,
    )
    generation_seconds = time.perf_counter() - start
    data = open_graph(graph_dir)
    log.info("graph: %s (%.1f s)", data.summary(), generation_seconds)
    full_config = _config(cfg, cfg.full_eval_every, cfg.full_steps, cfg.full_lr)
    full_plan = make_plan(data.name, 1, full_config, samplers=["full"])
    full_store = IngredientStore(out / "runs" / "full-graph")
    _, full_memory, full_seconds = _train_with_monitor(full_plan, data, full_store, workers=1)
    ing_config = _config(cfg, cfg.ingredient_eval_every, cfg.ingredient_steps, cfg.lr)
    plan = make_plan(
        data.name, cfg.num_ingredients, ing_config, samplers=cfg.samplers, sampler_kwargs=cfg.sampler_kwargs
    )
    store = IngredientStore(out / "runs" / "ingredients")
    _, ing_memory, ing_seconds = _train_with_monitor(plan, data, store, cfg.workers)
    states, metas = store.load_all()
    context = TrainingContext(data)
    evaluators = make_evaluators(build_model(ing_config, data), context, ing_config)
    soup_start = time.perf_counter()
    soups = run_soups(evaluators, states, [m["val_acc"] for m in metas])
    soups.pop("_states")
    soup_seconds = time.perf_counter() - soup_start
    full_state, _ = full_store.load(0)
    full_val, full_test = evaluators.scores(full_state)
    summary = _summary(cfg, data, full_memory, ing_memory, full_val, full_test, soups, metas)
    if cfg.layerwise_benchmark:
        summary["layerwise_inference"] = layerwise_vs_full(graph_dir, cfg.hidden_dim)
    summary["seconds"] = {
        "generation": round(generation_seconds, 1),
        "full_graph_training": round(full_seconds, 1),
        "ingredient_training": round(ing_seconds, 1),
        "soups": round(soup_seconds, 1),
        "total": round(time.perf_counter() - start, 1),
    }
    summary["config"] = dataclasses.asdict(cfg)
    write_json(out / "scaling.json", summary)
    plot_scaling(summary, out / "scaling.png")
    return summary


def _inference_job(graph_dir: str, method: str, hidden_dim: int) -> dict[str, float]:
    """In a pool worker: one eval forward over all nodes (``layerwise`` or ``full``), CPU seconds."""
    from gnn_soup.inference import layerwise_forward

    data = open_graph(graph_dir)
    torch.manual_seed(0)
    model = build_model(TrainConfig(hidden_dim=hidden_dim), data).eval()
    wall, cpu = time.perf_counter(), time.process_time()
    if method == "layerwise":
        logits = layerwise_forward(model, data.graph, data.features, chunk_size=16384)
    else:
        with torch.no_grad():
            logits = model(data.features, model.prepare_graph(data.graph))
    return {
        "cpu_seconds": round(time.process_time() - cpu, 2),
        "wall_seconds": round(time.perf_counter() - wall, 2),
        "checksum": float(logits[:1000].double().sum()),
    }


def layerwise_vs_full(graph_dir: str | pathlib.Path, hidden_dim: int = 32) -> dict[str, Any]:
    """Layer-wise inference vs one full-batch forward over all nodes, each in its own fresh worker
    (forked from the preloaded forkserver): seconds and the worker's peak PSS above its idle PSS."""
    from concurrent.futures import ProcessPoolExecutor

    from gnn_soup.executors import _pool_context, _worker_ready, resolve_start_method

    out: dict[str, Any] = {}
    for method in ("layerwise", "full"):
        with ProcessPoolExecutor(1, mp_context=_pool_context(resolve_start_method("auto"))) as pool:
            pid = pool.submit(_worker_ready).result()
            idle = process_memory(pid)
            with MemoryMonitor([pid], interval=0.05) as monitor:
                result = pool.submit(_inference_job, str(graph_dir), method, hidden_dim).result()
        peak = monitor.peak_pss.get(pid, 0)
        result["peak_pss_mib"] = round(peak / 2**20, 1)
        result["added_pss_mib"] = round((peak - (idle.pss if idle else 0)) / 2**20, 1)
        out[method] = result
    out["same_logits"] = abs(out["layerwise"]["checksum"] - out["full"]["checksum"]) < 1e-2
    if not out["same_logits"]:
        raise RuntimeError(f"layer-wise and full-batch logits differ: {out}")
    return out


def _summary(cfg, data, full_memory, ing_memory, full_val, full_test, soups, metas) -> dict[str, Any]:
    fits = ing_memory["peak_total_pss_mib"] <= full_memory["peak_total_pss_mib"]
    soup_test = soups["greedy_interpolation"]["test"]
    gap = soup_test - full_test
    verdict_memory = (
        f"peak PSS of the whole pool (forkserver + workers): {cfg.num_ingredients} ingredients on "
        f"{cfg.workers} workers {ing_memory['peak_total_pss_mib']:.0f} MiB vs "
        f"{full_memory['peak_total_pss_mib']:.0f} MiB for one full-graph model "
        f"({'within' if fits else 'above'} it); above the started, idle pool: "
        f"{ing_memory['training_pss_mib']:.0f} vs {full_memory['training_pss_mib']:.0f} MiB"
    )
    verdict_accuracy = (
        f"greedy interpolation soup test {soup_test:.4f} vs full-graph training {full_test:.4f} ({gap:+.4f}; "
        f"{'within' if gap >= -0.02 else 'not within'} 2 points); vs best ingredient "
        f"{soups['greedy_interpolation']['vs_best_ingredient']:+.4f}, vs logit ensemble "
        f"{soups['greedy_interpolation']['vs_ensemble']:+.4f} ({soups['greedy_interpolation']['verdict']})"
    )
    return {
        "data": data.summary(),
        "memory": {"full_graph_model": full_memory, "ingredients": ing_memory, "fits": fits},
        "full_graph": {"val": full_val, "test": full_test},
        "soups": soups,
        "ingredients": [
            {"index": m["index"], "val": m["val_acc"], "test": m["test_acc"], "seconds": m["seconds"]}
            for m in metas
        ],
        "verdict_memory": verdict_memory,
        "verdict_accuracy": verdict_accuracy,
        "verdict": "reproduced"
        if fits and gap >= -0.02
        else "partly reproduced"
        if fits or gap >= -0.02
        else "not reproduced",
    }
