import pytest
import torch

from gnn_soup.executors import (
    IngredientFailure,
    ProcessExecutor,
    SequentialExecutor,
    create_executor,
    run_task,
)
from gnn_soup.ingredients import IngredientStore, make_plan, train_plan
from gnn_soup.training import TrainConfig, TrainingContext, train_ingredient

CONFIG = TrainConfig(hidden_dim=8, steps=12, eval_every=4)
KWARGS = {
    "neighbor": {"batch_size": 8, "fanouts": [4, 4]},
    "saint_rw": {"num_roots": 30, "sample_coverage": 3},
    "cluster": {"num_parts": 4},
}


def _plan(k=3, init="shared", samplers=("full", "neighbor", "saint_rw")):
    return make_plan(
        "synthetic", k, CONFIG, samplers=list(samplers), sampler_kwargs=KWARGS, init=init, seed=2
    )


def test_training_learns_and_is_repeatable(graph) -> None:
    config = TrainConfig(hidden_dim=16, steps=60, eval_every=10)
    plan = make_plan("synthetic", 1, config, seed=0)
    context = TrainingContext(graph)
    first = train_ingredient(context, plan.specs[0], config)
    second = train_ingredient(context, plan.specs[0], config)
    assert first.val_acc > 0.6  # 3 balanced classes: chance is 1/3
    assert all(torch.equal(first.state_dict[k], second.state_dict[k]) for k in first.state_dict)
    assert first.best_step in [h["step"] for h in first.history]


def test_shared_init_starts_every_ingredient_from_the_same_weights(graph) -> None:
    config = TrainConfig(hidden_dim=8, steps=1, eval_every=1, lr=1e-9, weight_decay=0.0, select="last")
    shared = train_plan(make_plan("synthetic", 2, config, init="shared", seed=0), graph, SequentialExecutor())
    indep = train_plan(
        make_plan("synthetic", 2, config, init="independent", seed=0), graph, SequentialExecutor()
    )
    key = "convs.0.lin.weight"
    assert torch.allclose(shared[0].state_dict[key], shared[1].state_dict[key], atol=1e-6)
    assert not torch.allclose(indep[0].state_dict[key], indep[1].state_dict[key], atol=1e-3)


@pytest.mark.parametrize("sampler", ["cluster", "saint_node", "saint_edge"])
def test_other_samplers_train(graph, sampler) -> None:
    kwargs = {"saint_node": {"budget": 80}, "saint_edge": {"budget": 60}, "cluster": {"num_parts": 4}}
    plan = make_plan("synthetic", 1, CONFIG, samplers=[sampler], sampler_kwargs=kwargs, seed=0)
    (result,) = train_plan(plan, graph, SequentialExecutor())
    assert 0.0 <= result.val_acc <= 1.0 and result.best_step > 0


def test_process_and_ray_executors_match_sequential(graph) -> None:
    plan = _plan()
    reference = train_plan(plan, graph, SequentialExecutor())
    runners = [ProcessExecutor(workers=2)]
    try:
        import ray  # noqa: F401

        runners.append(create_executor("ray", workers=1))
    except ImportError:  # the ray extra is optional
        pass
    for runner in runners:
        try:
            results = train_plan(plan, graph, runner)
        finally:
            runner.close()
        for ref, got in zip(reference, results, strict=True):
            assert got.index == ref.index
            assert got.val_acc == ref.val_acc and got.test_acc == ref.test_acc, runner.name
            for key, value in ref.state_dict.items():
                assert torch.equal(value, got.state_dict[key]), (runner.name, key)


def test_failed_ingredient_is_retried_then_reported(graph) -> None:
    calls: dict[int, int] = {}

    def flaky(context, task):
        calls[task.spec.index] = calls.get(task.spec.index, 0) + 1
        if task.spec.index == 1 and calls[1] == 1:
            raise RuntimeError("transient")
        if task.spec.index == 2:
            raise RuntimeError("always broken")
        return run_task(context, task)

    saved = []
    store_plan = _plan(samplers=("full",))
    with pytest.raises(IngredientFailure, match="ingredient 2: RuntimeError: always broken") as info:
        from gnn_soup.executors import IngredientTask, run_with_retries

        tasks = [IngredientTask(s, CONFIG) for s in store_plan.specs]
        run_with_retries(SequentialExecutor(task_fn=flaky), graph, tasks, saved.append, max_retries=2)
    assert info.value.failures.keys() == {2}
    assert sorted(r.index for r in saved) == [0, 1]  # finished ones were handed over, never dropped
    assert calls == {0: 1, 1: 2, 2: 3}


def test_rerun_resumes_with_only_the_missing_ingredients(graph, tmp_path) -> None:
    plan = _plan(k=3, samplers=("full",))
    store = IngredientStore(tmp_path / "run")
    first = train_plan(plan, graph, SequentialExecutor(), store)
    assert store.finished() == {0, 1, 2}
    # simulate a run killed before ingredient 1 was written
    for f in store.ingredient_dir(1).iterdir():
        f.unlink()
    trained = []

    def counting(context, task):
        trained.append(task.spec.index)
        return run_task(context, task)

    second = train_plan(plan, graph, SequentialExecutor(task_fn=counting), store)
    assert trained == [1]
    assert [m["val_acc"] for m in second] == [m["val_acc"] for m in first]
    # a different plan in the same directory is refused
    with pytest.raises(ValueError, match="different plan"):
        train_plan(_plan(k=4, samplers=("full",)), graph, SequentialExecutor(), store)


def test_plan_bad_input() -> None:
    with pytest.raises(ValueError, match="num_ingredients must be >= 1, got 0"):
        make_plan("synthetic", 0, CONFIG)
    with pytest.raises(ValueError, match="init"):
        make_plan("synthetic", 2, CONFIG, init="random")
    with pytest.raises(ValueError, match="model"):
        TrainConfig(model="mlp").validate()
    with pytest.raises(ValueError, match="executor"):
        create_executor("dask")
