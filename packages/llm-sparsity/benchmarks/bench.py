"""llm-sparsity benchmarks: JSON through research_systems_core.bench (rows with ours/peer/ratio/goal).

1. Global magnitude pruning (exact, same mask): ``llm_sparsity.streaming.prune_magnitude_in_place``
   vs ``torch.nn.utils.prune.global_unstructured`` (the peer); time (goal >= 7x faster) and peak
   extra memory over the targeted weight bytes (goal <= 10%), each measured in a fresh process
   (RSS sampled every ~0.2 ms), repeats interleaved, medians; the two masks must be identical.
2. Sequential Wanda and SparseGPT: seconds per Llama-style block (hidden 2048, intermediate 5632,
   the TinyLlama-1.1B block) on this CPU, calibration 8 x 128 tokens (``--quick``: 4 x 64).
3. ISP vs IMP mask-search cost to 70% on MiniLM (steps and CPU-process wall time; goal <= 0.25x IMP
   at equal accuracy), budgets of the reference (see ``bench_isp_vs_imp``).
4. Curve sweep peak memory (``llm_curve``, magnitude, a free evaluation) with the grid at 2 and at 8
   points, over the targeted weight bytes (goal: one extra copy, independent of the grid length).

Usage: python benchmarks/bench.py --out DIR [--smoke | --quick]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")


def _rss() -> int:
    """Anonymous resident memory (resident minus file-backed pages such as libtorch's code)."""
    with open("/proc/self/statm") as fh:
        fields = fh.read().split()
    return (int(fields[1]) - int(fields[2])) * os.sysconf("SC_PAGE_SIZE")


def _warm_up(kind: str) -> None:
    """Run the measured code once on a tiny model so one-time kernel/allocator set-up is not counted."""
    import torch
    import torch.nn.utils.prune as tprune

    from llm_sparsity.streaming import prune_magnitude_in_place
    from llm_sparsity.targets import Targets

    small = torch.nn.Sequential(torch.nn.Linear(1024, 1024), torch.nn.Linear(1024, 1024))
    if kind == "ours":
        prune_magnitude_in_place(small, Targets(("0.weight", "1.weight")), 0.5)
    else:
        tprune.global_unstructured(
            [(small[0], "weight"), (small[1], "weight")], pruning_method=tprune.L1Unstructured, amount=0.5
        )


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]  # fmt: skip


def _malloc_in_use() -> int:
    """Bytes the C allocator has handed out and not taken back (all arenas + mmapped blocks)."""
    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = _Mallinfo2
    info = libc.mallinfo2()
    return int(info.uordblks + info.hblkhd)


class PeakRSS:
    """Peak memory above the baseline while the block runs (sampling thread): ``extra`` counts the
    bytes allocated through malloc (what the code holds; torch's CPU tensors come from malloc),
    ``extra_rss`` the anonymous resident set (also counts pages the allocator keeps after frees)."""

    def __enter__(self) -> PeakRSS:
        self._stop = False
        self.peak = self.peak_rss = 0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        time.sleep(0.05)  # the sampler's own stack and arena are not the measured code's memory
        self.base, self.base_rss = _malloc_in_use(), _rss()
        self.peak, self.peak_rss = self.base, self.base_rss
        return self

    def _sample(self) -> None:
        self.peak = max(self.peak, _malloc_in_use())
        self.peak_rss = max(self.peak_rss, _rss())

    def _run(self) -> None:
        while not self._stop:
            if self.peak:
                self._sample()
            time.sleep(0.0002)

    def __exit__(self, *exc: Any) -> None:
        self._sample()
        self._stop = True
        self._thread.join()

    @property
    def extra(self) -> int:
        return self.peak - self.base

    @property
    def extra_rss(self) -> int:
        return self.peak_rss - self.base_rss


def _model(name: str):
    import torch

    torch.set_num_threads(1)
    if name == "minilm":
        from llm_sparsity.models import load_pretrained

        return load_pretrained("minilm")[0]
    from llm_sparsity.models import create_model

    if name == "tiny_bert":
        return create_model("tiny_bert", hidden_size=128, intermediate_size=512, num_layers=2)
    return create_model("bert_base_random")


