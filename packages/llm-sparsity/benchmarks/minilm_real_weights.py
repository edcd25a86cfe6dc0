"""Real-weights check: magnitude vs Wanda vs SparseGPT on the offline pre-trained MiniLM.

For 50% unstructured and 2:4: (a) the per-layer output reconstruction error
||X W^T - X W_pruned^T||^2 / ||X W^T||^2 of every targeted layer, with X the layer's inputs in
the *dense* model on held-out text (SVAMP stories not used for calibration), averaged over layers;
(b) zero-shot question->body retrieval accuracy (N = 8, chance 0.125) on 200 held-out problems.
Magnitude is per output row (the Wanda paper's layer-wise baseline) and also global. Wanda and
SparseGPT calibrate on 32 windows of 64 tokens of MAWPS problems, block by block.

Usage: python benchmarks/minilm_real_weights.py --out docs/minilm_real_weights.json (about 2 min)
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _layer_inputs(model, targets, batches):
    import torch

    modules = dict(model.named_modules())
    store: dict[str, list] = {n: [] for n in targets.names}
    hooks = []
    for n in targets.names:

        def hook(_m, args, n=n):
            x = args[0]
            store[n].append(x.reshape(-1, x.shape[-1]).detach())

        hooks.append(modules[n.rsplit(".", 1)[0]].register_forward_pre_hook(hook))
    with torch.no_grad():
        for b in batches:
            model(**b)
    for h in hooks:
        h.remove()
    return {n: torch.cat(v) for n, v in store.items()}


def main() -> None:
    import torch

    from llm_sparsity.calibration import sample_windows
    from llm_sparsity.llm import PruneSpec, prune_llm
    from llm_sparsity.models import load_pretrained, tokenize
    from llm_sparsity.probe import MCSuite
    from llm_sparsity.tasks import BodyLevel, BodyRetrievalTask, load_question_bodies
    from research_systems_core.data import resolve_data_dir
    from research_systems_core.results import write_json

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    data = resolve_data_dir()
    model, tok = load_pretrained("minilm")
    dense_state = {k: v.clone() for k, v in model.state_dict().items()}
    from llm_sparsity.targets import select_targets

    targets = select_targets(model, "essential")
    mawps = load_question_bodies(data, "mawps")
    calib_ids = torch.tensor(
        tok("\n\n".join(f"{p.body} {p.question}" for p in mawps), add_special_tokens=False)["input_ids"]
    )
    calibration = sample_windows(calib_ids, 32, 64, seed=0)
    svamp = load_question_bodies(data, "svamp")
    held_out = tokenize(tok, [f"{p.body} {p.question}" for p in svamp[:64]], batch_size=32).batches
    inputs = _layer_inputs(model, targets, held_out)
    dense_out = {n: inputs[n] @ dense_state[n].t() for n in targets.names}
    task = BodyRetrievalTask.from_passages(load_question_bodies(data), 100, 200)
    suite = MCSuite(task, tok, [BodyLevel("options", 8, n_candidates=8)], seeds=[0])
    rows = [
        {
            "method": "dense",
            "pattern": "-",
            "accuracy": suite.evaluate(model)[0]["accuracy"],
            "recon_error": 0.0,
        }
    ]
    for pattern in ("50%", "2:4"):
        nm = (2, 4) if pattern == "2:4" else None
        for method, allocation in (
            ("magnitude", "global"),
            ("magnitude", "row"),
            ("wanda", "row"),
            ("sparsegpt", "row"),
        ):
            if nm and allocation == "global":
                continue
            model.load_state_dict(dense_state)
            spec = PruneSpec(method, None if nm else 0.5, nm, allocation)
            prune_llm(model, targets, spec, calibration=calibration, batch_size=8)
            params = dict(model.named_parameters())
            errs = [
                float(
                    ((inputs[n] @ params[n].detach().t() - dense_out[n]) ** 2).sum()
                    / (dense_out[n] ** 2).sum()
                )
                for n in targets.names
            ]
            acc = suite.evaluate(model)[0]["accuracy"]
            rows.append(
                {
                    "method": f"{method} ({allocation})",
                    "pattern": pattern,
                    "accuracy": acc,
                    "recon_error": sum(errs) / len(errs),
                    "recon_error_per_layer": errs,
                }
            )
            print(
                rows[-1]["method"],
                pattern,
                f"acc {acc:.3f}",
                f"recon {rows[-1]['recon_error']:.4f}",
                flush=True,
            )
    model.load_state_dict(dense_state)
    write_json(
        args.out,
        {
            "rows": rows,
            "seconds": round(time.perf_counter() - t0, 1),
            "date": time.strftime("%Y-%m-%d"),
            "n_eval": 200,
            "calibration": "32 x 64 MAWPS tokens",
        },
    )


if __name__ == "__main__":
    main()
