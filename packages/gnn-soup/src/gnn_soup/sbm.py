"""A large stochastic block model with class-dependent features, written straight to a graph store.

Kept compact so a million-node graph fits a shared machine: int32 CSR indices, float16 features
with few dimensions, int16 labels. Edges: each of ``num_edges`` undirected edges picks a uniform
source; with probability ``homophily`` its target is a uniform node of the same class, otherwise
a uniform node of any class (duplicates and loops are dropped, so a few fewer remain). Features:
a random class centre (unit normal, scaled by ``signal``) plus unit normal noise, so features
alone classify poorly and neighbourhood averaging (homophily) helps.
"""

from __future__ import annotations

import logging
import os
import pathlib

import numpy as np
import torch

from gnn_soup.csr import CSRGraph
from gnn_soup.data import GraphData, validate_graph
from gnn_soup.features import NodeFeatures
from gnn_soup.store import save_graph
from research_systems_core.validation import check_int, check_range

log = logging.getLogger(__name__)


def _sbm_edges(rng: np.random.Generator, y: np.ndarray, num_edges: int, homophily: float) -> np.ndarray:
    """Unique undirected loop-free edges as sorted keys ``u * N + v`` (u < v), int64."""
    n = y.size
    num_classes = int(y.max()) + 1
    by_class = np.argsort(y, kind="stable").astype(np.int32)
    offsets = np.concatenate([[0], np.cumsum(np.bincount(y, minlength=num_classes))])
    src = rng.integers(0, n, num_edges, dtype=np.int64)
    same = rng.random(num_edges) < homophily
    cls = y[src].astype(np.int64)
    sizes = offsets[cls + 1] - offsets[cls]
    within = by_class[offsets[cls] + (rng.random(num_edges) * sizes).astype(np.int64)]
    anywhere = rng.integers(0, n, num_edges, dtype=np.int64)
    dst = np.where(same, within, anywhere).astype(np.int64)
    del within, anywhere, same, cls, sizes
    keep = src != dst
    u, v = np.minimum(src, dst)[keep], np.maximum(src, dst)[keep]
    return _sorted_unique(u * n + v)


def _sorted_unique(keys: np.ndarray) -> np.ndarray:
    """``np.unique(keys)`` by an in-place sort and a neighbour comparison: the same sorted array,
    several times faster than NumPy >= 2.3's hash-based unique on ten million int64 keys."""
    keys.sort()
    if keys.size == 0:
        return keys
    keep = np.empty(keys.size, dtype=bool)
    keep[0] = True
    np.not_equal(keys[1:], keys[:-1], out=keep[1:])
    return keys[keep]


def _symmetric_csr(keys: np.ndarray, n: int) -> CSRGraph:
    u = (keys // n).astype(np.int32)
    v = (keys % n).astype(np.int32)
    rows = np.concatenate([u, v])
    cols = np.concatenate([v, u])
    del u, v
    order = np.argsort(rows, kind="stable")
    indices = cols[order]
    counts = np.bincount(rows, minlength=n)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return CSRGraph(torch.from_numpy(indptr), torch.from_numpy(np.ascontiguousarray(indices)), n)


def make_sbm_graph(
    num_nodes: int = 1_000_000,
    num_edges: int = 10_000_000,
    num_classes: int = 10,
    num_features: int = 16,
    homophily: float = 0.3,
    signal: float = 0.35,
    split: tuple[float, float, float] = (0.1, 0.05, 0.1),
    seed: int = 0,
) -> GraphData:
    """The SBM graph in memory (see the module docstring); ``split`` = train / val / test fractions."""
    check_int("num_nodes", num_nodes, minimum=num_classes * 10)
    check_int("num_edges", num_edges, minimum=1)
    check_int("num_classes", num_classes, minimum=2)
    check_int("num_features", num_features, minimum=1)
    check_range("homophily", homophily, 0.0, 1.0)
    if not (all(f > 0 for f in split) and sum(split) <= 1.0):
        raise ValueError(f"split fractions must be positive with a sum <= 1, got {split}")
    rng = np.random.default_rng(seed)
    y = rng.permutation(np.arange(num_nodes) % num_classes).astype(np.int64)
    graph = _symmetric_csr(_sbm_edges(rng, y, num_edges, homophily), num_nodes)
    centres = rng.standard_normal((num_classes, num_features)).astype(np.float32) * signal
    x = np.empty((num_nodes, num_features), dtype=np.float16)
    for start in range(0, num_nodes, 1 << 18):
        end = min(start + (1 << 18), num_nodes)
        noise = rng.standard_normal((end - start, num_features), dtype=np.float32)
        x[start:end] = centres[y[start:end]] + noise
    order = rng.permutation(num_nodes)
    cuts = np.cumsum([int(f * num_nodes) for f in split])
    masks = []
    for lo, hi in zip([0, *cuts[:-1]], cuts, strict=True):
        mask = np.zeros(num_nodes, dtype=bool)
        mask[order[lo:hi]] = True
        masks.append(torch.from_numpy(mask))
    data = GraphData(
        name=f"sbm-{num_nodes}",
        features=NodeFeatures(torch.from_numpy(x), sparse=False),
        graph=graph,
        y=torch.from_numpy(y),
        train_mask=masks[0],
        val_mask=masks[1],
        test_mask=masks[2],
        num_classes=num_classes,
    )
    return validate_graph(data)


def write_sbm_store(directory: str | os.PathLike, overwrite: bool = False, **kwargs) -> pathlib.Path:
    """Generate the SBM graph and write it as a memory-mappable store (skipped if it exists)."""
    directory = pathlib.Path(directory)
    if (directory / "meta.json").is_file() and not overwrite:
        log.info("SBM store %s exists: reusing it", directory)
        return directory
    data = make_sbm_graph(**kwargs)
    log.info("SBM graph: %s", data.summary())
    return save_graph(data, directory, overwrite=overwrite)