def worker(kind: str, model_name: str, sparsity: float) -> dict[str, Any]:
    """One global-magnitude measurement in this (fresh) process."""
    import gc

    import torch
    import torch.nn.utils.prune as tprune

    from llm_sparsity.streaming import prune_magnitude_in_place
    from llm_sparsity.targets import select_targets

    model = _model(model_name)
    targets = select_targets(model, "essential")
    params = targets.parameters(model)
    with torch.no_grad():  # own, written pages: no memory-mapped file pages counted as "extra"
        for p in params.values():
            p.data = p.data.clone()
    weight_bytes = sum(p.numel() * p.element_size() for p in params.values())
    _warm_up(kind)
    gc.collect()
    if kind == "ours":
        with PeakRSS() as mem:
            t = time.process_time()
            prune_magnitude_in_place(model, targets, sparsity)
            seconds = time.process_time() - t
        kept = {n: p.detach().ne(0) for n, p in targets.parameters(model).items()}
    else:
        modules = dict(model.named_modules())
        pairs = [(modules[n.rsplit(".", 1)[0]], "weight") for n in targets.names]
        with PeakRSS() as mem:
            t = time.process_time()
            tprune.global_unstructured(pairs, pruning_method=tprune.L1Unstructured, amount=sparsity)
            seconds = time.process_time() - t
        kept = {n: modules[n.rsplit(".", 1)[0]].weight_mask.bool() for n in targets.names}
    out_path = os.environ.get("BENCH_MASK_OUT")
    if out_path:
        from safetensors.torch import save_file

        save_file({n: m.contiguous() for n, m in kept.items()}, out_path)
    return {
        "seconds": seconds,
        "extra_bytes": mem.extra,
        "extra_rss_bytes": mem.extra_rss,
        "weight_bytes": weight_bytes,
    }


def curve_worker(model_name: str, n_points: int) -> dict[str, Any]:
    """Peak extra memory of one ``llm_curve`` sweep (magnitude, ``n_points`` sparsities, a free
    evaluation) in this (fresh) process, over the targeted weight bytes."""
    import gc

    import torch

    from llm_sparsity.llm_curve import llm_curve
    from llm_sparsity.targets import select_targets

    model = _model(model_name)
    targets = select_targets(model, "essential")
    with torch.no_grad():
        for p in targets.parameters(model).values():
            p.data = p.data.clone()
    weight_bytes = sum(p.numel() * p.element_size() for p in targets.parameters(model).values())
    grid = [round(0.9 * (i + 1) / n_points, 4) for i in range(n_points)]
    llm_curve(_model("tiny_bert"), select_targets(_model("tiny_bert"), "essential"), [0.5], ["magnitude"],
              lambda m: 0.0)  # warm-up  # fmt: skip
    gc.collect()
    with PeakRSS() as mem:
        t = time.process_time()
        rows = llm_curve(model, targets, grid, ["magnitude"], lambda m: 0.0)
        seconds = time.process_time() - t
    if len(rows) != n_points + 1:
        raise AssertionError(f"curve returned {len(rows)} rows for {n_points} points")
    return {"seconds": seconds, "extra_bytes": mem.extra, "extra_rss_bytes": mem.extra_rss,
            "weight_bytes": weight_bytes, "points": n_points}  # fmt: skip


def bench_curve_memory(model: str, repeats: int, in_process: bool = False) -> list[dict[str, Any]]:
    """Curve sweep peak memory with the grid at 2 and at 8 points (goal: one extra copy of the
    targeted weights, whatever the grid length). No peer: the comparison is 8 points vs 2."""
    from research_systems_core.bench import ratio_row

    runs: dict[int, list[dict[str, Any]]] = {2: [], 8: []}
    for _ in range(repeats):  # interleaved
        for n in runs:
            runs[n].append(curve_worker(model, n) if in_process else _spawn_curve(model, n))
    med = {
        n: statistics.median(r["extra_bytes"] for r in rs) / rs[0]["weight_bytes"] for n, rs in runs.items()
    }
    rows = []
    for n in runs:
        rows.append(
            ratio_row(
                f"curve sweep, {n} points ({model}): peak extra memory / targeted weight bytes",
                med[n],
                None,
                unit="fraction",
                higher_is_better=False,
                goal="<= 1.15 (one extra copy of the targeted weights + chunk buffers), whatever the grid",
                met=med[n] <= 1.15,
                rss=statistics.median(r["extra_rss_bytes"] for r in runs[n]) / runs[n][0]["weight_bytes"],
                seconds=statistics.median(r["seconds"] for r in runs[n]),
            )
        )
    rows.append(
        ratio_row(
            f"curve sweep ({model}): peak memory 8 points / 2 points",
            med[8] / med[2],
            1.0,
            unit="ratio",
            higher_is_better=False,
            goal="<= 1.1 (grid length does not matter)",
            met=med[8] / med[2] <= 1.1,
        )
    )
    return rows


