"""Retrieval tasks built from real math word problems, with difficulty axes.

Main task (zero-shot, used for the curves): :class:`BodyRetrievalTask` - given a problem's
question sentence ("How many apples does she have left?"), find the problem's body (the story
with the numbers) among N candidate bodies, by cosine similarity of sentence embeddings. Its
difficulty axes: ``options`` (N), ``distractors`` (share of lexically similar bodies among the
distractors) and ``context`` (only the first k words of the question are given).

Second task (needs a trained head or fine-tuning): :class:`RetrievalTask`, equation retrieval.

Each problem's question (numbers replaced by ``number0``, ``number1``...) must be matched to its
equation template (``number0 - number1``) among N candidates. Difficulty axes (Junk DNA study):

- ``options``: number of candidates N (random distractor equations);
- ``distractors``: share of near-miss distractors (the gold equation with one operator changed or
  two operands swapped) among N = 4 candidates;
- ``train_data``: fraction of the training problems the task head is fitted on;
- ``complexity``: number of operators in the gold equation (evaluated on those problems only).
"""

from __future__ import annotations

import csv
import json
import random
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llm_sparsity.userdata import require_columns
from research_systems_core.data import require_path
from research_systems_core.validation import check_choice, check_int, check_range

__all__ = [
    "ARITHMETIC_SOURCES",
    "BODY_LEVELS",
    "DEFAULT_LEVELS",
    "BodyLevel",
    "BodyRetrievalTask",
    "Episode",
    "Level",
    "MCItem",
    "Passage",
    "Problem",
    "RetrievalTask",
    "infix_to_prefix",
    "load_arithmetic",
    "load_question_bodies",
    "near_miss_variants",
    "render",
]

OPS = ("+", "-", "*", "/")
ARITHMETIC_SOURCES = ("mawps-asdiv-a_svamp", "mawps", "svamp")
HINT = (
    "The arithmetic word problems (SVAMP, MAWPS, MAWPS+ASDiv-A) come from VITA-Group/SMC-Bench "
    "(Arithmetic_Reasoning/); put them under <data-dir>/arithmetic/"
)


@dataclass(frozen=True)
class Problem:
    question: str
    prefix: tuple[str, ...]  # equation template in prefix notation over number0.. placeholders
    split: str

    @property
    def template(self) -> str:
        return render(self.prefix)

    @property
    def n_ops(self) -> int:
        return sum(t in OPS for t in self.prefix)


def render(prefix: Sequence[str]) -> str:
    """Prefix tokens -> infix text with parentheses around inner operations."""

    def rec(i: int, top: bool) -> tuple[str, int]:
        tok = prefix[i]
        if tok in OPS:
            a, i = rec(i + 1, False)
            b, i = rec(i, False)
            text = f"{a} {tok} {b}"
            return (text if top else f"( {text} )"), i
        return tok, i + 1

    text, end = rec(0, True)
    if end != len(prefix):
        raise ValueError(f"malformed prefix equation {' '.join(prefix)!r}")
    return text


def infix_to_prefix(tokens: Sequence[str]) -> tuple[str, ...]:
    """Parse a space-separated infix equation (+ - * / and parentheses) into prefix tokens."""
    pos = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def atom() -> list[str]:
        nonlocal pos
        tok = peek()
        if tok == "(":
            pos += 1
            out = expr()
            if peek() != ")":
                raise ValueError(f"unbalanced parentheses in {' '.join(tokens)!r}")
            pos += 1
            return out
        if tok is None or tok in OPS or tok == ")":
            raise ValueError(f"unexpected {tok!r} in {' '.join(tokens)!r}")
        pos += 1
        return [tok]

    def term() -> list[str]:
        nonlocal pos
        left = atom()
        while peek() in ("*", "/"):
            op = tokens[pos]
            pos += 1
            left = [op, *left, *atom()]
        return left

    def expr() -> list[str]:
        nonlocal pos
        left = term()
        while peek() in ("+", "-"):
            op = tokens[pos]
            pos += 1
            left = [op, *left, *term()]
        return left

    out = expr()
    if pos != len(tokens):
        raise ValueError(f"trailing tokens in {' '.join(tokens)!r}")
    return tuple(out)


def _normalise_number(tok: str) -> str:
    try:
        return f"{float(tok):g}"
    except ValueError:
        return tok


def _read_csv(path: Path, split: str) -> list[Problem]:
    problems = []
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    require_columns(rows, ["Question", "Equation"], path)
    for row in rows:
        prefix = tuple(_normalise_number(t) for t in row["Equation"].split())
        problems.append(Problem(" ".join(row["Question"].split()), prefix, split))
    return problems


