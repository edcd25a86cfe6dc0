"""Run ingredient training sequentially, in local worker processes, or on a Ray cluster.

Ingredients never communicate (the paper's point): each task carries its spec, the shared
config and (for a shared initialisation) the initial weights. The graph itself is never pickled
into workers: it is written once as memory-mapped ``.npy`` files (:mod:`gnn_soup.store`; a graph
opened from a store is used in place) and every worker maps the same pages; partitions, samples
and propagated features are computed inside the workers. Devices: ``auto`` gives each worker
its own GPU when there are several (worker ``i`` -> ``cuda:i % n``), else CPU.

Results stream back as they finish so the caller can save each one at once; a failed ingredient
is retried ``max_retries`` times and then reported in :class:`IngredientFailure`, never dropped.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pathlib
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

import torch

from gnn_soup.data import GraphData
from gnn_soup.store import open_graph, shared_graph_dir
from gnn_soup.training import IngredientResult, IngredientSpec, TrainConfig, TrainingContext, train_ingredient
from research_systems_core.registry import Registry
from research_systems_core.validation import check_int

log = logging.getLogger(__name__)

EXECUTORS = Registry("executor")


@dataclass
class IngredientTask:
    spec: IngredientSpec
    config: TrainConfig
    init_state: dict[str, torch.Tensor] | None = None
    progress_dir: str | None = None  # mid-ingredient checkpoints (config.checkpoint_every > 0)


class IngredientFailure(RuntimeError):
    """Some ingredients failed after all retries; ``failures`` maps ingredient index to the error."""

    def __init__(self, failures: dict[int, str]) -> None:
        self.failures = failures
        lines = "; ".join(f"ingredient {i}: {msg}" for i, msg in sorted(failures.items()))
        super().__init__(f"{len(failures)} ingredient(s) failed after retries: {lines}")


TaskFn = Callable[[TrainingContext, IngredientTask], IngredientResult]


def run_task(context: TrainingContext, task: IngredientTask) -> IngredientResult:
    return train_ingredient(context, task.spec, task.config, task.init_state, task.progress_dir)


def worker_devices(device: str, workers: int) -> list[str]:
    """The device of each worker: ``auto`` spreads workers over the GPUs (one each while there
    are enough), else CPU; an explicit device is checked and used by all."""
    from research_systems_core.torch_utils import resolve_device

    if device == "auto":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count:
            return [f"cuda:{i % count}" for i in range(workers)]
        return [str(resolve_device("auto"))] * workers
    return [str(resolve_device(device))] * workers


class Executor:
    """Runs a batch of tasks and yields ``(task position, result or exception)`` as they finish."""

    name = "base"

    def __init__(self, task_fn: TaskFn = run_task, device: str = "cpu", precision: str = "fp32") -> None:
        from research_systems_core.precision import check_precision

        self.task_fn = task_fn
        self.device = device
        self.precision = check_precision(precision)
        worker_devices(device, 1)  # fail early on an unavailable device

    def map(self, data: GraphData, tasks: list[IngredientTask]) -> Iterator[tuple[int, object]]:
        raise NotImplementedError

    def close(self) -> None:
        """Release workers (process pools, Ray connections) held between calls."""


@EXECUTORS.register("sequential")
class SequentialExecutor(Executor):
    """Everything in this process, one ingredient after the other (the reference for equality tests)."""

    name = "sequential"

    def map(self, data, tasks):
        context = TrainingContext(data, worker_devices(self.device, 1)[0], self.precision)
        for position, task in enumerate(tasks):
            try:
                yield position, self.task_fn(context, task)
            except Exception as exc:  # reported to the retry loop, never swallowed
                yield position, exc


_WORKER_CONTEXT: TrainingContext | None = None


def _init_worker(graph_dir: str, devices: list[str], counter, precision: str) -> None:
    """Map the shared graph (nothing is copied) and pick this worker's device."""
    global _WORKER_CONTEXT
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
    with counter.get_lock():
        slot = counter.value
        counter.value += 1
    device = devices[slot % len(devices)]
    if device.startswith("cuda"):
        torch.cuda.set_device(torch.device(device))
    _WORKER_CONTEXT = TrainingContext(open_graph(graph_dir), device, precision)


