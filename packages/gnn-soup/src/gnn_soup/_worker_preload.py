"""Imported once by the forkserver that starts the process pool's workers (never by users).

Workers are forked from the forkserver after this module ran, so the interpreter, torch,
torch_geometric and gnn_soup are loaded once and their pages are shared copy-on-write by every
worker instead of being imported again by each (about 470 MiB of private memory per spawned
worker). The forkserver is a fresh single-threaded interpreter (started like a spawned process),
so forking it is safe, unlike forking a parent whose torch thread pools already run. One torch
thread per worker; ``gc.freeze()`` moves everything imported here out of the garbage collector's
reach, so collections in the workers do not touch (and copy) these pages.
"""

from __future__ import annotations

import atexit
import gc
import os

os.environ["OMP_NUM_THREADS"] = "1"

import torch

torch.set_num_threads(1)

import torch_geometric  # noqa: E402, F401

import gnn_soup.executors  # noqa: E402
import gnn_soup.inference  # noqa: E402
import gnn_soup.ingredients  # noqa: E402
import gnn_soup.samplers  # noqa: E402
import gnn_soup.store  # noqa: E402
import gnn_soup.training  # noqa: E402
import research_systems_core.checkpoint  # noqa: E402
import research_systems_core.optim_state  # noqa: E402
import research_systems_core.precision  # noqa: E402
import research_systems_core.torch_utils  # noqa: E402, F401


def _warm_up_cpu_kernels() -> None:
    """One tiny GCN training step on the CPU, so that lazily initialised runtime state (kernel
    dispatch, autograd, optimiser code paths) is created here and shared by every worker
    instead of being built privately in each. Skipped where a GPU may be visible: anything that
    could initialise CUDA must not happen before fork."""
    if torch.version.cuda is not None and (
        os.path.exists("/dev/nvidiactl") or os.environ.get("CUDA_VISIBLE_DEVICES")
    ):
        return
    from gnn_soup.models import create_model

    graph = gnn_soup.store.CSRGraph(torch.tensor([0, 1, 2]), torch.tensor([1, 0], dtype=torch.int32), 2)
    model = create_model("gcn", in_dim=4, out_dim=2, hidden_dim=8)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for structure in (model.prepare_graph(graph), model.prepare(graph.edge_index(), 2)):
        loss = model(torch.randn(2, 4), structure).sum()
        loss.backward()
        optimizer.step()


def _return_freed_memory() -> None:
    """glibc: allocations of 1 MiB and more get their own mapping, unmapped when freed, instead
    of the default threshold that grows up to 32 MiB and keeps freed tensors in a worker's heap."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = libc.mallopt if libc is not None else None
    except (OSError, AttributeError):  # not glibc (macOS, musl): keep the allocator's defaults
        return
    if mallopt is not None:
        mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD
        mallopt(-1, 1 << 22)  # M_TRIM_THRESHOLD


if os.environ.get("GNN_SOUP_PRELOAD_MALLOPT", "1") != "0":
    _return_freed_memory()
if os.environ.get("GNN_SOUP_PRELOAD_WARMUP", "1") != "0":
    _warm_up_cpu_kernels()
gc.collect()
gc.freeze()
# collectable again at exit, so extension modules (triton's nanobind) do not report leaks
atexit.register(gc.unfreeze)
