"""GPU checks of feature-select (issue 21): NeuroFS fit time on a generated 100k-feature,
10k-sample problem, dense and sparse (CSR) input. Random data only, no download.

    python packages/feature-select/benchmarks/gpu_check.py --out results/gpu --budget-s 90

Without CUDA it prints one line and exits.
"""

from __future__ import annotations

import time

import numpy as np

N_SAMPLES, N_FEATURES, N_INFORMATIVE, K = 10_000, 100_000, 50, 50


def _problem(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaussian features; the label is the sign pattern of 50 hidden informative columns."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((N_SAMPLES, N_FEATURES), dtype=np.float32)
    informative = rng.choice(N_FEATURES, N_INFORMATIVE, replace=False)
    weights = rng.standard_normal((N_INFORMATIVE, 4)).astype(np.float32)
    y = (x[:, informative] @ weights).argmax(1)
    return x, y, informative


def _fit(x, y, informative, epochs: int) -> dict:
    import torch

    from feature_select import NeuroFS

    torch.cuda.synchronize()
    start = time.perf_counter()
    sel = NeuroFS(K, hidden=(1000, 1000, 1000), epochs=epochs, device="cuda", scale=None, random_state=0)
    sel.fit(x, y)
    torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    history = sel.history_
    return {
        "fit_seconds": round(seconds, 2),
        "epochs": epochs,
        "seconds_per_epoch_train": round(float(np.mean([h["train_seconds"] for h in history])), 3),
        "seconds_per_epoch_evolve": round(float(np.mean([h["evolve_seconds"] for h in history])), 3),
        "final_train_accuracy": round(history[-1]["train_acc"], 3),
        "informative_in_top_k": int(np.isin(sel.selected_features_, informative).sum()),
        "batch_size": sel.batch_size_,
        "device": sel.device_,
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2),
    }


def check_dense_100k() -> dict:
    x, y, informative = _problem()
    return _fit(x, y, informative, epochs=10)


def check_sparse_input_100k() -> dict:
    import scipy.sparse as sp

    x, y, informative = _problem(1)
    x[np.abs(x) < 2.3] = 0.0  # ~2 % non-zeros, kept sparse into the first layer
    return {"density": round(float((x != 0).mean()), 4), **_fit(sp.csr_matrix(x), y, informative, epochs=5)}


CHECKS = {
    "neurofs_fit_100k_features_10k_samples": check_dense_100k,
    "sparse_csr_input": check_sparse_input_100k,
}

if __name__ == "__main__":
    from research_systems_core.gpu_check import gpu_check_main

    gpu_check_main("feature-select", CHECKS, default_budget_s=90.0)
