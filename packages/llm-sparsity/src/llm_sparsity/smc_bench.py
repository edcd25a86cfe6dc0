"""An SMC-Bench-style runner: methods x sparsities x tasks x seeds -> resumable JSONL rows.

Every cell restores the pre-trained weights, seeds everything, runs the sparse method (which ends
with a fine-tuned sparse model), evaluates it, and appends one flushed JSONL row. Finished cells
are read back and skipped, so a killed run loses at most the cell in progress.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llm_sparsity.finetune import FinetuneConfig, MCItem, RetrievalTrainer, items_from_task, mc_accuracy
from llm_sparsity.isp import ISPConfig, instant_soup_pruning
from llm_sparsity.pruning import (
    check_sparsity,
    gradual_magnitude_pruning,
    iterative_magnitude_pruning,
    prune,
    rewind,
)
from llm_sparsity.targets import Targets
from llm_sparsity.tasks import (
    BodyLevel,
    BodyRetrievalTask,
    Level,
    RetrievalTask,
    load_arithmetic,
    load_question_bodies,
)
from research_systems_core.errors import UserError
from research_systems_core.logs import progress
from research_systems_core.masks import MaskSet
from research_systems_core.registry import Registry
from research_systems_core.results import JsonlWriter, plot_curves, read_jsonl
from research_systems_core.seeding import seed_everything
from research_systems_core.validation import check_int, check_positive

__all__ = [
    "METHODS",
    "TASKS",
    "Budget",
    "TaskBundle",
    "TaskUnavailable",
    "default_sparsities",
    "first_failing_sparsity",
    "load_task",
    "run_benchmark",
    "summarize",
]

log = logging.getLogger(__name__)
METHODS = Registry("SMC method")
TASKS = Registry("SMC task")


class TaskUnavailable(RuntimeError):
    """A task's data (or its model type) is not available here; the message says why and how."""


def default_sparsities(k: int = 8) -> list[float]:
    """SMC-Bench's grid 1 - 0.8^i for i = 1..k (0.2, 0.36, 0.488, ...)."""
    check_int("k", k, minimum=1)
    return [round(1 - 0.8**i, 4) for i in range(1, k + 1)]


@dataclass(frozen=True)
class Budget:
    """Training budget per cell: ``steps`` of (final) fine-tuning for every method, plus the
    method-specific extras (IMP rounds, ISP weak learners, RigL updates)."""

    steps: int = 20
    batch_size: int = 8
    lr: float = 5e-5
    imp_rounds: int = 3
    imp_steps_per_round: int = 20
    isp_rounds: int = 3
    isp_masks: int = 5
    isp_weak_steps: int = 2
    isp_main_steps: int = 2
    isp_aggregation: str = "union"
    rigl_every: int = 5
    rigl_fraction: float = 0.3
    snip_batches: int = 2

    def __post_init__(self) -> None:
        check_int("steps", self.steps, minimum=0)
        check_int("imp_rounds", self.imp_rounds, minimum=1)
        check_int("rigl_every", self.rigl_every, minimum=1)
        check_positive("lr", self.lr)


@dataclass
class TaskBundle:
    """A task ready to run: training items (via the trainer) and evaluation items."""

    name: str
    trainer: RetrievalTrainer
    eval_items: list[MCItem]
    tokenizer: Any

    def evaluate(self, model: torch.nn.Module) -> float:
        return mc_accuracy(model, self.tokenizer, self.eval_items)


# ---------------------------------------------------------------------------------------- tasks
def _arithmetic(source: str, near_miss: float) -> Callable[..., TaskBundle]:
    def build(
        data_dir: Path,
        tokenizer: Any,
        *,
        n_train: int = 600,
        n_eval: int = 300,
        budget: Budget,
        seed: int = 0,
    ) -> TaskBundle:
        try:
            problems = load_arithmetic(data_dir, source)
        except FileNotFoundError as exc:
            raise TaskUnavailable(str(exc)) from exc
        task = RetrievalTask.from_problems(problems, n_train, n_eval, seed=0)
        level = Level("smc", near_miss, n_candidates=4, near_miss=near_miss)
        cfg = FinetuneConfig(batch_size=budget.batch_size, lr=budget.lr, train_level=level)
        return TaskBundle(
            f"{source}",
            RetrievalTrainer(task, tokenizer, cfg),
            items_from_task(task, level, 0, "eval"),
            tokenizer,
        )

    return build


