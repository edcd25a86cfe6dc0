"""Issue 23: generated bad input for every option and the public API -> one clear error, never a crash.

``FUZZ_EXAMPLES`` sets the number of examples per property (default 10; ``nox -s fuzz`` uses more).
"""

import math
import os

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from gnn_soup.cli import app
from gnn_soup.data import build_graph_data
from gnn_soup.ingredients import make_plan
from gnn_soup.samplers import create_sampler
from gnn_soup.training import TrainConfig

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "10"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))
runner = CliRunner()

bad_ints = st.integers(max_value=0)
bad_probability = st.one_of(st.floats(max_value=-1e-9), st.floats(min_value=1.0), st.just(math.nan))
names = st.text(alphabet="abcdefghijklmnopqrstuvwxyz_-:0123456789", min_size=1, max_size=12)

# option -> (strategy of bad values, text the error must name)
TRAIN_OPTIONS = {
    "-k": (bad_ints, "num_ingredients"),
    "--steps": (bad_ints, "steps"),
    "--hidden": (bad_ints, "hidden_dim"),
    "--layers": (bad_ints, "num_layers"),
    "--dropout": (bad_probability, "dropout"),
    "--lr": (st.one_of(st.floats(max_value=0.0), st.just(math.nan)), "lr"),
    "--weight-decay": (st.floats(max_value=-1e-9), "weight_decay"),
    "--eval-every": (bad_ints, "eval_every"),
    "--eval-nodes": (st.integers(max_value=-1), "eval_nodes"),
    "--checkpoint-every": (st.integers(max_value=-1), "checkpoint_every"),
    "--eval-method": (names.filter(lambda s: s not in ("auto", "full", "layerwise")), "eval_method"),
    "--model": (names.filter(lambda s: s not in ("gcn", "sage", "gat", "sgc", "sign")), "model"),
    "--sampler": (
        names.filter(
            lambda s: s not in ("full", "cluster", "neighbor", "fastgcn") and not s.startswith("saint")
        ),
        "sampler",
    ),
    "--init": (names.filter(lambda s: s not in ("shared", "independent")), "init"),
    "--executor": (names.filter(lambda s: s not in ("process", "ray", "sequential")), "executor"),
    "--workers": (bad_ints, "workers"),
    "--device": (
        names.filter(lambda s: s not in ("cpu", "auto", "cuda", "mps") and not s.startswith("cuda")),
        "device",
    ),
    "--precision": (names.filter(lambda s: s not in ("fp32", "bf16", "fp16")), "precision"),
    "--dataset": (
        names.filter(lambda s: s not in ("synthetic",) and ":" not in s and not s.startswith("ogbn-")),
        "dataset",
    ),
    "--sampler-option": (names.filter(lambda s: "=" not in s or "." not in s), "sampler option"),
    "--max-retries": (st.integers(max_value=-1), "max_retries"),
    "--seed": (st.integers(max_value=-1), "seed"),
}


def _assert_clear_error(result, name: str) -> None:
    assert result.exit_code == 2, (result.exit_code, result.output, repr(result.exception))
    assert "Traceback" not in result.output
    text = result.output.lower().replace("-", "_")
    assert name.lower().replace("-", "_") in text, result.output


@FUZZ
@given(data=st.data(), option=st.sampled_from(sorted(TRAIN_OPTIONS)))
def test_train_ingredients_rejects_every_bad_option(tmp_path_factory, data, option) -> None:
    strategy, name = TRAIN_OPTIONS[option]
    value = data.draw(strategy)
    out = tmp_path_factory.mktemp("run")
    args = ["train-ingredients", "--out", str(out), "--dataset", "synthetic", "--executor", "sequential"]
    result = runner.invoke(app, [*args, option, str(value)])
    _assert_clear_error(result, name)
    assert not (out / "ingredients").exists()  # rejected before any training


@FUZZ
@given(
    grid=st.integers(max_value=1),
    device=names.filter(lambda s: s not in ("cpu", "auto") and not s.startswith("cuda")),
)
def test_soup_rejects_bad_options(tmp_path_factory, grid, device) -> None:
    run = tmp_path_factory.mktemp("soup")
    _assert_clear_error(runner.invoke(app, ["soup", "--run", str(run), "--grid", str(grid)]), "grid")
    _assert_clear_error(runner.invoke(app, ["soup", "--run", str(run), "--device", device]), "device")
    _assert_clear_error(runner.invoke(app, ["soup", "--run", str(run / "missing")]), "plan")


