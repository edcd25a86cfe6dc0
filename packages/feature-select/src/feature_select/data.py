"""Data sets: scikit-feature ``.mat`` files, scikit-learn's bundled ones, synthetic problems.

Preprocessing follows the reference's choice per data set (StandardScaler for BASEHOCK and
madelon, MinMaxScaler otherwise) but, unlike the reference, which fits the scaler on train and
test together, the scaler is fitted on the training split only.
"""

from __future__ import annotations

import difflib
import os
import pathlib
from dataclasses import dataclass, field

import numpy as np
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import MinMaxScaler, StandardScaler

from research_systems_core.data import DatasetNotFoundError, require_path, resolve_data_dir
from research_systems_core.registry import Registry
from research_systems_core.validation import check_int, check_range

__all__ = [
    "DATASETS",
    "SCIKIT_FEATURE",
    "Dataset",
    "DatasetFileError",
    "Split",
    "find_data_files",
    "load_dataset",
    "load_file",
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


FILE_SUFFIXES = (".mat", ".csv", ".npz")
LABEL_COLUMNS = ("label", "labels", "y", "class", "target")


def _scaling_for(name: str) -> str:
    return "standard" if name in STANDARD_SCALED else "minmax"


def _finish(path: pathlib.Path, name: str, x, y) -> Dataset:
    """Shape and value checks shared by every file format."""
    import scipy.sparse as sp

    y = np.asarray(y).ravel()
    if sp.issparse(x):
        x = sp.csr_array(x, dtype=np.float64)
        values = x.data
    else:
        x = np.asarray(x, dtype=np.float64)
        values = x
    if x.ndim != 2 or x.shape[0] != y.shape[0]:
        raise DatasetFileError(f"{path}: X has shape {x.shape} but Y has {y.shape[0]} labels")
    if x.shape[0] < 2 or x.shape[1] < 1:
        raise DatasetFileError(f"{path}: X has shape {x.shape}; need at least 2 samples and 1 feature")
    if not np.isfinite(values).all():
        bad = np.nonzero(~np.isfinite(x.toarray() if sp.issparse(x) else x).all(axis=0))[0][:8].tolist()
        raise DatasetFileError(f"{path}: X contains NaN or infinite values (columns {bad}...)")
    if np.unique(y).size < 2:
        raise DatasetFileError(
            f"{path}: Y has a single class (every label is {y.flat[0].item()!r}); feature selection needs >= 2"
        )
    return Dataset(name, x, _encode_labels(y), _scaling_for(name), meta={"source": str(path)})


def _read_mat(path: pathlib.Path):
    import scipy.io

    try:
        mat = scipy.io.loadmat(str(path))
    except Exception as exc:  # scipy raises several types for corrupt files
        raise DatasetFileError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None
    missing = [key for key in ("X", "Y") if key not in mat]
    if missing:
        found = sorted(k for k in mat if not k.startswith("__"))
        raise DatasetFileError(
            f"{path} has no {' or '.join(missing)} variable (found {found}); a feature-selection "
            ".mat file needs X (samples x features) and Y (labels), as the scikit-feature files do"
        )
    return mat["X"], mat["Y"]


def _read_npz(path: pathlib.Path):
    try:
        with np.load(path, allow_pickle=False) as npz:
            keys = set(npz.files)
            x_key = next((k for k in ("X", "x") if k in keys), None)
            y_key = next((k for k in ("Y", "y") if k in keys), None)
            if x_key is None or y_key is None:
                raise DatasetFileError(
                    f"{path} needs arrays X and y (found {sorted(keys)}); save with np.savez(path, X=X, y=y)"
                )
            return npz[x_key], npz[y_key]
    except DatasetFileError:
        raise
    except Exception as exc:
        raise DatasetFileError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None


def _read_csv(path: pathlib.Path):
    """Numeric CSV; the label is a column named label/y/class/target, else the last column."""
    import csv

    try:
        with open(path, newline="") as handle:
            rows = [row for row in csv.reader(handle) if row]
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetFileError(f"cannot read {path}: {type(exc).__name__}: {exc}") from None
    if len(rows) < 3:
        raise DatasetFileError(f"{path} has {len(rows)} rows; need a header or data plus >= 2 samples")

    def numeric(row: list[str]) -> bool:
        try:
            [float(v) for v in row]
        except ValueError:
            return False
        return True

    header = None if numeric(rows[0]) else [h.strip().lower() for h in rows[0]]
    body = rows[1:] if header is not None else rows
    label_col = len(body[0]) - 1
    if header is not None:
        label_col = next((header.index(n) for n in LABEL_COLUMNS if n in header), label_col)
    if any(len(r) != len(body[0]) for r in body):
        raise DatasetFileError(f"{path}: rows have different numbers of columns")
    labels = [r[label_col] for r in body]
    features = [r[:label_col] + r[label_col + 1 :] for r in body]
    try:
        x = np.array(features, dtype=np.float64)
    except ValueError as exc:
        raise DatasetFileError(f"{path}: a feature value is not a number ({exc})") from None
    return x, np.array(labels)


READERS = {".mat": _read_mat, ".npz": _read_npz, ".csv": _read_csv}


def load_file(path: str | os.PathLike[str], name: str | None = None) -> Dataset:
    """Load a ``.mat`` (X, Y), ``.npz`` (X, y) or ``.csv`` (label column) file; X may be sparse."""
    path = pathlib.Path(path)
    if path.suffix.lower() not in READERS:
        raise ValueError(f"unsupported dataset file {path}: the suffix must be one of {FILE_SUFFIXES}")
    if not path.is_file():
        raise FileNotFoundError(f"dataset file {path} does not exist")
    x, y = READERS[path.suffix.lower()](path)
    return _finish(path, name or path.stem, x, y)


def load_scikit_feature(name: str, data_dir: str | os.PathLike[str] | None = None) -> Dataset:
    """Load ``<data-dir>/scikit-feature/<name>.mat`` (keys ``X`` and ``Y``)."""
    path = require_path(resolve_data_dir(data_dir), pathlib.Path("scikit-feature") / f"{name}.mat", HINT)
    return load_file(path, name)


def find_data_files(data_dir: str | os.PathLike[str] | None = None) -> dict[str, pathlib.Path]:
    """Every ``.mat``/``.csv``/``.npz`` file under the data directory, by stem (first found wins)."""
    root = resolve_data_dir(data_dir)
    found: dict[str, pathlib.Path] = {}
    if root.is_dir():
        for path in sorted(root.rglob("*")):
            if path.suffix.lower() in READERS and path.is_file():
                found.setdefault(path.stem, path)
    return found


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
    """A data set by file path (``.mat``/``.csv``/``.npz``), registered name, or the stem of any
    such file found under the data directory (e.g. a new ``my_genes.mat`` is ``my_genes``)."""
    if not isinstance(name, str) or not name:
        raise TypeError(f"dataset must be a non-empty name or path, got {name!r}")
    path = pathlib.Path(name).expanduser()
    if path.suffix.lower() in READERS or path.is_file():
        return load_file(path)
    if name in DATASETS:
        return DATASETS.get(name)(data_dir=data_dir)
    files = find_data_files(data_dir)
    matches = {k: v for k, v in files.items() if k.lower() == name.lower()}
    if matches:
        stem, file = next(iter(matches.items()))
        return load_file(file, stem)
    known = sorted(set(DATASETS.names()) | set(files))
    close = difflib.get_close_matches(name, known, n=3)
    hint = f"; did you mean {close}?" if close else ""
    raise DatasetNotFoundError(
        f"unknown dataset {name!r}: not a .mat/.csv/.npz path, a registered name or a file in "
        f"{resolve_data_dir(data_dir)}{hint} (known: {', '.join(known)})"
    )


def split_and_scale(dataset: Dataset, test_size: float = 0.2, seed: int = 42, stratify: bool = True) -> Split:
    """Stratified train/test split (80/20) and a scaler fitted on the training part only.

    The paper's protocol: several such splits (``seed``), the reference's scaler per data set
    (StandardScaler for BASEHOCK and madelon, MinMaxScaler otherwise). A sparse X is densified
    first (the benchmark sets are small); use :class:`~feature_select.NeuroFS` directly to keep
    a large sparse matrix sparse.
    """
    import scipy.sparse as sp

    check_range("test_size", test_size, 0.0, 1.0, low_inclusive=False, high_inclusive=False)
    x = dataset.x.toarray() if sp.issparse(dataset.x) else dataset.x
    counts = np.bincount(dataset.y)
    use_strata = stratify and counts[counts > 0].min() >= 2
    x_train, x_test, y_train, y_test = train_test_split(
        x, dataset.y, test_size=test_size, random_state=seed, stratify=dataset.y if use_strata else None
    )
    scaler = StandardScaler() if dataset.scaling == "standard" else MinMaxScaler()
    scaler.fit(x_train)
    return Split(
        scaler.transform(x_train).astype(np.float32),
        scaler.transform(x_test).astype(np.float32),
        y_train,
        y_test,
    )
