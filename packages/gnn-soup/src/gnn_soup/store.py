"""A graph as a folder of ``.npy`` files that worker processes memory-map instead of unpickling.

Every worker that opens the folder maps the same pages of the page cache: the graph is in memory
once however many ingredients train at the same time (resident set size counts the shared pages
in every process; proportional set size, PSS, splits them). Layout::

    meta.json               name, num_nodes, num_classes, feature layout, dtypes (written last)
    indptr.npy indices.npy  the symmetric CSR (indices int32 when the graph allows)
    x.npy | x_crow.npy x_col.npy x_values.npy   dense or CSR node features (dtype kept)
    y.npy train_mask.npy val_mask.npy test_mask.npy

The folder is written under a temporary name and renamed, so a half-written store is never opened.
"""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import tempfile
import warnings

import numpy as np
import torch

from gnn_soup.csr import CSRGraph
from gnn_soup.data import GraphData, validate_graph
from gnn_soup.features import NodeFeatures

FORMAT = "gnn-soup-graph-v1"


def _save(directory: pathlib.Path, name: str, tensor: torch.Tensor) -> None:
    np.save(directory / f"{name}.npy", tensor.detach().cpu().contiguous().numpy(), allow_pickle=False)


def save_graph(data: GraphData, directory: str | os.PathLike, overwrite: bool = False) -> pathlib.Path:
    """Write ``data`` as a memory-mappable folder (atomically); returns its path."""
    directory = pathlib.Path(directory)
    if directory.exists():
        if not overwrite:
            raise FileExistsError(f"{directory} exists; pass overwrite=True or choose another folder")
        shutil.rmtree(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    graph = data.graph
    index_dtype = torch.int32 if data.num_nodes < 2**31 - 1 else torch.int64
    _save(tmp, "indptr", graph.indptr.long())
    _save(tmp, "indices", graph.indices.to(index_dtype))
    features = data.features
    if features.sparse:
        _save(tmp, "x_crow", features.crow.long())
        _save(tmp, "x_col", features.col.to(torch.int32))
        _save(tmp, "x_values", features.nnz_values)
    else:
        _save(tmp, "x", features.dense)
    label_dtype = torch.int16 if data.num_classes < 2**15 else torch.int64
    _save(tmp, "y", data.y.clamp(min=-1).to(label_dtype))
    for key in ("train_mask", "val_mask", "test_mask"):
        _save(tmp, key, getattr(data, key))
    meta = {
        "format": FORMAT,
        "name": data.name,
        "num_nodes": data.num_nodes,
        "num_classes": data.num_classes,
        "feature_shape": list(features.shape),
        "sparse_features": features.sparse,
    }
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    os.replace(tmp, directory)
    return directory


def _load(directory: pathlib.Path, name: str, mmap: bool) -> torch.Tensor:
    array = np.load(directory / f"{name}.npy", mmap_mode="r" if mmap else None, allow_pickle=False)
    with warnings.catch_warnings():  # read-only memory map: torch warns that it is not writable
        warnings.simplefilter("ignore", UserWarning)
        return torch.from_numpy(array)


def open_graph(directory: str | os.PathLike, mmap: bool = True, validate: bool = False) -> GraphData:
    """Open a folder written by :func:`save_graph`; with ``mmap`` nothing is copied into memory."""
    directory = pathlib.Path(directory)
    meta_path = directory / "meta.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{directory} is not a saved graph (no meta.json); write one with save_graph")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{directory}: unknown graph format {meta.get('format')!r}, expected {FORMAT!r}")
    shape = tuple(meta["feature_shape"])
    if meta["sparse_features"]:
        features = NodeFeatures._from_csr(
            _load(directory, "x_crow", mmap),
            _load(directory, "x_col", mmap).long(),
            _load(directory, "x_values", mmap),
            shape,
        )
    else:
        features = NodeFeatures(_load(directory, "x", mmap), sparse=False)
    n = int(meta["num_nodes"])
    data = GraphData(
        name=meta["name"],
        features=features,
        graph=CSRGraph(_load(directory, "indptr", mmap), _load(directory, "indices", mmap), n),
        y=_load(directory, "y", mmap).long(),
        train_mask=_load(directory, "train_mask", mmap),
        val_mask=_load(directory, "val_mask", mmap),
        test_mask=_load(directory, "test_mask", mmap),
        num_classes=int(meta["num_classes"]),
        source_dir=directory,
    )
    return validate_graph(data) if validate else data


def shared_graph_dir(data: GraphData, scratch: str | os.PathLike | None = None) -> tuple[pathlib.Path, bool]:
    """Where workers can map ``data`` from: its own store, else a new temporary one.

    Returns ``(folder, created)``; the caller removes a created folder when the workers are done.
    """
    if data.source_dir is not None and (pathlib.Path(data.source_dir) / "meta.json").is_file():
        return pathlib.Path(data.source_dir), False
    base = pathlib.Path(scratch) if scratch else None
    if base is None and pathlib.Path("/dev/shm").is_dir() and os.access("/dev/shm", os.W_OK):
        base = pathlib.Path("/dev/shm")
    root = pathlib.Path(tempfile.mkdtemp(prefix="gnn-soup-graph-", dir=base))
    return save_graph(data, root / "graph"), True