@FUZZ
@given(content=st.binary(max_size=64), kind=st.sampled_from(["edges", "features", "labels"]))
def test_corrupt_edge_list_files_are_clear_errors(tmp_path_factory, content, kind) -> None:
    folder = tmp_path_factory.mktemp("files")
    np.save(folder / "edges.npy", np.array([[0, 1], [1, 2]]))
    np.save(folder / "features.npy", np.ones((3, 2)))
    np.save(folder / "labels.npy", np.array([0, 1, 0]))
    (folder / f"{kind}.txt").write_bytes(content)
    paths = {k: folder / f"{k}.npy" for k in ("edges", "features", "labels")}
    paths[kind] = folder / f"{kind}.txt"
    args = ["train-ingredients", "--out", str(folder / "run"), "--executor", "sequential", "--steps", "1"]
    for k, p in paths.items():
        args += [f"--{k}", str(p)]
    result = runner.invoke(app, args)
    assert result.exit_code in (0, 2), (result.output, repr(result.exception))
    if result.exit_code == 2:
        assert "error:" in result.output and "Traceback" not in result.output


@FUZZ
@given(
    x=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), min_size=0, max_size=12),
    edges=st.lists(st.integers(min_value=-3, max_value=8), max_size=8),
    labels=st.lists(st.integers(min_value=-2, max_value=4), max_size=6),
)
def test_build_graph_data_rejects_or_accepts_cleanly(x, edges, labels) -> None:
    n = max(1, len(x) // 2)
    features = torch.tensor(x[: 2 * n] + [0.0] * max(0, 2 * n - len(x)), dtype=torch.float32).view(n, 2)
    edge_index = torch.tensor(edges[: len(edges) // 2 * 2], dtype=torch.long).view(2, -1)
    y = torch.tensor(labels or [0])
    try:
        data = build_graph_data("fuzz", features, edge_index, y, num_classes=3, split_seed=0)
    except (ValueError, TypeError) as exc:
        assert str(exc)
    else:
        assert bool(torch.isfinite(data.features.to_dense()).all())
        assert int(data.graph.indices.max(initial=0) if data.graph.num_edges else 0) < data.num_nodes


@FUZZ
@given(
    field=st.sampled_from(["hidden_dim", "num_layers", "steps", "eval_every", "heads", "chunk_size"]),
    value=st.one_of(st.integers(max_value=0), st.floats(allow_nan=True), st.text(max_size=3), st.none()),
)
def test_train_config_names_the_bad_field(field, value) -> None:
    try:
        TrainConfig(**{field: value}).validate()
    except (ValueError, TypeError) as exc:
        assert field in str(exc)
    else:
        raise AssertionError(f"{field}={value!r} was accepted")


@FUZZ
@given(
    sampler=st.sampled_from(["neighbor", "saint_rw", "saint_edge", "saint_node", "cluster", "fastgcn"]),
    key=st.sampled_from(["batch_size", "num_roots", "budget", "num_parts", "layer_size", "walk_length"]),
    value=st.integers(min_value=-5, max_value=0),
)
def test_sampler_options_are_checked(graph, sampler, key, value) -> None:
    try:
        create_sampler(sampler, graph.graph, graph.train_mask, seed=0, **{key: value})
    except (ValueError, TypeError) as exc:
        assert key in str(exc) or "unexpected keyword" in str(exc) or "num_parts" in str(exc)
    else:
        assert key == "walk_length" and value == 0  # a walk of length 0 is allowed (roots only)


@FUZZ
@given(k=st.integers(max_value=0), seed=st.integers(max_value=-1))
def test_make_plan_rejects_bad_counts(k, seed) -> None:
    for kwargs, name in (
        ({"num_ingredients": k}, "num_ingredients"),
        ({"num_ingredients": 1, "seed": seed}, "seed"),
    ):
        try:
            make_plan("synthetic", config=TrainConfig(), **kwargs)
        except ValueError as exc:
            assert name in str(exc)
        else:
            raise AssertionError(f"{kwargs} accepted")
