from __future__ import annotations

import json

import pytest
import torch

from llm_sparsity.finetune import FinetuneConfig, MCItem, RetrievalTrainer, mc_accuracy
from llm_sparsity.isp import ISPConfig, aggregate_masks, instant_soup_pruning, mask_cosine, mask_similarity
from llm_sparsity.models import build_word_tokenizer
from llm_sparsity.smc_bench import (
    METHODS,
    TASKS,
    Budget,
    TaskBundle,
    TaskUnavailable,
    default_sparsities,
    first_failing_sparsity,
    load_task,
    rigl_update,
    run_benchmark,
    summarize,
)
from llm_sparsity.targets import select_targets
from research_systems_core.masks import MaskSet

A = MaskSet({"w": torch.tensor([[1, 1, 0], [0, 1, 0]], dtype=torch.bool)})
B = MaskSet({"w": torch.tensor([[1, 0, 0], [1, 1, 0]], dtype=torch.bool)})
C = MaskSet({"w": torch.tensor([[1, 1, 1], [0, 0, 0]], dtype=torch.bool)})


def test_aggregation_rules_against_hand_computed_masks() -> None:
    ms = [A, B, C]
    assert aggregate_masks(ms, "union").masks["w"].int().tolist() == [[1, 1, 1], [1, 1, 0]]
    assert aggregate_masks(ms, "intersection").masks["w"].int().tolist() == [[1, 0, 0], [0, 0, 0]]
    assert aggregate_masks(ms, "vote").masks["w"].int().tolist() == [[1, 1, 0], [0, 1, 0]]  # majority: 2 of 3
    for rule, k in (("union", 1), ("intersection", 3)):
        assert torch.equal(aggregate_masks(ms, "vote", k=k).masks["w"], aggregate_masks(ms, rule).masks["w"])
    scores = [{"w": torch.tensor([[3.0, 1, 0], [0, 2, 0]])}, {"w": torch.tensor([[1.0, 0, 0], [2, 1, 0]])}]
    # average [[2, .5, 0], [1, 1.5, 0]]; keep the top half (3 of 6)
    avg = aggregate_masks([], "score_average", scores=scores, sparsity=0.5)
    assert avg.masks["w"].int().tolist() == [[1, 0, 0], [1, 1, 0]]
    with pytest.raises(ValueError, match="need at least 1"):
        aggregate_masks([], "union")
    with pytest.raises(ValueError, match="unknown aggregation"):
        aggregate_masks(ms, "mean")
    with pytest.raises(ValueError, match="vote k must be <= 3"):
        aggregate_masks(ms, "vote", k=4)


def test_mask_similarity_by_hand() -> None:
    # A keeps 3, B keeps 3, both keep 2 -> IoU 2/4, cosine 2/3
    assert A.iou(B) == pytest.approx(0.5)
    assert mask_cosine(A, B) == pytest.approx(2 / 3)
    sim = mask_similarity([A, B], reference=A)
    assert sim["pairwise_iou"] == pytest.approx(0.5)
    assert sim["iou_with_reference"] == pytest.approx((1 + 0.5) / 2)


def test_isp_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="n_masks"):
        ISPConfig(n_masks=0)
    with pytest.raises(ValueError, match="target_sparsity"):
        ISPConfig(target_sparsity=1.0)


