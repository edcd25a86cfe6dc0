"""Command-line interface of llm-sparsity."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import typer

from llm_sparsity import __version__
from research_systems_core.cli import create_app

app = create_app(
    "llm-sparsity",
    "Essential Sparsity, Junk DNA Hypothesis, Instant Soup Pruning and SMC-Bench for pre-trained transformers.",
    __version__,
)
log = logging.getLogger("llm_sparsity")


def _setup_torch() -> None:
    from research_systems_core.torch_utils import set_torch_threads

    set_torch_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))


def _floats(text: str, name: str) -> list[float]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise typer.BadParameter(f"{name} is empty; give comma-separated values like 0.2,0.5")
    try:
        return [float(p) for p in parts]
    except ValueError as exc:
        raise typer.BadParameter(f"{name} must be comma-separated numbers, got {text!r}") from exc


def _names(text: str, name: str) -> list[str]:
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise typer.BadParameter(f"{name} is empty")
    return parts


def _fail(exc: Exception) -> None:
    typer.echo(f"error: {exc}", err=True)
    raise typer.Exit(2)


def _task(data_dir: str | None, n_train: int, n_eval: int, source: str = "mawps-asdiv-a_svamp"):
    """Question -> body retrieval over the offline word problems."""
    from llm_sparsity.tasks import BodyRetrievalTask, load_question_bodies
    from research_systems_core.data import resolve_data_dir

    passages = load_question_bodies(resolve_data_dir(data_dir), source)
    return BodyRetrievalTask.from_passages(passages, n_train, n_eval)


MODEL_HELP = "Hugging Face model name or local directory; 'minilm' = the offline all-MiniLM-L6-v2."
TASK_HELP = "Head to load: causal-lm, masked-lm, sequence-classification, base (default: from the config)."


def _check_calib_source(source: str | None) -> None:
    from llm_sparsity.calibration import DEFAULT_SOURCE, HUB_SOURCES

    if source is None or source in (*HUB_SOURCES, DEFAULT_SOURCE):
        return
    if not Path(source).is_file():
        raise ValueError(
            f"--calib {source!r} is neither a file nor one of {', '.join((*HUB_SOURCES, DEFAULT_SOURCE))}"
        )


def _emit(result: dict, out_json: Path | None) -> None:
    import json

    from research_systems_core.results import write_json

    if out_json is not None:
        write_json(out_json, result)
    typer.echo(json.dumps(result, indent=2, default=str))


@app.command()
def prune(
    model_arg: str = typer.Argument(None, metavar="MODEL", help=MODEL_HELP),
    out: Path = typer.Option(
        ..., "--out", help="Directory for the pruned model (safetensors), mask and result JSON."
    ),
    model: str = typer.Option(None, "--model", help="Same as the MODEL argument (kept for older scripts)."),
    method: str = typer.Option("magnitude", "--method", help="magnitude, random, snip, wanda or sparsegpt."),
    sparsity: float = typer.Option(
        0.5, "--sparsity", help="Fraction of targeted weights to prune, in [0, 1)."
    ),
    nm: str = typer.Option(
        None, "--nm", help="N:M pattern, e.g. 2:4 (keep 2 of every 4); overrides --sparsity."
    ),
    allocation: str = typer.Option(
        "global", "--allocation", help="magnitude/random/snip: global, layer, row (nm: same as --nm)."
    ),
    calib: str = typer.Option(
        None,
        "--calib",
        help="Calibration text: a .txt/.jsonl/.csv file, c4, wikitext2 or word-problems (default).",
    ),
    text_column: str = typer.Option(
        "text", "--text-column", help="Text column of a JSONL/CSV calibration file."
    ),
    n_samples: int = typer.Option(128, "--n-samples", help="Calibration windows."),
    seq_len: int = typer.Option(
        None, "--seq-len", help="Tokens per calibration window (default min(2048, context))."
    ),
    task: str = typer.Option(None, "--task", help=TASK_HELP),
    tokenizer: str = typer.Option(
        None, "--tokenizer", help="Tokenizer hub id or directory (default: the model's)."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N, mps."),
    dtype: str = typer.Option("auto", "--dtype", help="auto (fp32 on CPU, bf16 on GPU), bf16, fp16, fp32."),
    preset: str = typer.Option("essential", "--preset", help="Targets: essential, junk_dna, all_linear."),
    pattern: list[str] = typer.Option(
        [], "--pattern", help="Extra regex over parameter names to prune (repeatable)."
    ),
    include_embeddings: bool = typer.Option(False, "--include-embeddings", help="Also prune embeddings."),
    include_head: bool = typer.Option(False, "--include-head", help="Also prune the task head."),
    data_dir: str = typer.Option(
        None, "--data-dir", help="Data directory (the default word-problem calibration)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed (calibration sample, random scores)."),
) -> None:
    """Prune a model (with its head) and save it as safetensors with its mask; prints a JSON result."""
    import time

    import torch

    from llm_sparsity.calibration import load_calibration
    from llm_sparsity.evaluation import context_length
    from llm_sparsity.llm import PruneSpec, prune_llm
    from llm_sparsity.models import check_dtype, check_task, load_model
    from llm_sparsity.saving import save_pruned
    from llm_sparsity.targets import PRESETS, select_targets
    from research_systems_core.torch_utils import resolve_device
    from research_systems_core.validation import check_choice, check_int

    if model_arg and model and model_arg != model:
        raise ValueError(f"MODEL {model_arg!r} and --model {model!r} disagree; give one")
    name = model_arg or model or "minilm"
    if allocation == "nm" and not nm:
        raise ValueError("--allocation nm needs --nm N:M, for example --nm 2:4")
    spec = PruneSpec(method, None if nm else sparsity, nm, allocation)
    check_task(task)
    check_dtype(dtype)
    check_choice("--preset", preset, PRESETS)
    check_int("--n-samples", n_samples, minimum=1)
    if seq_len is not None:
        check_int("--seq-len", seq_len, minimum=2)
    if spec.needs_calibration:
        _check_calib_source(calib)
    dev = resolve_device(device)
    _setup_torch()
    t0 = time.perf_counter()
    net, tok = load_model(
        name,
        task,
        device=dev,
        dtype=dtype,
        tokenizer=tokenizer,
        offload=spec.method in ("wanda", "sparsegpt"),
    )
    targets = select_targets(
        net, preset, patterns=pattern, include_embeddings=include_embeddings, include_head=include_head
    )
    calibration = None
    if spec.needs_calibration:
        length = seq_len or min(2048, context_length(net))
        calibration = load_calibration(
            calib,
            tok,
            n_samples=n_samples,
            seq_len=length,
            seed=seed,
            text_column=text_column,
            data_dir=data_dir,
        )
    masks = prune_llm(
        net, targets, spec, calibration=calibration, tokenizer=tok, device=dev, seed=seed, progress=True
    )
    meta = {
        "model": name,
        "method": method,
        "sparsity_asked": None if nm else sparsity,
        "nm": nm,
        "allocation": allocation,
        "preset": preset,
        "seed": seed,
        "calib": calib,
        "n_samples": n_samples if calibration is not None else 0,
        "seq_len": int(calibration.shape[1]) if calibration is not None else None,
        "device": str(dev),
        "dtype": str(next(net.parameters()).dtype).replace("torch.", ""),
    }
    save_pruned(net.to(torch.device("cpu")), masks, out, tok, meta=meta)
    result = {
        **meta,
        "out": str(out),
        "pruned": masks.n_total - masks.n_active,
        "targeted": masks.n_total,
        "sparsity": masks.sparsity(),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    _emit(result, out / "prune_result.json")


@app.command("eval")
def eval_command(
    model: str = typer.Argument(
        ..., metavar="MODEL_OR_DIR", help=MODEL_HELP + " A directory written by prune works."
    ),
    ppl: str = typer.Option(None, "--ppl", help="Perplexity text: a .txt/.jsonl/.csv file, wikitext2 or c4."),
    mc: Path = typer.Option(
        None, "--mc", help="Multiple-choice JSONL/CSV (context, choices, label columns)."
    ),
    lm_eval_tasks: str = typer.Option(
        None, "--lm-eval-tasks", help="Comma-separated lm-evaluation-harness tasks."
    ),
    seq_len: int = typer.Option(None, "--seq-len", help="Perplexity window (default: the model's context)."),
    max_windows: int = typer.Option(
        None, "--max-windows", help="Score at most this many perplexity windows."
    ),
    text_column: str = typer.Option("text", "--text-column", help="Text column of a JSONL/CSV --ppl file."),
    context_column: str = typer.Option(
        "question", "--context-column", help="Context column of the --mc file."
    ),
    choices_column: str = typer.Option(
        "choices", "--choices-column", help="Choices column of the --mc file."
    ),
    label_column: str = typer.Option("label", "--label-column", help="Label column of the --mc file."),
    limit: int = typer.Option(None, "--limit", help="lm-eval: examples per task."),
    task: str = typer.Option(None, "--task", help=TASK_HELP),
    tokenizer: str = typer.Option(
        None, "--tokenizer", help="Tokenizer hub id or directory (default: the model's)."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N, mps."),
    dtype: str = typer.Option("auto", "--dtype", help="auto, bf16, fp16, fp32."),
    out_json: Path = typer.Option(None, "--out", help="Also write the JSON result to this file."),
    data_dir: str = typer.Option(None, "--data-dir", help="Data directory."),
) -> None:
    """Perplexity, log-likelihood multiple choice and lm-eval tasks of a (pruned) model; JSON result."""
    from llm_sparsity.calibration import HUB_SOURCES, load_eval_text
    from llm_sparsity.evaluation import mc_accuracy, perplexity, read_mc_file, run_lm_eval
    from llm_sparsity.models import check_dtype, check_task, load_model
    from research_systems_core.torch_utils import resolve_device
    from research_systems_core.validation import check_int

    if ppl is None and mc is None and not lm_eval_tasks:
        raise ValueError("nothing to evaluate: give --ppl, --mc and/or --lm-eval-tasks")
    if ppl is not None and ppl not in HUB_SOURCES and not Path(ppl).is_file():
        raise ValueError(f"--ppl {ppl!r} is neither a file nor one of {', '.join(HUB_SOURCES)}")
    if mc is not None and not mc.is_file():
        raise FileNotFoundError(f"--mc file {mc} does not exist")
    for opt, value in (("--seq-len", seq_len), ("--max-windows", max_windows), ("--limit", limit)):
        if value is not None:
            check_int(opt, value, minimum=2 if opt == "--seq-len" else 1)
    check_task(task)
    check_dtype(dtype)
    dev = resolve_device(device)
    examples = (
        read_mc_file(
            mc, context_column=context_column, choices_column=choices_column, label_column=label_column
        )
        if mc is not None
        else None
    )
    _setup_torch()
    net, tok = load_model(model, task, device=dev, dtype=dtype, tokenizer=tokenizer)
    result: dict = {"model": model, "device": str(dev)}
    if ppl is not None:
        text = load_eval_text(ppl, text_column=text_column, data_dir=data_dir)
        result["perplexity"] = perplexity(
            net, tok, text, seq_len=seq_len, max_windows=max_windows, progress=True
        )
    if examples is not None:
        result["multiple_choice"] = mc_accuracy(net, tok, examples, progress=True)
    if lm_eval_tasks:
        result["lm_eval"] = run_lm_eval(net, tok, _names(lm_eval_tasks, "--lm-eval-tasks"), limit=limit)
    _emit(result, out_json)


@app.command()
def curve(
    out: Path = typer.Option(..., "--out", help="Output directory (curve.json, curve.png)."),
    model: str = typer.Option("minilm", "--model", help=MODEL_HELP),
    sparsities: str = typer.Option(
        "0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9", "--sparsities", help="Comma-separated grid."
    ),
    methods: str = typer.Option("magnitude,random", "--methods", help="Comma-separated scores."),
    data_dir: str = typer.Option(None, "--data-dir", help="Data directory holding arithmetic/."),
    n_train: int = typer.Option(400, "--n-train", help="Training problems for the ridge head."),
    n_eval: int = typer.Option(300, "--n-eval", help="Evaluation problems."),
    delta: float = typer.Option(
        0.01, "--delta", help="Tolerance (accuracy points / 100) of the essential sparsity."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed."),
    eval_spec: str = typer.Option(
        None,
        "--eval",
        help="ppl:FILE|wikitext2, mc:FILE or cls:FILE: a curve of any model on your data "
        "(default: the built-in MiniLM retrieval task).",
    ),
    method: list[str] = typer.Option(
        [],
        "--method",
        help="Method for --eval curves (repeatable): magnitude, random, snip, wanda, sparsegpt.",
    ),
    calib: str = typer.Option(
        None, "--calib", help="Calibration text for wanda/sparsegpt/snip (file, c4, wikitext2)."
    ),
    n_samples: int = typer.Option(32, "--n-samples", help="Calibration windows."),
    seq_len: int = typer.Option(None, "--seq-len", help="Calibration and perplexity window in tokens."),
    max_windows: int = typer.Option(None, "--max-windows", help="Perplexity: at most this many windows."),
    text_column: str = typer.Option("text", "--text-column", help="Text column (ppl/cls files)."),
    label_column: str = typer.Option("label", "--label-column", help="Label column (mc/cls files)."),
    context_column: str = typer.Option("question", "--context-column", help="Context column (mc files)."),
    choices_column: str = typer.Option("choices", "--choices-column", help="Choices column (mc files)."),
    input_column: str = typer.Option("input", "--input-column", help="Input column (gen/reg/bleu files)."),
    target_column: str = typer.Option(
        "target", "--target-column", help="Target column (gen/reg/bleu files)."
    ),
    task: str = typer.Option(None, "--task", help=TASK_HELP),
    device: str = typer.Option("auto", "--device", help="auto, cpu, cuda, cuda:N, mps."),
    dtype: str = typer.Option("auto", "--dtype", help="auto, bf16, fp16, fp32."),
    finetune: int = typer.Option(
        0, "--finetune", help="Fine-tuning steps after pruning, mask kept (with --eval: needs --train)."
    ),
    train_file: Path = typer.Option(
        None, "--train", help="With --eval and --finetune: training rows in the --eval kind's format."
    ),
    finetune_lr: float = typer.Option(5e-5, "--finetune-lr", help="AdamW learning rate of --finetune."),
    batch_size: int = typer.Option(8, "--batch-size", help="Batch size of --finetune."),
) -> None:
    """Sparsity-performance curve with the essential sparsity: of any model on your --eval data, or
    (default) MiniLM on zero-shot question->body retrieval (N=8)."""
    if eval_spec is not None:
        _llm_curve_command(out, model, sparsities, method or _names(methods, "--methods"), eval_spec, delta, seed,
                           calib, n_samples, seq_len, max_windows, text_column, label_column, context_column,
                           choices_column, task, device, dtype, finetune, input_column, target_column,
                           train_file=train_file, finetune_lr=finetune_lr, batch_size=batch_size)  # fmt: skip
        return
    from llm_sparsity.curves import essential_sparsity
    from llm_sparsity.floors import no_model_floors
    from llm_sparsity.junk_dna import run_difficulty_curves
    from llm_sparsity.models import load_pretrained
    from llm_sparsity.probe import MCSuite
    from llm_sparsity.targets import select_targets
    from llm_sparsity.tasks import BodyLevel
    from research_systems_core.results import plot_curves, write_json

    _setup_torch()
    try:
        grid = _floats(sparsities, "--sparsities")
        if 0.0 not in grid:
            grid = [0.0, *grid]
        net, tokenizer = load_pretrained(model)
        task = _task(data_dir, n_train, n_eval)
        level = BodyLevel("options", 8, n_candidates=8)
        suite = MCSuite(task, tokenizer, [level], seeds=[seed])
        floors = no_model_floors(task.items(level, seed, "eval"), net, tokenizer)
        rows = run_difficulty_curves(
            net, select_targets(net, "essential"), suite, grid, _names(methods, "--methods")
        )
    except (ValueError, OSError, KeyError) as exc:
        _fail(exc)
    out.mkdir(parents=True, exist_ok=True)
    dense = next(r["accuracy"] for r in rows if r["method"] == "dense")
    curves, es = {}, {}
    for m in _names(methods, "--methods"):
        xs = sorted(grid)
        ys = [
            dense if s == 0 else next(r["accuracy"] for r in rows if r["method"] == m and r["sparsity"] == s)
            for s in xs
        ]
        curves[m] = (xs, ys)
        es[m] = essential_sparsity(xs, ys, delta).as_dict()
    vlines = {f"{m}: knee {v['knee']:.2f}": v["knee"] for m, v in es.items()}
    plot_curves(
        out / "curve.png",
        curves,
        "sparsity",
        "accuracy (question->body, N=8)",
        "Sparsity-performance curve",
        vlines=vlines,
    )
    above = {
        m: [round((y - floors["best_floor"]) / max(dense - floors["best_floor"], 1e-9), 4) for y in ys]
        for m, (_, ys) in curves.items()
    }
    write_json(
        out / "curve.json",
        {
            "rows": rows,
            "essential_sparsity": es,
            "floors": floors,
            "share_of_dense_gain_over_best_floor": above,
        },
    )
    typer.echo(
        "no-model floors: " + ", ".join(f"{k} {v:.3f}" for k, v in floors.items()) + f"; dense {dense:.3f}"
    )
    for m, v in es.items():
        typer.echo(
            f"{m}: essential sparsity (tolerance {delta:g}) {v['tolerance']:.2f}, knee {v['knee']:.2f}"
        )


def _llm_curve_command(out, model, sparsities, methods, eval_spec, delta, seed, calib, n_samples, seq_len,
                       max_windows, text_column, label_column, context_column, choices_column, task, device, dtype,
                       finetune, input_column="input", target_column="target", *, train_file=None,
                       finetune_lr=5e-5, batch_size=8) -> None:  # fmt: skip
    """``curve --eval ...``: validate everything, then load, sweep, write curve.json/png."""
    from llm_sparsity.calibration import load_calibration
    from llm_sparsity.curves import essential_sparsity
    from llm_sparsity.evaluation import context_length
    from llm_sparsity.llm import PruneSpec
    from llm_sparsity.llm_curve import llm_curve, make_evaluator, make_trainer, parse_eval_spec
    from llm_sparsity.models import check_dtype, check_task, load_model
    from llm_sparsity.targets import select_targets
    from research_systems_core.results import plot_curves, write_json
    from research_systems_core.torch_utils import resolve_device
    from research_systems_core.validation import check_int, check_positive

    check_int("--finetune", finetune, minimum=0)
    if finetune and train_file is None:
        raise ValueError(
            "--finetune with --eval needs --train FILE (training rows in the --eval kind's format)"
        )
    if train_file is not None and not Path(train_file).is_file():
        raise FileNotFoundError(f"--train file {train_file} does not exist")
    check_positive("--finetune-lr", finetune_lr)
    check_int("--batch-size", batch_size, minimum=1)
    kind, source = parse_eval_spec(eval_spec)
    grid = sorted({0.0, *_floats(sparsities, "--sparsities")})
    if len(grid) < 3:
        raise ValueError(f"--sparsities: a curve needs at least 3 points including 0, got {grid}")
    for m in methods:
        spec = PruneSpec(m, 0.5)
        for s in grid:
            PruneSpec(m, s)
        if spec.needs_calibration:
            _check_calib_source(calib)
    check_task(task)
    check_dtype(dtype)
    dev = resolve_device(device)
    _setup_torch()
    net, tok = load_model(model, task, device=dev, dtype=dtype)
    evaluate = make_evaluator(kind, source, tok, text_column=text_column, label_column=label_column,
                              context_column=context_column, choices_column=choices_column, seq_len=seq_len,
                              max_windows=max_windows, input_column=input_column,
                              target_column=target_column)  # fmt: skip
    calibration = None
    if any(PruneSpec(m, 0.5).needs_calibration for m in methods):
        length = seq_len or min(2048, context_length(net))
        calibration = load_calibration(calib, tok, n_samples=n_samples, seq_len=length, seed=seed)
    targets = select_targets(net, "essential")
    trainer = None
    if finetune:
        trainer = make_trainer(kind, str(train_file), tok, batch_size=batch_size, lr=finetune_lr,
                               seq_len=seq_len or min(512, context_length(net)), text_column=text_column,
                               label_column=label_column, context_column=context_column,
                               choices_column=choices_column, input_column=input_column,
                               target_column=target_column)  # fmt: skip
    rows = llm_curve(net, targets, grid, methods, evaluate, calibration=calibration, tokenizer=tok, device=dev,
                     seed=seed, finetune=(trainer, finetune) if trainer is not None else None)  # fmt: skip
    dense = rows[0]["score"]
    curves, es = {}, {}
    for m in methods:
        ys = [dense] + [r["score"] for r in rows if r["method"] == m]
        curves[m] = (grid, ys)
        es[m] = essential_sparsity(grid, ys, delta).as_dict()
    out.mkdir(parents=True, exist_ok=True)
    label = {"ppl": "dense ppl / ppl", "mc": "accuracy (log-likelihood MC)", "cls": "accuracy",
             "gen": "exact match (generation)", "reg": "Spearman", "bleu": "BLEU"}[kind]  # fmt: skip
    plot_curves(out / "curve.png", curves, "sparsity", label, f"Sparsity-performance curve ({model})")
    write_json(
        out / "curve.json",
        {
            "model": model,
            "eval": eval_spec,
            "finetune_steps": finetune,
            "rows": rows,
            "essential_sparsity": es,
        },
    )
    for m, v in es.items():
        typer.echo(
            f"{m}: essential sparsity (tolerance {delta:g}) {v['tolerance']:.2f}, knee {v['knee']:.2f}"
        )


@app.command("junk-dna")
def junk_dna(
    out: Path = typer.Option(..., "--out", help="Output directory."),
    model: str = typer.Option("minilm", "--model", help=MODEL_HELP),
    sparsities: str = typer.Option(
        "0,0.2,0.4,0.5,0.6,0.7,0.8,0.9", "--sparsities", help="Comma-separated grid."
    ),
    methods: str = typer.Option("magnitude,random", "--methods", help="Comma-separated scores."),
    seeds: str = typer.Option("0", "--seeds", help="Comma-separated seeds."),
    data_dir: str = typer.Option(None, "--data-dir", help="Data directory holding arithmetic/."),
    n_train: int = typer.Option(400, "--n-train", help="Training problems."),
    n_eval: int = typer.Option(300, "--n-eval", help="Evaluation problems."),
    mc: Path = typer.Option(
        None, "--mc", help="Your evaluation rows (JSONL/CSV: question, choices, label): a study on your data."
    ),
    train: Path = typer.Option(None, "--train", help="Your training rows (same columns) for --mc."),
    axis: str = typer.Option(
        "options", "--axis", help="With --mc: train_fraction, options, k_shot (causal LMs) or context."
    ),
    levels: str = typer.Option(
        None,
        "--levels",
        help="With --mc: comma-separated levels (fractions, option counts, k, context shares).",
    ),
    finetune_steps: int = typer.Option(
        0, "--finetune-steps", help="With --mc: fine-tuning steps after pruning (mask kept)."
    ),
    mode: str = typer.Option(
        "sparse",
        "--mode",
        help="With --mc: transfer mode of the fine-tuning: sparse, sparse_to_dense, frozen.",
    ),
    quant_bits: str = typer.Option(
        None, "--quant-bits", help="With --mc: quantization control at these bit widths (e.g. 8,4)."
    ),
    context_column: str = typer.Option(
        "question", "--context-column", help="Context column of --mc/--train."
    ),
    choices_column: str = typer.Option("choices", "--choices-column", help="Choices column of --mc/--train."),
    label_column: str = typer.Option("label", "--label-column", help="Label column of --mc/--train."),
) -> None:
    """Task-difficulty study: curves per difficulty level (options, similar distractors, query context).

    With --mc (and --train), on your own multiple-choice data along one --axis: the fraction of
    training data fine-tuned on, the number of answer options, k in-context examples (causal LMs),
    or the share of context kept; fine-tuning in a transfer mode (--mode); the quantization
    control (--quant-bits); drops normalised to chance and to the dense model."""
    from llm_sparsity.junk_dna import difficulty_trend, run_difficulty_curves
    from llm_sparsity.models import load_pretrained
    from llm_sparsity.probe import MCSuite
    from llm_sparsity.targets import select_targets
    from llm_sparsity.tasks import BODY_LEVELS
    from research_systems_core.results import write_json

    _setup_torch()
    if mc is not None:
        cols = {
            "context_column": context_column,
            "choices_column": choices_column,
            "label_column": label_column,
        }
        quant = tuple(int(b) for b in _floats(quant_bits, "--quant-bits")) if quant_bits else ()
        rows = _junk_dna_user(
            model, mc, train, axis, levels, finetune_steps, sparsities, methods, seeds, cols,
            mode=mode, quant_bits=quant,
        )  # fmt: skip
        method = _names(methods, "--methods")[0]
        pruned = sorted({r["sparsity"] for r in rows if r["sparsity"] > 0})
        trend = difficulty_trend(rows, method, (pruned[0], pruned[-1])) if pruned else {}
        write_json(Path(out) / "junk_dna.json", {"rows": rows, "trend_method": method, "trend": trend})
        for r in rows:
            typer.echo(
                f"{r['level']} s={r['sparsity']:g} seed {r['seed']}: accuracy {r['accuracy']:.3f} "
                f"(chance {r['chance']:.3f}, drop vs dense {r['drop'] if r['drop'] is None else round(r['drop'], 3)})"
            )
        return
    else:
        try:
            grid = sorted({0.0, *_floats(sparsities, "--sparsities")})
            net, tokenizer = load_pretrained(model)
            task = _task(data_dir, n_train, n_eval)
            suite = MCSuite(task, tokenizer, BODY_LEVELS, seeds=[int(s) for s in _floats(seeds, "--seeds")])
            rows = run_difficulty_curves(
                net, select_targets(net, "essential"), suite, grid, _names(methods, "--methods")
            )
        except (ValueError, OSError, KeyError) as exc:
            _fail(exc)
    hi = max(grid)
    trend = difficulty_trend(rows, "magnitude", (0.5, hi)) if "magnitude" in methods else {}
    write_json(Path(out) / "junk_dna.json", {"rows": rows, "trend_magnitude": trend})
    for axis, t in trend.items():
        typer.echo(f"{axis}: mean drop easy->hard {[round(d, 3) for d in t['mean_drop']]}")


def _junk_dna_user(model, mc, train, axis, levels, finetune_steps, sparsities, methods, seeds, cols, *,
                   mode="sparse", quant_bits=()):  # fmt: skip
    """Junk DNA on the user's rows: options and data are validated before the model loads."""
    from llm_sparsity.evaluation import read_mc_file
    from llm_sparsity.junk_user import AXES, UserStudy, check_levels, run_user_junk_dna
    from llm_sparsity.models import infer_task, load_config, load_model, load_pretrained
    from llm_sparsity.targets import select_targets
    from research_systems_core.validation import check_choice

    check_choice("--axis", axis, AXES)
    if levels is None:
        raise ValueError("--levels is required with --mc (e.g. 0.25,0.5,1 or 2,3,4 or 0,1,3)")
    method_list = _names(methods, "--methods")
    if len(method_list) != 1:
        raise ValueError(f"--methods with --mc takes one pruning method, got {methods!r}")
    grid = _floats(sparsities, "--sparsities")
    seed_list = [int(s) for s in _floats(seeds, "--seeds")]
    test_rows = read_mc_file(mc, **cols)
    train_rows = read_mc_file(train, **cols) if train is not None else []
    causal = infer_task(load_config(model)) == "causal-lm"
    study = UserStudy(train_rows, test_rows, axis, _floats(levels, "--levels"), causal, finetune_steps,
                      mode=mode, quant_bits=quant_bits)  # fmt: skip
    check_levels(study)
    if causal:
        net, tokenizer = load_model(model, "causal-lm", device="cpu", dtype="fp32")
    else:
        net, tokenizer = load_pretrained(model)
    return run_user_junk_dna(
        net, tokenizer, select_targets(net, "essential"), study, grid, method_list[0], seed_list
    )


