"""Language models with their heads: loading, targets, sequential Wanda/SparseGPT, evaluation, saving."""

from __future__ import annotations

import math

import pytest
import torch

from llm_sparsity.evaluation import MCExample, choice_loglikelihoods, mc_accuracy, perplexity
from llm_sparsity.layerwise import (
    HessianAccumulator,
    NormAccumulator,
    magnitude_mask,
    sparsegpt_prune,
    wanda_mask,
)
from llm_sparsity.llm import PruneSpec, prune_llm
from llm_sparsity.models import build_word_tokenizer, load_model, tiny_lm
from llm_sparsity.pruning import rewind
from llm_sparsity.saving import load_pruned, save_pruned
from llm_sparsity.sequential import prune_sequential
from llm_sparsity.targets import find_blocks, select_targets, tied_aliases

WORDS = [
    "the",
    "a",
    "cat",
    "dog",
    "sat",
    "on",
    "mat",
    "ran",
    "far",
    "and",
    "then",
    "slept",
    "ate",
    "fish",
    "big",
    "small",
    "red",
]


@pytest.fixture(scope="module")
def tokenizer():
    tok = build_word_tokenizer(WORDS, 64)
    tok.add_special_tokens({"mask_token": "[MASK]", "eos_token": "[SEP]", "bos_token": "[CLS]"})
    return tok


