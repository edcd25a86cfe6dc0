"""Plan, train (resumably) and store soup ingredients as safetensors.

Layout of a run directory::

    plan.json                       config, init mode, ingredient specs (checked on resume)
    init/ckpt-000000000.safetensors the shared initialisation (shared init only)
    ingredients/000/ckpt-*.safetensors + .json   one finished ingredient each (scores in the sidecar)
    progress/000/ckpt-*.safetensors an unfinished ingredient's last checkpoint (checkpoint_every > 0)

Each ingredient is written atomically the moment it finishes, so killing a run loses at most
the ingredients in flight; rerunning trains only the missing ones.
"""

from __future__ import annotations

import dataclasses
import logging
import pathlib
import shutil
from dataclasses import dataclass
from typing import Any

import torch

from gnn_soup.data import GraphData, as_graph_data
from gnn_soup.executors import Executor, IngredientTask, run_with_retries
from gnn_soup.samplers import SAMPLERS
from gnn_soup.training import LAYERWISE_SAMPLERS, IngredientResult, IngredientSpec, TrainConfig, initial_state
from research_systems_core.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from research_systems_core.logs import progress
from research_systems_core.results import read_json, write_json
from research_systems_core.validation import check_choice, check_int

log = logging.getLogger(__name__)

INIT_MODES = ("shared", "independent")


@dataclass
class IngredientPlan:
    """What to train: K ingredients, their samplers (cycled), seeds and the initialisation mode."""

    dataset: str
    config: TrainConfig
    specs: list[IngredientSpec]
    init: str = "shared"
    init_seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "config": dataclasses.asdict(self.config),
            "specs": [dataclasses.asdict(s) for s in self.specs],
            "init": self.init,
            "init_seed": self.init_seed,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> IngredientPlan:
        return cls(
            dataset=raw["dataset"],
            config=TrainConfig(**raw["config"]),
            specs=[IngredientSpec(**s) for s in raw["specs"]],
            init=raw["init"],
            init_seed=raw["init_seed"],
        )


def make_plan(
    dataset: str,
    num_ingredients: int,
    config: TrainConfig,
    samplers: list[str] | tuple[str, ...] = ("full",),
    sampler_kwargs: dict[str, dict[str, Any]] | None = None,
    init: str = "shared",
    seed: int = 0,
) -> IngredientPlan:
    """K ingredient specs: ingredient k uses ``samplers[k % len(samplers)]`` and seed ``seed * 1000 + k``."""
    check_int("num_ingredients", num_ingredients, minimum=1)
    check_int("seed", seed, minimum=0)
    check_choice("init", init, INIT_MODES)
    if not samplers:
        raise ValueError("samplers must name at least one sampler, got []")
    for name in samplers:
        check_choice("sampler", name, SAMPLERS.names())
        if name in LAYERWISE_SAMPLERS and config.model != "gcn":
            raise ValueError(f"sampler {name!r} is defined for model 'gcn', got model {config.model!r}")
    config.validate()
    sampler_kwargs = sampler_kwargs or {}
    specs = [
        IngredientSpec(
            index=k,
            seed=seed * 1000 + k,
            sampler=samplers[k % len(samplers)],
            sampler_kwargs=dict(sampler_kwargs.get(samplers[k % len(samplers)], {})),
        )
        for k in range(num_ingredients)
    ]
    return IngredientPlan(dataset=dataset, config=config, specs=specs, init=init, init_seed=seed)


