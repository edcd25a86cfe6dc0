"""Graphs for node classification: any PyG ``Data``, PyG / OGB data sets, edge-list files, generated SBMs.

Every graph becomes a :class:`GraphData` through :func:`as_graph_data` and is validated once there
(:func:`validate_graph`): finite features, labels in range on the labelled nodes, non-empty and
disjoint train / validation masks, edges in range. Edges are made undirected and loop-free (the
setting of every data set in the paper), so the CSR by source is also the CSR by target.

PyG data sets write a ``processed/`` folder next to ``raw/``; the shared data directory may be
read-only, so the raw files are symlinked into a writable cache directory first.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from gnn_soup.csr import CSRGraph, symmetrize
from gnn_soup.features import NodeFeatures
from research_systems_core.data import DatasetNotFoundError, require_path, resolve_data_dir
from research_systems_core.registry import Registry
from research_systems_core.validation import check_int

log = logging.getLogger(__name__)

DATASETS = Registry("dataset")

PLANETOID_FILES = ("x", "y", "tx", "ty", "allx", "ally", "graph", "test.index")


class GraphDataError(ValueError):
    """The graph or its splits are unusable (NaN features, empty masks, edges out of range, ...)."""


@dataclass
class GraphData:
    """A node-classification graph: features, undirected loop-free structure, labels, splits.

    The structure is a symmetric :class:`CSRGraph` (``graph``); ``edge_index`` (``[source,
    target]``, both directions) is derived from it on first use and cached.
    """

    name: str
    features: NodeFeatures
    graph: CSRGraph
    y: torch.Tensor
    train_mask: torch.Tensor
    val_mask: torch.Tensor
    test_mask: torch.Tensor
    num_classes: int
    source_dir: pathlib.Path | None = None  # set when the arrays are memory-mapped files
    _edge_index: torch.Tensor | None = field(default=None, repr=False)

    @property
    def num_nodes(self) -> int:
        return int(self.graph.num_nodes)

    @property
    def edge_index(self) -> torch.Tensor:
        if self._edge_index is None:
            self._edge_index = self.graph.edge_index()
        return self._edge_index

    def csr(self) -> CSRGraph:
        return self.graph

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_edge_index"] = None  # derived; never shipped to workers
        return state

    def summary(self) -> dict[str, int | str]:
        degree = self.graph.degree()
        return {
            "name": self.name,
            "nodes": self.num_nodes,
            "edges": self.graph.num_edges,
            "features": self.features.shape[1],
            "classes": self.num_classes,
            "train": int(self.train_mask.sum()),
            "val": int(self.val_mask.sum()),
            "test": int(self.test_mask.sum()),
            "isolated_nodes": int((degree == 0).sum()),
        }


def _fail(msg: str) -> None:
    raise GraphDataError(msg)


def _check_mask(name: str, mask: torch.Tensor, num_nodes: int, required: bool) -> None:
    if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != (num_nodes,):
        shape = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
        dtype = mask.dtype if isinstance(mask, torch.Tensor) else "-"
        _fail(f"{name} must be a bool tensor of shape ({num_nodes},), got {shape} {dtype}")
    if required and not bool(mask.any()):
        _fail(f"{name} is empty: at least one node is needed ({name} selects none of {num_nodes} nodes)")


def _check_features_finite(features: NodeFeatures) -> None:
    values = features.nnz_values if features.sparse else features.dense
    chunk = 1 << 22
    flat = values.reshape(-1)
    for start in range(0, flat.numel(), chunk):
        part = flat[start : start + chunk]
        if not bool(torch.isfinite(part).all()):
            bad = int((~torch.isfinite(flat)).sum())
            _fail(f"features hold {bad} NaN/inf value(s); node features must be finite")


def validate_graph(data: GraphData) -> GraphData:
    """Check the graph once before training; raises :class:`GraphDataError` naming what is wrong."""
    n = data.num_nodes
    if n < 1:
        _fail(f"the graph must have at least one node, got {n}")
    if data.features.shape[0] != n:
        _fail(f"features have {data.features.shape[0]} rows for {n} nodes")
    _check_features_finite(data.features)
    if data.num_classes < 2:
        _fail(f"num_classes must be >= 2, got {data.num_classes}")
    if data.y.shape != (n,):
        _fail(f"labels must have shape ({n},), got {tuple(data.y.shape)}")
    _check_mask("train_mask", data.train_mask, n, required=True)
    _check_mask("val_mask", data.val_mask, n, required=True)
    _check_mask("test_mask", data.test_mask, n, required=False)
    for (a, ma), (b, mb) in (
        (("train_mask", data.train_mask), ("val_mask", data.val_mask)),
        (("train_mask", data.train_mask), ("test_mask", data.test_mask)),
        (("val_mask", data.val_mask), ("test_mask", data.test_mask)),
    ):
        both = int((ma & mb).sum())
        if both:
            _fail(f"{a} and {b} overlap in {both} node(s); the splits must be disjoint")
    labelled = data.train_mask | data.val_mask | data.test_mask
    y = data.y[labelled]
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= data.num_classes):
        _fail(
            f"labels of train/val/test nodes must be in [0, {data.num_classes}), "
            f"got range [{int(y.min())}, {int(y.max())}]"
        )
    if not bool(data.test_mask.any()):
        log.warning("test_mask is empty: test accuracy will be reported as NaN")
    isolated = int((data.graph.degree() == 0).sum())
    if isolated == n:
        log.warning("the graph has no edges: only 'full', 'neighbor' and precomputed models make sense")
    elif isolated:
        log.info("%d of %d nodes are isolated", isolated, n)
    return data


def _as_bool_mask(value: Any, num_nodes: int, name: str, column: int) -> torch.Tensor:
    mask = torch.as_tensor(value)
    if mask.dim() == 2:  # several splits (WikiCS, heterophily sets): one column
        if not 0 <= column < mask.shape[1]:
            raise GraphDataError(f"split must be in [0, {mask.shape[1]}) for this data set, got {column}")
        mask = mask[:, column]
    if mask.dtype != torch.bool and mask.dim() == 1 and mask.numel() != num_nodes:
        index = mask.long()  # node ids instead of a mask
        if index.numel() and (int(index.min()) < 0 or int(index.max()) >= num_nodes):
            raise GraphDataError(f"{name} holds node ids outside [0, {num_nodes})")
        mask = torch.zeros(num_nodes, dtype=torch.bool)
        mask[index] = True
    return mask.bool()


def random_split(
    num_nodes: int, seed: int = 0, train: float = 0.6, val: float = 0.2
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random disjoint train / val / test masks (fractions ``train``, ``val``, the rest test)."""
    if not (0 < train < 1 and 0 < val < 1 and train + val < 1):
        raise ValueError(f"train and val fractions must be in (0, 1) with a sum < 1, got {train}, {val}")
    order = torch.randperm(num_nodes, generator=torch.Generator().manual_seed(int(seed)))
    n_train, n_val = max(1, int(train * num_nodes)), max(1, int(val * num_nodes))
    masks = [torch.zeros(num_nodes, dtype=torch.bool) for _ in range(3)]
    masks[0][order[:n_train]] = True
    masks[1][order[n_train : n_train + n_val]] = True
    masks[2][order[n_train + n_val :]] = True
    return masks[0], masks[1], masks[2]