class CountingTrainer:
    """Records every training call; one SGD step per requested step on a fixed input."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def train_items(self, seed):
        return list(range(10))

    def train(self, model, masks, steps, *, seed=0, lr=None, subset=None, mode="sparse"):
        self.calls.append(steps)
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        handle = masks.attach(model, opt) if masks is not None else None
        ids = torch.randint(0, 100, (2, 5), generator=torch.Generator().manual_seed(seed))
        for _ in range(steps):
            opt.zero_grad()
            model(input_ids=ids).last_hidden_state.pow(2).mean().backward()
            opt.step()
        if handle:
            handle.remove()

        class S:
            pass

        s = S()
        s.steps = steps
        return s


@pytest.mark.parametrize("rule", ["union", "intersection", "vote", "score_average"])
def test_isp_reaches_target_and_cost_adds_up(tiny, rule: str) -> None:
    targets = select_targets(tiny, "essential")
    trainer = CountingTrainer()
    cfg = ISPConfig(
        target_sparsity=0.6,
        rounds=2,
        n_masks=3,
        weak_steps=2,
        main_steps=1,
        final_steps=3,
        aggregation=rule,
        stop_gap=0.0,
    )
    res = instant_soup_pruning(tiny, targets, trainer, cfg)
    assert res.masks.sparsity() == pytest.approx(0.6, abs=1e-4)
    assert res.cost.weak_steps == 2 * 3 * 2 and res.cost.main_steps == 2 and res.cost.final_steps == 3
    assert res.cost.total_steps == sum(trainer.calls)
    for n, p in targets.parameters(tiny).items():
        assert torch.all(p[~res.masks.masks[n]] == 0)
    spars = [h["mask_sparsity"] for h in res.history]
    assert spars == sorted(spars)


# ----------------------------------------------------------------------------- SMC runner
WORDS = ["apple", "river", "stone", "cloud", "green", "music", "table", "light"]


def _items(n: int, seed: int) -> list[MCItem]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        idx = torch.randperm(len(WORDS), generator=g)[:3].tolist()
        q = WORDS[idx[0]]
        gold = int(torch.randint(0, 3, (1,), generator=g))
        cands = [WORDS[i] for i in idx[1:]]
        cands.insert(gold, f"{q} {q}")
        out.append(MCItem(f"the {q}", tuple(cands), gold))
    return out


@pytest.fixture
def bundle():
    tok = build_word_tokenizer([w for w in WORDS] + ["the"], vocab_size=64)
    train, evals = _items(16, 0), _items(12, 1)
    trainer = RetrievalTrainer(train, tok, FinetuneConfig(batch_size=4, lr=1e-3))
    return TaskBundle("toy", trainer, evals, tok)


def _tiny_model():
    from llm_sparsity.models import create_model

    return create_model("tiny_bert", vocab_size=64, seed=0)


def test_runner_resumes_after_kill_with_identical_results(bundle, tmp_path) -> None:
    budget = Budget(
        steps=2,
        imp_rounds=2,
        imp_steps_per_round=1,
        rigl_every=1,
        isp_rounds=1,
        isp_masks=2,
        isp_weak_steps=1,
        isp_main_steps=1,
        snip_batches=1,
        batch_size=4,
    )
    methods = ["omp_before", "random", "imp", "rigl"]
    grid = [0.3, 0.6]
    model = _tiny_model()
    targets = select_targets(model, "essential")
    full = run_benchmark(model, targets, {"toy": bundle}, methods, grid, [0], tmp_path / "a.jsonl", budget)
    assert len(full) == 1 + len(methods) * len(grid)
    model = _tiny_model()
    part = run_benchmark(
        model, targets, {"toy": bundle}, methods, grid, [0], tmp_path / "b.jsonl", budget, stop_after=3
    )
    assert len(part) == 3
    with open(tmp_path / "b.jsonl", "a") as fh:
        fh.write('{"task": "toy", "method": "random", "spar')  # a kill mid-write
    model = _tiny_model()
    resumed = run_benchmark(model, targets, {"toy": bundle}, methods, grid, [0], tmp_path / "b.jsonl", budget)
    assert len(resumed) == len(full)

    def key(r):
        return (r["method"], r["sparsity"])

    a = {key(r): r["accuracy"] for r in full}
    b = {key(r): r["accuracy"] for r in resumed}
    assert a == b
    for r in full:
        assert r["actual_sparsity"] == pytest.approx(r["sparsity"], abs=1e-3)
    lines = (tmp_path / "b.jsonl").read_text().splitlines()
    assert sum(1 for line in lines if line.strip().endswith("}")) == len(full)
    summary = summarize(resumed, tmp_path)
    assert summary["pngs"] == ["smc_toy.png"]


def test_runner_bad_input(bundle, tmp_path) -> None:
    model = _tiny_model()
    targets = select_targets(model, "essential")
    with pytest.raises(ValueError, match="sparsity grid is empty"):
        run_benchmark(model, targets, {"toy": bundle}, ["random"], [], [0], tmp_path / "r.jsonl", Budget())
    with pytest.raises(ValueError, match="unknown SMC method 'lottery'"):
        run_benchmark(
            model, targets, {"toy": bundle}, ["lottery"], [0.5], [0], tmp_path / "r.jsonl", Budget()
        )
    with pytest.raises(ValueError, match="unknown SMC task"):
        load_task("glue", tmp_path, None, Budget())
    with pytest.raises(TaskUnavailable, match="protein"):
        load_task("protein", tmp_path, None, Budget())
    with pytest.raises(TaskUnavailable, match="arithmetic"):
        load_task("svamp", tmp_path, None, Budget())
    assert {"omp_before", "omp_after", "random", "snip", "imp", "gmp", "rigl", "isp", "dense"} <= set(
        METHODS.names()
    )
    assert {"svamp", "mawps", "csqa", "race", "winogrande"} <= set(TASKS.names())


def test_first_failing_sparsity_on_synthetic_rows() -> None:
    rows = [{"task": "t", "method": "dense", "sparsity": 0.0, "accuracy": 0.80, "seed": s} for s in (0, 1)]
    for s, accs in ((0.2, (0.80, 0.795)), (0.36, (0.79, 0.80)), (0.49, (0.70, 0.80)), (0.59, (0.5, 0.5))):
        rows += [
            {"task": "t", "method": "m", "sparsity": s, "accuracy": a, "seed": i} for i, a in enumerate(accs)
        ]
    rows += [{"task": "t", "method": "ok", "sparsity": 0.9, "accuracy": 0.85, "seed": 0}]
    ffs = first_failing_sparsity(rows, tolerance=0.01)
    assert ffs["t"]["m"] == 0.49  # mean 0.75 < 0.79; 0.36 has mean 0.795, within tolerance
    assert ffs["t"]["ok"] is None
    assert first_failing_sparsity(rows, tolerance=0.2)["t"]["m"] == 0.59
    assert default_sparsities(3) == [0.2, 0.36, 0.488]


def test_rigl_update_keeps_count_and_grows_by_gradient() -> None:
    model = torch.nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.5, 0.1, 0.0, 0.0]]))
    targets = select_targets(model, None, patterns=["weight"])
    masks = MaskSet({"weight": torch.tensor([[True, True, False, False]])})
    grads = {"weight": torch.tensor([[0.0, 0.0, 0.2, 0.9]])}
    new = rigl_update(model, targets, masks, grads, 0.5)
    assert new.masks["weight"].tolist() == [[True, False, False, True]]
    assert model.weight.tolist() == [[0.5, 0.0, 0.0, 0.0]]


def test_mc_accuracy_counts_ties_fairly(bundle) -> None:
    model = _tiny_model()
    for p in model.parameters():  # a dead encoder: every candidate ties -> chance accuracy exactly
        torch.nn.init.zeros_(p)
    acc = mc_accuracy(model, bundle.tokenizer, bundle.eval_items)
    assert acc == pytest.approx(1 / 3)
    assert json.dumps(acc)


class StateTrainer(CountingTrainer):
    """Like CountingTrainer, with an optimizer state handed in and out (a step counter tensor)."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[float | None] = []

    def train(self, model, masks, steps, *, seed=0, lr=None, subset=None, optimizer_state=None):
        self.received.append(None if optimizer_state is None else float(optimizer_state["count"]))
        stats = super().train(model, masks, steps, seed=seed, lr=lr, subset=subset)
        before = 0.0 if optimizer_state is None else float(optimizer_state["count"])
        stats.optimizer_state = {"count": torch.tensor(before + steps)}
        return stats


