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
import gnn_soup.training  # noqa: E402, F401
import research_systems_core.checkpoint  # noqa: E402
import research_systems_core.optim_state  # noqa: E402
import research_systems_core.precision  # noqa: E402
import research_systems_core.torch_utils  # noqa: E402, F401

gc.collect()
gc.freeze()