def build_graph_data(
    name: str,
    x: torch.Tensor | np.ndarray,
    edge_index: torch.Tensor | np.ndarray,
    y: torch.Tensor | np.ndarray,
    masks: tuple[Any, Any, Any] | None = None,
    num_classes: int | None = None,
    normalize_features: bool = False,
    split: int = 0,
    split_seed: int = 0,
) -> GraphData:
    """Assemble and validate a :class:`GraphData` from arrays (edges are symmetrised, loops dropped).

    ``masks`` are bool masks or node-id arrays (train, val, test); None makes a seeded random
    60/20/20 split. Labels outside the masks may be anything (OGB marks unlabelled nodes NaN).
    """
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if x.dim() == 1:
        x = x[:, None]
    if x.dim() != 2:
        raise GraphDataError(f"features must be a [num_nodes, dim] array, got shape {tuple(x.shape)}")
    num_nodes = int(x.shape[0])
    if num_nodes < 1:
        raise GraphDataError("features must have at least one row (node)")
    y = torch.as_tensor(np.asarray(y) if not isinstance(y, torch.Tensor) else y).reshape(-1)
    if y.numel() != num_nodes:
        raise GraphDataError(f"labels must have one entry per node ({num_nodes}), got {y.numel()}")
    if y.is_floating_point():
        y = torch.nan_to_num(y, nan=-1.0)
    y = y.long()
    edge_index = torch.as_tensor(
        np.asarray(edge_index) if not isinstance(edge_index, torch.Tensor) else edge_index
    )
    if edge_index.dim() == 2 and edge_index.shape[0] != 2 and edge_index.shape[1] == 2:
        edge_index = edge_index.T
    if edge_index.dim() != 2 or edge_index.shape[0] != 2:
        raise GraphDataError(f"edges must be a [2, E] or [E, 2] array, got shape {tuple(edge_index.shape)}")
    if edge_index.is_floating_point():
        raise GraphDataError(f"edge ids must be integers, got {edge_index.dtype}")
    edge_index = edge_index.long()
    if edge_index.numel() and (int(edge_index.min()) < 0 or int(edge_index.max()) >= num_nodes):
        raise GraphDataError(
            f"edge ids must be in [0, {num_nodes}) (one per feature row), got range "
            f"[{int(edge_index.min())}, {int(edge_index.max())}]"
        )
    if normalize_features:  # row-normalise (PyG's NormalizeFeatures), as in the Planetoid setting
        x = x.float()
        x = x / x.sum(dim=1, keepdim=True).clamp_min(1e-12)
    if masks is None:
        train, val, test = random_split(num_nodes, split_seed)
    else:
        train, val, test = (
            _as_bool_mask(m, num_nodes, n, split)
            for m, n in zip(masks, ("train_mask", "val_mask", "test_mask"), strict=False)
        )
    labelled = train | val | test
    if num_classes is None:
        num_classes = int(y[labelled].max()) + 1 if bool(labelled.any()) else 0
    data = GraphData(
        name=name,
        features=NodeFeatures(x if x.dtype in (torch.float16, torch.bfloat16) else x.float()),
        graph=symmetrize(edge_index, num_nodes),
        y=y,
        train_mask=train,
        val_mask=val,
        test_mask=test,
        num_classes=int(num_classes),
    )
    return validate_graph(data)


