"""One data directory for every package: ``--data-dir``, then ``$RESEARCH_DATA_DIR``, then a user cache.

Packages never ship data; they read it from this directory (or download it there for users with
internet), and a missing data set is an error that says where we looked and how to get it.
"""

from __future__ import annotations

import gzip
import os
import pathlib

import numpy as np

__all__ = ["ENV_VAR", "DatasetNotFoundError", "load_mnist", "read_idx", "require_path", "resolve_data_dir"]

ENV_VAR = "RESEARCH_DATA_DIR"


class DatasetNotFoundError(FileNotFoundError):
    """A data set is not in the data directory; the message says where we looked and what to do."""


def resolve_data_dir(
    cli_value: str | os.PathLike[str] | None = None, must_exist: bool = False
) -> pathlib.Path:
    """The data directory: the CLI option if given, else ``$RESEARCH_DATA_DIR``, else the user cache."""
    if cli_value not in (None, ""):
        path, source = pathlib.Path(cli_value), "--data-dir"
    elif os.environ.get(ENV_VAR):
        path, source = pathlib.Path(os.environ[ENV_VAR]), f"${ENV_VAR}"
    else:
        base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
        path, source = pathlib.Path(base) / "research-systems-core" / "data", "the default cache"
    path = path.expanduser()
    if must_exist and not path.is_dir():
        raise DatasetNotFoundError(
            f"data directory {path} (from {source}) does not exist; pass --data-dir DIR or set {ENV_VAR}"
        )
    return path


def require_path(
    data_dir: str | os.PathLike[str], relative: str | os.PathLike[str], hint: str = ""
) -> pathlib.Path:
    """``data_dir / relative`` if it exists, else :class:`DatasetNotFoundError` naming the folder and a hint."""
    data_dir = pathlib.Path(data_dir)
    path = data_dir / relative
    if not path.exists():
        message = f"{relative} not found in the data directory {data_dir} (looked for {path})"
        if hint:
            message += f". {hint}"
        message += f". Set the directory with --data-dir DIR or ${ENV_VAR}."
        raise DatasetNotFoundError(message)
    return path


_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (MNIST's format), plain or gzipped, with a clear error if it is malformed."""
    path = pathlib.Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as handle:
        raw = handle.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES:
        raise ValueError(f"{path} is not an IDX file (bad magic number)")
    dtype = np.dtype(_IDX_DTYPES[raw[2]])
    ndim = raw[3]
    header = 4 + 4 * ndim
    shape = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape)) * dtype.itemsize
    if len(raw) != expected:
        raise ValueError(
            f"{path} is truncated or corrupt: {len(raw)} bytes, expected {expected} for shape {shape}"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def load_mnist(data_dir: str | os.PathLike[str], train: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """MNIST from ``<data_dir>/MNIST/raw`` (torchvision's layout) -> (uint8 N x 28 x 28, int64 labels)."""
    prefix = "train" if train else "t10k"
    hint = "Get it with torchvision.datasets.MNIST(root=DATA_DIR, download=True), which writes MNIST/raw/"
    raw = require_path(data_dir, pathlib.Path("MNIST") / "raw", hint)
    files = {}
    for kind in ("images-idx3-ubyte", "labels-idx1-ubyte"):
        name = f"{prefix}-{kind}"
        candidates = [raw / name, raw / f"{name}.gz"]
        found = next((c for c in candidates if c.is_file()), None)
        if found is None:
            raise DatasetNotFoundError(f"{name} not found in {raw}. {hint}")
        files[kind] = found
    images = read_idx(files["images-idx3-ubyte"])
    labels = read_idx(files["labels-idx1-ubyte"]).astype(np.int64)
    if images.shape[0] != labels.shape[0]:
        raise ValueError(f"MNIST in {raw}: {images.shape[0]} images but {labels.shape[0]} labels")
    return images, labels
