"""Subprocess helper of test_smc_crash.py: one small SMC-Bench run on a tiny BERT and a toy
multiple-choice task, appending its rows to the given results file (resuming what is there)."""

from __future__ import annotations

import sys

import torch
from test_isp_smc import WORDS, _items  # the same toy task as the in-process SMC tests (same folder)

from llm_sparsity.finetune import FinetuneConfig, RetrievalTrainer
from llm_sparsity.models import build_word_tokenizer, create_model
from llm_sparsity.smc_bench import Budget, TaskBundle, run_benchmark
from llm_sparsity.targets import select_targets

METHODS = ["omp_before", "random", "imp", "rigl"]
GRID = [0.2, 0.4, 0.6]
SEEDS = [0, 1]
BUDGET = Budget(steps=2, imp_rounds=2, imp_steps_per_round=1, rigl_every=1, isp_rounds=1, isp_masks=2,
                isp_weak_steps=1, isp_main_steps=1, snip_batches=1, batch_size=4)  # fmt: skip


def run(results: str) -> list[dict]:
    torch.set_num_threads(1)
    tok = build_word_tokenizer([*WORDS, "the"], vocab_size=64)
    trainer = RetrievalTrainer(_items(16, 0), tok, FinetuneConfig(batch_size=4, lr=1e-3))
    bundle = TaskBundle("toy", trainer, _items(12, 1), tok)
    model = create_model("tiny_bert", vocab_size=64, seed=0)
    targets = select_targets(model, "essential")
    return run_benchmark(model, targets, {"toy": bundle}, METHODS, GRID, SEEDS, results, BUDGET)


if __name__ == "__main__":
    run(sys.argv[1])
