"""GPU checks of llm-sparsity (random weights and tokens only, no download; about 90 s on an H200).

1. ``semi_structured_2to4``: a 2:4-sparse bf16 linear layer through
   ``torch.sparse.to_sparse_semi_structured`` against the dense one, 2048 tokens, layers
   4096->4096, 4096->11008 and 11008->4096 (Llama-7B's shapes); the speed-up per shape
   (goal >= 1.3x) and the max output difference.
2. ``wanda_2to4_1b`` / ``sparsegpt_2to4_1b``: a randomly initialised 1.1B-parameter Llama-shaped
   model (TinyLlama shape: 22 blocks, hidden 2048, intermediate 5632), bf16 on the GPU, pruned
   block by block to 2:4 with 32 x 2048 calibration tokens; seconds and peak GPU memory.

Usage: ``python benchmarks/gpu_check.py --out results/gpu --budget-s 90``. Every check is a
function of the device and the sizes, so the tests run the same code on the CPU at tiny sizes.
"""

from __future__ import annotations

import time
from typing import Any

import torch

from llm_sparsity.layerwise import nm_mask
from llm_sparsity.sequential import prune_sequential
from llm_sparsity.targets import select_targets
from research_systems_core.gpu_check import gpu_check_main

LLAMA_1B = {"hidden": 2048, "intermediate": 5632, "layers": 22, "heads": 32, "vocab": 32000}


def llama_model(
    device: torch.device,
    dtype: torch.dtype,
    *,
    hidden: int,
    intermediate: int,
    layers: int,
    heads: int,
    vocab: int,
) -> torch.nn.Module:
    """A randomly initialised Llama-shaped causal LM built directly on ``device``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=intermediate,
                      num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                      max_position_embeddings=4096)  # fmt: skip
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(cfg)
    return model.to(dtype).eval()


def prune_check(
    method: str, device: torch.device, dtype: torch.dtype, sizes: dict[str, int], n_samples: int, seq_len: int
) -> dict[str, Any]:
    """Prune the Llama-shaped model to 2:4 with ``method``; seconds, peak memory, exact 2:4."""
    model = llama_model(device, dtype, **sizes)
    n_params = sum(p.numel() for p in model.parameters())
    targets = select_targets(model, "essential")
    ids = torch.randint(0, sizes["vocab"], (n_samples, seq_len), generator=torch.Generator().manual_seed(0))
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    t0 = time.perf_counter()
    masks = prune_sequential(model, targets, ids, method, None, (2, 4), device=device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    exact = all(bool((m.reshape(m.shape[0], -1, 4).sum(-1) == 2).all()) for m in masks.masks.values())
    out = {
        "params_billion": round(n_params / 1e9, 3),
        "blocks": sizes["layers"],
        "calibration": f"{n_samples}x{seq_len}",
        "prune_seconds": round(seconds, 2),
        "sparsity": masks.sparsity(),
        "exact_2to4": exact,
    }
    if device.type == "cuda":
        out["peak_memory_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    return out


def semi_structured_check(shapes: list[tuple[int, int]], tokens: int, repeats: int = 50) -> dict[str, Any]:
    """2:4 semi-structured linear vs dense (bf16, CUDA): speed-up per shape and output difference."""
    from torch.sparse import to_sparse_semi_structured

    from research_systems_core.timing import compare_calls

    device = torch.device("cuda")
    out: dict[str, Any] = {}
    for n_in, n_out in shapes:
        w = torch.randn(n_out, n_in, device=device, dtype=torch.bfloat16)
        w = w * nm_mask(w.float().abs(), 2, 4).to(w.dtype)
        x = torch.randn(tokens, n_in, device=device, dtype=torch.bfloat16)
        ws = to_sparse_semi_structured(w)
        diff = float((torch.nn.functional.linear(x, ws) - torch.nn.functional.linear(x, w)).abs().max())
        timings = compare_calls(
            {"dense": lambda x=x, w=w: torch.nn.functional.linear(x, w),
             "sparse": lambda x=x, ws=ws: torch.nn.functional.linear(x, ws)},
            device=device, warmup=10, repeats=repeats,
        )  # fmt: skip
        speedup = timings["dense"].median_s / timings["sparse"].median_s
        out[f"{n_in}x{n_out}"] = {
            "dense_ms": round(timings["dense"].median_s * 1e3, 4),
            "sparse_ms": round(timings["sparse"].median_s * 1e3, 4),
            "speedup": round(speedup, 3),
            "goal_1.3x_met": speedup >= 1.3,
            "max_abs_diff": diff,
        }
    return out


def main() -> None:
    cuda = torch.device("cuda")
    checks = {
        "semi_structured_2to4": lambda: semi_structured_check(
            [(4096, 4096), (4096, 11008), (11008, 4096)], 2048
        ),
        "wanda_2to4_1b": lambda: prune_check("wanda", cuda, torch.bfloat16, LLAMA_1B, 32, 2048),
        "sparsegpt_2to4_1b": lambda: prune_check("sparsegpt", cuda, torch.bfloat16, LLAMA_1B, 32, 2048),
    }
    gpu_check_main("llm-sparsity", checks, default_budget_s=90.0)


if __name__ == "__main__":
    main()