@app.command()
def isp(
    out: Path = typer.Option(..., "--out", help="Output directory (isp.json, pruned model)."),
    model: str = typer.Option("minilm", "--model", help=MODEL_HELP),
    sparsity: float = typer.Option(0.7, "--sparsity", help="Target sparsity in [0, 1)."),
    rounds: int = typer.Option(3, "--rounds", help="Weak-mask rounds."),
    masks: int = typer.Option(4, "--masks", help="Weak masks per round (>= 1)."),
    weak_steps: int = typer.Option(2, "--weak-steps", help="Training steps per weak mask."),
    main_steps: int = typer.Option(1, "--main-steps", help="Main-model steps per round."),
    final_steps: int = typer.Option(15, "--final-steps", help="Sparse fine-tuning steps at the end."),
    aggregation: str = typer.Option(
        "union", "--aggregation", help="union, intersection, vote, score_average."
    ),
    vote_k: int = typer.Option(None, "--vote-k", help="k of the k-of-n vote (default: majority)."),
    compare: bool = typer.Option(
        False, "--compare", help="Also run IMP and one-shot with the same final steps."
    ),
    weight_soup: bool = typer.Option(
        False, "--weight-soup", help="Also average the auxiliary weights into the main model (soup variant)."
    ),
    inherit_optimizer: bool = typer.Option(
        True,
        "--inherit-optimizer/--fresh-optimizer",
        help="Auxiliary copies start from the main AdamW state.",
    ),
    data_dir: str = typer.Option(None, "--data-dir", help="Data directory holding arithmetic/."),
    n_train: int = typer.Option(400, "--n-train", help="Training problems."),
    n_eval: int = typer.Option(200, "--n-eval", help="Evaluation problems."),
    seed: int = typer.Option(0, "--seed", help="Seed."),
) -> None:
    """Instant Soup Pruning with fine-tuning on question->body retrieval (optionally vs IMP and one-shot)."""
    from llm_sparsity.experiments import MC_LEVEL, MC_TRAIN_LEVEL, compare_isp_imp
    from llm_sparsity.finetune import FinetuneConfig, RetrievalTrainer, mc_accuracy
    from llm_sparsity.isp import ISPConfig, instant_soup_pruning
    from llm_sparsity.models import load_pretrained
    from llm_sparsity.saving import save_pruned
    from llm_sparsity.targets import select_targets
    from research_systems_core.results import write_json

    _setup_torch()
    try:
        cfg = ISPConfig(
            target_sparsity=sparsity,
            rounds=rounds,
            n_masks=masks,
            weak_steps=weak_steps,
            main_steps=main_steps,
            final_steps=final_steps,
            aggregation=aggregation,
            vote_k=vote_k,
            seed=seed,
            weight_soup=weight_soup,
            inherit_optimizer=inherit_optimizer,
        )
        net, tokenizer = load_pretrained(model)
        task = _task(data_dir, n_train, n_eval)
        trainer = RetrievalTrainer(task, tokenizer, FinetuneConfig(train_level=MC_TRAIN_LEVEL))
        eval_items = task.items(MC_LEVEL, 0, "eval")
        targets = select_targets(net, "essential")

        def evaluate(m):
            return mc_accuracy(m, tokenizer, eval_items)

        if compare:
            rows, overlaps = compare_isp_imp(
                net,
                targets,
                trainer,
                evaluate,
                sparsity,
                final_steps=final_steps,
                imp_rounds=rounds,
                imp_steps=4 * max(weak_steps * masks + main_steps, 1),  # ISP search = 25% of IMP's
                isp=cfg,
                seed=seed,
            )
            write_json(Path(out) / "isp.json", {"rows": rows, "overlaps": overlaps})
            for r in rows:
                typer.echo(
                    f"{r['method']}: accuracy {r['accuracy']:.3f}, steps {r['total_steps']}, {r['seconds']:.1f}s"
                )
            return
        res = instant_soup_pruning(net, targets, trainer, cfg)
        acc = evaluate(net)
    except (ValueError, OSError, KeyError) as exc:
        _fail(exc)
    save_pruned(net, res.masks, Path(out) / "model", tokenizer, meta={"method": "isp", **cfg.__dict__})
    write_json(Path(out) / "isp.json", {"accuracy": acc, "cost": res.cost.as_dict(), "history": res.history})
    typer.echo(f"ISP: sparsity {res.masks.sparsity():.3f}, accuracy {acc:.3f}, cost {res.cost.as_dict()}")