_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def _read_svamp(path: Path) -> list[Problem]:
    """SVAMP.json: replace numbers by placeholders in order of appearance, map them into the equation."""
    records = json.loads(path.read_text(encoding="utf-8"))
    problems = []
    for rec in records:
        text = f"{rec['Body'].strip()} {rec['Question'].strip()}"
        values: dict[str, str] = {}

        def sub(match: re.Match[str], values: dict[str, str] = values) -> str:
            key = f"{float(match.group()):g}"
            values.setdefault(key, f"number{len(values)}")
            return values[key]

        question = _NUMBER.sub(sub, text)
        tokens = rec["Equation"].replace("(", " ( ").replace(")", " ) ").split()
        prefix = tuple(
            values.get(_normalise_number(t), _normalise_number(t)) for t in infix_to_prefix(tokens)
        )
        problems.append(Problem(" ".join(question.split()), prefix, "all"))
    return problems


def load_arithmetic(data_dir: str | Path, source: str = "mawps-asdiv-a_svamp") -> list[Problem]:
    """Word problems from ``<data_dir>/arithmetic``: ``mawps-asdiv-a_svamp`` (train: MAWPS+ASDiv-A,
    dev: SVAMP), ``mawps`` (fold 0 train/dev) or ``svamp`` (1000 problems, split 'all')."""
    check_choice("arithmetic source", source, ARITHMETIC_SOURCES)
    root = Path(data_dir)
    if source == "svamp":
        return _read_svamp(require_path(root, "arithmetic/SVAMP.json", HINT))
    problems = []
    for split in ("train", "dev"):
        problems += _read_csv(require_path(root, f"arithmetic/{source}/{split}.csv", HINT), split)
    return problems


def near_miss_variants(prefix: Sequence[str]) -> list[tuple[str, ...]]:
    """Equations one edit away: one operator replaced, or the two operands of one operator swapped."""
    prefix = tuple(prefix)
    out: list[tuple[str, ...]] = []

    def span(i: int) -> int:  # end index of the subtree starting at i
        need = 1
        while need:
            need += 2 if prefix[i] in OPS else 0
            need -= 1
            i += 1
        return i

    for i, tok in enumerate(prefix):
        if tok not in OPS:
            continue
        for op in OPS:
            if op != tok:
                out.append((*prefix[:i], op, *prefix[i + 1 :]))
        a_end = span(i + 1)
        b_end = span(a_end)
        swapped = (*prefix[:i], tok, *prefix[a_end:b_end], *prefix[i + 1 : a_end], *prefix[b_end:])
        if swapped != prefix:
            out.append(swapped)
    seen: set[tuple[str, ...]] = set()
    unique = []
    for v in out:
        if v != prefix and render(v) != render(prefix) and v not in seen:
            seen.add(v)
            unique.append(v)
    return unique


def _train_dev_split(
    items: Sequence[Any], n_train: int | None, n_eval: int | None, seed: int, minimum: int
) -> tuple[list[Any], list[Any]]:
    """The items' own train/dev split (or a seeded 80/20 split of them all), subsampled with ``seed``."""
    rng = random.Random(seed)
    train = [p for p in items if p.split == "train"]
    dev = [p for p in items if p.split == "dev"]
    if not train or not dev:
        pool = list(items)
        rng.shuffle(pool)
        cut = int(0.8 * len(pool))
        train, dev = pool[:cut], pool[cut:]
    if n_train is not None and n_train < len(train):
        train = rng.sample(train, check_int("n_train", n_train, minimum=minimum))
    if n_eval is not None and n_eval < len(dev):
        dev = rng.sample(dev, check_int("n_eval", n_eval, minimum=minimum))
    return train, dev


@dataclass(frozen=True)
class Level:
    """One difficulty level: candidates per question, share of near-miss distractors, fraction of
    the training data for the head, and (optionally) the operator count of evaluated problems."""

    axis: str
    value: float
    n_candidates: int = 4
    near_miss: float = 0.0
    train_fraction: float = 1.0
    n_ops: int | None = None

    @property
    def name(self) -> str:
        return f"{self.axis}={self.value:g}"

    @property
    def chance(self) -> float:
        return 1.0 / self.n_candidates


DEFAULT_LEVELS: tuple[Level, ...] = (
    *(Level("options", n, n_candidates=n) for n in (2, 4, 8, 16)),
    *(Level("distractors", f, n_candidates=4, near_miss=f) for f in (0.0, 0.5, 1.0)),
    *(Level("train_data", f, n_candidates=4, train_fraction=f) for f in (1.0, 0.25, 0.05)),
    *(Level("complexity", k, n_candidates=4, n_ops=k) for k in (1, 2)),
)


@dataclass(frozen=True)
class Episode:
    question: int  # index into the task's eval problems
    candidates: tuple[str, ...]
    gold: int  # position of the right equation among the candidates