def as_graph_data(
    obj: Any,
    name: str | None = None,
    normalize_features: bool = False,
    split: int = 0,
    split_seed: int = 0,
) -> GraphData:
    """Any graph the package accepts: a :class:`GraphData`, a PyG ``Data`` or a PyG data set.

    A ``Data`` needs ``x``, ``edge_index`` and ``y``; its ``train_mask`` / ``val_mask`` /
    ``test_mask`` are used when present (column ``split`` of 2-D masks), else a seeded random split.
    """
    if isinstance(obj, GraphData):
        return obj
    num_classes = None
    dataset_name = None
    try:
        from torch_geometric.data import Dataset as PygDataset
    except ImportError:  # pragma: no cover - torch_geometric is a dependency
        PygDataset = ()  # type: ignore[assignment]
    if isinstance(obj, PygDataset):
        if len(obj) != 1:
            raise TypeError(f"need a data set holding one graph (node classification), got {len(obj)} graphs")
        num_classes = int(obj.num_classes)
        dataset_name = type(obj).__name__
        obj = obj[0]
    for attr in ("x", "edge_index", "y"):
        if getattr(obj, attr, None) is None:
            raise TypeError(
                f"graph must be a GraphData, a torch_geometric Data with x, edge_index and y, or a "
                f"PyG data set; got {type(obj).__name__} without '{attr}'"
            )
    keys = ("train_mask", "val_mask", "test_mask")
    present = [getattr(obj, k, None) is not None for k in keys]
    if any(present) and not all(present):
        missing = [k for k, p in zip(keys, present, strict=False) if not p]
        raise GraphDataError(f"the graph has some split masks but not {missing}; give all three or none")
    masks = tuple(getattr(obj, k) for k in keys) if all(present) else None
    if masks is None:
        log.info("no split masks on the graph: using a random 60/20/20 split (seed %d)", split_seed)
    return build_graph_data(
        name or dataset_name or "graph",
        obj.x,
        obj.edge_index,
        obj.y,
        masks=masks,
        num_classes=num_classes,
        normalize_features=normalize_features,
        split=split,
        split_seed=split_seed,
    )