@app.command("smc-bench")
def smc_bench(
    out: Path = typer.Option(..., "--out", help="Output directory; results.jsonl there is resumed."),
    methods: str = typer.Option("omp_before,random,imp,gmp", "--methods", help="Comma-separated methods."),
    sparsities: str = typer.Option(
        None, "--sparsities", help="Comma-separated grid (default 1-0.8^k, k=1..5)."
    ),
    tasks: str = typer.Option(
        "svamp",
        "--tasks",
        help="Comma-separated tasks (svamp, svamp-hard, mawps, svamp-equations, csqa, race, winogrande, arithmetic, protein, translation).",
    ),
    seeds: str = typer.Option("0", "--seeds", help="Comma-separated seeds."),
    steps: int = typer.Option(10, "--steps", help="Fine-tuning steps per cell."),
    model: str = typer.Option("minilm", "--model", help=MODEL_HELP),
    data_dir: str = typer.Option(None, "--data-dir", help="Data directory."),
    n_train: int = typer.Option(400, "--n-train", help="Training items per task."),
    n_eval: int = typer.Option(200, "--n-eval", help="Evaluation items per task."),
    tolerance: float = typer.Option(
        0.01, "--tolerance", help="Accuracy drop below dense that counts as failing."
    ),
) -> None:
    """SMC-Bench-style runner: methods x sparsities x tasks x seeds, resumable JSONL, summary and plots.

    A causal LM is scored as SMC-Bench scores it: csqa/race/winogrande by log-likelihood multiple
    choice, svamp/arithmetic by greedy generation with exact match of the numeric answer; an encoder
    is scored on csqa/race/winogrande through a trained multiple-choice head."""
    from llm_sparsity.models import infer_task, load_config, load_model, load_pretrained
    from llm_sparsity.smc_bench import (
        METHODS,
        TASKS,
        Budget,
        TaskUnavailable,
        default_sparsities,
        load_task,
        run_benchmark,
        summarize,
    )
    from llm_sparsity.targets import select_targets
    from research_systems_core.data import resolve_data_dir
    from research_systems_core.results import write_json
    from research_systems_core.validation import check_choice

    _setup_torch()
    try:
        method_list = _names(methods, "--methods")
        for m in method_list:
            check_choice("method", m, METHODS.names())
        task_list = _names(tasks, "--tasks")
        for t in task_list:
            check_choice("task", t, TASKS.names())
        grid = _floats(sparsities, "--sparsities") if sparsities is not None else default_sparsities(5)
        budget = Budget(steps=steps)
        family = infer_task(load_config(model))
        if family == "causal-lm":  # log-likelihood multiple choice / generation, as SMC-Bench scores them
            net, tokenizer = load_model(model, "causal-lm", device="cpu", dtype="fp32")
        else:  # encoders: the retrieval / cosine multiple-choice tasks on the base model
            net, tokenizer = load_pretrained(model)
        bundles = {}
        for t in task_list:
            try:
                bundles[t] = load_task(
                    t,
                    resolve_data_dir(data_dir),
                    tokenizer,
                    budget,
                    family=family,
                    n_train=n_train,
                    n_eval=n_eval,
                    **({} if family == "causal-lm" else {"model": model}),
                )
            except TaskUnavailable as exc:
                log.warning("skipping task %s: %s", t, exc)
        out.mkdir(parents=True, exist_ok=True)
        rows = run_benchmark(
            net,
            select_targets(net, "essential"),
            bundles,
            method_list,
            grid,
            [int(s) for s in _floats(seeds, "--seeds")],
            out / "results.jsonl",
            budget,
        )
    except (ValueError, OSError, KeyError) as exc:
        _fail(exc)
    summary = summarize(rows, out, tolerance)
    write_json(out / "summary.json", summary)
    typer.echo(f"first failing sparsity: {summary['first_failing_sparsity']}")