@dataclass
class RetrievalTask:
    """Train/eval problems and the candidate equation pool."""

    train: list[Problem]
    eval: list[Problem]
    templates: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.train or not self.eval:
            raise ValueError(
                f"a retrieval task needs train and eval problems, got {len(self.train)} and {len(self.eval)}"
            )
        if not self.templates:
            self.templates = sorted({p.template for p in self.train + self.eval})

    @classmethod
    def from_problems(
        cls, problems: Sequence[Problem], n_train: int | None = None, n_eval: int | None = None, seed: int = 0
    ) -> RetrievalTask:
        """Split by the data's own train/dev split (or 80/20 of 'all'), subsampled with ``seed``."""
        train, dev = _train_dev_split(problems, n_train, n_eval, seed, minimum=1)
        return cls(train=train, eval=dev)

    def train_subset(self, fraction: float, seed: int = 0) -> list[int]:
        """Indices of a seeded ``fraction`` of the training problems (at least 2)."""
        check_range("train_fraction", fraction, 0.0, 1.0, low_inclusive=False)
        k = max(2, round(fraction * len(self.train)))
        idx = list(range(len(self.train)))
        if k >= len(idx):
            return idx
        return sorted(random.Random(seed).sample(idx, k))

    def episodes(
        self, level: Level, seed: int = 0, problems: Sequence[Problem] | None = None
    ) -> list[Episode]:
        """Multiple-choice episodes of ``level`` (deterministic given ``seed``); the gold position is random."""
        check_int("n_candidates", level.n_candidates, minimum=2)
        check_range("near_miss", level.near_miss, 0.0, 1.0)
        problems = self.eval if problems is None else problems
        if level.n_candidates > len(self.templates):
            raise ValueError(
                f"level {level.name} needs {level.n_candidates} candidates but the task has only "
                f"{len(self.templates)} distinct equations"
            )
        rng = random.Random(seed * 1_000_003 + level.n_candidates * 101 + int(level.near_miss * 100))
        out = []
        for qi, prob in enumerate(problems):
            if level.n_ops is not None and not (
                prob.n_ops == level.n_ops or (level.n_ops >= 2 and prob.n_ops >= level.n_ops)
            ):
                continue
            gold = prob.template
            n_dis = level.n_candidates - 1
            n_near = round(level.near_miss * n_dis)
            near = [render(v) for v in near_miss_variants(prob.prefix)]
            rng.shuffle(near)
            distractors = near[:n_near]
            taken = {gold, *distractors}
            while len(distractors) < n_dis:
                cand = self.templates[rng.randrange(len(self.templates))]
                if cand not in taken:
                    distractors.append(cand)
                    taken.add(cand)
            pos = rng.randrange(level.n_candidates)
            cands = [*distractors[:pos], gold, *distractors[pos:]]
            out.append(Episode(qi, tuple(cands), pos))
        return out


# ------------------------------------------------------------------ question -> body retrieval
@dataclass(frozen=True)
class MCItem:
    """One multiple-choice item: a question, its candidate answers and the right one's position."""

    question: str
    candidates: tuple[str, ...]
    gold: int

    def __post_init__(self) -> None:
        if not 0 <= self.gold < len(self.candidates):
            raise ValueError(f"gold index {self.gold} outside the {len(self.candidates)} candidates")


@dataclass(frozen=True)
class Passage:
    question: str
    body: str
    split: str


def _clean(text: str) -> str:
    return " ".join(str(text).split())


def load_question_bodies(data_dir: str | Path, source: str = "mawps-asdiv-a_svamp") -> list[Passage]:
    """(question sentence, body) pairs; one question per distinct body (the first one)."""
    check_choice("arithmetic source", source, ARITHMETIC_SOURCES)
    root = Path(data_dir)
    pairs: list[Passage] = []
    if source == "svamp":
        path = require_path(root, "arithmetic/SVAMP.json", HINT)
        records = json.loads(path.read_text(encoding="utf-8"))
        require_columns(records, ["Question", "Body"], path)
        pairs = [Passage(_clean(r["Question"]), _clean(r["Body"]), "all") for r in records]
    else:
        qcol = "Ques" if source == "mawps-asdiv-a_svamp" else "Ques_Statement"
        for split in ("train", "dev"):
            path = require_path(root, f"arithmetic/{source}/{split}.csv", HINT)
            with path.open(newline="", encoding="utf-8") as fh:
                rows = list(csv.DictReader(fh))
            require_columns(rows, [qcol, "Body"], path)
            pairs.extend(Passage(_clean(row[qcol]), _clean(row["Body"]), split) for row in rows)
    seen: set[str] = set()
    out = []
    for p in pairs:
        if p.question and p.body and p.body.lower() not in seen:
            seen.add(p.body.lower())
            out.append(p)
    return out