def _worker_run(task_fn: TaskFn, task: IngredientTask) -> IngredientResult:
    assert _WORKER_CONTEXT is not None, "worker not initialised"
    return task_fn(_WORKER_CONTEXT, task)


def _worker_ready(hold_s: float = 0.0) -> int:
    if hold_s > 0:  # keep this worker busy so that the pool starts another one for the next task
        time.sleep(hold_s)
    return os.getpid()


START_METHODS = ("auto", "forkserver", "spawn")
PRELOAD_MODULE = "gnn_soup._worker_preload"


def resolve_start_method(start_method: str) -> str:
    """``auto``: ``forkserver`` where the platform has it (Linux, macOS), else ``spawn``."""
    from research_systems_core.validation import check_choice

    check_choice("start_method", start_method, START_METHODS)
    if start_method == "auto":
        return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    if start_method not in multiprocessing.get_all_start_methods():
        raise ValueError(
            f"start_method {start_method!r} is not available on this platform; "
            f"available: {multiprocessing.get_all_start_methods()}"
        )
    return start_method


def _pool_context(start_method: str):
    context = multiprocessing.get_context(start_method)
    if start_method == "forkserver":
        # takes effect when the forkserver starts (once per parent process; later calls keep it)
        context.set_forkserver_preload([PRELOAD_MODULE])
    return context


@EXECUTORS.register("process")
class ProcessExecutor(Executor):
    """A pool of ``workers`` local processes (one torch thread each) on this machine.

    ``start_method="auto"`` forks workers from a forkserver that has already imported torch,
    torch_geometric and gnn_soup (:mod:`gnn_soup._worker_preload`): the runtime's pages are
    shared copy-on-write by all workers instead of each worker importing torch again
    (``spawn``, the fallback where there is no forkserver). The pool is kept between
    :meth:`map` calls (and can be started early with :meth:`warm_up`); a crashed worker breaks
    the pool, its unfinished tasks come back as errors and the next call starts a fresh pool.
    """

    name = "process"

    def __init__(
        self,
        workers: int = 2,
        task_fn: TaskFn = run_task,
        device: str = "cpu",
        precision: str = "fp32",
        scratch_dir: str | None = None,
        start_method: str = "auto",
    ) -> None:
        super().__init__(task_fn, device, precision)
        self.workers = check_int("workers", workers, minimum=1)
        self.start_method = resolve_start_method(start_method)
        self.scratch_dir = scratch_dir
        self._pool: ProcessPoolExecutor | None = None
        self._pool_data_id: int | None = None
        self._graph_dir: pathlib.Path | None = None
        self._created_dir = False

    def _ensure_pool(self, data: GraphData) -> ProcessPoolExecutor:
        if self._pool is not None and self._pool_data_id != id(data):
            self.close()
        if self._pool is None:
            self._graph_dir, self._created_dir = shared_graph_dir(data, self.scratch_dir)
            context = _pool_context(self.start_method)
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=context,
                initializer=_init_worker,
                initargs=(
                    str(self._graph_dir),
                    worker_devices(self.device, self.workers),
                    context.Value("i", 0),
                    self.precision,
                ),
            )
            self._pool_data_id = id(data)
        return self._pool

    def worker_pids(self) -> list[int]:
        """Process ids of the running workers (for memory measurements)."""
        return [] if self._pool is None else list(self._pool._processes)

    def server_pids(self) -> list[int]:
        """The forkserver the workers were forked from (it holds the shared runtime pages), if any."""
        import psutil

        parents = set()
        for pid in self.worker_pids():
            try:
                parents.add(psutil.Process(pid).ppid())
            except psutil.Error:
                continue
        return sorted(parents - {os.getpid()})

    def pool_pids(self) -> list[int]:
        """Workers and their forkserver: the processes whose summed PSS is the pool's memory."""
        return self.server_pids() + self.worker_pids()

    def warm_up(self, data: GraphData) -> None:
        """Start every worker and load the data there before timing anything."""
        pool = self._ensure_pool(data)
        for _ in range(50):  # the pool starts a worker only when no started one is idle
            for future in [pool.submit(_worker_ready, 0.2) for _ in range(self.workers)]:
                future.result()
            if len(self.worker_pids()) >= self.workers:
                return
        raise RuntimeError(f"the process pool started {len(self.worker_pids())} of {self.workers} workers")

    def map(self, data, tasks):
        pool = self._ensure_pool(data)
        futures: dict[Future, int] = {}
        try:
            for position, task in enumerate(tasks):
                futures[pool.submit(_worker_run, self.task_fn, task)] = position
        except BrokenProcessPool as exc:
            self.close()
            for position in range(len(futures), len(tasks)):
                yield position, exc
        pending = set(futures)
        broken = False
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                exc = future.exception()
                if isinstance(exc, BrokenProcessPool):
                    broken = True
                yield futures[future], exc if exc is not None else future.result()
        if broken:
            self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
            self._pool_data_id = None
        if self._created_dir and self._graph_dir is not None:
            shutil.rmtree(self._graph_dir.parent, ignore_errors=True)
        self._graph_dir, self._created_dir = None, False