class IngredientStore:
    """The run directory of one ingredient plan."""

    def __init__(self, root: str | pathlib.Path) -> None:
        self.root = pathlib.Path(root)

    def ingredient_dir(self, index: int) -> pathlib.Path:
        return self.root / "ingredients" / f"{index:03d}"

    def progress_dir(self, index: int) -> pathlib.Path:
        return self.root / "progress" / f"{index:03d}"

    def save_plan(self, plan: IngredientPlan) -> None:
        """Write the plan, or check it equals the stored one (a resumed run must not change it)."""
        path = self.root / "plan.json"
        if path.exists():
            stored = read_json(path)
            if stored != _jsonable(plan.to_dict()):
                raise ValueError(
                    f"{self.root} holds ingredients of a different plan (see {path}); "
                    "use another output directory or delete it"
                )
            return
        self.root.mkdir(parents=True, exist_ok=True)
        write_json(path, plan.to_dict())

    def load_plan(self) -> IngredientPlan:
        path = self.root / "plan.json"
        if not path.exists():
            raise FileNotFoundError(
                f"no ingredient plan in {self.root} (expected {path}); run train-ingredients"
            )
        return IngredientPlan.from_dict(read_json(path))

    def init_state(self, plan: IngredientPlan, data: GraphData) -> dict[str, torch.Tensor]:
        """The shared initial weights: loaded if stored, else created from ``init_seed`` and stored."""
        directory = self.root / "init"
        existing = latest_checkpoint(directory) if directory.exists() else None
        if existing is not None:
            tensors, _ = load_checkpoint(existing)
            return tensors
        state = initial_state(plan.config, data, plan.init_seed)
        save_checkpoint(directory, 0, state, {"init_seed": plan.init_seed})
        return state

    def finished(self) -> set[int]:
        done = set()
        base = self.root / "ingredients"
        if base.exists():
            for child in base.iterdir():
                if child.is_dir() and child.name.isdigit() and latest_checkpoint(child) is not None:
                    done.add(int(child.name))
        return done

    def save(self, result: IngredientResult) -> pathlib.Path:
        path = save_checkpoint(self.ingredient_dir(result.index), 0, result.state_dict, result.meta())
        shutil.rmtree(self.progress_dir(result.index), ignore_errors=True)
        return path

    def load(self, index: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        path = latest_checkpoint(self.ingredient_dir(index))
        if path is None:
            raise FileNotFoundError(f"ingredient {index} is not finished in {self.root}")
        return load_checkpoint(path)

    def load_all(self) -> tuple[list[dict[str, torch.Tensor]], list[dict[str, Any]]]:
        """Every finished ingredient in index order: (state dicts, metadata incl. val/test accuracy)."""
        states, metas = [], []
        for index in sorted(self.finished()):
            state, meta = self.load(index)
            states.append(state)
            metas.append(meta)
        return states, metas


def _jsonable(obj: Any) -> Any:
    import json

    return json.loads(json.dumps(obj))


def train_plan(
    plan: IngredientPlan,
    data: Any,
    executor: Executor,
    store: IngredientStore | None = None,
    max_retries: int = 1,
) -> list[IngredientResult | dict[str, Any]]:
    """Train every ingredient of ``plan`` not yet in ``store``; returns metadata of all of them.

    ``data`` is any graph :func:`~gnn_soup.data.as_graph_data` accepts (a :class:`GraphData`, a
    PyG ``Data`` or data set). Without a store nothing is written and full
    :class:`IngredientResult` objects are returned.
    """
    data = as_graph_data(data)
    if store is not None:
        store.save_plan(plan)
        init_state = store.init_state(plan, data) if plan.init == "shared" else None
        done = store.finished()
    else:
        init_state = initial_state(plan.config, data, plan.init_seed) if plan.init == "shared" else None
        done = set()
    todo = [
        IngredientTask(
            spec,
            plan.config,
            init_state,
            str(store.progress_dir(spec.index))
            if store is not None and plan.config.checkpoint_every
            else None,
        )
        for spec in plan.specs
        if spec.index not in done
    ]
    if done:
        log.info("resuming: %d of %d ingredients already trained", len(done), len(plan.specs))
    bar = progress(total=len(todo), desc="ingredients")

    def on_result(result: IngredientResult) -> None:
        if store is not None:
            store.save(result)
        bar.update(1)
        log.info(
            "ingredient %d: val %.4f test %.4f (%.1fs)",
            result.index,
            result.val_acc,
            result.test_acc,
            result.seconds,
        )

    try:
        results = run_with_retries(executor, data, todo, on_result, max_retries=max_retries)
    finally:
        bar.close()
    if store is None:
        return list(results)
    return [store.load(spec.index)[1] for spec in plan.specs]