def _bodies(source: str, hard: float, n_candidates: int = 8) -> Callable[..., TaskBundle]:
    def build(
        data_dir: Path,
        tokenizer: Any,
        *,
        n_train: int = 600,
        n_eval: int = 300,
        budget: Budget,
        seed: int = 0,
    ) -> TaskBundle:
        try:
            passages = load_question_bodies(data_dir, source)
        except FileNotFoundError as exc:
            raise TaskUnavailable(str(exc)) from exc
        task = BodyRetrievalTask.from_passages(passages, n_train, n_eval, seed=0)
        level = BodyLevel("smc", hard, n_candidates=n_candidates, hard=hard)
        cfg = FinetuneConfig(batch_size=budget.batch_size, lr=budget.lr, train_level=level)
        return TaskBundle(
            source, RetrievalTrainer(task, tokenizer, cfg), task.items(level, 0, "eval"), tokenizer
        )

    return build


# question -> body retrieval (N=8; half / all distractors lexically close) and equation retrieval
TASKS.register("svamp")(_bodies("mawps-asdiv-a_svamp", 0.5))
TASKS.register("svamp-hard")(_bodies("mawps-asdiv-a_svamp", 1.0))
TASKS.register("mawps")(_bodies("mawps", 0.5))
TASKS.register("svamp-equations")(_arithmetic("mawps-asdiv-a_svamp", 0.5))

# Hugging Face multiple-choice adapters: (hub id, config, train split, eval split, converter)
_LETTERS = "ABCDE"


def _csqa(ex: dict[str, Any]) -> MCItem:
    return MCItem(
        ex["question"], tuple(ex["choices"]["text"]), list(ex["choices"]["label"]).index(ex["answerKey"])
    )


def _race(ex: dict[str, Any]) -> MCItem:
    return MCItem(
        f"{ex['article'][:600]} {ex['question']}", tuple(ex["options"]), _LETTERS.index(ex["answer"])
    )


def _winogrande(ex: dict[str, Any]) -> MCItem:
    s = ex["sentence"]
    return MCItem(s, (s.replace("_", ex["option1"]), s.replace("_", ex["option2"])), int(ex["answer"]) - 1)


_HUB_TASKS = {
    "csqa": ("tau/commonsense_qa", None, "train", "validation", _csqa),
    "race": ("ehovy/race", "middle", "train", "validation", _race),
    "winogrande": ("allenai/winogrande", "winogrande_s", "train", "validation", _winogrande),
}


def _hub(name: str) -> Callable[..., TaskBundle]:
    hub_id, config, train_split, eval_split, convert = _HUB_TASKS[name]

    def build(
        data_dir: Path,
        tokenizer: Any,
        *,
        n_train: int = 600,
        n_eval: int = 300,
        budget: Budget,
        seed: int = 0,
    ) -> TaskBundle:
        try:
            import datasets
        except ImportError as exc:
            raise TaskUnavailable(
                f"task {name!r} needs the 'datasets' package: pip install 'llm-sparsity[hub]'"
            ) from exc
        local = Path(data_dir) / name
        try:
            if local.is_dir():
                ds = datasets.load_from_disk(str(local))
            else:
                ds = datasets.load_dataset(hub_id, config)
            train = [convert(ex) for ex in ds[train_split].select(range(min(n_train, len(ds[train_split]))))]
            evals = [convert(ex) for ex in ds[eval_split].select(range(min(n_eval, len(ds[eval_split]))))]
        except Exception as exc:  # offline hub, missing split...
            raise TaskUnavailable(
                f"task {name!r}: could not load {hub_id} (looked for a saved dataset in {local}, then the hub): {exc}"
            ) from exc
        cfg = FinetuneConfig(batch_size=budget.batch_size, lr=budget.lr)
        return TaskBundle(name, RetrievalTrainer(train, tokenizer, cfg), evals, tokenizer)

    return build


for _name in _HUB_TASKS:
    TASKS.register(_name)(_hub(_name))


def _own_model_task(name: str) -> Callable[..., Any]:
    def build(data_dir: Path, tokenizer: Any, *, n_train: int = 600, n_eval: int = 300, budget: Budget,
              seed: int = 0) -> Any:  # fmt: skip
        from llm_sparsity.smc_tasks import build_pair_task

        try:
            return build_pair_task(name, data_dir, n_train=n_train, n_eval=n_eval, batch_size=budget.batch_size,
                                   lr=budget.lr)  # fmt: skip
        except FileNotFoundError as exc:
            raise TaskUnavailable(str(exc)) from exc

    return build