@EXECUTORS.register("ray")
class RayExecutor(Executor):
    """Ingredients as Ray tasks (one CPU each): a running cluster at ``address``, or a local
    single-node cluster with ``num_cpus`` started on demand (Ray >= 2.4x dropped ``local_mode``).

    A local cluster maps the shared graph files like the process pool; a remote one gets the
    data set through Ray's object store once. Workers run this interpreter
    (``runtime_env={"py_executable": sys.executable}``) and Ray's ``uv run`` hook is switched off
    (``RAY_ENABLE_UV_RUN_RUNTIME_ENV=0``): under ``uv run`` the hook would rebuild the workspace
    environment for the workers without the ``ray`` extra and hang. Ray's own task retries are
    off: failures come back to :func:`run_with_retries` like those of the other executors.
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        num_cpus: int | None = None,
        task_fn: TaskFn = run_task,
        device: str = "cpu",
        precision: str = "fp32",
    ) -> None:
        super().__init__(task_fn, device, precision)
        disable_ray_uv_hook()
        try:
            import ray  # noqa: F401
        except ImportError:
            raise ImportError("the Ray executor needs the 'ray' extra: pip install 'gnn-soup[ray]'") from None
        self.address = address
        self.num_cpus = num_cpus
        self._started = False
        self._graph_dir: pathlib.Path | None = None
        self._created_dir = False

    def _ensure_ray(self):
        import ray

        disable_ray_uv_hook()
        if not ray.is_initialized():
            kwargs = {
                "include_dashboard": False,
                "log_to_driver": False,
                "configure_logging": False,
                "runtime_env": ray_runtime_env(),
            }
            if self.address:
                ray.init(address=self.address, **kwargs)
            else:
                ray.init(num_cpus=self.num_cpus, **kwargs)
            self._started = True
        return ray

    def map(self, data, tasks):
        ray = self._ensure_ray()
        gpus = (
            1
            if self.device.startswith("cuda") or (self.device == "auto" and torch.cuda.is_available())
            else 0
        )
        remote = ray.remote(num_cpus=1, num_gpus=gpus, max_retries=0)(_ray_run)
        if self.address is None:  # local cluster: map the same files as the process pool
            if self._graph_dir is None:
                self._graph_dir, self._created_dir = shared_graph_dir(data)
            source: object = str(self._graph_dir)
        else:
            source = ray.put(data)
        device = "cuda" if gpus else "cpu"  # Ray sets CUDA_VISIBLE_DEVICES to the task's GPU
        refs = {
            remote.remote(self.task_fn, source, task, device, self.precision): position
            for position, task in enumerate(tasks)
        }
        pending = list(refs)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                try:
                    yield refs[ref], ray.get(ref)
                except Exception as exc:
                    yield refs[ref], exc

    def close(self) -> None:
        if self._started:
            import ray

            ray.shutdown()
            self._started = False
        if self._created_dir and self._graph_dir is not None:
            shutil.rmtree(self._graph_dir.parent, ignore_errors=True)
        self._graph_dir, self._created_dir = None, False


def disable_ray_uv_hook() -> None:
    """Keep Ray from re-running ``uv run`` for its workers (they use this interpreter instead)."""
    os.environ["RAY_ENABLE_UV_RUN_RUNTIME_ENV"] = "0"
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:  # ray already imported: its constant was read at import time
        constants.RAY_ENABLE_UV_RUN_RUNTIME_ENV = False


def ray_runtime_env() -> dict[str, object]:
    """Workers run the driver's interpreter, one torch thread, without the uv hook."""
    return {
        "py_executable": sys.executable,
        "env_vars": {"RAY_ENABLE_UV_RUN_RUNTIME_ENV": "0", "OMP_NUM_THREADS": "1"},
    }