def _spawn_curve(model: str, n_points: int) -> dict[str, Any]:
    res = subprocess.run([sys.executable, __file__, "--worker", "curve", "--model", model, "--points", str(n_points)],
                         capture_output=True, text=True, check=False)  # fmt: skip
    if res.returncode != 0:
        raise RuntimeError(f"curve worker {model}/{n_points} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _spawn(kind: str, model: str, sparsity: float, mask_out: Path) -> dict[str, Any]:
    env = dict(os.environ, BENCH_MASK_OUT=str(mask_out))
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


def bench_global_magnitude(out: Path, models: list[str], repeats: int) -> list[dict[str, Any]]:
    from safetensors.torch import load_file

    from research_systems_core.bench import ratio_row

    rows = []
    for model in models:
        runs: dict[str, list[dict[str, Any]]] = {"ours": [], "torch": []}
        for _ in range(repeats):  # interleaved: load moves both alike
            for kind in ("ours", "torch"):
                runs[kind].append(_spawn(kind, model, 0.5, out / f"mask_{kind}.safetensors"))
        a, b = load_file(str(out / "mask_ours.safetensors")), load_file(str(out / "mask_torch.safetensors"))
        differing = sum(int((a[n] != b[n]).sum()) for n in a)
        if differing:
            raise AssertionError(f"{model}: streaming and torch masks differ in {differing} entries")
        for kind in ("ours", "torch"):
            (out / f"mask_{kind}.safetensors").unlink()
        t_ours = statistics.median(r["seconds"] for r in runs["ours"])
        t_torch = statistics.median(r["seconds"] for r in runs["torch"])
        wb = runs["ours"][0]["weight_bytes"]
        m_ours = statistics.median(r["extra_bytes"] for r in runs["ours"]) / wb
        m_torch = statistics.median(r["extra_bytes"] for r in runs["torch"]) / wb
        rows.append(
            ratio_row(
                f"global magnitude 50% ({model}): CPU seconds",
                t_ours,
                t_torch,
                unit="s",
                higher_is_better=False,
                goal=">= 7x faster",
                met=t_torch / t_ours >= 7,
                masks_differing=differing,
                repeats=repeats,
                targeted_weights=wb // 4,
            )
        )
        rows.append(
            ratio_row(
                f"global magnitude 50% ({model}): peak extra memory / targeted weight bytes",
                m_ours,
                m_torch,
                unit="fraction",
                higher_is_better=False,
                goal="<= 0.10",
                met=m_ours <= 0.10,
                ratio=(m_torch / m_ours) if m_ours > 0 else None,
                rss_ours=statistics.median(r["extra_rss_bytes"] for r in runs["ours"]) / wb,
                rss_peer=statistics.median(r["extra_rss_bytes"] for r in runs["torch"]) / wb,
            )
        )
    return rows


def _llama_block_model(hidden: int, intermediate: int, vocab: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=1,
        num_attention_heads=max(hidden // 64, 1),
        num_key_value_heads=max(hidden // 64, 1),
        max_position_embeddings=2048,
    )
    return LlamaForCausalLM(cfg).eval()


def bench_sequential(hidden: int, intermediate: int, n_samples: int, seq_len: int) -> list[dict[str, Any]]:
    import torch

    from llm_sparsity.sequential import prune_sequential
    from llm_sparsity.targets import select_targets
    from research_systems_core.bench import ratio_row

    torch.set_num_threads(1)
    rows = []
    ids = torch.randint(0, 256, (n_samples, seq_len), generator=torch.Generator().manual_seed(0))
    for method, nm in (("wanda", None), ("sparsegpt", None), ("sparsegpt", (2, 4))):
        model = _llama_block_model(hidden, intermediate, 256)
        targets = select_targets(model, "essential")
        t = time.process_time()
        masks = prune_sequential(model, targets, ids, method, None if nm else 0.5, nm)
        seconds = time.process_time() - t
        assert masks.n_total - masks.n_active == masks.n_total // 2
        label = f"{method}{' 2:4' if nm else ' 50%'}"
        rows.append(
            ratio_row(
                f"{label}: CPU seconds per Llama block (hidden {hidden}, intermediate {intermediate}, "
                f"{n_samples}x{seq_len} tokens)",
                seconds,
                None,
                unit="s",
                higher_is_better=False,
            )
        )
    return rows


ISP_SIZES = {  # n_train, batch, rounds, IMP epochs per round, final fine-tuning steps, eval items
    "smoke": (16, 8, 1, 1, 1, 20),
    "quick": (50, 5, 2, 4, 5, 100),
    "full": (160, 8, 3, 5, 20, 200),
}


def _retrieval(n_train: int, n_eval: int, tiny: bool = False):
    """MiniLM (``tiny``: a tiny random BERT with MiniLM's tokenizer, for --smoke) and the retrieval task."""
    from llm_sparsity.models import create_model, load_pretrained, load_tokenizer
    from llm_sparsity.tasks import BodyRetrievalTask, load_question_bodies
    from research_systems_core.data import resolve_data_dir

    if tiny:
        tok = load_tokenizer("minilm")
        model = create_model("tiny_bert", vocab_size=tok.vocab_size)
    else:
        model, tok = load_pretrained("minilm")
    passages = load_question_bodies(resolve_data_dir())
    return model, tok, BodyRetrievalTask.from_passages(passages, n_train, n_eval)


def bench_isp_vs_imp(mode: str) -> dict[str, Any]:
    """ISP and IMP to 70% with the reference's budgets (instant_soup isp_all.py): per round the main
    model trains 0.5 epoch and 5 auxiliary copies 0.1 epoch each (weak masks, union), IMP trains
    ``imp_epochs`` full epochs per round (the reference trains its whole schedule, 20 epochs, per
    round: ``imp_epochs`` < 20 favours IMP). Both masks then get the same final fine-tuning from the
    pre-trained weights and are evaluated on the same held-out items (equal accuracy check)."""
    import math

    from llm_sparsity.experiments import MC_TRAIN_LEVEL
    from llm_sparsity.finetune import FinetuneConfig, RetrievalTrainer, mc_accuracy
    from llm_sparsity.isp import ISPConfig, instant_soup_pruning
    from llm_sparsity.pruning import iterative_magnitude_pruning, rewind
    from llm_sparsity.targets import select_targets
    from research_systems_core.seeding import seed_everything

    n_train, batch, rounds, imp_epochs, final_steps, n_eval = ISP_SIZES[mode]
    model, tok, task = _retrieval(n_train, n_eval, tiny=mode == "smoke")
    targets = select_targets(model, "essential")
    trainer = RetrievalTrainer(task, tok, FinetuneConfig(batch_size=batch, train_level=MC_TRAIN_LEVEL))
    epoch = math.ceil(len(trainer.train_items(0)) / batch)
    pre = {k: v.detach().clone() for k, v in model.state_dict().items()}
    isp_cfg = ISPConfig(target_sparsity=0.7, rounds=rounds, n_masks=5, weak_steps=max(1, round(0.1 * epoch)),
                        main_steps=max(1, round(0.5 * epoch)), final_steps=0, stop_gap=0.0)  # fmt: skip
    spent = [0]

    def train(m, masks, n):
        spent[0] += trainer.train(m, masks, n, seed=spent[0]).steps

    trainer.train(model, None, 1)  # warm-up (allocator, kernels), then back to the pre-trained weights
    rewind(model, pre)
    seed_everything(0)
    t = time.perf_counter()
    imp_masks, _ = iterative_magnitude_pruning(model, targets, 0.7, train, rounds=rounds,
                                               steps_per_round=imp_epochs * epoch)  # fmt: skip
    imp_seconds = time.perf_counter() - t
    rewind(model, pre)
    seed_everything(0)
    t = time.perf_counter()
    res = instant_soup_pruning(model, targets, trainer, isp_cfg)
    isp_seconds = time.perf_counter() - t
    items = task.items(MC_TRAIN_LEVEL, 0, "eval")
    acc = {}
    for name, masks in (("imp", imp_masks), ("isp", res.masks)):  # same final fine-tuning, same items
        rewind(model, pre, masks)
        trainer.train(model, masks, final_steps, seed=123)
        acc[name] = mc_accuracy(model, tok, items)
    rewind(model, pre)
    step_ratio, time_ratio = res.cost.total_steps / spent[0], isp_seconds / imp_seconds
    return {
        "target_sparsity": 0.7,
        "epoch_steps": epoch,
        "imp": {
            "rounds": rounds,
            "steps_per_round": imp_epochs * epoch,
            "train_steps": spent[0],
            "seconds": imp_seconds,
            "sparsity": imp_masks.sparsity(),
            "accuracy": acc["imp"],
        },
        "isp": {
            **res.cost.as_dict(),
            "n_masks": isp_cfg.n_masks,
            "rounds": rounds,
            "weak_steps_each": isp_cfg.weak_steps,
            "main_steps_each": isp_cfg.main_steps,
            "sparsity": res.masks.sparsity(),
            "accuracy": acc["isp"],
        },
        "step_ratio_isp_over_imp": step_ratio,
        "time_ratio_isp_over_imp": time_ratio,
        "accuracy_isp_minus_imp": acc["isp"] - acc["imp"],
        "n_eval": len(items),
        "iou_isp_imp": res.masks.iou(imp_masks),
        "note": "mask-search cost only; both masks then get the same final fine-tuning before evaluation",
    }


def bench_isp_rows(mode: str) -> list[dict[str, Any]]:
    from research_systems_core.bench import ratio_row

    res = bench_isp_vs_imp(mode)
    label = "tiny BERT" if mode == "smoke" else "MiniLM"
    equal = abs(res["accuracy_isp_minus_imp"]) <= 0.03 or res["accuracy_isp_minus_imp"] > 0
    extra = {"accuracy_isp": res["isp"]["accuracy"], "accuracy_imp": res["imp"]["accuracy"],
             "n_eval": res["n_eval"], "iou_isp_imp": res["iou_isp_imp"], "epoch_steps": res["epoch_steps"]}  # fmt: skip
    return [
        ratio_row(
            f"ISP/IMP mask-search steps ({label}, 70%)",
            res["isp"]["total_steps"],
            res["imp"]["train_steps"],
            unit="steps",
            higher_is_better=False,
            goal="<= 0.25x IMP at equal accuracy (within 3 points)",
            met=res["step_ratio_isp_over_imp"] <= 0.25 and equal,
            **extra,
        ),
        ratio_row(
            f"ISP/IMP mask-search seconds ({label}, 70%)",
            res["isp"]["seconds"],
            res["imp"]["seconds"],
            unit="s",
            higher_is_better=False,
            goal="<= 0.25x IMP at equal accuracy (within 3 points)",
            met=res["time_ratio_isp_over_imp"] <= 0.25 and equal,
            **extra,
        ),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, help="Output directory for bench.json.")
    parser.add_argument("--quick", action="store_true", help="MiniLM only, smaller calibration (~2 min).")
    parser.add_argument("--smoke", action="store_true", help="Every section on tiny sizes (<= 30 s).")
    parser.add_argument(
        "--sections",
        default="magnitude,sequential,isp,curve",
        help="Comma-separated subset of magnitude, sequential, isp, curve.",
    )
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--model", default="minilm", help=argparse.SUPPRESS)
    parser.add_argument("--sparsity", type=float, default=0.5, help=argparse.SUPPRESS)
    parser.add_argument("--points", type=int, default=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "curve":
        print(json.dumps(curve_worker(args.model, args.points)))
        return
    if args.worker:
        print(json.dumps(worker(args.worker, args.model, args.sparsity)))
        return
    if args.out is None:
        parser.error("--out DIR is required")
    import torch

    from research_systems_core.bench import bench_environment, write_bench_json

    torch.set_num_threads(1)
    args.out.mkdir(parents=True, exist_ok=True)
    mode = "smoke" if args.smoke else ("quick" if args.quick else "full")
    env = bench_environment({"torch": torch.__version__})
    t0 = time.perf_counter()
    wanted = {x.strip() for x in args.sections.split(",") if x.strip()}
    unknown = wanted - {"magnitude", "sequential", "isp", "curve"}
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from magnitude, sequential, isp, curve")
    sizes = {
        "smoke": (["tiny_bert"], 1, (128, 256, 2, 32)),
        "quick": (["minilm"], 3, (2048, 5632, 4, 64)),
        "full": (["minilm", "bert_base_random"], 3, (2048, 5632, 8, 128)),
    }[mode]
    rows = []
    if "magnitude" in wanted:
        rows += bench_global_magnitude(args.out, sizes[0], sizes[1])
    if "sequential" in wanted:
        rows += bench_sequential(*sizes[2])
    if "isp" in wanted:
        rows += bench_isp_rows(mode)
    if "curve" in wanted:
        if mode == "smoke":  # in this process (no fresh-process isolation): exercises the code only
            rows += bench_curve_memory("tiny_bert", 1, in_process=True)
        else:
            rows += bench_curve_memory("minilm", 3)
    path = write_bench_json(
        args.out / "bench.json",
        package="llm-sparsity",
        mode=mode,
        environment=env,
        rows=rows,
        extra={"wall_seconds": round(time.perf_counter() - t0, 1)},
    )
    for r in rows:
        print(
            f"{r['name']}: ours {r['ours']:.4g} peer {r['peer']} ratio {r['ratio']} goal {r['goal']} met {r['met']}"
        )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
