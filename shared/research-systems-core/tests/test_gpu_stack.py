"""Devices, precision, optimizer state, BatchNorm recalibration, timing, benchmarks and GPU-check
records: the shared helpers of issue 14, tested on the CPU."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from research_systems_core.batchnorm import recalibrate_batchnorm
from research_systems_core.bench import bench_environment, ratio_row, validate_bench_json, write_bench_json
from research_systems_core.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from research_systems_core.gpu_check import run_gpu_checks
from research_systems_core.optim_state import load_optimizer_state, optimizer_state_to_tensors
from research_systems_core.precision import (
    autocast,
    check_precision,
    configure_determinism,
    grad_scaler,
    maybe_compile,
    to_channels_last,
    torch_dtype,
)
from research_systems_core.timing import compare_calls, time_call
from research_systems_core.torch_utils import available_devices, resolve_device


def test_resolve_device_auto_is_cpu_here_and_errors_name_what_is_available() -> None:
    assert resolve_device("auto").type in {"cpu", "cuda", "mps"}
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"'cuda'.*available: auto, cpu"):
            resolve_device("cuda")
        with pytest.raises(ValueError, match="cuda:3"):
            resolve_device("cuda:3")
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    assert available_devices()[:2] == ["auto", "cpu"]


def test_autocast_gives_the_precision_dtype_on_cpu() -> None:
    a, b = torch.randn(4, 8), torch.randn(8, 3)
    with autocast("cpu", "bf16"):
        assert (a @ b).dtype == torch.bfloat16
    with autocast("cpu", "fp32"):
        assert (a @ b).dtype == torch.float32
    assert torch_dtype("fp16") is torch.float16
    with pytest.raises(ValueError, match="precision"), autocast("cpu", "int8"):
        pass
    assert check_precision("bf16") == "bf16"


def test_grad_scaler_only_for_fp16_on_cuda() -> None:
    assert not grad_scaler("cpu", "fp16").is_enabled()
    assert not grad_scaler("cpu", "bf16").is_enabled()


def test_channels_last_and_compile_are_no_ops_off_cuda() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3))
    assert to_channels_last(model, "cpu") is model
    assert maybe_compile(model, enabled=False) is model


def test_configure_determinism_repeats_random_draws() -> None:
    configure_determinism(3, deterministic=True)
    first = torch.rand(3)
    configure_determinism(3)
    assert torch.equal(first, torch.rand(3))
    assert torch.backends.cudnn.benchmark


def _trained_adam(seed: int) -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=0.01)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(8, 5)).pow(2).mean().backward()
        opt.step()
    return model, opt


def test_optimizer_state_round_trips_through_a_checkpoint_and_continues_identically(tmp_path) -> None:
    model, opt = _trained_adam(0)
    tensors, meta = optimizer_state_to_tensors(opt)
    assert all(k.startswith("optim.") for k in tensors)
    weights = {f"model.{k}": v for k, v in model.state_dict().items()}
    path = save_checkpoint(tmp_path / "ckpt", 3, {**weights, **tensors}, meta={"optim": meta})
    loaded, record = load_checkpoint(path)
    clone, opt2 = _trained_adam(1)
    clone.load_state_dict({k[6:]: v for k, v in loaded.items() if k.startswith("model.")})
    load_optimizer_state(opt2, loaded, record["optim"])
    x = torch.randn(8, 5)
    for m, o in ((model, opt), (clone, opt2)):
        o.zero_grad()
        m(x).pow(2).mean().backward()
        o.step()
    for p, q in zip(model.parameters(), clone.parameters(), strict=True):
        assert torch.equal(p, q)


def test_optimizer_state_refuses_a_mismatched_optimizer() -> None:
    _, opt = _trained_adam(0)
    tensors, meta = optimizer_state_to_tensors(opt)
    other = torch.optim.AdamW(nn.Linear(5, 2).parameters())
    with pytest.raises(CheckpointError, match="4 parameters, this optimizer has 2"):
        load_optimizer_state(other, tensors, meta)
    _, opt2 = _trained_adam(1)
    bad = dict(tensors)
    bad["optim.0.exp_avg"] = torch.zeros(3)
    with pytest.raises(CheckpointError, match="shape"):
        load_optimizer_state(opt2, bad, meta)


def test_batchnorm_recalibration_is_the_sample_weighted_mean() -> None:
    torch.manual_seed(0)
    bn = nn.BatchNorm1d(3)
    model = nn.Sequential(bn).eval()
    batches = [torch.randn(4, 3) * 2 + 1, torch.randn(2, 3) - 3]
    seen = recalibrate_batchnorm(model, [(b, None) for b in batches])
    assert seen == 6
    expected_mean = (batches[0].mean(0) * 4 + batches[1].mean(0) * 2) / 6
    expected_var = (batches[0].var(0) * 4 + batches[1].var(0) * 2) / 6  # unbiased per batch, as torch
    assert torch.allclose(bn.running_mean, expected_mean, atol=1e-6)
    assert torch.allclose(bn.running_var, expected_var, atol=1e-6)
    assert not model.training and bn.momentum == 0.1
    assert recalibrate_batchnorm(nn.Linear(2, 2), [torch.randn(2, 2)]) == 0
    assert recalibrate_batchnorm(model, [torch.randn(5, 3)] * 3, max_batches=2) == 10
    with pytest.raises(TypeError, match="batches must be tensors"):
        recalibrate_batchnorm(model, ["x"])


def test_timing_grows_with_work_and_interleaves() -> None:
    small, large = torch.randn(64, 64), torch.randn(256, 256)
    timings = compare_calls({"small": lambda: small @ small, "large": lambda: large @ large}, repeats=5)
    assert timings["large"].median_s > timings["small"].median_s
    t = time_call(lambda: sum(range(20000)), warmup=0, repeats=3)
    assert len(t.times_s) == 3 and t.median_s >= 0 and t.min_s <= t.median_s
    with pytest.raises(ValueError, match="repeats"):
        time_call(lambda: None, repeats=0)


def test_bench_json_schema(tmp_path) -> None:
    env = bench_environment(["numpy"])
    assert env["cores"] >= 1 and env["peers"]["numpy"]
    row = ratio_row("speed", 2.0, 1.0, unit="it/s", goal=">= 1.5x", met=True)
    assert row["ratio"] == 2.0
    assert ratio_row("time", 1.0, 3.0, unit="s", higher_is_better=False)["ratio"] == 3.0
    path = write_bench_json(tmp_path / "bench.json", package="p", mode="smoke", environment=env, rows=[row])
    assert validate_bench_json(path)["rows"][0]["met"] is True
    with pytest.raises(ValueError, match="not finite"):
        write_bench_json(tmp_path / "b.json", package="p", mode="smoke", environment=env,
                         rows=[ratio_row("x", 1.0, 0.0, unit="s", ratio=math.inf)])  # fmt: skip
    with pytest.raises(ValueError, match="has a goal"):
        write_bench_json(tmp_path / "b.json", package="p", mode="smoke", environment=env,
                         rows=[ratio_row("x", 1.0, 1.0, unit="s", goal=">= 2x")])  # fmt: skip
    data = json.loads(path.read_text())
    data["environment"]["peers"]["ghost"] = None
    (tmp_path / "c.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match="ghost"):
        validate_bench_json(tmp_path / "c.json")


def test_gpu_checks_say_one_line_without_cuda(tmp_path, capsys) -> None:
    if torch.cuda.is_available():
        pytest.skip("this test covers machines without CUDA")
    assert run_gpu_checks("demo", {"x": lambda: {"a": 1}}, out_dir=tmp_path) is None
    assert capsys.readouterr().out.strip() == "demo: no CUDA device here; GPU checks skipped"
    assert not list(tmp_path.iterdir())