_RAY_CONTEXTS: dict[object, TrainingContext] = {}


def _ray_run(
    task_fn: TaskFn, source: object, task: IngredientTask, device: str, precision: str
) -> IngredientResult:
    torch.set_num_threads(1)
    key = source if isinstance(source, str) else id(source)
    if key not in _RAY_CONTEXTS:
        _RAY_CONTEXTS.clear()
        data = open_graph(source) if isinstance(source, str) else source
        _RAY_CONTEXTS[key] = TrainingContext(data, device, precision)
    return task_fn(_RAY_CONTEXTS[key], task)


def create_executor(
    name: str,
    workers: int = 2,
    ray_address: str | None = None,
    device: str = "cpu",
    precision: str = "fp32",
    **kwargs,
) -> Executor:
    """``sequential``, ``process`` (``workers`` local processes) or ``ray`` (``ray_address`` or local)."""
    from research_systems_core.validation import check_choice

    check_choice("executor", name, EXECUTORS.names())
    check_int("workers", workers, minimum=1)
    if name == "process":
        return ProcessExecutor(workers=workers, device=device, precision=precision, **kwargs)
    if name == "ray":
        return RayExecutor(
            address=ray_address,
            num_cpus=workers if not ray_address else None,
            device=device,
            precision=precision,
            **kwargs,
        )
    return SequentialExecutor(device=device, precision=precision, **kwargs)


def run_with_retries(
    executor: Executor,
    data: GraphData,
    tasks: list[IngredientTask],
    on_result: Callable[[IngredientResult], None],
    max_retries: int = 1,
) -> list[IngredientResult]:
    """Run ``tasks``; ``on_result`` sees each result as it arrives (save it there).

    Failed tasks are re-run up to ``max_retries`` times; what still fails raises
    :class:`IngredientFailure` after all other tasks finished and were handed to ``on_result``.
    """
    check_int("max_retries", max_retries, minimum=0)
    results: dict[int, IngredientResult] = {}
    remaining = list(tasks)
    errors: dict[int, str] = {}
    for attempt in range(max_retries + 1):
        if not remaining:
            break
        failed: list[IngredientTask] = []
        for position, outcome in executor.map(data, remaining):
            task = remaining[position]
            if isinstance(outcome, BaseException):
                errors[task.spec.index] = f"{type(outcome).__name__}: {outcome}"
                log.warning(
                    "ingredient %d failed (attempt %d of %d): %s",
                    task.spec.index,
                    attempt + 1,
                    max_retries + 1,
                    errors[task.spec.index],
                )
                failed.append(task)
            else:
                errors.pop(task.spec.index, None)
                results[task.spec.index] = outcome
                on_result(outcome)
        remaining = failed
    if remaining:
        raise IngredientFailure({t.spec.index: errors[t.spec.index] for t in remaining})
    return [results[t.spec.index] for t in tasks]
