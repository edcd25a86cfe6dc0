"""The CPU reproduction on a task that needs the encoder, with a trained head (issue 16).

SVAMP operation type (:mod:`head_task`) with MiniLM and a trained head: by default (``probe``)
the pruned encoder is frozen and a trained attention head reads its last layers' token states
(one forward pass per pruned model: whole curves fit this CPU); ``protocol="finetune"`` is the
Essential Sparsity protocol (prune one-shot, fine-tune encoder + linear head with the mask kept,
evaluate), for a GPU. Per seed (a seeded stratified train/test split):

- Essential sparsity: magnitude vs random curves at the full training data;
- Junk DNA, axis = amount of fine-tuning data: the training fraction (fewer rows = harder), for
  the dense model and magnitude pruning at ``junk_sparsities``, the same number of steps;
- beside every point the no-model floors trained on the same rows (chance = majority class,
  TF-IDF word overlap, mean input embeddings + the same head). Drops are expressed relative to
  dense (normalised to chance) and to the best floor.

Verdict rules, fixed before any run (constants below):

- testable: the dense fine-tuned model beats the best floor by >= ``MIN_ENCODER_GAIN`` at full data;
- Essential sparsity reproduced: the magnitude curve stays within ``delta`` of dense up to
  >= ``MIN_ESSENTIAL`` sparsity, drops by more than ``delta`` somewhere on the grid, and beats
  random pruning by >= ``MIN_MAG_GAP`` on average at the shared sparsities >= 0.5;
- Junk DNA (data axis) reproduced: the mean normalised drop (to chance) of magnitude pruning
  grows as the training data shrinks, Spearman rho >= 0.8 and hardest - easiest >= 0.02.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from llm_sparsity.curves import essential_sparsity
from llm_sparsity.head_task import (
    ClassifierConfig,
    HeadConfig,
    LabelledTexts,
    TokenFeatures,
    accuracy,
    finetune_classifier,
    head_accuracy,
    new_head,
    no_model_floors,
    split_indices,
    subsample,
    token_states,
    train_head,
)
from llm_sparsity.junk_dna import _spearman as spearman
from llm_sparsity.pruning import check_sparsity, prune, rewind
from llm_sparsity.targets import Targets
from research_systems_core.logs import progress
from research_systems_core.results import plot_curves
from research_systems_core.validation import check_choice, check_int

__all__ = ["HeadReproConfig", "head_cells", "run_head_reproduction", "summarise_head_rows"]

log = logging.getLogger(__name__)
MIN_ENCODER_GAIN = 0.03
MIN_ESSENTIAL = 0.3
MIN_MAG_GAP = 0.03


@dataclass
class HeadReproConfig:
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    sparsities: list[float] = field(default_factory=lambda: [0.3, 0.5, 0.6, 0.7, 0.8, 0.9])
    random_sparsities: list[float] = field(default_factory=lambda: [0.5, 0.8])
    fractions: list[float] = field(default_factory=lambda: [0.1, 0.25, 1.0])
    junk_sparsities: list[float] = field(default_factory=lambda: [0.5, 0.7])
    test_fraction: float = 0.3
    delta: float = 0.02
    protocol: str = "probe"
    layers: int = 3
    max_length: int = 64
    head: HeadConfig = field(default_factory=HeadConfig)
    classifier: ClassifierConfig = field(default_factory=ClassifierConfig)

    def __post_init__(self) -> None:
        check_choice("protocol", self.protocol, ("probe", "finetune"))
        check_int("layers", self.layers, minimum=1)
        for s in [*self.sparsities, *self.random_sparsities, *self.junk_sparsities]:
            check_sparsity(s)
        if len(set(self.sparsities) - {0.0}) < 2:
            raise ValueError(
                f"sparsities needs at least 2 non-zero points (a curve of 3 with dense), got {self.sparsities}"
            )
        if not self.seeds or not self.fractions or 1.0 not in self.fractions:
            raise ValueError("the head reproduction needs seeds and training fractions that include 1.0")

    @classmethod
    def full(cls) -> HeadReproConfig:
        """For a GPU: the fine-tuning protocol, five seeds, a finer grid and more data fractions."""
        grid = [round(0.1 * i, 1) for i in range(1, 10)]
        return cls(seeds=[0, 1, 2, 3, 4], sparsities=grid, random_sparsities=grid, fractions=[0.1, 0.25, 0.5, 1.0],
                   junk_sparsities=[0.5, 0.7], protocol="finetune",
                   classifier=ClassifierConfig(steps=300, batch_size=32, lr=5e-5, max_length=128))  # fmt: skip

    @classmethod
    def quick(cls) -> HeadReproConfig:
        return cls(seeds=[0], sparsities=[0.5, 0.8], random_sparsities=[0.8], fractions=[0.2, 1.0],
                   junk_sparsities=[0.5])  # fmt: skip


def head_cells(cfg: HeadReproConfig) -> list[tuple[str, float, float]]:
    """(method, sparsity, training fraction) of one seed: dense at every fraction, the curves at
    full data, magnitude at the Junk DNA sparsities for the smaller fractions."""
    cells = [("dense", 0.0, f) for f in cfg.fractions]
    cells += [("magnitude", s, 1.0) for s in cfg.sparsities]
    cells += [("random", s, 1.0) for s in cfg.random_sparsities]
    cells += [("magnitude", s, f) for s in cfg.junk_sparsities for f in cfg.fractions if f < 1.0]
    seen: set[tuple[str, float, float]] = set()
    return [c for c in cells if not (c in seen or seen.add(c))]


def _finetune_cell(encoder: torch.nn.Module, targets: Targets, tokenizer: Any, data: LabelledTexts,
                   split: tuple[np.ndarray, np.ndarray], cell: tuple[str, float, float], seed: int,
                   cfg: HeadReproConfig) -> dict[str, Any]:  # fmt: skip
    """The fine-tuning protocol: prune (unless dense), fine-tune encoder + a fresh linear head, evaluate."""
    method, sparsity, fraction = cell
    train, test = split
    rows = subsample(train, data.labels, fraction, seed)
    masks = None
    if method != "dense":
        masks = prune(encoder, targets, sparsity, method, generator=torch.Generator().manual_seed(seed))
    head = new_head(encoder.config.hidden_size, len(data.classes), seed)
    stats = finetune_classifier(encoder, head, tokenizer, data, rows, masks, cfg.classifier, seed)
    return {"accuracy": accuracy(encoder, head, tokenizer, data, test, cfg.classifier.max_length),
            "n_train": len(rows), "actual_sparsity": masks.sparsity() if masks is not None else 0.0,
            **stats}  # fmt: skip


def _probe_features(encoder: torch.nn.Module, targets: Targets, tokenizer: Any, data: LabelledTexts,
                    key: tuple[str, float, int], cfg: HeadReproConfig) -> tuple[TokenFeatures, float]:  # fmt: skip
    """Prune the (restored) encoder per ``key`` = (method, sparsity, mask seed) and read its token states."""
    method, sparsity, mask_seed = key
    actual = 0.0
    if method != "dense":
        masks = prune(encoder, targets, sparsity, method, generator=torch.Generator().manual_seed(mask_seed))
        actual = masks.sparsity()
        del masks
        if abs(actual - sparsity) > 1e-3:  # invariant: the exact-count pruner hit the asked sparsity
            raise RuntimeError(f"{method} pruning to {sparsity} left sparsity {actual:.4f}")
    return token_states(encoder, tokenizer, data.texts, cfg.layers, cfg.max_length), actual


def _model_groups(cfg: HeadReproConfig) -> dict[tuple[str, float, int], list[tuple[int, float]]]:
    """Cells grouped by the pruned model they need: (method, sparsity, mask seed) -> [(seed, fraction)].
    Magnitude masks do not depend on the seed, so one forward pass serves every seed."""
    groups: dict[tuple[str, float, int], list[tuple[int, float]]] = defaultdict(list)
    for seed in cfg.seeds:
        for method, sparsity, fraction in head_cells(cfg):
            groups[(method, sparsity, seed if method == "random" else 0)].append((seed, fraction))
    return groups


def run_head_rows(encoder: torch.nn.Module, tokenizer: Any, targets: Targets, data: LabelledTexts,
                  cfg: HeadReproConfig, on_row: Callable[[dict[str, Any]], None] | None = None
                  ) -> list[dict[str, Any]]:  # fmt: skip
    """Every cell of every seed (pre-trained weights restored before each pruning), floors in each row."""
    pretrained = {k: v.detach().clone() for k, v in encoder.state_dict().items()}
    splits = {seed: split_indices(data.labels, cfg.test_fraction, seed) for seed in cfg.seeds}
    embeddings = token_states(encoder, tokenizer, data.texts, 0, cfg.max_length)
    floors = {(seed, f): no_model_floors(data, subsample(splits[seed][0], data.labels, f, seed), splits[seed][1],
                                         embeddings, cfg.head, seed)
              for seed in cfg.seeds for f in cfg.fractions}  # fmt: skip
    del embeddings
    rows: list[dict[str, Any]] = []

    def emit(method: str, sparsity: float, fraction: float, seed: int, result: dict[str, Any]) -> None:
        row = {"method": method, "sparsity": sparsity, "fraction": fraction, "seed": seed,
               "n_test": len(splits[seed][1]), **result, "floors": floors[(seed, fraction)]}  # fmt: skip
        log.info("%s s=%.2f fraction=%.2f seed %d: accuracy %.3f (best floor %.3f)", method, sparsity, fraction,
                 seed, row["accuracy"], row["floors"]["best_floor"])  # fmt: skip
        rows.append(row)
        if on_row is not None:
            on_row(row)

    try:
        if cfg.protocol == "finetune":
            for seed, cell in progress(
                [(sd, c) for sd in cfg.seeds for c in head_cells(cfg)], desc="fine-tuned cells"
            ):
                rewind(encoder, pretrained)
                torch.manual_seed(seed)
                emit(
                    *cell,
                    seed,
                    _finetune_cell(encoder, targets, tokenizer, data, splits[seed], cell, seed, cfg),
                )
            return rows
        for key, cells in progress(list(_model_groups(cfg).items()), desc="pruned models"):
            rewind(encoder, pretrained)
            features, actual = _probe_features(encoder, targets, tokenizer, data, key, cfg)
            for seed, fraction in cells:
                train = subsample(splits[seed][0], data.labels, fraction, seed)
                head = train_head(features, data.labels, train, len(data.classes), cfg.head, seed)
                emit(key[0], key[1], fraction, seed, {"accuracy": head_accuracy(head, features, data.labels,
                     splits[seed][1]), "n_train": len(train), "actual_sparsity": actual})  # fmt: skip
            del features
    finally:
        rewind(encoder, pretrained)
    return rows


# --------------------------------------------------------------------------------------- summaries
def _relative(rows: list[dict[str, Any]]) -> None:
    """Add drop vs dense, normalised to chance and to the best floor (same seed and fraction)."""
    dense = {(r["seed"], r["fraction"]): r["accuracy"] for r in rows if r["method"] == "dense"}
    for r in rows:
        d = dense[(r["seed"], r["fraction"])]
        chance, floor = r["floors"]["chance"], r["floors"]["best_floor"]
        r["dense_accuracy"] = d
        r["drop"] = d - r["accuracy"]
        r["normalised_drop"] = 1 - (r["accuracy"] - chance) / (d - chance) if d > chance else float("nan")
        r["drop_over_floor"] = 1 - (r["accuracy"] - floor) / (d - floor) if d > floor else float("nan")
        r["above_best_floor"] = r["accuracy"] - floor


def _mean(rows: list[dict[str, Any]], key: str) -> float:
    vals = [r[key] for r in rows if r[key] == r[key]]
    return float(np.mean(vals)) if vals else float("nan")


def _curve(rows: list[dict[str, Any]], method: str, grid: Sequence[float]) -> dict[float, float]:
    by: dict[float, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["fraction"] == 1.0 and (r["method"] == method or r["method"] == "dense"):
            by[r["sparsity"]].append(r)
    return {s: _mean(by[s], "accuracy") for s in [0.0, *grid] if by[s]}


def _essential(rows: list[dict[str, Any]], cfg: HeadReproConfig) -> dict[str, Any]:
    mag = _curve(rows, "magnitude", cfg.sparsities)
    rnd = _curve(rows, "random", cfg.random_sparsities)
    es = {m: essential_sparsity(list(c), list(c.values()), delta=cfg.delta).as_dict()
          for m, c in (("magnitude", mag), ("random", rnd)) if len(c) >= 3}  # fmt: skip
    shared = [s for s in rnd if s >= 0.5 and s in mag and s > 0]
    gap = float(np.mean([mag[s] - rnd[s] for s in shared])) if shared else float("nan")
    dense = mag[0.0]
    drops_somewhere = min(mag.values()) < dense - cfg.delta
    reproduced = bool(
        es["magnitude"]["tolerance"] >= MIN_ESSENTIAL and drops_somewhere and gap >= MIN_MAG_GAP
    )
    return {"curves": {"magnitude": mag, "random": rnd}, "essential_sparsity": es,
            "magnitude_minus_random_at_0.5_up": gap, "drops_within_grid": drops_somewhere,
            "reproduced": reproduced}  # fmt: skip


def _junk(rows: list[dict[str, Any]], cfg: HeadReproConfig) -> dict[str, Any]:
    fractions = sorted(cfg.fractions, reverse=True)  # easy (all data) -> hard (least data)
    drops, over_floor = [], []
    for f in fractions:
        sub = [r for r in rows if r["method"] == "magnitude" and r["sparsity"] in cfg.junk_sparsities
               and r["fraction"] == f]  # fmt: skip
        drops.append(_mean(sub, "normalised_drop"))
        over_floor.append(_mean(sub, "drop_over_floor"))
    finite = all(d == d for d in drops)
    rho = spearman(list(range(len(fractions))), drops) if finite else float("nan")
    reproduced = bool(finite and rho >= 0.8 and drops[-1] - drops[0] >= 0.02)
    return {"fractions_easy_to_hard": fractions, "mean_normalised_drop": drops,
            "mean_drop_over_best_floor": over_floor, "spearman_drop_vs_difficulty": rho,
            "hardest_minus_easiest": drops[-1] - drops[0], "reproduced": reproduced}  # fmt: skip


def summarise_head_rows(rows: list[dict[str, Any]], cfg: HeadReproConfig) -> dict[str, Any]:
    """Curves, floors, the pre-set verdict rules applied (see the module docstring)."""
    _relative(rows)
    full_dense = [r for r in rows if r["method"] == "dense" and r["fraction"] == 1.0]
    floors = {k: _mean([{"v": r["floors"][k]} for r in full_dense], "v") for k in full_dense[0]["floors"]}
    gain = _mean(full_dense, "above_best_floor")
    testable = gain >= MIN_ENCODER_GAIN
    ess, junk = _essential(rows, cfg), _junk(rows, cfg)
    if not testable:
        ess["reproduced"] = junk["reproduced"] = None
    return {"dense_accuracy": _mean(full_dense, "accuracy"), "floors": floors, "dense_minus_best_floor": gain,
            "testable": testable, "essential": ess, "junk_dna_train_fraction": junk}  # fmt: skip


def _verdict_word(value: bool | None) -> str:
    return "not testable" if value is None else ("yes" if value else "no")


def _protocol_words(cfg: HeadReproConfig) -> str:
    if cfg.protocol == "finetune":
        return f"MiniLM + linear head fine-tuned {cfg.classifier.steps} steps after pruning"
    return f"frozen pruned MiniLM, attention head trained on its last {cfg.layers} layers"


def head_verdict_reason(summary: dict[str, Any], cfg: HeadReproConfig) -> str:
    ess, junk, fl = summary["essential"], summary["junk_dna_train_fraction"], summary["floors"]
    es = ess["essential_sparsity"]["magnitude"]
    return (
        f"Trained head on SVAMP operation type ({_protocol_words(cfg)}; "
        f"dense {summary['dense_accuracy']:.3f}, floors: chance {fl['chance']:.3f}, word overlap "
        f"{fl['word_overlap']:.3f}, mean input embeddings {fl.get('mean_input_embeddings', float('nan')):.3f}; "
        f"dense - best floor {summary['dense_minus_best_floor']:+.3f}). Essential sparsity: tolerance "
        f"({cfg.delta:g}) {es['tolerance']:.2f}, knee {es['knee']:.2f}, magnitude - random "
        f"{ess['magnitude_minus_random_at_0.5_up']:+.3f} -> {_verdict_word(ess['reproduced'])}. Junk DNA "
        f"(training fraction {junk['fractions_easy_to_hard']}): normalised drop "
        f"{[round(d, 3) for d in junk['mean_normalised_drop']]}, rho {junk['spearman_drop_vs_difficulty']:.2f} "
        f"-> {_verdict_word(junk['reproduced'])}."
    )


def plot_head(
    rows: list[dict[str, Any]], summary: dict[str, Any], cfg: HeadReproConfig, out: Path
) -> list[str]:
    """The essential sparsity curves with the floors as lines, and the Junk DNA data axis."""
    curves = {m: (list(c), list(c.values())) for m, c in summary["essential"]["curves"].items()}
    fl = summary["floors"]
    for name in ("word_overlap", "mean_input_embeddings", "chance"):
        if name in fl:
            xs = [0.0, max(cfg.sparsities)]
            curves[f"floor: {name.replace('_', ' ')}"] = (xs, [fl[name]] * 2)
    p1 = plot_curves(out / "head_essential_sparsity.png", curves, "sparsity (block Linear weights pruned)",
                     "test accuracy (SVAMP operation type)", "MiniLM + trained head: magnitude vs random, floors")  # fmt: skip
    junk = summary["junk_dna_train_fraction"]
    xs = list(range(len(junk["fractions_easy_to_hard"])))
    p2 = plot_curves(out / "head_junk_dna_fraction.png",
                     {"normalised drop (to chance)": (xs, junk["mean_normalised_drop"]),
                      "drop over best floor": (xs, junk["mean_drop_over_best_floor"])},
                     "training fraction index (0 = all data, easy -> hard)", "drop after magnitude pruning",
                     f"Junk DNA data axis, fractions {junk['fractions_easy_to_hard']}")  # fmt: skip
    return [p1.name, p2.name]


def run_head_reproduction(out: Path, data: LabelledTexts, encoder: torch.nn.Module, tokenizer: Any,
                          targets: Targets, cfg: HeadReproConfig) -> tuple[dict[str, Any], list[str]]:  # fmt: skip
    """Run the cells, write ``head_rows.jsonl``/``head_summary.json`` and plots; (summary, pngs)."""
    from research_systems_core.results import JsonlWriter, write_json

    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "head_rows.jsonl"
    path.unlink(missing_ok=True)
    writer = JsonlWriter(path)
    rows = run_head_rows(encoder, tokenizer, targets, data, cfg, on_row=writer.append)
    summary = summarise_head_rows(rows, cfg)
    summary["verdict_reason"] = head_verdict_reason(summary, cfg)
    summary["config"] = asdict(cfg)
    summary["seconds"] = time.perf_counter() - t0
    summary["table"] = [{k: r[k] for k in ("method", "sparsity", "fraction", "seed", "accuracy", "drop",
                                           "normalised_drop", "drop_over_floor")} | {"best_floor": r["floors"]["best_floor"]}
                        for r in rows]  # fmt: skip
    write_json(out / "head_summary.json", summary)
    return summary, plot_head(rows, summary, cfg, out)