def default_cache_dir() -> pathlib.Path:
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "gnn-soup" / "datasets"


def _mirror_raw(raw_dir: pathlib.Path, root: pathlib.Path) -> pathlib.Path:
    """Symlink every file of ``raw_dir`` into ``root/raw`` (writable); returns ``root``."""
    target = root / "raw"
    target.mkdir(parents=True, exist_ok=True)
    for item in raw_dir.iterdir():
        link = target / item.name
        if not link.exists():
            with contextlib.suppress(FileExistsError):  # another process made it first
                link.symlink_to(item.resolve())
    return root


def _planetoid(name: str) -> Callable[..., GraphData]:
    def load(data_dir=None, cache_dir=None, download: bool = False) -> GraphData:
        from torch_geometric.datasets import Planetoid

        data_dir = resolve_data_dir(data_dir)
        cache = pathlib.Path(cache_dir) if cache_dir else default_cache_dir()
        raw = data_dir / "planetoid" / name / "raw"
        prefix = f"ind.{name.lower()}."
        if raw.is_dir() and all((raw / (prefix + f)).exists() for f in PLANETOID_FILES):
            root = _mirror_raw(raw, cache / "planetoid" / name).parent
        elif download:
            root = cache / "planetoid"
            log.info("downloading %s into %s", name, root)
        else:
            require_path(
                data_dir,
                f"planetoid/{name}/raw/{prefix}graph",
                hint=f"put the Planetoid files ind.{name.lower()}.* there (kimiyoung/planetoid, data/) "
                "or pass download=True / --download",
            )
            raise DatasetNotFoundError(
                f"{raw} lacks some of the files {[prefix + f for f in PLANETOID_FILES]}"
            )
        dataset = Planetoid(str(root), name)
        return as_graph_data(dataset, name=name, normalize_features=True)

    load.__doc__ = f"{name} (Planetoid split) from ``<data_dir>/planetoid/{name}/raw``."
    return load


for _name in ("Cora", "CiteSeer", "PubMed"):
    DATASETS.register(_name)(_planetoid(_name))


def load_pyg_dataset(
    spec: str, data_dir=None, cache_dir=None, download: bool = False, split: int = 0, split_seed: int = 0
) -> GraphData:
    """``pyg:Class`` or ``pyg:Class/name`` (e.g. ``pyg:Amazon/Computers``, ``pyg:Flickr``).

    Offline it reads ``<data_dir>/pyg/<Class>[/<name>]/raw``; with ``download`` PyG fetches it
    into the cache directory.
    """
    import torch_geometric.datasets as pyg_datasets

    body = spec.removeprefix("pyg:")
    cls_name, _, ds_name = body.partition("/")
    cls = getattr(pyg_datasets, cls_name, None)
    if cls is None or not isinstance(cls, type):
        import difflib

        close = difflib.get_close_matches(cls_name, pyg_datasets.__all__, n=3)
        raise ValueError(f"dataset: no torch_geometric.datasets class {cls_name!r} (close: {close})")
    data_dir = resolve_data_dir(data_dir)
    cache = pathlib.Path(cache_dir) if cache_dir else default_cache_dir()
    sub = pathlib.Path("pyg") / cls_name / (ds_name or "")
    raw = data_dir / sub / "raw"
    if raw.is_dir() and any(raw.iterdir()):
        root = _mirror_raw(raw, cache / sub)
    elif download:
        root = cache / sub
    else:
        raise DatasetNotFoundError(
            f"dataset {spec!r} is not under {raw} and downloading is off; pass download=True / --download"
        )
    kwargs = {"name": ds_name} if ds_name else {}
    dataset = cls(str(root), **kwargs)
    return as_graph_data(dataset, name=spec, split=split, split_seed=split_seed)


