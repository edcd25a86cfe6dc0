"""Data sets: Planetoid (offline from the data directory), the paper's large graphs, synthetic graphs.

PyG datasets write a ``processed/`` folder next to ``raw/``; the shared data directory may be
read-only, so the raw files are symlinked into a writable cache directory first.
"""

from __future__ import annotations

import contextlib
import logging
import os
import pathlib
from collections.abc import Callable
from dataclasses import dataclass

import torch

from gnn_soup.csr import CSRGraph
from gnn_soup.features import NodeFeatures
from research_systems_core.data import DatasetNotFoundError, require_path, resolve_data_dir
from research_systems_core.registry import Registry
from research_systems_core.validation import check_int

log = logging.getLogger(__name__)

DATASETS = Registry("dataset")

PLANETOID_FILES = ("x", "y", "tx", "ty", "allx", "ally", "graph", "test.index")


@dataclass
class GraphData:
    """A node-classification graph: features, loop-free edges (``[source, target]``), labels, splits."""

    name: str
    features: NodeFeatures
    edge_index: torch.Tensor
    y: torch.Tensor
    train_mask: torch.Tensor
    val_mask: torch.Tensor
    test_mask: torch.Tensor
    num_classes: int

    @property
    def num_nodes(self) -> int:
        return int(self.y.numel())

    def csr(self) -> CSRGraph:
        return CSRGraph.from_edge_index(self.edge_index, self.num_nodes)

    def summary(self) -> dict[str, int | str]:
        return {
            "name": self.name,
            "nodes": self.num_nodes,
            "edges": int(self.edge_index.shape[1]),
            "features": self.features.shape[1],
            "classes": self.num_classes,
            "train": int(self.train_mask.sum()),
            "val": int(self.val_mask.sum()),
            "test": int(self.test_mask.sum()),
        }


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


def _from_pyg(name: str, data, num_classes: int, normalize_features: bool = True) -> GraphData:
    from torch_geometric.utils import remove_self_loops

    x = data.x.float()
    if normalize_features:  # row-normalise (PyG's NormalizeFeatures), as in the Planetoid setting
        x = x / x.sum(dim=1, keepdim=True).clamp_min(1e-12)
    edge_index, _ = remove_self_loops(data.edge_index)
    return GraphData(
        name=name,
        features=NodeFeatures(x),
        edge_index=edge_index,
        y=data.y.view(-1).long(),
        train_mask=data.train_mask.bool(),
        val_mask=data.val_mask.bool(),
        test_mask=data.test_mask.bool(),
        num_classes=num_classes,
    )


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
        return _from_pyg(name, dataset[0], dataset.num_classes)

    load.__doc__ = f"{name} (Planetoid split) from ``<data_dir>/planetoid/{name}/raw``."
    return load


for _name in ("Cora", "CiteSeer", "PubMed"):
    DATASETS.register(_name)(_planetoid(_name))


def _pyg_download(name: str, cls_name: str) -> Callable[..., GraphData]:
    def load(data_dir=None, cache_dir=None, download: bool = False) -> GraphData:
        import torch_geometric.datasets as pyg_datasets

        data_dir = resolve_data_dir(data_dir)
        cache = pathlib.Path(cache_dir) if cache_dir else default_cache_dir()
        raw = data_dir / name / "raw"
        if raw.is_dir() and any(raw.iterdir()):
            root = _mirror_raw(raw, cache / name)
        elif download:
            root = cache / name
        else:
            require_path(data_dir, f"{name}/raw", hint=f"pass download=True / --download to fetch {name}")
        dataset = getattr(pyg_datasets, cls_name)(str(root))
        return _from_pyg(name, dataset[0], dataset.num_classes, normalize_features=False)

    load.__doc__ = f"{name} (GraphSAINT split) through ``torch_geometric.datasets.{cls_name}``; downloads."
    return load


DATASETS.register("Flickr")(_pyg_download("Flickr", "Flickr"))
DATASETS.register("Reddit")(_pyg_download("Reddit", "Reddit"))


def _ogb(name: str) -> Callable[..., GraphData]:
    def load(data_dir=None, cache_dir=None, download: bool = False) -> GraphData:
        try:
            from ogb.nodeproppred import PygNodePropPredDataset
        except ImportError:
            raise ImportError(f"{name} needs the 'ogb' package: pip install ogb") from None
        data_dir = resolve_data_dir(data_dir)
        folder = name.replace("-", "_")
        if not (data_dir / folder).is_dir() and not download:
            require_path(data_dir, folder, hint=f"pass download=True / --download to fetch {name}")
        dataset = PygNodePropPredDataset(name=name, root=str(data_dir))
        data = dataset[0]
        split = dataset.get_idx_split()
        masks = {}
        for key, part in (("train", "train"), ("val", "valid"), ("test", "test")):
            mask = torch.zeros(data.num_nodes, dtype=torch.bool)
            mask[split[part]] = True
            masks[key] = mask
        data.train_mask, data.val_mask, data.test_mask = masks["train"], masks["val"], masks["test"]
        if name == "ogbn-arxiv":  # directed citation graph: train on the undirected version
            from torch_geometric.utils import to_undirected

            data.edge_index = to_undirected(data.edge_index, num_nodes=data.num_nodes)
        return _from_pyg(name, data, dataset.num_classes, normalize_features=False)

    load.__doc__ = f"{name} through the ``ogb`` package (install it separately); downloads."
    return load


DATASETS.register("ogbn-arxiv")(_ogb("ogbn-arxiv"))
DATASETS.register("ogbn-products")(_ogb("ogbn-products"))


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
    """A stochastic block model with noisy sparse class-indicative features (tests and demos)."""
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
    return GraphData(
        name="synthetic",
        features=NodeFeatures(x),
        edge_index=edge_index,
        y=y,
        train_mask=masks[0],
        val_mask=masks[1],
        test_mask=masks[2],
        num_classes=num_classes,
    )


def load_dataset(name: str, data_dir=None, cache_dir=None, download: bool = False, **kwargs) -> GraphData:
    """Load a registered data set by name (``Cora``, ``CiteSeer``, ``PubMed``, ``Flickr``, ...)."""
    loader = DATASETS.get(name)
    return loader(data_dir=data_dir, cache_dir=cache_dir, download=download, **kwargs)