@app.command("smc-report")
def smc_report(
    results: Path = typer.Option(..., "--results", help="results.jsonl written by smc-bench."),
    out: Path = typer.Option(None, "--out", help="Output directory (default: next to the results)."),
    tolerance: float = typer.Option(
        0.01, "--tolerance", help="Accuracy drop below dense that counts as failing."
    ),
) -> None:
    """Summary table, first failing sparsity per method and task, and plots from a results file."""
    from llm_sparsity.smc_bench import summarize
    from research_systems_core.results import read_jsonl, write_json

    if not results.is_file():
        _fail(FileNotFoundError(f"results file {results} does not exist"))
    rows = read_jsonl(results)
    if not rows:
        _fail(ValueError(f"{results} holds no valid rows"))
    out = out or results.parent
    summary = summarize(rows, out, tolerance)
    write_json(out / "smc_report.json", summary)
    for t in summary["table"]:
        typer.echo(
            f"{t['task']:12s} {t['method']:12s} s={t['sparsity']:.3f} acc={t['accuracy']:.3f} (n={t['n_seeds']})"
        )
    typer.echo(f"first failing sparsity: {summary['first_failing_sparsity']}")


@app.command()
def reproduce(
    out: Path = typer.Option(Path("results/reproduce/llm-sparsity"), "--out", help="Output directory."),
    data_dir: str = typer.Option(
        None, "--data-dir", help="Data directory holding arithmetic/ (else $RESEARCH_DATA_DIR)."
    ),
    quick: bool = typer.Option(
        False, "--quick", help="Small run: the trained-head section only (< 3 minutes on one core)."
    ),
    full: bool = typer.Option(
        False,
        "--full",
        help="Larger run for a GPU/many cores: more problems, seeds and steps; the trained head fine-tuned.",
    ),
    sections: str = typer.Option(
        None,
        "--sections",
        help="Comma-separated: head (trained-head task + floors), retrieval (zero-shot retrieval, ISP, SMC). Default: head with --quick, both otherwise.",
    ),
    protocol: str = typer.Option(
        None,
        "--protocol",
        help="Trained-head protocol: probe (frozen pruned encoder, trained attention head) or finetune (encoder + head fine-tuned after pruning; default with --full).",
    ),
) -> None:
    """Reproduce the four papers at small scale on MiniLM and real word problems; summary.json last."""
    from dataclasses import replace

    from llm_sparsity.head_repro import HeadReproConfig
    from llm_sparsity.reproduce import SECTIONS, ReproConfig, run_reproduction
    from research_systems_core.data import resolve_data_dir
    from research_systems_core.validation import check_choice

    _setup_torch()
    try:
        if quick and full:
            raise ValueError("--quick and --full exclude each other; give one of them")
        chosen = _names(sections, "--sections") if sections is not None else None
        for name in chosen or []:
            check_choice("--sections entry", name, SECTIONS)
        cfg = ReproConfig.full() if full else (ReproConfig.quick() if quick else ReproConfig())
        hcfg = HeadReproConfig.full() if full else (HeadReproConfig.quick() if quick else HeadReproConfig())
        if protocol is not None:
            check_choice("--protocol", protocol, ("probe", "finetune"))
            hcfg = replace(hcfg, protocol=protocol)
        summary = run_reproduction(out, resolve_data_dir(data_dir, must_exist=True), quick=quick, config=cfg,
                                   sections=chosen, head_config=hcfg)  # fmt: skip
    except (ValueError, OSError, KeyError) as exc:
        _fail(exc)
    typer.echo(f"{summary['verdict']}: {summary['verdict_reason']}")
    typer.echo(f"results in {out}")