def _pyg_alias(cls_name: str) -> Callable[..., GraphData]:
    def load(data_dir=None, cache_dir=None, download: bool = False) -> GraphData:
        return load_pyg_dataset(f"pyg:{cls_name}", data_dir=data_dir, cache_dir=cache_dir, download=download)

    load.__doc__ = f"{cls_name} (GraphSAINT split): same as ``pyg:{cls_name}``."
    return load


DATASETS.register("Flickr")(_pyg_alias("Flickr"))
DATASETS.register("Reddit")(_pyg_alias("Reddit"))


def load_ogb(name: str, data_dir=None, cache_dir=None, download: bool = False) -> GraphData:
    """An OGB node-property data set (``ogbn-arxiv``, ``ogbn-products``, ``ogbn-papers100M``, ...).

    Needs the ``ogb`` package; reads ``<data_dir>/<name with _>`` and downloads only when allowed.
    """
    data_dir = resolve_data_dir(data_dir)
    folder = name.replace("-", "_")
    if not (data_dir / folder).is_dir() and not download:
        raise DatasetNotFoundError(
            f"dataset {name!r} is not in {data_dir / folder} and downloading is off; pass download=True / --download"
        )
    try:
        from ogb.nodeproppred import PygNodePropPredDataset
    except ImportError:
        raise ImportError(f"{name} needs the 'ogb' package: pip install ogb") from None
    dataset = PygNodePropPredDataset(name=name, root=str(data_dir))
    data = dataset[0]
    split = dataset.get_idx_split()
    masks = (split["train"], split["valid"], split["test"])
    return build_graph_data(
        name, data.x, data.edge_index, data.y, masks=masks, num_classes=dataset.num_classes
    )


def _ogb_alias(name: str) -> Callable[..., GraphData]:
    def load(data_dir=None, cache_dir=None, download: bool = False) -> GraphData:
        return load_ogb(name, data_dir=data_dir, cache_dir=cache_dir, download=download)

    load.__doc__ = f"{name} through the ``ogb`` package (any other ``ogbn-*`` name works too)."
    return load


for _name in ("ogbn-arxiv", "ogbn-products", "ogbn-papers100M"):
    DATASETS.register(_name)(_ogb_alias(_name))


def load_edge_list(
    edges: str | os.PathLike,
    features: str | os.PathLike,
    labels: str | os.PathLike,
    masks: str | os.PathLike | None = None,
    name: str = "edge-list",
    split_seed: int = 0,
) -> GraphData:
    """A graph from files: edges (``.npy`` [2, E] / [E, 2], or text with two ids per line),
    features and labels (``.npy`` or text), optional masks (``.npz`` with train / val / test masks
    or node ids; else a seeded random 60/20/20 split)."""
    arrays = {}
    for key, path in (("edges", edges), ("features", features), ("labels", labels)):
        arrays[key] = _read_array(key, path, integer=key != "features")
    split = None
    if masks is not None:
        path = pathlib.Path(masks)
        if not path.is_file():
            raise FileNotFoundError(f"masks: no such file {path}")
        try:
            with np.load(path, allow_pickle=False) as npz:
                split = tuple(npz[k] for k in ("train", "val", "test"))
        except (KeyError, ValueError, OSError) as exc:
            raise ValueError(f"masks: {path} must be an .npz with arrays train, val, test ({exc})") from None
    return build_graph_data(
        name, arrays["features"], arrays["edges"], arrays["labels"], masks=split, split_seed=split_seed
    )


