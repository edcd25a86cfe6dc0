"""feature-select benchmarks: sparse vs dense-masked NeuroFS, and NeuroFS vs LassoNet.

    python packages/feature-select/benchmarks/bench.py --out DIR [--quick] [--data-dir DIR]

Writes ``DIR/bench.json``. Every fit runs in its own subprocess so peak memory (max RSS above the
process' RSS just before the fit) is measured per configuration. Parts:

1. kernel: forward+backward time of one SparseLinear layer, sparse vs dense backend, across
   densities (where the "auto" backend should switch);
2. neurofs: fit time and peak memory of NeuroFS, dense-masked vs sparse, on madelon and on a
   synthetic 20,000-feature problem, same hyper-parameters and seed;
3. lassonet: LassoNet's fit time on the same data and K, and the accuracy of both selections.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import resource
import subprocess
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")


def _rss_mb() -> float:
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _load(dataset: str, data_dir: str | None, n_features: int):
    from feature_select.data import load_dataset, make_synthetic, split_and_scale

    if dataset == "synthetic":
        data = make_synthetic(n_samples=1000, n_features=n_features, n_informative=20, seed=0)
    else:
        data = load_dataset(dataset, data_dir)
    return split_and_scale(data), getattr(data, "informative", None)


def worker(spec: dict) -> dict:
    """One measured fit (runs in a fresh process)."""
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from feature_select.evaluation import evaluate_subset, recovery_rate

    split, informative = _load(spec["dataset"], spec.get("data_dir"), spec.get("n_features", 20000))
    # warm-up: first-use imports (torch optimizer pulls in torch._dynamo) must not count as fit time
    from feature_select.selector import NeuroFS

    NeuroFS(2, hidden=(4,), epochs=1, backend="sparse").fit(split.x_train[:20, :5], np.arange(20) % 2)
    NeuroFS(2, hidden=(4,), epochs=1, backend="dense").fit(split.x_train[:20, :5], np.arange(20) % 2)
    base = _rss_mb()
    start = time.perf_counter()
    if spec["method"] == "neurofs":
        sel = NeuroFS(spec["k"], random_state=0, scale=None, **spec["params"]).fit(
            split.x_train, split.y_train
        )
        features = sel.selected_features_
        layers = sel.model_.sparse_layers
        extra = {
            "backend_per_layer": [layer.backend for layer in layers],
            "density_per_layer": [round(layer.density, 5) for layer in layers],
            "active_connections": [layer.n_active for layer in layers],
            "dense_weights": [layer.n_in * layer.n_out for layer in layers],
            "train_seconds": round(sum(h["train_seconds"] for h in sel.history_), 3),
            "evolve_seconds": round(sum(h["evolve_seconds"] for h in sel.history_), 3),
        }
    else:
        from feature_select.baselines import rank_features

        features = rank_features("lassonet", split.x_train, split.y_train, spec["k"], 0, **spec["params"])[
            : spec["k"]
        ]
        extra = {}
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    acc = evaluate_subset(split.x_train, split.y_train, split.x_test, split.y_test, features)
    out = {
        **{k: v for k, v in spec.items() if k != "data_dir"},
        "fit_seconds": round(seconds, 3),
        "peak_rss_above_start_mb": round(peak - base, 1),
        "accuracy": acc,
        **extra,
    }
    if informative is not None:
        out["recovery"] = recovery_rate(np.asarray(features), informative)
    return out


def _run_worker(spec: dict) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        return {**spec, "error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def kernel_sweep(quick: bool) -> list[dict]:
    """Forward+backward ms of one layer (batch 100) per backend and density."""
    import numpy as np
    import torch

    from feature_select.sparse_linear import SparseLinear

    torch.set_num_threads(1)
    rows_out = []
    shapes = [(20000, 300), (500, 300)] if not quick else [(5000, 300), (500, 300)]
    densities = [0.005, 0.01, 0.02, 0.05, 0.1, 0.2]
    rng = np.random.default_rng(0)
    for n_in, n_out in shapes:
        x = torch.randn(100, n_in)
        for density in densities:
            nnz = int(density * n_in * n_out)
            flat = torch.from_numpy(np.sort(rng.choice(n_in * n_out, nnz, replace=False)))
            timings = {}
            for backend in ("sparse", "dense"):
                layer = SparseLinear(
                    n_in, n_out, flat // n_out, flat % n_out, torch.randn(nnz), backend=backend
                )
                xs = x.clone().requires_grad_(n_in == 500)  # hidden layers also need dL/dx

                def step(layer=layer, xs=xs):
                    layer.zero_grad(set_to_none=True)
                    layer(xs).sum().backward()

                step()
                reps = 3 if quick else 8
                start = time.perf_counter()
                for _ in range(reps):
                    step()
                timings[backend] = (time.perf_counter() - start) / reps * 1e3
            rows_out.append(
                {
                    "n_in": n_in,
                    "n_out": n_out,
                    "density": density,
                    "sparse_ms": round(timings["sparse"], 3),
                    "dense_ms": round(timings["dense"], 3),
                    "speedup_sparse_over_dense": round(timings["dense"] / timings["sparse"], 2),
                }
            )
    return rows_out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", default=None, help="output directory for bench.json (required)")
    parser.add_argument("--quick", action="store_true", help="small sizes, a couple of minutes")
    parser.add_argument("--data-dir", default=None, help="data directory (default: $RESEARCH_DATA_DIR)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    if not args.out:
        parser.error("--out DIR is required")
    from research_systems_core.data import resolve_data_dir
    from research_systems_core.metadata import run_metadata
    from research_systems_core.results import write_json

    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    result: dict = {"quick": args.quick, "kernel": kernel_sweep(args.quick)}
    epochs = 5 if args.quick else 15
    n_synth = 5000 if args.quick else 20000
    have_madelon = (resolve_data_dir(args.data_dir) / "scikit-feature" / "madelon.mat").exists()
    problems = ([("madelon", 500)] if have_madelon else []) + [("synthetic", n_synth)]
    params = {"hidden": [300, 300], "epochs": epochs, "lr": 0.05, "batch_size": 50}
    fits = []
    for dataset, d in problems:
        for backend in ("dense", "sparse"):
            spec = {
                "method": "neurofs",
                "dataset": dataset,
                "n_features": d,
                "k": 50,
                "params": {**params, "backend": backend},
                "data_dir": args.data_dir,
            }
            fits.append(_run_worker(spec))
        lassonet_params = {"hidden": 50, "path_multiplier": 1.1, "n_iters": [200, 30]}
        if args.quick:
            lassonet_params = {"hidden": 20, "path_multiplier": 1.3, "n_iters": [50, 10]}
        fits.append(
            _run_worker(
                {
                    "method": "lassonet",
                    "dataset": dataset,
                    "n_features": d,
                    "k": 50,
                    "params": lassonet_params,
                    "data_dir": args.data_dir,
                }
            )
        )
    result["fits"] = fits
    speedups = {}
    for dataset, _ in problems:
        by = {
            f["params"].get("backend", "lassonet") if f["method"] == "neurofs" else "lassonet": f
            for f in fits
            if f["dataset"] == dataset
        }
        if "fit_seconds" in by.get("dense", {}) and "fit_seconds" in by.get("sparse", {}):
            speedups[dataset] = {
                "sparse_over_dense_fit_speedup": round(
                    by["dense"]["fit_seconds"] / by["sparse"]["fit_seconds"], 2
                ),
                "sparse_train_speedup": round(
                    by["dense"]["train_seconds"] / max(by["sparse"]["train_seconds"], 1e-9), 2
                ),
                "peak_mb": {
                    "dense": by["dense"]["peak_rss_above_start_mb"],
                    "sparse": by["sparse"]["peak_rss_above_start_mb"],
                },
                "neurofs_sparse_vs_lassonet_seconds": [
                    by["sparse"]["fit_seconds"],
                    by.get("lassonet", {}).get("fit_seconds"),
                ],
            }
    result["summary"] = speedups
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["metadata"] = run_metadata(
        config={"quick": args.quick}, packages=("feature-select", "torch", "lassonet")
    )
    write_json(out / "bench.json", result)
    print(json.dumps({"summary": speedups, "kernel": result["kernel"]}, indent=1))


if __name__ == "__main__":
    main()
