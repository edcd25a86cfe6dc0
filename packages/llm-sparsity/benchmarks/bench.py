"""llm-sparsity benchmarks (JSON into --out).

1. One-shot global magnitude pruning: time and peak extra memory (RSS sampled every ~0.2 ms in a
   fresh process per measurement) of ``llm_sparsity.pruning.prune`` (research-systems-core MaskSet with a
   histogram threshold, |w| computed tensor by tensor) vs ``torch.nn.utils.prune.global_unstructured``
   on MiniLM and a BERT-base-sized random model; both masks compared; one read pass as the floor.
2. Wanda calibration time per layer (MiniLM).
3. Curve sweep wall time (MiniLM, retrieval evaluation).
4. ISP vs IMP cost to the same target sparsity (training steps and wall time, one run).
5. SMC runner overhead per cell beyond the method's own compute.

Usage: python benchmarks/bench.py --out DIR [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")


def _rss() -> int:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakRSS:
    """Peak resident memory above the baseline while the block runs (sampling thread)."""

    def __enter__(self) -> PeakRSS:
        self.base = _rss()
        self.peak = self.base
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop:
            self.peak = max(self.peak, _rss())
            time.sleep(0.0002)

    def __exit__(self, *exc: Any) -> None:
        self.peak = max(self.peak, _rss())
        self._stop = True
        self._thread.join()

    @property
    def extra(self) -> int:
        return self.peak - self.base


def _model(name: str):
    import torch

    torch.set_num_threads(1)
    if name == "minilm":
        from llm_sparsity.models import load_pretrained

        return load_pretrained("minilm")[0]
    from llm_sparsity.models import create_model

    return create_model("bert_base_random")


def worker(kind: str, model_name: str, sparsity: float) -> dict[str, Any]:
    """Run one pruning measurement in this (fresh) process."""
    import gc

    import torch.nn.utils.prune as tprune

    from llm_sparsity.pruning import prune
    from llm_sparsity.targets import select_targets

    model = _model(model_name)
    targets = select_targets(model, "essential")
    weight_bytes = sum(p.numel() * p.element_size() for p in targets.parameters(model).values())
    # touch every weight first: safetensors weights are memory-mapped and would otherwise be paged
    # in during the measurement and counted as "extra" memory
    float(sum(p.detach().abs().sum() for p in targets.parameters(model).values()))
    gc.collect()
    if kind == "ours":
        with PeakRSS() as mem:
            t = time.perf_counter()
            masks = prune(model, targets, sparsity)
            seconds = time.perf_counter() - t
        kept = {n: m.clone() for n, m in masks.masks.items()}
    elif kind == "torch":
        modules = dict(model.named_modules())
        params = [(modules[n.rsplit(".", 1)[0]], "weight") for n in targets.names]
        with PeakRSS() as mem:
            t = time.perf_counter()
            tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=sparsity)
            seconds = time.perf_counter() - t
        kept = {n: modules[n.rsplit(".", 1)[0]].weight_mask.bool().clone() for n in targets.names}
    elif kind == "stream":
        from llm_sparsity.streaming import prune_magnitude_in_place

        with PeakRSS() as mem:
            t = time.perf_counter()
            prune_magnitude_in_place(model, targets, sparsity)
            seconds = time.perf_counter() - t
        kept = {n: p.detach().ne(0) for n, p in targets.parameters(model).items()}
        kept_bytes = 0  # no mask tensors are created
    else:  # one read pass over the targeted weights: the physical floor
        with PeakRSS() as mem:
            t = time.perf_counter()
            total = sum(float(p.detach().abs().sum()) for p in targets.parameters(model).values())
            seconds = time.perf_counter() - t
        del total
        kept = {}
    if kind != "stream":
        kept_bytes = sum(m.numel() for m in kept.values())
    out_path = os.environ.get("BENCH_MASK_OUT")
    if out_path and kept:
        from safetensors.torch import save_file

        save_file({n: m.contiguous() for n, m in kept.items()}, out_path)
    return {
        "kind": kind,
        "model": model_name,
        "sparsity": sparsity,
        "seconds": seconds,
        "peak_extra_bytes": mem.extra,
        "targeted_weight_bytes": weight_bytes,
        "peak_extra_over_weights": mem.extra / weight_bytes,
        "output_mask_bytes": kept_bytes,  # bool masks: 1 byte per weight
        "peak_extra_excluding_output_masks_over_weights": max(mem.extra - kept_bytes, 0) / weight_bytes,
    }


def _spawn(kind: str, model: str, sparsity: float, mask_out: Path | None) -> dict[str, Any]:
    env = dict(os.environ)
    if mask_out is not None:
        env["BENCH_MASK_OUT"] = str(mask_out)
    res = subprocess.run(
        [sys.executable, __file__, "--worker", kind, "--model", model, "--sparsity", str(sparsity)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if res.returncode != 0:
        raise RuntimeError(f"worker {kind}/{model} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def bench_pruning(out: Path, quick: bool) -> dict[str, Any]:
    from safetensors.torch import load_file

    results: dict[str, Any] = {}
    models = ["minilm"] if quick else ["minilm", "bert_base_random"]
    repeats = 1 if quick else 2
    for model in models:
        rows = {}
        for kind in ("floor", "stream", "ours", "torch"):
            runs = [
                _spawn(kind, model, 0.5, out / f"mask_{model}_{kind}.safetensors") for _ in range(repeats)
            ]
            best = min(runs, key=lambda r: r["seconds"])
            best["peak_extra_bytes"] = max(r["peak_extra_bytes"] for r in runs)
            best["peak_extra_over_weights"] = best["peak_extra_bytes"] / best["targeted_weight_bytes"]
            rows[kind] = best
        a = load_file(str(out / f"mask_{model}_ours.safetensors"))
        b = load_file(str(out / f"mask_{model}_torch.safetensors"))
        differing = sum(int((a[n] != b[n]).sum()) for n in a)
        c = load_file(str(out / f"mask_{model}_stream.safetensors"))
        differing_stream = sum(int((c[n] != b[n]).sum()) for n in c)
        for kind in ("ours", "torch", "stream"):
            (out / f"mask_{model}_{kind}.safetensors").unlink()
        results[model] = {
            **rows,
            "speedup_vs_torch": rows["torch"]["seconds"] / rows["ours"]["seconds"],
            "masks_differing_entries": differing,
            "goal_5x_faster": rows["torch"]["seconds"] / rows["ours"]["seconds"] >= 5,
            "goal_memory_10pct": rows["ours"]["peak_extra_over_weights"] <= 0.10,
            "stream_speedup_vs_torch": rows["torch"]["seconds"] / rows["stream"]["seconds"],
            "stream_masks_differing_entries": differing_stream,
            "stream_goal_5x_faster": rows["torch"]["seconds"] / rows["stream"]["seconds"] >= 5,
            "stream_goal_memory_10pct": rows["stream"]["peak_extra_over_weights"] <= 0.10,
        }
    return results


def bench_wanda(quick: bool) -> dict[str, Any]:
    import torch

    from llm_sparsity.models import load_pretrained, tokenize
    from llm_sparsity.scores import compute_scores
    from llm_sparsity.targets import select_targets

    torch.set_num_threads(1)
    model, tok = load_pretrained("minilm")
    targets = select_targets(model, "essential")
    texts = [
        f"Sam has {i} apples and buys {i + 3} more. How many apples does Sam have now?" for i in range(64)
    ]
    n_seq = 16 if quick else 64
    batches = tokenize(tok, texts[:n_seq], batch_size=16).batches
    t = time.perf_counter()
    compute_scores("wanda", model, targets, calibration=batches)
    seconds = time.perf_counter() - t
    t = time.perf_counter()
    with torch.no_grad():
        for b in batches:
            model(**b)
    forward = time.perf_counter() - t
    return {
        "calibration_sequences": n_seq,
        "seconds": seconds,
        "seconds_per_layer": seconds / len(targets),
        "n_layers": len(targets),
        "plain_forward_seconds": forward,
        "hook_overhead": seconds / forward - 1,
    }


def _retrieval(quick: bool):
    from llm_sparsity.models import load_pretrained
    from llm_sparsity.tasks import BodyRetrievalTask, load_question_bodies
    from research_systems_core.data import resolve_data_dir

    model, tok = load_pretrained("minilm")
    passages = load_question_bodies(resolve_data_dir())
    task = BodyRetrievalTask.from_passages(passages, 200 if quick else 400, 100 if quick else 200)
    return model, tok, task


def bench_curve(quick: bool) -> dict[str, Any]:
    from llm_sparsity.junk_dna import run_difficulty_curves
    from llm_sparsity.probe import MCSuite
    from llm_sparsity.targets import select_targets
    from llm_sparsity.tasks import BODY_LEVELS

    model, tok, task = _retrieval(quick)
    suite = MCSuite(task, tok, BODY_LEVELS, seeds=[0])
    grid = [0.0, 0.5, 0.9] if quick else [round(0.1 * i, 1) for i in range(10)]
    t = time.perf_counter()
    rows = run_difficulty_curves(model, select_targets(model, "essential"), suite, grid, ["magnitude"])
    seconds = time.perf_counter() - t
    return {
        "grid_points": len(grid),
        "levels": len(BODY_LEVELS),
        "texts_encoded_per_point": suite.texts.n,
        "seconds": seconds,
        "seconds_per_point": seconds / len(grid),
        "rows": len(rows),
    }


def bench_isp_vs_imp(quick: bool) -> dict[str, Any]:
    from llm_sparsity.experiments import MC_TRAIN_LEVEL
    from llm_sparsity.finetune import FinetuneConfig, RetrievalTrainer
    from llm_sparsity.isp import ISPConfig, instant_soup_pruning
    from llm_sparsity.pruning import iterative_magnitude_pruning, rewind
    from llm_sparsity.targets import select_targets
    from research_systems_core.seeding import seed_everything

    model, tok, task = _retrieval(quick)
    targets = select_targets(model, "essential")
    trainer = RetrievalTrainer(task, tok, FinetuneConfig(batch_size=8, train_level=MC_TRAIN_LEVEL))
    pre = {k: v.detach().clone() for k, v in model.state_dict().items()}
    rounds, imp_steps = (2, 6) if quick else (3, 12)
    isp_cfg = ISPConfig(
        target_sparsity=0.7, rounds=rounds, n_masks=3, weak_steps=1, main_steps=0, final_steps=0, stop_gap=0.0
    )
    seed_everything(0)
    spent = [0]

    def train(m, masks, n):
        spent[0] += trainer.train(m, masks, n, seed=spent[0]).steps

    t = time.perf_counter()
    imp_masks, _ = iterative_magnitude_pruning(
        model, targets, 0.7, train, rounds=rounds, steps_per_round=imp_steps
    )
    imp_seconds = time.perf_counter() - t
    rewind(model, pre)
    seed_everything(0)
    t = time.perf_counter()
    res = instant_soup_pruning(model, targets, trainer, isp_cfg)
    isp_seconds = time.perf_counter() - t
    rewind(model, pre)
    return {
        "target_sparsity": 0.7,
        "imp": {
            "rounds": rounds,
            "steps_per_round": imp_steps,
            "train_steps": spent[0],
            "seconds": imp_seconds,
            "sparsity": imp_masks.sparsity(),
        },
        "isp": {
            **res.cost.as_dict(),
            "n_masks": isp_cfg.n_masks,
            "rounds": rounds,
            "sparsity": res.masks.sparsity(),
        },
        "step_ratio_isp_over_imp": res.cost.total_steps / spent[0],
        "time_ratio_isp_over_imp": isp_seconds / imp_seconds,
        "goal_25pct": res.cost.total_steps / spent[0] <= 0.25 and isp_seconds / imp_seconds <= 0.25,
        "iou_isp_imp": res.masks.iou(imp_masks),
        "note": "mask-search cost only (both then get the same final fine-tuning)",
    }


def bench_runner_overhead(out: Path, quick: bool) -> dict[str, Any]:
    import torch

    from llm_sparsity.finetune import FinetuneConfig, MCItem, RetrievalTrainer
    from llm_sparsity.models import build_word_tokenizer, create_model
    from llm_sparsity.smc_bench import Budget, TaskBundle, run_benchmark
    from llm_sparsity.targets import select_targets

    torch.set_num_threads(1)
    words = ["apple", "river", "stone", "cloud", "green", "music", "table", "light"]
    items = [MCItem(f"the {w}", (w, words[(i + 1) % 8], words[(i + 2) % 8]), 0) for i, w in enumerate(words)]
    tok = build_word_tokenizer([*words, "the"], 64)
    bundle = TaskBundle("toy", RetrievalTrainer(items, tok, FinetuneConfig(batch_size=4)), items, tok)
    model = create_model("tiny_bert", vocab_size=64)
    grid = [0.2, 0.5, 0.8] if quick else [0.2, 0.36, 0.49, 0.59, 0.67, 0.74, 0.79, 0.83]
    path = out / "runner_overhead.jsonl"
    path.unlink(missing_ok=True)
    rows = run_benchmark(
        model,
        select_targets(model, "essential"),
        {"toy": bundle},
        ["omp_before", "random"],
        grid,
        [0],
        path,
        Budget(steps=2, batch_size=4),
    )
    t = time.perf_counter()
    run_benchmark(
        model,
        select_targets(model, "essential"),
        {"toy": bundle},
        ["omp_before", "random"],
        grid,
        [0],
        path,
        Budget(steps=2, batch_size=4),
    )
    resume_seconds = time.perf_counter() - t
    path.unlink()
    over = [r["overhead_seconds"] for r in rows]
    meth = [r["method_seconds"] for r in rows]
    return {
        "cells": len(rows),
        "mean_overhead_seconds": sum(over) / len(over),
        "max_overhead_seconds": max(over),
        "mean_method_seconds": sum(meth) / len(meth),
        "resume_all_done_seconds": resume_seconds,
        "note": "overhead = restoring the pre-trained weights, seeding, counting sparsity, writing the JSONL row",
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, help="Output directory for the JSON results.")
    parser.add_argument("--quick", action="store_true", help="Smaller, faster configuration.")
    parser.add_argument(
        "--sections", default="", help="Comma-separated subset of sections to run (default: all)."
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--model", default="minilm", help=argparse.SUPPRESS)
    parser.add_argument("--sparsity", type=float, default=0.5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.model, args.sparsity)))
        return
    if args.out is None:
        parser.error("--out DIR is required")
    import torch

    from research_systems_core.metadata import run_metadata
    from research_systems_core.results import write_json

    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"quick": args.quick}
    sections = [
        ("pruning", lambda: bench_pruning(args.out, args.quick)),
        ("wanda", lambda: bench_wanda(args.quick)),
        ("curve_sweep", lambda: bench_curve(args.quick)),
        ("isp_vs_imp", lambda: bench_isp_vs_imp(args.quick)),
        ("runner_overhead", lambda: bench_runner_overhead(args.out, args.quick)),
    ]
    wanted = {x.strip() for x in args.sections.split(",") if x.strip()}
    unknown = wanted - {name for name, _ in sections}
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {[n for n, _ in sections]}")
    for name, fn in sections:
        if wanted and name not in wanted:
            continue
        t = time.perf_counter()
        result[name] = fn()
        result[name]["bench_wall_seconds"] = time.perf_counter() - t
        print(name, json.dumps(result[name], default=str)[:600], flush=True)
        write_json(args.out / "bench.json", result)
    result["metadata"] = run_metadata(packages=("llm-sparsity", "transformers"))
    write_json(args.out / "bench.json", result)


if __name__ == "__main__":
    main()