def _read_array(key: str, path: str | os.PathLike, integer: bool) -> np.ndarray:
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{key}: no such file {path}")
    try:
        if path.suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        else:
            text = path.read_text()
            delimiter = "," if "," in text.split("\n", 1)[0] else None
            array = np.loadtxt(path, delimiter=delimiter, ndmin=2 if key != "labels" else 1)
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{key}: cannot read {path} as a numeric array ({exc})") from None
    if array.size == 0 and key != "edges":
        raise ValueError(f"{key}: {path} is empty")
    if integer and array.dtype.kind == "f":
        if key == "labels":
            return array
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise ValueError(f"{key}: {path} must hold integer node ids")
        array = array.astype(np.int64)
    if key == "edges" and array.size == 0:
        array = np.zeros((2, 0), dtype=np.int64)
    return array


@DATASETS.register("synthetic")
def synthetic_graph(
    data_dir=None,
    cache_dir=None,
    download: bool = False,
    num_nodes: int = 300,
    num_classes: int = 3,
    num_features: int = 50,
    p_in: float = 0.05,
    p_out: float = 0.005,
    seed: int = 0,
) -> GraphData:
    """A small stochastic block model with noisy sparse class-indicative features (tests and demos)."""
    check_int("num_nodes", num_nodes, minimum=num_classes * 3)
    check_int("num_classes", num_classes, minimum=2)
    g = torch.Generator().manual_seed(int(seed))
    y = torch.arange(num_nodes) % num_classes
    y = y[torch.randperm(num_nodes, generator=g)]
    prob = torch.where(y[:, None] == y[None, :], p_in, p_out)
    upper = torch.triu(torch.rand(num_nodes, num_nodes, generator=g) < prob, diagonal=1)
    source, target = torch.nonzero(upper | upper.T, as_tuple=True)
    edge_index = torch.stack([source, target])
    words_per_class = num_features // num_classes
    x = (torch.rand(num_nodes, num_features, generator=g) < 0.02).float()
    own = (torch.rand(num_nodes, words_per_class, generator=g) < 0.15).float()
    cols = y[:, None] * words_per_class + torch.arange(words_per_class)[None, :]
    x.scatter_add_(1, cols, own)
    x = (x > 0).float()
    x = x / x.sum(1, keepdim=True).clamp_min(1.0)
    order = torch.randperm(num_nodes, generator=g)
    masks = [torch.zeros(num_nodes, dtype=torch.bool) for _ in range(3)]
    per_class = max(2, num_nodes // (10 * num_classes))
    train = torch.cat([order[y[order] == c][:per_class] for c in range(num_classes)])
    rest = order[~torch.isin(order, train)]
    masks[0][train] = True
    masks[1][rest[: len(rest) // 3]] = True
    masks[2][rest[len(rest) // 3 :]] = True
    return build_graph_data("synthetic", x, edge_index, y, masks=tuple(masks), num_classes=num_classes)


def load_dataset(name: str, data_dir=None, cache_dir=None, download: bool = False, **kwargs) -> GraphData:
    """Load a data set by name: registered ones (``Cora``, ``synthetic``, ...), ``ogbn-*`` (OGB),
    ``pyg:Class[/name]`` (any torch_geometric data set), ``store:DIR`` (a saved, memory-mapped graph)
    or ``files:EDGES,FEATURES,LABELS[,MASKS]`` (see :func:`load_edge_list`)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"dataset must be a non-empty name, got {name!r}")
    if name.startswith("files:"):
        parts = name.removeprefix("files:").split(",")
        if len(parts) not in (3, 4) or not all(parts):
            raise ValueError(
                f"dataset 'files:EDGES,FEATURES,LABELS[,MASKS]' needs 3 or 4 paths, got {name!r}"
            )
        return load_edge_list(*parts, name=name)
    if name.startswith("store:"):
        from gnn_soup.store import open_graph

        return open_graph(name.removeprefix("store:"))
    if name.startswith("pyg:"):
        return load_pyg_dataset(name, data_dir=data_dir, cache_dir=cache_dir, download=download, **kwargs)
    if name.startswith("ogbn-") and name not in DATASETS.names():
        return load_ogb(name, data_dir=data_dir, cache_dir=cache_dir, download=download)
    loader = DATASETS.get(name)
    return loader(data_dir=data_dir, cache_dir=cache_dir, download=download, **kwargs)