# protein thermostability (Spearman, own ESM regressor) and translation (BLEU, own seq2seq model)
TASKS.register("protein")(_own_model_task("protein"))


@TASKS.register("arithmetic")
def _arithmetic_generation(data_dir: Path, tokenizer: Any, **kwargs: Any) -> TaskBundle:
    """Generation with exact numeric match: only for causal LMs (see :mod:`smc_causal`)."""
    raise TaskUnavailable("task 'arithmetic' is scored by generation and needs a causal language model")


TASKS.register("translation")(_own_model_task("translation"))


def load_task(
    name: str, data_dir: Path, tokenizer: Any, budget: Budget, *, family: str | None = None, **kwargs: Any
) -> TaskBundle:
    """Build a registered task; :class:`TaskUnavailable` when its data is missing.

    ``family="causal-lm"``: the task as SMC-Bench scores it for a causal LM (log-likelihood
    multiple choice, or generation with exact numeric match; :mod:`smc_causal`). ``model=`` (an
    encoder's directory or hub id) for ``csqa``/``race``/``winogrande`` and any other family: a
    trained multiple-choice head on that encoder (:mod:`mc_head`) instead of cosine scoring."""
    builder = TASKS.get(name)
    model = kwargs.pop("model", None)
    if family != "causal-lm" and model is not None and name in ("csqa", "race", "winogrande"):
        from llm_sparsity.mc_head import build_mc_head_task  # encoders: a trained multiple-choice head

        return build_mc_head_task(name, Path(data_dir), model, n_train=kwargs.get("n_train", 600),
                                  n_eval=kwargs.get("n_eval", 300), batch_size=budget.batch_size,
                                  lr=budget.lr)  # fmt: skip
    if family == "causal-lm" and name not in ("protein", "translation"):
        from llm_sparsity.smc_causal import build_causal_task

        return build_causal_task(name, Path(data_dir), tokenizer, n_train=kwargs.get("n_train", 600),
                                 n_eval=kwargs.get("n_eval", 300), batch_size=budget.batch_size,
                                 lr=budget.lr)  # fmt: skip
    return builder(Path(data_dir), tokenizer, budget=budget, **kwargs)


# -------------------------------------------------------------------------------------- methods
def _train(
    bundle: TaskBundle,
    model: torch.nn.Module,
    masks: MaskSet | None,
    steps: int,
    seed: int,
    mode: str = "sparse",
) -> int:
    return bundle.trainer.train(model, masks, steps, seed=seed, mode=mode).steps


@METHODS.register("dense")
def dense(model, targets, sparsity, bundle, budget, seed):
    """No pruning: the reference fine-tuned for the same steps."""
    return {"train_steps": _train(bundle, model, None, budget.steps, seed)}


@METHODS.register("omp_before")
def omp_before(model, targets, sparsity, bundle, budget, seed):
    """One-shot global magnitude pruning of the pre-trained weights, then sparse fine-tuning."""
    masks = prune(model, targets, sparsity)
    return {"train_steps": _train(bundle, model, masks, budget.steps, seed)}


@METHODS.register("omp_after")
def omp_after(model, targets, sparsity, bundle, budget, seed):
    """Dense fine-tuning, one-shot magnitude pruning of the fine-tuned weights, sparse fine-tuning."""
    steps = _train(bundle, model, None, budget.steps, seed)
    masks = prune(model, targets, sparsity)
    return {"train_steps": steps + _train(bundle, model, masks, budget.steps, seed + 1)}


@METHODS.register("random")
def random_pruning(model, targets, sparsity, bundle, budget, seed):
    """Global random pruning (exact count), then sparse fine-tuning."""
    masks = prune(model, targets, sparsity, "random", generator=torch.Generator().manual_seed(seed))
    return {"train_steps": _train(bundle, model, masks, budget.steps, seed)}


@METHODS.register("snip")
def snip_pruning(model, targets, sparsity, bundle, budget, seed):
    """SNIP |w * grad| on a few training batches of the task loss, then sparse fine-tuning."""
    items = bundle.trainer.train_items(seed)
    rng = random.Random(seed)
    batches = [rng.sample(items, min(budget.batch_size, len(items))) for _ in range(budget.snip_batches)]
    masks = prune(
        model, targets, sparsity, "snip", calibration=batches, loss_fn=lambda m, b: bundle.trainer.loss(m, b)
    )
    return {"train_steps": _train(bundle, model, masks, budget.steps, seed)}


