"""SMC-Bench tasks for causal language models, scored the way the benchmark scores them.

- Commonsense multiple choice (``csqa``, ``race``, ``winogrande``): the log-likelihood of each
  option given the context (:func:`evaluation.mc_accuracy`, ``acc`` as lm-evaluation-harness);
  fine-tuned with the language-modelling loss of the correct option's tokens.
  Data: ``<data-dir>/<task>/train.(jsonl|csv)`` and ``test.(jsonl|csv)`` with ``question``,
  ``choices`` (a JSON list or ``|``-separated) and ``label`` (index or the option's text); without
  them, a saved / hub dataset through the encoder tasks' converters.
- Arithmetic reasoning (``svamp``: SVAMP.json of the data directory; ``arithmetic``:
  ``<data-dir>/arithmetic-gen/train|test`` with ``question`` and a numeric ``answer``): greedy
  generation, exact match of the first generated number (:func:`task_scores.arithmetic_exact_match`);
  fine-tuned with the language-modelling loss of `` <answer>`` after the prompt.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from llm_sparsity.evaluation import MCExample, _continuation_pair, mc_accuracy, read_mc_file
from llm_sparsity.finetune import FinetuneConfig
from llm_sparsity.smc_tasks import PairTrainer, _split_file
from llm_sparsity.task_scores import arithmetic_exact_match, read_pairs

__all__ = ["CAUSAL_TASKS", "CausalTaskBundle", "answer_lm_loss", "build_causal_task", "gen_prompt"]

CAUSAL_TASKS = ("csqa", "race", "winogrande", "svamp", "arithmetic")

Pair = tuple[str, str]


def gen_prompt(question: str) -> str:
    """The prompt of an arithmetic problem (the answer follows after a space)."""
    return f"Question: {question.strip()}\nAnswer:"


def answer_lm_loss(model: torch.nn.Module, tokenizer: Any, items: Sequence[Pair]) -> torch.Tensor:
    """Mean token cross-entropy of each answer given its prompt (prompt tokens not scored)."""
    seqs, labels = [], []
    for prompt, answer in items:
        ctx, cont = _continuation_pair(tokenizer, prompt, answer)
        if not cont:
            raise ValueError(f"answer {answer!r} tokenizes to nothing after its prompt")
        seqs.append(ctx + cont)
        labels.append([-100] * len(ctx) + cont)
    width = max(len(s) for s in seqs)
    ids = torch.zeros(len(seqs), width, dtype=torch.long)
    attn = torch.zeros_like(ids)
    lab = torch.full_like(ids, -100)
    for i, (s, y) in enumerate(zip(seqs, labels, strict=True)):
        ids[i, : len(s)], attn[i, : len(s)], lab[i, : len(s)] = torch.tensor(s), 1, torch.tensor(y)
    device = next(model.parameters()).device
    return model(input_ids=ids.to(device), attention_mask=attn.to(device), labels=lab.to(device)).loss


@dataclass
class CausalTaskBundle:
    """A task for the main causal LM (no own model): training pairs, evaluation and its score."""

    name: str
    trainer: PairTrainer
    evaluate_fn: Callable[[torch.nn.Module], float]
    tokenizer: Any
    model: None = None

    def evaluate(self, model: torch.nn.Module) -> float:
        was_training = model.training
        model.eval()
        try:
            return float(self.evaluate_fn(model))
        finally:
            model.train(was_training)


def _mc_examples(
    name: str, data_dir: Path, n_train: int, n_eval: int
) -> tuple[list[MCExample], list[MCExample]]:
    folder = Path(data_dir) / name
    if any((folder / f"train{s}").is_file() for s in (".csv", ".jsonl", ".json")):
        train = read_mc_file(_split_file(folder, "train"))[:n_train]
        test = read_mc_file(_split_file(folder, "test"))[:n_eval]
        return train, test
    from llm_sparsity.smc_bench import TaskUnavailable, load_task

    try:  # the saved / hub dataset through the encoder task's converters
        from llm_sparsity.smc_bench import Budget

        hub = load_task(name, data_dir, None, Budget(), n_train=n_train, n_eval=n_eval)
    except TaskUnavailable as exc:
        raise TaskUnavailable(f"{exc}; or give {folder}/train.jsonl|csv and test.jsonl|csv") from exc
    convert = [MCExample(it.question, it.candidates, it.gold) for it in hub.trainer.train_items(0)]
    return convert, [MCExample(it.question, it.candidates, it.gold) for it in hub.eval_items]


def _svamp_pairs(data_dir: Path, n_train: int, n_eval: int) -> tuple[list[tuple[str, float]], ...]:
    """SVAMP problems (body + question, numeric answer), a seeded 80/20 split."""
    path = Path(data_dir) / "arithmetic" / "SVAMP.json"
    if not path.is_file():
        raise FileNotFoundError(f"task 'svamp' for causal LMs needs {path}")
    records = json.loads(path.read_text(encoding="utf-8"))
    pairs = [(f"{r['Body'].strip()} {r['Question'].strip()}", float(r["Answer"])) for r in records]
    random.Random(0).shuffle(pairs)
    cut = int(0.8 * len(pairs))
    return pairs[:cut][:n_train], pairs[cut:][:n_eval]


def _gen_pairs(name: str, data_dir: Path, n_train: int, n_eval: int) -> tuple[list[tuple[str, float]], ...]:
    if name == "svamp":
        return _svamp_pairs(data_dir, n_train, n_eval)
    folder = Path(data_dir) / "arithmetic-gen"
    train = list(
        zip(*read_pairs(_split_file(folder, "train"), "question", "answer", numeric=True), strict=True)
    )
    test = list(
        zip(*read_pairs(_split_file(folder, "test"), "question", "answer", numeric=True), strict=True)
    )
    return train[:n_train], test[:n_eval]


def build_causal_task(name: str, data_dir: Path, tokenizer: Any, *, n_train: int, n_eval: int,
                      batch_size: int, lr: float, max_new_tokens: int = 16) -> CausalTaskBundle:  # fmt: skip
    """One of :data:`CAUSAL_TASKS` for a causal LM (see the module docstring for the data)."""
    from llm_sparsity.smc_bench import TaskUnavailable

    if name not in CAUSAL_TASKS:
        raise TaskUnavailable(
            f"task {name!r} is an encoder retrieval task; for causal LMs use one of {', '.join(CAUSAL_TASKS)}"
        )
    cfg = FinetuneConfig(batch_size=batch_size, lr=lr)
    if name in ("svamp", "arithmetic"):
        try:
            train, test = _gen_pairs(name, data_dir, n_train, n_eval)
        except FileNotFoundError as exc:
            raise TaskUnavailable(str(exc)) from exc
        if not train or not test:
            raise TaskUnavailable(f"task {name!r}: no training or no evaluation problems")
        pairs = [(gen_prompt(q), f" {a:g}") for q, a in train]
        prompts, answers = [gen_prompt(q) for q, _ in test], [a for _, a in test]

        def score(model: torch.nn.Module) -> float:
            return arithmetic_exact_match(model, tokenizer, prompts, answers, max_new_tokens)

        return CausalTaskBundle(name, PairTrainer(pairs, tokenizer, answer_lm_loss, cfg), score, tokenizer)
    train_mc, test_mc = _mc_examples(name, data_dir, n_train, n_eval)
    if not train_mc or not test_mc:
        raise TaskUnavailable(f"task {name!r}: no training or no evaluation items")
    pairs = [(ex.context, " " + ex.choices[ex.label]) for ex in train_mc]

    def mc_score(model: torch.nn.Module) -> float:
        return mc_accuracy(model, tokenizer, test_mc)["acc"]

    return CausalTaskBundle(name, PairTrainer(pairs, tokenizer, answer_lm_loss, cfg), mc_score, tokenizer)