def _ids(n: int = 4, length: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randint(4, 64, (n, length), generator=torch.Generator().manual_seed(seed))


def _logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


@pytest.mark.parametrize(
    ("family", "method", "nm"),
    [
        ("gpt2", "wanda", None),
        ("opt", "sparsegpt", "2:4"),
        ("llama", "wanda", "2:4"),
        ("phi", "sparsegpt", None),
        ("bert-mlm", "magnitude", None),
        ("bert-cls", "wanda", None),
    ],
)
def test_every_family_round_trips_with_its_head(family, method, nm, tokenizer, tmp_path) -> None:
    model = tiny_lm(family, vocab_size=64)
    targets = select_targets(model, "essential")
    masks = prune_llm(model, targets, PruneSpec(method, 0.5, nm), calibration=_ids(), tokenizer=tokenizer)
    assert masks.n_total - masks.n_active == targets.n_weights(model) // 2  # exact count
    save_pruned(model, masks, tmp_path / "m", tokenizer)
    loaded, loaded_masks, _meta = load_pruned(tmp_path / "m")
    assert type(loaded) is type(model)  # the head class, not AutoModel
    assert torch.equal(_logits(loaded, _ids()), _logits(model, _ids()))
    assert loaded_masks.sparsity() == 0.5
    again, tok = load_model(str(tmp_path / "m"), device="cpu")
    assert torch.equal(_logits(again, _ids()), _logits(model, _ids())) and tok is not None


@pytest.mark.parametrize("family", ["gpt2", "opt", "bert-mlm"])
def test_tied_heads_prune_once_rewind_and_save(family, tokenizer, tmp_path) -> None:
    model = tiny_lm(family, vocab_size=64)
    aliases = tied_aliases(model)
    assert aliases, "the tiny model should tie its output embedding"
    state = {k: v.clone() for k, v in model.state_dict().items()}  # holds the alias key as well
    targets = select_targets(model, "essential", include_head=True)
    head, embedding = next(iter(aliases.items()))
    assert embedding in targets.names and head not in targets.names  # pruned once, as the embedding
    masks = prune_llm(model, targets, PruneSpec("magnitude", 0.6))
    assert masks.n_total - masks.n_active == round(0.6 * masks.n_total)
    rewind(model, state, masks)  # was KeyError: 'lm_head.weight'
    params = dict(model.named_parameters(remove_duplicate=False))
    assert params[head] is params[embedding]
    assert torch.equal(params[embedding].ne(0), masks.masks[embedding] & state[embedding].ne(0))
    save_pruned(model, masks, tmp_path / "t", tokenizer)
    loaded, _, _ = load_pruned(tmp_path / "t")
    assert torch.equal(_logits(loaded, _ids()), _logits(model, _ids()))


def test_wanda_scores_equal_a_hand_computed_layer() -> None:
    weight = torch.tensor([[1.0, -2.0, 3.0, -4.0], [4.0, 3.0, -2.0, 1.0]])
    x = torch.tensor([[1.0, 0.0, 0.0, 1.0], [1.0, 0.5, 0.0, 0.0], [1.0, 0.0, 0.1, 0.0]])
    acc = NormAccumulator(4, torch.device("cpu"))
    acc.add(x[:2])
    acc.add(x[2:])
    norms = acc.norms()
    assert torch.allclose(norms, torch.tensor([math.sqrt(3), 0.5, 0.1, 1.0]))
    # scores row 0: |w| * norm = [1.732, 1.0, 0.3, 4.0] -> prune columns 2 and 1
    # scores row 1: [6.928, 1.5, 0.2, 1.0] -> prune columns 2 and 3
    keep = wanda_mask(weight, norms, 0.5)
    assert keep.tolist() == [[True, False, False, True], [True, True, False, False]]
    # magnitude would keep the two largest |w| per row instead
    assert magnitude_mask(weight, 0.5).tolist() == [[False, False, True, True], [True, True, False, False]]
    assert wanda_mask(weight, norms, None, (2, 4)).tolist() == keep.tolist()


def _block_input_norms(model: torch.nn.Module, block: int, ids: torch.Tensor) -> dict[str, torch.Tensor]:
    """Input-feature norms of every Linear of one block when the *current* model runs."""
    _, blocks = find_blocks(model)
    sums: dict[str, torch.Tensor] = {}
    hooks = []
    for name, mod in blocks[block].named_modules():
        if isinstance(mod, torch.nn.Linear):

            def hook(_m, args, name=name):
                x = args[0].reshape(-1, args[0].shape[-1])
                sums[name] = sums.get(name, 0) + (x * x).sum(0)

            hooks.append(mod.register_forward_pre_hook(hook))
    with torch.no_grad():
        for i in range(ids.shape[0]):
            model(input_ids=ids[i : i + 1])
    for h in hooks:
        h.remove()
    return {k: v.sqrt() for k, v in sums.items()}


def test_sequential_wanda_calibrates_each_block_on_pruned_outputs() -> None:
    model = tiny_lm("llama", vocab_size=64, layers=3)
    dense = {k: v.clone() for k, v in model.state_dict().items()}
    ids = _ids(6, 12)
    dense_norms = _block_input_norms(model, 2, ids)
    targets = select_targets(model, "essential")
    masks = prune_sequential(model, targets, ids, "wanda", 0.5)
    # block 2's inputs come from the pruned blocks 0 and 1; the layers reading the block's normalised
    # input (q, k, v) see the same inputs in the pruned model as during calibration
    pruned_norms = _block_input_norms(model, 2, ids)
    first = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")
    differs_from_one_pass = False
    for short in first:
        norms = pruned_norms[short]
        name = f"model.layers.2.{short}.weight"
        expected = wanda_mask(dense[name], norms, 0.5)
        assert torch.equal(masks.masks[name], expected), name
        differs_from_one_pass |= not torch.equal(expected, wanda_mask(dense[name], dense_norms[short], 0.5))
    assert differs_from_one_pass  # a one-pass (dense-input) Wanda would give other masks


def _correlated_layer(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    d = 128
    mix = torch.randn(d, d, generator=g) * 0.3 + torch.eye(d)
    x = (torch.randn(1024, d, generator=g) @ mix) * torch.exp(torch.randn(d, generator=g))
    return torch.randn(64, d, generator=g), x


@pytest.mark.parametrize("nm", [None, (2, 4)])
def test_reconstruction_error_sparsegpt_below_wanda_below_magnitude(nm) -> None:
    weight, x = _correlated_layer()
    h = HessianAccumulator(x.shape[1], torch.device("cpu"))
    norms = NormAccumulator(x.shape[1], torch.device("cpu"))
    for chunk in x.split(256):
        h.add(chunk)
        norms.add(chunk)
    assert torch.allclose(h.h, x.t() @ x / x.shape[0], rtol=1e-4, atol=1e-3)
    new_w, keep = sparsegpt_prune(weight, h.h, 0.5, nm, blocksize=32)

    def err(w: torch.Tensor) -> float:
        return float(((x @ weight.t() - x @ w.t()) ** 2).mean())

    e_mag = err(weight * magnitude_mask(weight, 0.5, nm))
    e_wanda = err(weight * wanda_mask(weight, norms.norms(), 0.5, nm))
    e_sgpt = err(new_w)
    assert e_sgpt < e_wanda < e_mag
    assert int((~keep).sum()) == weight.numel() // 2 and bool((new_w[~keep] == 0).all())
    if nm:
        assert bool((keep.reshape(64, -1, 4).sum(-1) == 2).all())


def test_sparsegpt_exact_count_at_odd_sparsity() -> None:
    weight, x = _correlated_layer(1)
    _, keep = sparsegpt_prune(weight, x.t() @ x / len(x), 0.37, blocksize=48)
    assert int((~keep).sum()) == round(0.37 * weight.numel())


def _hand_perplexity(model, ids: list[int], seq_len: int) -> float:
    total, count = 0.0, 0
    for w in range(len(ids) // seq_len):
        window = ids[w * seq_len : (w + 1) * seq_len]
        for t in range(1, seq_len):
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([window[:t]])).logits[0, -1]
            total -= float(torch.log_softmax(logits.double(), -1)[window[t]])
            count += 1
    return math.exp(total / count)


def test_perplexity_equals_a_token_loop(tokenizer) -> None:
    model = tiny_lm("gpt2", vocab_size=64)
    text = "\n\n".join(["the cat sat on the mat and then slept", "a big red dog ran far"] * 2)
    ids = tokenizer(text)["input_ids"]
    res = perplexity(model, tokenizer, text, seq_len=8)
    assert res["windows"] == len(ids) // 8
    assert res["perplexity"] == pytest.approx(_hand_perplexity(model, ids, 8), rel=1e-5)
    with pytest.raises(ValueError, match="shorter than one window"):
        perplexity(model, tokenizer, "the cat", seq_len=64)


def test_multiple_choice_matches_hand_computed_loglikelihoods(tokenizer) -> None:
    model = tiny_lm("llama", vocab_size=64)
    context, choices = "the cat sat on the", ["mat", "big red dog"]
    lls = choice_loglikelihoods(model, tokenizer, context, choices)
    ctx = tokenizer(context, add_special_tokens=False)["input_ids"]
    for ll, choice in zip(lls, choices, strict=True):
        cont = tokenizer(context + " " + choice, add_special_tokens=False)["input_ids"][len(ctx) :]
        seq = ctx + cont
        hand = 0.0
        for i, tok in enumerate(cont):
            with torch.no_grad():
                logits = model(input_ids=torch.tensor([seq[: len(ctx) + i]])).logits[0, -1]
            hand += float(torch.log_softmax(logits.double(), -1)[tok])
        assert ll == pytest.approx(hand, abs=1e-4)
    ex = [MCExample(context, tuple(choices), 0), MCExample(context, tuple(choices), 1)]
    res = mc_accuracy(model, tokenizer, ex)
    best = max(range(2), key=lambda i: lls[i])
    best_norm = max(range(2), key=lambda i: lls[i] / len(choices[i]))
    assert res["acc"] == 0.5 and res["acc_norm"] == 0.5 and res["n"] == 2
    assert best in (0, 1) and best_norm in (0, 1)


def test_snip_uses_the_language_modelling_loss(tokenizer) -> None:
    model = tiny_lm("llama", vocab_size=64)
    targets = select_targets(model, "essential")
    ids = _ids(2, 10)
    name = targets.names[0]
    w = dict(model.named_parameters())[name]
    loss = model(input_ids=ids, labels=ids).loss
    (grad,) = torch.autograd.grad(loss, [w])
    expected = (w.detach() * grad).abs()
    from llm_sparsity.llm import task_loss
    from llm_sparsity.scores import snip

    scores = snip(model, targets, calibration=[{"input_ids": ids}], loss_fn=task_loss)
    assert torch.allclose(scores[name], expected, rtol=1e-5, atol=1e-8)
    masks = prune_llm(model, targets, PruneSpec("snip", 0.3), calibration=ids, batch_size=2)
    assert masks.n_total - masks.n_active == round(0.3 * masks.n_total)
    mlm = tiny_lm("bert-mlm", vocab_size=64)
    masks = prune_llm(
        mlm, select_targets(mlm, "essential"), PruneSpec("snip", 0.3), calibration=ids, tokenizer=tokenizer
    )
    assert masks.n_total - masks.n_active == round(0.3 * masks.n_total)
    base = tiny_lm("bert-cls", vocab_size=64)
    with pytest.raises(ValueError, match="labels"):
        prune_llm(base, select_targets(base, "essential"), PruneSpec("snip", 0.3), calibration=ids)


def test_loading_errors_are_one_clear_line(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match=r"'facebook/opt-125m'.*hub cannot be reached"):
        load_model("facebook/opt-125m")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model("./no/such/dir")
    with pytest.raises(ValueError, match="task 'vision'"):
        load_model("gpt2", "vision")
    with pytest.raises(ValueError, match="CUDA is not available|cuda"):
        if torch.cuda.is_available():
            raise ValueError("cuda present: nothing to check")
        load_model("gpt2", device="cuda")
    model = tiny_lm("bert-mlm", vocab_size=64)
    model.save_pretrained(str(tmp_path / "bert"))
    with pytest.raises(ValueError, match="carries no causal-lm head"):
        load_model(str(tmp_path / "bert"), "causal-lm")


def test_calibration_windows_are_seeded_and_validated(tokenizer, tmp_path) -> None:
    from llm_sparsity.calibration import load_calibration

    text = tmp_path / "c.txt"
    text.write_text(
        "\n\n".join(" ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(20)) for i in range(10))
    )
    a = load_calibration(text, tokenizer, n_samples=5, seq_len=16, seed=3)
    b = load_calibration(text, tokenizer, n_samples=5, seq_len=16, seed=3)
    c = load_calibration(text, tokenizer, n_samples=5, seq_len=16, seed=4)
    assert a.shape == (5, 16) and torch.equal(a, b) and not torch.equal(a, c)
    with pytest.raises(ValueError, match="shorter than one window"):
        load_calibration(text, tokenizer, n_samples=1, seq_len=10_000)
    table = tmp_path / "c.csv"
    table.write_text("Ques,Body\nhow many?,Sam has 3\n")
    with pytest.raises(ValueError, match=r"column 'text' is missing.*columns present: Ques, Body"):
        load_calibration(table, tokenizer, n_samples=1, seq_len=4)
    assert load_calibration(table, tokenizer, n_samples=1, seq_len=3, text_column="Body").shape == (1, 3)


def test_sequential_rejects_targets_outside_blocks() -> None:
    model = tiny_lm("llama", vocab_size=64)
    targets = select_targets(model, "essential", include_head=True)
    with pytest.raises(ValueError, match="outside"):
        prune_sequential(model, targets, _ids(), "wanda", 0.5)


def test_gpu_check_code_runs_on_cpu_at_tiny_sizes() -> None:
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "benchmarks" / "gpu_check.py"
    spec = importlib.util.spec_from_file_location("llm_sparsity_gpu_check", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sizes = {"hidden": 32, "intermediate": 64, "layers": 2, "heads": 4, "vocab": 64}
    for method in ("wanda", "sparsegpt"):
        res = module.prune_check(method, torch.device("cpu"), torch.float32, sizes, 2, 16)
        assert res["exact_2to4"] and res["sparsity"] == 0.5


def test_curve_on_a_user_model_and_user_files(tokenizer, tmp_path) -> None:
    import json

    from typer.testing import CliRunner

    from llm_sparsity.cli import app

    for family in ("gpt2", "bert-cls"):
        tiny_lm(family, vocab_size=64).save_pretrained(str(tmp_path / family))
        tokenizer.save_pretrained(str(tmp_path / family))
    text = tmp_path / "text.txt"
    text.write_text(
        "\n\n".join(" ".join(WORDS[(i * 3 + j) % len(WORDS)] for j in range(12)) for i in range(8))
    )
    runner = CliRunner()
    out = tmp_path / "curve"
    args = ["curve", "--model", str(tmp_path / "gpt2"), "--eval", f"ppl:{text}", "--method", "magnitude",
            "--method", "wanda", "--sparsities", "0.3,0.6", "--seq-len", "8", "--calib", str(text),
            "--n-samples", "2", "--device", "cpu", "--out", str(out)]  # fmt: skip
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    rows = json.loads((out / "curve.json").read_text())["rows"]
    assert rows[0] == {"method": "dense", "sparsity": 0.0, "score": 1.0}
    assert [(r["method"], r["sparsity"]) for r in rows[1:]] == [
        ("magnitude", 0.3), ("magnitude", 0.6), ("wanda", 0.3), ("wanda", 0.6)
    ]  # fmt: skip
    cls = tmp_path / "cls.csv"
    cls.write_text("sentence,y\nthe cat sat,0\na dog ran,1\nthe big fish,2\n")
    base = ["curve", "--model", str(tmp_path / "bert-cls"), "--eval", f"cls:{cls}", "--method", "magnitude",
            "--sparsities", "0.5,0.9", "--device", "cpu", "--out", str(out)]  # fmt: skip
    res = runner.invoke(app, base)
    assert res.exit_code == 2 and "column 'text' is missing" in res.output and "sentence, y" in res.output
    res = runner.invoke(app, [*base, "--text-column", "sentence", "--label-column", "y"])
    assert res.exit_code == 0, res.output
    rows = json.loads((out / "curve.json").read_text())["rows"]
    assert all(r["score"] in (0.0, 1 / 3, 2 / 3, 1.0) for r in rows)
    res = runner.invoke(app, [*base[:4], "mc:missing.jsonl", *base[5:]])
    assert res.exit_code == 2 and "does not exist" in res.output


def test_word_problem_csv_with_other_columns_names_the_missing_one(tmp_path) -> None:
    from llm_sparsity.tasks import load_question_bodies

    folder = tmp_path / "arithmetic" / "mawps-asdiv-a_svamp"
    folder.mkdir(parents=True)
    for split in ("train", "dev"):
        (folder / f"{split}.csv").write_text("Question,Body,Q\nhow many?,Sam has 3 apples,x\n")
    with pytest.raises(ValueError, match=r"column 'Ques' is missing; columns present: Question, Body, Q"):
        load_question_bodies(tmp_path)


def test_loglikelihoods_equal_lm_evaluation_harness_hflm(tokenizer, monkeypatch) -> None:
    import lm_eval
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from llm_sparsity.evaluation import run_lm_eval

    model = tiny_lm("llama", vocab_size=64)
    lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=1)
    context, choices = "the cat sat on the", ["mat", "big red dog", "fish"]
    requests = [
        Instance(request_type="loglikelihood", doc={}, arguments=(context, " " + c), idx=i)
        for i, c in enumerate(choices)
    ]
    theirs = [ll for ll, _greedy in lm.loglikelihood(requests)]
    assert choice_loglikelihoods(model, tokenizer, context, choices) == pytest.approx(theirs, abs=1e-5)
    seen = {}

    def fake_simple_evaluate(*, model, tasks, num_fewshot, limit):
        seen.update(model=model, tasks=tasks, limit=limit)
        return {"results": {t: {"acc,none": 0.5} for t in tasks}}

    monkeypatch.setattr(lm_eval, "simple_evaluate", fake_simple_evaluate)
    out = run_lm_eval(model, tokenizer, ["boolq"], limit=3)
    assert out == {"boolq": {"acc,none": 0.5}} and seen["model"].model is model and seen["limit"] == 3


@pytest.mark.parametrize("steps", [0, 2])
def test_curve_finetune_evaluates_the_finetuned_sparse_model_with_its_mask(tokenizer, steps) -> None:
    import json as _json

    from llm_sparsity.llm_curve import llm_curve, make_trainer

    model = tiny_lm("gpt2", vocab_size=64)
    targets = select_targets(model, "essential")
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    rows_file = _tmp_mc_file(tokenizer)
    trainer = make_trainer("mc", str(rows_file), tokenizer, batch_size=2, lr=1e-2)
    seen = []

    def evaluate(m: torch.nn.Module) -> float:
        zeros = sum(int(p.eq(0).sum()) for p in targets.parameters(m).values()) / targets.n_weights(m)
        others = [n for n, _ in m.named_parameters() if n not in targets.names]
        moved = any(not p.equal(before[n]) for n, p in m.named_parameters() if n in others)
        seen.append((zeros, moved))
        return 0.5

    rows = llm_curve(model, targets, [0.0, 0.5, 0.8], ["magnitude"], evaluate,
                     finetune=(trainer, steps) if steps else None)  # fmt: skip
    assert [r["sparsity"] for r in rows] == [0.0, 0.5, 0.8]
    for (zeros, moved), s in zip(seen, [0.0, 0.5, 0.8], strict=True):
        assert zeros == pytest.approx(s, abs=1e-3)  # the mask is kept through fine-tuning
        assert moved == bool(steps)  # the evaluated model is the fine-tuned one
    assert all(p.equal(before[n]) for n, p in model.named_parameters())  # restored to dense
    assert _json.dumps(rows)


def _tmp_mc_file(tokenizer):
    import json as _json
    import tempfile
    from pathlib import Path

    path = Path(tempfile.mkdtemp()) / "mc.jsonl"
    rows = [{"question": "the cat", "choices": ["sat", "ran"], "label": 0},
            {"question": "a dog", "choices": ["ran", "sat"], "label": 0}]  # fmt: skip
    path.write_text("\n".join(_json.dumps(r) for r in rows) + "\n")
    return path


def test_cli_curve_finetune_with_eval(tokenizer, tmp_path) -> None:
    import json

    from typer.testing import CliRunner

    from llm_sparsity.cli import app

    tiny_lm("gpt2", vocab_size=64).save_pretrained(str(tmp_path / "gpt2"))
    tokenizer.save_pretrained(str(tmp_path / "gpt2"))
    mc = _tmp_mc_file(tokenizer)
    base = ["curve", "--model", str(tmp_path / "gpt2"), "--eval", f"mc:{mc}", "--method", "magnitude",
            "--sparsities", "0.5,0.9", "--device", "cpu", "--out", str(tmp_path / "o"), "--finetune", "2"]  # fmt: skip
    res = CliRunner().invoke(app, base)
    assert res.exit_code == 2 and "--finetune with --eval needs --train" in res.output
    res = CliRunner().invoke(app, [*base, "--train", str(mc), "--batch-size", "2"])
    assert res.exit_code == 0, res.output
    result = json.loads((tmp_path / "o" / "curve.json").read_text())
    assert result["finetune_steps"] == 2 and [r["sparsity"] for r in result["rows"]] == [0.0, 0.5, 0.9]
