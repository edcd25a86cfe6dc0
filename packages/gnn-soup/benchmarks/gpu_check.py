"""gnn-soup GPU checks on a generated SBM graph (no download): about a minute on an H200.

1. ingredient training steps/s with neighbour sampling, GCN and GraphSAGE (fp32 and bf16), the
   sampling on the CPU as in training, the model on the GPU;
2. layer-wise inference seconds over the whole graph on the GPU, checked against CPU logits on a
   sample of nodes;
3. a full soup run (3 ingredients trained on the GPU, greedy interpolation scored on the GPU);
4. full-batch GCN training steps/s with the symmetric sparse operator (one CSR for forward and
   backward) on the GPU, checked against the CPU loss of the first step;
5. the process pool on CUDA: workers forked from the preloaded forkserver (which never touches
   CUDA) each initialise their own GPU context.

Run: python packages/gnn-soup/benchmarks/gpu_check.py --out results/gpu --budget-s 90
"""

from __future__ import annotations

import tempfile
import time

import torch

from gnn_soup.executors import SequentialExecutor
from gnn_soup.inference import layerwise_forward
from gnn_soup.ingredients import make_plan, train_plan
from gnn_soup.sbm import make_sbm_graph
from gnn_soup.soup import make_evaluators, run_soups
from gnn_soup.training import IngredientSpec, TrainConfig, TrainingContext, build_model, train_ingredient
from research_systems_core.gpu_check import gpu_check_main, peak_memory_gib

_GRAPH = {}


def _graph():
    if "data" not in _GRAPH:
        _GRAPH["data"] = make_sbm_graph(num_nodes=200_000, num_edges=2_000_000, split=(0.1, 0.02, 0.02))
    return _GRAPH["data"]


def _steps_per_second(model: str, precision: str, steps: int = 60) -> dict:
    data = _graph()
    context = TrainingContext(data, "cuda", precision)
    config = TrainConfig(
        model=model,
        hidden_dim=128,
        steps=steps,
        eval_every=steps,
        eval_method="layerwise",
        eval_nodes=1000,
        chunk_size=65536,
    )
    spec = IngredientSpec(
        index=0, seed=0, sampler="neighbor", sampler_kwargs={"batch_size": 1024, "fanouts": [10, 5]}
    )
    train_ingredient(context, spec, dataclass_replace(config, steps=5, eval_every=5))  # warm-up
    torch.cuda.synchronize()
    start = time.perf_counter()
    result = train_ingredient(context, spec, config)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    return {
        "steps_per_s": round(steps / seconds, 2),
        "val_acc": round(result.val_acc, 4),
        "peak_gib": round(peak_memory_gib(), 3),
        "nodes": data.num_nodes,
    }


def dataclass_replace(config: TrainConfig, **changes) -> TrainConfig:
    import dataclasses

    return dataclasses.replace(config, **changes)


def check_layerwise() -> dict:
    data = _graph()
    torch.manual_seed(0)
    model = build_model(TrainConfig(hidden_dim=128), data).cuda().eval()
    torch.cuda.synchronize()
    start = time.perf_counter()
    logits = layerwise_forward(model, data.graph, data.features, chunk_size=65536, device="cuda")
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    nodes = torch.arange(0, data.num_nodes, 997)
    reference = layerwise_forward(model.cpu(), data.graph, data.features, nodes=nodes, chunk_size=4096)
    return {
        "seconds": round(seconds, 3),
        "max_abs_diff_vs_cpu": float((logits[nodes] - reference).abs().max()),
        "peak_gib": round(peak_memory_gib(), 3),
    }


def check_soup() -> dict:
    data = _graph()
    config = TrainConfig(hidden_dim=64, steps=60, eval_every=20, eval_method="layerwise", eval_nodes=2000)
    kwargs = {
        "neighbor": {"batch_size": 1024, "fanouts": [10, 5]},
        "fastgcn": {"batch_size": 1024, "layer_size": 8192},
    }
    plan = make_plan(data.name, 3, config, samplers=["neighbor", "fastgcn"], sampler_kwargs=kwargs)
    executor = SequentialExecutor(device="cuda")
    results = train_plan(plan, data, executor)
    context = TrainingContext(data, "cuda")
    evaluators = make_evaluators(build_model(config, data), context, config)
    soups = run_soups(evaluators, [r.state_dict for r in results], [r.val_acc for r in results])
    return {
        k: {"val": round(v["val"], 4), "test": round(v["test"], 4)}
        for k, v in soups.items()
        if k != "_states"
    }


def check_full_graph_steps(steps: int = 20) -> dict:
    import torch.nn.functional as F

    data = _graph()
    losses = {}
    for device in ("cpu", "cuda"):
        torch.manual_seed(0)
        model = build_model(TrainConfig(hidden_dim=128, dropout=0.0), data).to(device)
        structure = model.prepare_graph(data.graph).to(device)
        x, y, mask = data.features.to(device), data.y.to(device), data.train_mask.to(device)
        loss = F.cross_entropy(model(x, structure)[mask], y[mask])
        loss.backward()
        losses[device] = float(loss)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x, structure)[mask], y[mask]).backward()
        optimizer.step()
    torch.cuda.synchronize()
    return {
        "steps_per_s": round(steps / (time.perf_counter() - start), 2),
        "first_loss_cpu": losses["cpu"],
        "first_loss_cuda": losses["cuda"],
        "loss_close": abs(losses["cpu"] - losses["cuda"]) < 1e-3,
        "peak_gib": round(peak_memory_gib(), 3),
    }


def check_process_pool_cuda() -> dict:
    from gnn_soup.executors import ProcessExecutor

    data = _graph()
    config = TrainConfig(hidden_dim=64, steps=20, eval_every=10, eval_method="layerwise", eval_nodes=500)
    plan = make_plan(
        data.name, 2, config, samplers=["neighbor"], sampler_kwargs={"neighbor": {"batch_size": 1024}}
    )
    executor = ProcessExecutor(workers=2, device="auto")
    try:
        start = time.perf_counter()
        results = train_plan(plan, data, executor)
        seconds = time.perf_counter() - start
        start_method = executor.start_method
    finally:
        executor.close()
    return {
        "start_method": start_method,
        "devices": [r.device for r in results],
        "all_on_cuda": all(r.device.startswith("cuda") for r in results),
        "val_acc": [round(r.val_acc, 4) for r in results],
        "seconds": round(seconds, 2),
    }


CHECKS = {
    "gcn_neighbor_fp32": lambda: _steps_per_second("gcn", "fp32"),
    "sage_neighbor_fp32": lambda: _steps_per_second("sage", "fp32"),
    "gcn_neighbor_bf16": lambda: _steps_per_second("gcn", "bf16"),
    "layerwise_inference": check_layerwise,
    "soup_on_gpu": check_soup,
    "full_graph_gcn_steps": check_full_graph_steps,
    "process_pool_cuda": check_process_pool_cuda,
}

if __name__ == "__main__":
    tempfile.tempdir = tempfile.gettempdir()
    gpu_check_main("gnn-soup", CHECKS, default_budget_s=90.0)
