"""Scaling run on a generated million-node SBM graph (this CPU).

1. The SBM graph is generated once and written as a memory-mapped store.
2. Reference: one GCN trained full-batch on the whole graph, in its own worker process; its
   peak memory (PSS, RSS) is what one full-graph model needs.
3. K GCN ingredients trained on mini-batches (neighbour sampling, GraphSAINT random walks,
   FastGCN), cycled, in ``workers`` processes that map the same graph files; the peak of their
   summed PSS is what the K ingredients need together.
4. Soups (uniform, greedy, greedy interpolation) and the logit ensemble, scored by layer-wise
   inference (validation on a fixed sample of validation nodes, test on all test nodes).

Verdicts: memory (K ingredients' summed peak PSS <= the full-graph model's peak PSS) and accuracy
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

from gnn_soup.executors import ProcessExecutor
from gnn_soup.ingredients import IngredientStore, make_plan, train_plan
from gnn_soup.memory import MemoryMonitor
from gnn_soup.sbm import write_sbm_store
from gnn_soup.soup import make_evaluators, run_soups
from gnn_soup.store import open_graph
from gnn_soup.training import TrainConfig, TrainingContext, build_model
from research_systems_core.results import write_json

log = logging.getLogger(__name__)


@dataclass
class ScalingConfig:
    num_nodes: int = 1_000_000
    num_edges: int = 10_000_000
    num_features: int = 16
    num_classes: int = 10
    split: tuple[float, float, float] = (0.1, 0.02, 0.02)
    num_ingredients: int = 4
    workers: int = 2
    ingredient_steps: int = 300
    full_steps: int = 100
    hidden_dim: int = 32
    eval_nodes: int = 2000
    samplers: list[str] = field(default_factory=lambda: ["neighbor", "saint_rw", "fastgcn"])
    sampler_kwargs: dict[str, dict[str, Any]] = field(
        default_factory=lambda: {
            "neighbor": {"batch_size": 1024, "fanouts": [10, 5]},
            "saint_rw": {"num_roots": 3000, "walk_length": 2},
            "fastgcn": {"batch_size": 1024, "layer_size": 8192},
        }
    )

    @classmethod
    def smoke(cls) -> ScalingConfig:
        return cls(
            num_nodes=20_000,
            num_edges=200_000,
            num_ingredients=2,
            ingredient_steps=20,
            full_steps=10,
            eval_nodes=500,
        )


def _train_with_monitor(plan, data, store: IngredientStore, workers: int) -> tuple[list[dict], dict, float]:
    executor = ProcessExecutor(workers=workers)
    try:
        executor.warm_up(data)
        idle = MemoryMonitor(executor.worker_pids())
        idle.sample()  # started workers (torch imported, graph mapped) before any training
        start = time.perf_counter()
        with MemoryMonitor(executor.worker_pids()) as monitor:
            metas = train_plan(plan, data, executor, store)
        seconds = time.perf_counter() - start
    finally:
        executor.close()
    memory = monitor.summary_mib()
    memory["idle_total_pss_mib"] = idle.summary_mib()["peak_total_pss_mib"]
    memory["training_pss_mib"] = round(memory["peak_total_pss_mib"] - memory["idle_total_pss_mib"], 1)
    return metas, memory, seconds


def _config(cfg: ScalingConfig, eval_every: int, steps: int) -> TrainConfig:
    return TrainConfig(
        model="gcn",
        hidden_dim=cfg.hidden_dim,
        dropout=0.1,
        weight_decay=0.0,
        lr=0.01,
        steps=steps,
        eval_every=eval_every,
        eval_method="layerwise",
        eval_nodes=cfg.eval_nodes,
    )


def run_scaling(out: str | pathlib.Path, cfg: ScalingConfig | None = None, graph_dir=None) -> dict[str, Any]:
    """Run the scaling experiment; writes ``scaling.json`` into ``out`` and returns it."""
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
    data = open_graph(graph_dir)
    log.info("graph: %s", data.summary())
    full_config = _config(cfg, max(cfg.full_steps // 4, 1), cfg.full_steps)
    full_plan = make_plan(data.name, 1, full_config, samplers=["full"])
    _, full_memory, full_seconds = _train_with_monitor(
        full_plan, data, IngredientStore(out / "runs" / "full-graph"), workers=1
    )
    ing_config = _config(cfg, max(cfg.ingredient_steps // 6, 1), cfg.ingredient_steps)
    plan = make_plan(
        data.name, cfg.num_ingredients, ing_config, samplers=cfg.samplers, sampler_kwargs=cfg.sampler_kwargs
    )
    store = IngredientStore(out / "runs" / "ingredients")
    metas, ing_memory, ing_seconds = _train_with_monitor(plan, data, store, cfg.workers)
    states, metas = store.load_all()
    context = TrainingContext(data)
    evaluators = make_evaluators(build_model(ing_config, data), context, ing_config)
    soup_start = time.perf_counter()
    soups = run_soups(evaluators, states, [m["val_acc"] for m in metas])
    soups.pop("_states")
    soup_seconds = time.perf_counter() - soup_start
    full_state, _ = IngredientStore(out / "runs" / "full-graph").load(0)
    full_val, full_test = evaluators.val(full_state), evaluators.test(full_state)
    summary = _summary(cfg, data, full_memory, ing_memory, full_val, full_test, soups, metas)
    summary["seconds"] = {
        "full_graph_training": round(full_seconds, 1),
        "ingredient_training": round(ing_seconds, 1),
        "soups": round(soup_seconds, 1),
        "total": round(time.perf_counter() - start, 1),
    }
    summary["config"] = dataclasses.asdict(cfg)
    write_json(out / "scaling.json", summary)
    return summary


def _summary(cfg, data, full_memory, ing_memory, full_val, full_test, soups, metas) -> dict[str, Any]:
    fits = ing_memory["training_pss_mib"] <= full_memory["training_pss_mib"]
    soup_test = soups["greedy_interpolation"]["test"]
    gap = soup_test - full_test
    verdict_memory = (
        f"training memory (peak PSS above the started, idle workers): {cfg.num_ingredients} ingredients on "
        f"{cfg.workers} workers {ing_memory['training_pss_mib']:.0f} MiB together vs "
        f"{full_memory['training_pss_mib']:.0f} MiB for one full-graph model ({'within' if fits else 'above'} it); "
        f"totals incl. the interpreters: {ing_memory['peak_total_pss_mib']:.0f} vs "
        f"{full_memory['peak_total_pss_mib']:.0f} MiB"
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