@METHODS.register("imp")
def imp(model, targets, sparsity, bundle, budget, seed):
    """Iterative magnitude pruning / lottery ticket: rounds of training, pruning and rewinding to
    the pre-trained weights, then sparse fine-tuning."""
    steps = [0]

    def train(m: torch.nn.Module, masks: MaskSet, n: int) -> None:
        steps[0] += _train(bundle, m, masks, n, seed + steps[0])

    masks, _ = iterative_magnitude_pruning(
        model, targets, sparsity, train, rounds=budget.imp_rounds, steps_per_round=budget.imp_steps_per_round
    )
    return {"train_steps": steps[0] + _train(bundle, model, masks, budget.steps, seed)}


@METHODS.register("gmp")
def gmp(model, targets, sparsity, bundle, budget, seed):
    """Gradual magnitude pruning (cubic) during the fine-tuning steps."""
    steps = [0]

    def train(m: torch.nn.Module, masks: MaskSet, n: int) -> None:
        steps[0] += _train(bundle, m, masks, n, seed + steps[0])

    gradual_magnitude_pruning(
        model,
        targets,
        sparsity,
        train,
        total_steps=max(budget.steps, 1),
        prune_every=max(1, budget.steps // 8),
    )
    return {"train_steps": steps[0]}


def rigl_update(
    model: torch.nn.Module, targets: Targets, masks: MaskSet, grads: dict[str, torch.Tensor], fraction: float
) -> MaskSet:
    """One RigL step per tensor: drop the ``fraction`` smallest-magnitude active weights, grow the
    same number of inactive weights with the largest |gradient| (grown weights start at zero)."""
    params = targets.parameters(model)
    out = {}
    for n, keep in masks.masks.items():
        active = int(keep.sum())
        k = round(fraction * active)
        if k == 0:
            out[n] = keep.clone()
            continue
        w = params[n].detach().abs().flatten()
        flat = keep.flatten().clone()
        drop = torch.where(flat, w, torch.full_like(w, math.inf)).topk(k, largest=False).indices
        g = grads[n].abs().flatten()
        grow_scores = torch.where(flat, torch.full_like(g, -math.inf), g)
        grow_scores[drop] = -math.inf  # do not regrow what was just dropped
        grow = grow_scores.topk(k).indices
        flat[drop] = False
        flat[grow] = True
        out[n] = flat.reshape(keep.shape)
    new = MaskSet(out)
    with torch.no_grad():
        for n, p in params.items():
            p[new.masks[n] & ~masks.masks[n]] = 0.0
    new.apply(model)
    return new


@METHODS.register("rigl")
def rigl(model, targets, sparsity, bundle, budget, seed):
    """RigL-style dynamic sparsity from the one-shot magnitude mask: every ``rigl_every`` steps drop
    the smallest weights and regrow by gradient, with a cosine-decayed update fraction."""
    masks = prune(model, targets, sparsity)
    items = bundle.trainer.train_items(seed)
    rng = random.Random(seed)
    done, updates = 0, 0
    total_updates = max(1, budget.steps // budget.rigl_every - 1)
    while done < budget.steps:
        n = min(budget.rigl_every, budget.steps - done)
        done += _train(bundle, model, masks, n, seed + done)
        if done < budget.steps and sparsity > 0:
            batch = rng.sample(items, min(budget.batch_size, len(items)))
            params = targets.parameters(model)
            model.zero_grad(set_to_none=True)
            bundle.trainer.loss(model, batch).backward()
            grads = {k: p.grad.detach().clone() for k, p in params.items()}
            model.zero_grad(set_to_none=True)
            frac = (
                budget.rigl_fraction
                * 0.5
                * (1 + math.cos(math.pi * min(updates, total_updates) / total_updates))
            )
            masks = rigl_update(model, targets, masks, grads, frac)
            updates += 1
    return {"train_steps": done, "rigl_updates": updates}


@METHODS.register("isp")
def isp(model, targets, sparsity, bundle, budget, seed):
    """Instant Soup Pruning (weak masks aggregated per round), then sparse fine-tuning."""
    if sparsity == 0:
        return dense(model, targets, sparsity, bundle, budget, seed)
    cfg = ISPConfig(
        target_sparsity=sparsity,
        rounds=budget.isp_rounds,
        n_masks=budget.isp_masks,
        weak_steps=budget.isp_weak_steps,
        main_steps=budget.isp_main_steps,
        final_steps=budget.steps,
        aggregation=budget.isp_aggregation,
        lr=budget.lr,
        seed=seed,
    )
    res = instant_soup_pruning(model, targets, bundle.trainer, cfg)
    return {"train_steps": res.cost.total_steps, **{f"isp_{k}": v for k, v in res.cost.as_dict().items()}}


# --------------------------------------------------------------------------------------- runner
def _key(task: str, method: str, sparsity: float, seed: int) -> tuple[str, str, float, int]:
    return (task, method, round(float(sparsity), 6), int(seed))


def run_benchmark(
    model: torch.nn.Module,
    targets: Targets,
    bundles: dict[str, TaskBundle],
    methods: Sequence[str],
    sparsities: Sequence[float],
    seeds: Sequence[int],
    results: Path,
    budget: Budget,
    *,
    stop_after: int | None = None,
) -> list[dict[str, Any]]:
    """Run every missing (task, method, sparsity, seed) cell, plus the dense reference per task and
    seed, appending rows to ``results`` (JSONL). Returns all rows (old and new). ``stop_after``
    stops after that many new cells (used to simulate an interrupted run)."""
    if not sparsities:
        raise ValueError("the sparsity grid is empty; give at least one sparsity in [0, 1)")
    for s in sparsities:
        check_sparsity(s)
    if not methods:
        raise ValueError("no methods given")
    for m in methods:
        METHODS.get(m)
    if not bundles:
        raise ValueError("no tasks available to run")
    results = Path(results)
    rows = read_jsonl(results) if results.exists() else []
    check_rows(rows)
    done = {_key(r["task"], r["method"], r["sparsity"], r["seed"]) for r in rows}
    cells = []
    for task in bundles:
        for seed in seeds:
            cells.append((task, "dense", 0.0, seed))
            cells += [(task, m, float(s), seed) for m in methods if m != "dense" for s in sparsities]
    todo = [c for c in cells if _key(*c) not in done]
    log.info("SMC-Bench: %d cells, %d already done, %d to run", len(cells), len(cells) - len(todo), len(todo))
    if rows and todo:
        log.warning(
            "resuming %s: %d new cell(s) not in the results file: %s%s",
            results,
            len(todo),
            ", ".join(f"{t}/{m}/{sp:g}/seed {sd}" for t, m, sp, sd in todo[:8]),
            " ..." if len(todo) > 8 else "",
        )
    models, target_sets = _task_models(model, targets, bundles)
    states = {t: {k: v.detach().clone() for k, v in m.state_dict().items()} for t, m in models.items()}
    writer = JsonlWriter(results)
    try:
        for i, (task, method, s, seed) in enumerate(progress(todo, desc="SMC-Bench cells")):
            if stop_after is not None and i >= stop_after:
                break
            net, tg = models[task], target_sets[task]
            t0 = time.perf_counter()
            rewind(net, states[task])
            seed_everything(seed)
            t1 = time.perf_counter()
            info = METHODS.get(method)(net, tg, s, bundles[task], budget, seed)
            t2 = time.perf_counter()
            acc = bundles[task].evaluate(net)
            t3 = time.perf_counter()
            actual = 1.0 - sum(int(p.ne(0).sum()) for p in tg.parameters(net).values()) / tg.n_weights(net)
            row = {
                "task": task,
                "method": method,
                "sparsity": s,
                "seed": seed,
                "accuracy": acc,
                "actual_sparsity": actual,
                **info,
                "method_seconds": t2 - t1,
                "eval_seconds": t3 - t2,
            }
            row["overhead_seconds"] = (time.perf_counter() - t0) - (t2 - t1) - (t3 - t2)
            writer.append(row)
            rows.append(row)
            log.info("%s / %s / s=%.3f / seed %d: accuracy %.3f", task, method, s, seed, acc)
    finally:
        for task, net in models.items():
            rewind(net, states[task])
    return rows


def _task_models(model: torch.nn.Module, targets: Targets, bundles: dict[str, Any]
                 ) -> tuple[dict[str, torch.nn.Module], dict[str, Targets]]:  # fmt: skip
    """The model (and targets) each task runs on: its own model when the bundle brings one."""
    from llm_sparsity.targets import select_targets

    models, target_sets = {}, {}
    for task, bundle in bundles.items():
        own = getattr(bundle, "model", None)
        models[task] = own if own is not None else model
        if own is None:
            target_sets[task] = targets
        else:
            try:
                target_sets[task] = select_targets(own, "essential")
            except ValueError:  # e.g. T5 blocks: every 2-D weight but embeddings, norms and the head
                target_sets[task] = select_targets(own, "all_linear")
    return models, target_sets


def first_failing_sparsity(
    rows: Sequence[dict[str, Any]], tolerance: float = 0.01
) -> dict[str, dict[str, Any]]:
    """Per task and method: the lowest sparsity whose mean accuracy (over seeds) falls more than
    ``tolerance`` below the dense mean of that task; None if it never fails on the grid."""
    dense: dict[str, list[float]] = defaultdict(list)
    acc: dict[tuple[str, str, float], list[float]] = defaultdict(list)
    for r in rows:
        if r["method"] == "dense":
            dense[r["task"]].append(float(r["accuracy"]))
        else:
            acc[(r["task"], r["method"], float(r["sparsity"]))].append(float(r["accuracy"]))
    out: dict[str, dict[str, Any]] = defaultdict(dict)
    for task, method in sorted({(t, m) for t, m, _ in acc}):
        if task not in dense:
            out[task][method] = None
            continue
        ref = float(np.mean(dense[task]))
        failing = [
            s for (t, m, s), v in acc.items() if t == task and m == method and np.mean(v) < ref - tolerance
        ]
        out[task][method] = min(failing) if failing else None
    return dict(out)


ROW_KEYS = ("task", "method", "sparsity", "seed", "accuracy", "method_seconds", "overhead_seconds")


def check_rows(rows: Sequence[dict[str, Any]]) -> None:
    """Every result row must hold :data:`ROW_KEYS` with numbers where numbers belong; the error
    names the row (1-based) and the key (a results file from another version fails here)."""
    for i, row in enumerate(rows, 1):
        if not isinstance(row, dict):
            raise UserError(f"results row {i} is not an object")
        missing = [k for k in ROW_KEYS if k not in row]
        if missing:
            raise UserError(
                f"results row {i} lacks key {missing[0]!r} (has {', '.join(map(str, row))}); "
                "is it a results file from another version of llm-sparsity?"
            )
        for key in ("sparsity", "accuracy", "method_seconds", "overhead_seconds"):
            try:
                float(row[key])
            except (TypeError, ValueError):
                raise UserError(f"results row {i}: {key!r} is not a number ({row[key]!r})") from None


def summarize(
    rows: Sequence[dict[str, Any]], out: Path | None = None, tolerance: float = 0.01
) -> dict[str, Any]:
    """Mean/std accuracy per (task, method, sparsity), first failing sparsities, and one plot per task."""
    check_rows(rows)
    groups: dict[tuple[str, str, float], list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[(r["task"], r["method"], float(r["sparsity"]))].append(r)
    table = []
    for (task, method, s), rs in sorted(groups.items()):
        accs = [float(r["accuracy"]) for r in rs]
        table.append(
            {
                "task": task,
                "method": method,
                "sparsity": s,
                "accuracy": float(np.mean(accs)),
                "std": float(np.std(accs)),
                "n_seeds": len(rs),
                "train_steps": float(np.mean([r.get("train_steps", 0) for r in rs])),
                "method_seconds": float(np.mean([r["method_seconds"] for r in rs])),
                "overhead_seconds": float(np.mean([r["overhead_seconds"] for r in rs])),
            }
        )
    summary = {
        "table": table,
        "first_failing_sparsity": first_failing_sparsity(rows, tolerance),
        "tolerance": tolerance,
        "pngs": [],
    }
    if out is not None:
        for task in sorted({t["task"] for t in table}):
            dense_rows = [t for t in table if t["task"] == task and t["method"] == "dense"]
            curves = {}
            for method in sorted(
                {t["method"] for t in table if t["task"] == task and t["method"] != "dense"}
            ):
                pts = sorted(
                    (t for t in table if t["task"] == task and t["method"] == method),
                    key=lambda t: t["sparsity"],
                )
                curves[method] = (
                    [p["sparsity"] for p in pts],
                    [p["accuracy"] for p in pts],
                    [p["std"] for p in pts],
                )
            png = plot_curves(
                Path(out) / f"smc_{task}.png",
                curves,
                "sparsity",
                "accuracy",
                f"SMC-Bench slice: {task} (dotted: dense)",
                hline=dense_rows[0]["accuracy"] if dense_rows else None,
            )
            summary["pngs"].append(png.name)
    return summary


def budget_dict(budget: Budget) -> dict[str, Any]:
    return asdict(budget)
