"""Data sets: scikit-feature ``.mat`` files, scikit-learn's bundled ones, synthetic problems.

Preprocessing follows the reference's choice per data set (StandardScaler for BASEHOCK and
madelon, MinMaxScaler otherwise) but, unlike the reference, which fits the scaler on train and
test together, the scaler is fitted on the training split only.
"""

from __future__ import annotations

import os
import pathlib
from dataclasses import dataclass, field

import numpy as np
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from research_systems_core.data import require_path, resolve_data_dir
from research_systems_core.registry import Registry
from research_systems_core.validation import check_int, check_range

__all__ = [
    "DATASETS",
    "SCIKIT_FEATURE",
    "Dataset",
    "DatasetFileError",
    "Split",
    "load_dataset",
    "load_scikit_feature",
    "make_synthetic",
    "split_and_scale",
]

SCIKIT_FEATURE = ("ALLAML", "BASEHOCK", "COIL20", "Isolet", "PCMAC", "Prostate_GE", "arcene", "madelon")
STANDARD_SCALED = ("BASEHOCK", "madelon")  # the reference's choice; MinMax for every other set
HINT = (
    "Download the .mat files from https://github.com/jundongl/scikit-feature (files/datasets/) "
    "or https://jundongl.github.io/scikit-feature/datasets.html into <data-dir>/scikit-feature/"
)

DATASETS = Registry("dataset")


class DatasetFileError(ValueError):
    """A data file exists but cannot be read or lacks the expected content; names the file."""


@dataclass
class Dataset:
    """Features ``x`` (N, d) float64, integer labels ``y`` in ``[0, n_classes)``."""

    name: str
    x: np.ndarray
    y: np.ndarray
    scaling: str = "minmax"
    informative: np.ndarray | None = None  # known informative features (synthetic data only)
    meta: dict = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return int(self.y.max()) + 1


@dataclass
class Split:
    x_train: np.ndarray
    x_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray


def _encode_labels(y: np.ndarray) -> np.ndarray:
    return np.unique(np.asarray(y).ravel(), return_inverse=True)[1].astype(np.int64)


def load_scikit_feature(name: str, data_dir: str | os.PathLike[str] | None = None) -> Dataset:
    """Load ``<data-dir>/scikit-feature/<name>.mat`` (keys ``X`` and ``Y``)."""
    import scipy.io

    path = require_path(resolve_data_dir(data_dir), pathlib.Path("scikit-feature") / f"{name}.mat", HINT)
    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as exc:  # scipy raises several types for corrupt files
        raise DatasetFileError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None
    missing = [key for key in ("X", "Y") if key not in mat]
    if missing:
        raise DatasetFileError(f"{path} has no {' or '.join(missing)} variable (found {sorted(mat)})")
    x = mat["X"]
    if hasattr(x, "toarray"):
        x = x.toarray()
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(mat["Y"]).ravel()
    if x.ndim != 2 or x.shape[0] != y.shape[0]:
        raise DatasetFileError(f"{path}: X has shape {x.shape} but Y has {y.shape[0]} labels")
    if not np.isfinite(x).all():
        raise DatasetFileError(f"{path}: X contains NaN or infinite values")
    scaling = "standard" if name in STANDARD_SCALED else "minmax"
    return Dataset(name, x, _encode_labels(y), scaling, meta={"source": str(path)})


def make_synthetic(
    n_samples: int = 1000,
    n_features: int = 500,
    n_informative: int = 20,
    n_classes: int = 2,
    seed: int = 0,
) -> Dataset:
    """``make_classification`` with known informative features, hidden at random column positions."""
    from sklearn.datasets import make_classification

    check_int("n_samples", n_samples, minimum=10)
    check_int("n_features", n_features, minimum=2)
    check_int("n_informative", n_informative, minimum=1, maximum=n_features)
    x, y = make_classification(
        n_samples=n_samples,
        n_features=n_features,
        n_informative=n_informative,
        n_redundant=0,
        n_repeated=0,
        n_classes=n_classes,
        n_clusters_per_class=2,
        class_sep=1.0,
        shuffle=False,
        random_state=seed,
    )
    perm = np.random.default_rng(seed).permutation(n_features)
    x = x[:, perm]
    # column j of the result is original column perm[j]; informative originals are 0..n_informative-1
    informative = np.sort(np.nonzero(perm < n_informative)[0])
    return Dataset(f"synthetic-{n_features}", x, y.astype(np.int64), "standard", informative)


def _sklearn_loader(name: str):
    def load(data_dir: str | os.PathLike[str] | None = None) -> Dataset:
        import sklearn.datasets as skd

        bunch = getattr(skd, f"load_{name}")()
        return Dataset(name, np.asarray(bunch.data, dtype=np.float64), _encode_labels(bunch.target), "minmax")

    return load


for _name in SCIKIT_FEATURE:
    DATASETS.register(_name)(lambda data_dir=None, _n=_name: load_scikit_feature(_n, data_dir))
for _name in ("digits", "breast_cancer", "wine"):
    DATASETS.register(_name)(_sklearn_loader(_name))
DATASETS.register("synthetic")(lambda data_dir=None: make_synthetic())
DATASETS.register("synthetic-20000")(
    lambda data_dir=None: make_synthetic(n_samples=1000, n_features=20000, n_informative=20)
)


def load_dataset(name: str, data_dir: str | os.PathLike[str] | None = None) -> Dataset:
    """Load a registered data set by name (see ``DATASETS.names()``)."""
    return DATASETS.get(name)(data_dir=data_dir)


def split_and_scale(dataset: Dataset, test_size: float = 0.2, seed: int = 42) -> Split:
    """Train/test split (the reference's 80/20, fixed seed 42) and a scaler fitted on train only."""
    check_range("test_size", test_size, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
    x_train, x_test, y_train, y_test = train_test_split(
        dataset.x, dataset.y, test_size=test_size, random_state=seed
    )
    scaler = StandardScaler() if dataset.scaling == "standard" else MinMaxScaler()
    scaler.fit(x_train)
    return Split(
        scaler.transform(x_train).astype(np.float32),
        scaler.transform(x_test).astype(np.float32),
        y_train,
        y_test,
    )
