"""SMC-Bench tasks for causal language models, scored the way the benchmark scores them.

- Commonsense multiple choice (``csqa``, ``race``, ``winogrande``): the log-likelihood of each
  option given the context (:func:`evaluation.mc_accuracy`, ``acc`` as lm-evaluation-harness);
  fine-tuned with the language-modelling loss of the correct option's tokens.
  Data: ``<data-dir>/<task>/train.(jsonl|csv)`` and ``test.(jsonl|csv)`` with ``question``,
  ``choices`` (a JSON list or ``|``-separated) and ``label`` (index or the option's text); without
  them, a saved / hub dataset through the encoder tasks' converters. ``winogrande`` rows in the
  dataset's own format (``sentence`` with ``_``, ``option1``, ``option2``, ``answer`` 1/2; local
  files or the saved / hub dataset) are scored as lm-evaluation-harness does: the partial
  evaluation, log p(the part after ``_`` | the part before ``_`` filled with each option).
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

from llm_sparsity.evaluation import (
    MCExample,
    _continuation_pair,
    choice_loglikelihoods,
    mc_accuracy,
    read_mc_file,
)
from llm_sparsity.finetune import FinetuneConfig
from llm_sparsity.smc_tasks import PairTrainer, _split_file
from llm_sparsity.task_scores import arithmetic_exact_match, read_pairs
from llm_sparsity.userdata import column, read_records
from research_systems_core.errors import UserError

__all__ = [
    "CAUSAL_TASKS",
    "CausalTaskBundle",
    "WinoItem",
    "answer_lm_loss",
    "build_causal_task",
    "gen_prompt",
    "read_winogrande",
    "winogrande_accuracy",
]

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


@dataclass(frozen=True)
class WinoItem:
    """A WinoGrande row: a sentence with one ``_``, two options, the right option's index."""

    sentence: str
    options: tuple[str, str]
    label: int

    def partial(self) -> tuple[list[str], str]:
        """(the sentence up to ``_`` filled with each option, the rest of the sentence)."""
        idx = self.sentence.index("_")
        return [self.sentence[:idx] + o for o in self.options], self.sentence[idx + 1 :].strip()

    def training_pair(self) -> Pair:
        contexts, target = self.partial()
        return contexts[self.label], " " + target


def read_winogrande(path: str | Path) -> list[WinoItem]:
    """WinoGrande rows (``sentence``, ``option1``, ``option2``, ``answer`` 1 or 2) of a JSONL/CSV file."""
    rows = read_records(path)
    cols = [column(rows, c, path) for c in ("sentence", "option1", "option2", "answer")]
    items = []
    for i, (sent, o1, o2, ans) in enumerate(zip(*cols, strict=True), 1):
        if "_" not in str(sent):
            raise UserError(f"{path}, row {i}: sentence has no '_' to fill in")
        if str(ans).strip() not in ("1", "2"):
            raise UserError(f"{path}, row {i}: answer must be 1 or 2, got {ans!r}")
        items.append(WinoItem(str(sent), (str(o1), str(o2)), int(str(ans).strip()) - 1))
    return items


@torch.no_grad()
def winogrande_accuracy(model: torch.nn.Module, tokenizer: Any, items: Sequence[WinoItem]) -> float:
    """lm-evaluation-harness's partial scoring: the option whose filled-in prefix makes the rest of
    the sentence most likely."""
    if not items:
        raise ValueError("no winogrande items to score")
    hits = 0
    for it in items:
        contexts, target = it.partial()
        lls = [choice_loglikelihoods(model, tokenizer, c, [target])[0] for c in contexts]
        hits += int(max(range(len(lls)), key=lls.__getitem__) == it.label)
    return hits / len(items)


def _winogrande_items(
    data_dir: Path, n_train: int, n_eval: int
) -> tuple[list[WinoItem], list[WinoItem]] | None:
    """Local files in the WinoGrande format, else the saved / hub dataset; None when the local
    files are in the generic multiple-choice format (scored as plain multiple choice)."""
    folder = data_dir / "winogrande"
    if any((folder / f"train{s}").is_file() for s in (".csv", ".jsonl", ".json")):
        train_path = _split_file(folder, "train")
        if "sentence" not in read_records(train_path)[0]:
            return None
        return read_winogrande(train_path)[:n_train], read_winogrande(_split_file(folder, "test"))[:n_eval]
    from llm_sparsity.smc_bench import _HUB_TASKS, TaskUnavailable

    hub_id, config, train_split, eval_split, _ = _HUB_TASKS["winogrande"]
    try:
        import datasets

        ds = (
            datasets.load_from_disk(str(folder)) if folder.is_dir() else datasets.load_dataset(hub_id, config)
        )

        def convert(split: str, n: int) -> list[WinoItem]:
            part = ds[split].select(range(min(n, len(ds[split]))))
            return [
                WinoItem(ex["sentence"], (ex["option1"], ex["option2"]), int(ex["answer"]) - 1) for ex in part
            ]

        return convert(train_split, n_train), convert(eval_split, n_eval)
    except Exception as exc:  # offline hub, missing package or split
        raise TaskUnavailable(
            f"task 'winogrande': could not load {hub_id} (looked for {folder}/train.jsonl|csv and a saved "
            f"dataset in {folder}, then the hub): {exc}"
        ) from exc


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
    if name == "winogrande":
        wino = _winogrande_items(Path(data_dir), n_train, n_eval)
        if wino is not None:
            train_w, test_w = wino
            pairs = [it.training_pair() for it in train_w]

            def wino_score(model: torch.nn.Module) -> float:
                return winogrande_accuracy(model, tokenizer, test_w)

            return CausalTaskBundle(
                name, PairTrainer(pairs, tokenizer, answer_lm_loss, cfg), wino_score, tokenizer
            )
    train_mc, test_mc = _mc_examples(name, data_dir, n_train, n_eval)
    if not train_mc or not test_mc:
        raise TaskUnavailable(f"task {name!r}: no training or no evaluation items")
    pairs = [(ex.context, " " + ex.choices[ex.label]) for ex in train_mc]

    def mc_score(model: torch.nn.Module) -> float:
        return mc_accuracy(model, tokenizer, test_mc)["acc"]

    return CausalTaskBundle(name, PairTrainer(pairs, tokenizer, answer_lm_loss, cfg), mc_score, tokenizer)