_WORD = re.compile(r"[a-z]{3,}")


def _content_words(text: str) -> frozenset[str]:
    return frozenset(_WORD.findall(text.lower()))


@dataclass(frozen=True)
class BodyLevel:
    """A difficulty level of question -> body retrieval."""

    axis: str
    value: float
    n_candidates: int = 8
    hard: float = 0.0  # share of distractors taken from the lexically closest bodies
    query_words: int | None = None  # keep only the first k words of the question

    @property
    def name(self) -> str:
        return f"{self.axis}={self.value:g}"

    @property
    def chance(self) -> float:
        return 1.0 / self.n_candidates


BODY_LEVELS: tuple[BodyLevel, ...] = (
    *(BodyLevel("options", n, n_candidates=n) for n in (2, 4, 8, 16, 32)),
    *(BodyLevel("distractors", f, n_candidates=8, hard=f) for f in (0.0, 0.5, 1.0)),
    *(BodyLevel("context", k, n_candidates=8, query_words=k or None) for k in (0, 8, 4)),
)


@dataclass
class BodyRetrievalTask:
    """Question -> body retrieval over train/eval passages; distractors come from the same split."""

    train: list[Passage]
    eval: list[Passage]
    neighbours: int = 40
    max_overlap: float = 0.5  # content-word Jaccard overlap above which a body counts as a copy

    def __post_init__(self) -> None:
        if len(self.train) < 2 or len(self.eval) < 2:
            raise ValueError(
                f"need at least 2 train and 2 eval passages, got {len(self.train)} and {len(self.eval)}"
            )
        self._near: dict[str, list[list[int]]] = {}
        self._copies: dict[str, list[set[int]]] = {}

    @classmethod
    def from_passages(
        cls, passages: Sequence[Passage], n_train: int | None = None, n_eval: int | None = None, seed: int = 0
    ) -> BodyRetrievalTask:
        """Split by the data's own train/dev split (or 80/20 of 'all'), subsampled with ``seed``."""
        train, dev = _train_dev_split(passages, n_train, n_eval, seed, minimum=2)
        return cls(train=train, eval=dev)

    def split(self, name: str) -> list[Passage]:
        check_choice("split", name, ("train", "eval"))
        return self.train if name == "train" else self.eval

    def near(self, split: str) -> list[list[int]]:
        """Per passage, the other passages of the split by decreasing Jaccard overlap of content words
        (only those below ``max_overlap``: near-copies of the gold are excluded)."""
        if split not in self._near:
            words = [_content_words(p.body) for p in self.split(split)]
            out: list[list[int]] = []
            copies: list[set[int]] = []
            for i, wi in enumerate(words):
                sims = [(len(wi & wj) / max(1, len(wi | wj)), -j) for j, wj in enumerate(words) if j != i]
                # near-copies of the same story (SVAMP varies one body many times) would make the
                # item ambiguous rather than hard: they are never used as distractors
                copies.append({-j for o, j in sims if o >= self.max_overlap})
                sims = [x for x in sims if x[0] < self.max_overlap]
                sims.sort(reverse=True)
                out.append([-j for _, j in sims[: self.neighbours]])
            self._near[split] = out
            self._copies[split] = copies
        return self._near[split]

    def items(self, level: BodyLevel, seed: int = 0, split: str = "eval") -> list[MCItem]:
        """Multiple-choice items at ``level``: deterministic given ``seed``; gold position random."""
        passages = self.split(split)
        check_int("n_candidates", level.n_candidates, minimum=2)
        check_range("hard", level.hard, 0.0, 1.0)
        if level.n_candidates > len(passages):
            raise ValueError(
                f"level {level.name} needs {level.n_candidates} candidates but the {split} split has "
                f"{len(passages)} passages"
            )
        rng = random.Random(seed * 1_000_003 + level.n_candidates * 101 + int(level.hard * 100))
        near = self.near(split)
        copies = self._copies[split]
        out = []
        for i, p in enumerate(passages):
            n_dis = level.n_candidates - 1
            n_hard = round(level.hard * n_dis)
            chosen = near[i][:n_hard] if n_hard else []
            taken = {i, *chosen, *copies[i]}
            if len(passages) - len(taken) < n_dis - len(chosen):
                taken = {i, *chosen}  # tiny pools: allow near-copies rather than fail
            while len(chosen) < n_dis:
                j = rng.randrange(len(passages))
                if j not in taken:
                    chosen.append(j)
                    taken.add(j)
            rng.shuffle(chosen)
            pos = rng.randrange(level.n_candidates)
            order = [*chosen[:pos], i, *chosen[pos:]]
            query = (
                p.question if level.query_words is None else " ".join(p.question.split()[: level.query_words])
            )
            out.append(MCItem(query, tuple(passages[j].body for j in order), pos))
        return out
