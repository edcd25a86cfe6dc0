"""The benchmark and GPU-check code paths run (tiny sizes, CPU) so they cannot rot unseen."""

import importlib.util
import pathlib

import torch

torch.set_num_threads(1)
BENCH = pathlib.Path(__file__).parents[1] / "benchmarks"


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_checks_run_on_cpu_at_tiny_sizes() -> None:
    gpu = _module("gpu_check")
    pgd = gpu.check_pgd(batch=8, n_eval=8, train_steps=1, width=4, repeats=1)
    assert set(pgd["robust_acc"]) >= {"ours_bf16", "ours_fp32"}
    assert all(0.0 <= v <= 1.0 for v in pgd["robust_acc"].values())
    epoch = gpu.check_at_epoch(n=32, batch=16, width=4, warm_batches=1)
    assert epoch["fp32"]["images_per_s"] > 0 and epoch["bf16"]["images_per_s"] > 0
    wot = gpu.check_wot_overhead(width=4, steps=2, n_val=16, bn_batches=2, passes=1, batch=16)
    assert wot["overhead_percent"] > 0


def test_synthetic_labels_are_learnable_and_balanced_enough() -> None:
    gpu = _module("gpu_check")
    _, y = gpu.synthetic_cifar(2000)
    counts = torch.bincount(y, minlength=10)
    assert (counts > 0).sum() >= 5


def test_wot_cost_combines_components_at_the_reference_ratio() -> None:
    from robust_at.overhead import WOTCost

    cost = WOTCost(step_s=0.1, pass_s=1.0, bn_s=2.0, snapshot_s=0.0)
    assert cost.refinement_s() == 12.0  # 10 passes + one recalibration
    assert abs(cost.window_percent() - 100 * 12 / 160) < 1e-12  # 1600 steps of 0.1 s
    # 200 epochs of 391 steps; WOT windows of 1600 steps from epoch 50, of 3200 from epoch 150
    refinements = 100 * 391 / 1600 + 50 * 391 / 3200
    assert abs(cost.schedule_percent() - 100 * refinements * 12 / (200 * 391 * 0.1)) < 1e-12
    parts = cost.components_percent()
    assert abs(sum(parts.values()) - cost.window_percent()) < 1e-12