@pytest.mark.parametrize("soup", [False, True])
def test_isp_auxiliaries_inherit_optimizer_state_and_weight_soup(tiny, soup: bool) -> None:
    import copy

    targets = select_targets(tiny, "essential")
    trainer = StateTrainer()
    cfg = ISPConfig(target_sparsity=0.5, rounds=1, n_masks=2, weak_steps=2, main_steps=3, final_steps=0,
                    stop_gap=0.0, weight_soup=soup)  # fmt: skip
    reference = copy.deepcopy(tiny)
    res = instant_soup_pruning(tiny, targets, trainer, cfg)
    # main (no state yet) -> its state after 3 steps goes to both auxiliaries; final step count 0
    assert trainer.received[:3] == [None, 3.0, 3.0]
    if soup:  # main = mean of the two auxiliaries (recomputed with the same seeds), then masked
        main = copy.deepcopy(reference)
        CountingTrainer().train(main, MaskSet.ones(targets.shapes(main)), 3, seed=1)
        auxes = []
        for j in range(2):
            aux = copy.deepcopy(main)
            CountingTrainer().train(aux, MaskSet.ones(targets.shapes(aux)), 2, seed=100 + j + 1)
            auxes.append(dict(aux.named_parameters()))
        name = targets.names[0]
        expected = (auxes[0][name] + auxes[1][name]) / 2 * res.masks.masks[name]
        assert torch.allclose(dict(tiny.named_parameters())[name], expected, atol=1e-6)


def test_isp_with_the_real_trainer_hands_adamw_state_to_auxiliaries(bundle) -> None:
    model = _tiny_model()
    targets = select_targets(model, "essential")
    trainer = bundle.trainer
    first = trainer.train(model, None, 2, seed=0)
    state = first.optimizer_state
    assert state is not None and all(int(s["step"]) == 2 for s in state["state"].values())
    again = trainer.train(model, None, 1, seed=1, lr=1e-4, optimizer_state=state)
    assert all(int(s["step"]) == 3 for s in again.optimizer_state["state"].values())
    assert all(int(s["step"]) == 2 for s in state["state"].values())  # the handed-over state is not mutated
    assert again.optimizer_state["param_groups"][0]["lr"] == 1e-4
    cfg = ISPConfig(target_sparsity=0.5, rounds=1, n_masks=2, weak_steps=1, main_steps=1, final_steps=1,
                    stop_gap=0.0, weight_soup=True)  # fmt: skip
    res = instant_soup_pruning(model, targets, trainer, cfg)
    assert res.masks.sparsity() == pytest.approx(0.5, abs=1e-4)
