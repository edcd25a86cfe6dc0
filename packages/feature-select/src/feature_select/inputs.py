"""The training matrix on the device: dense, or sparse (scipy CSR in, torch COO kept sparse).

A sparse ``X`` is never densified as a whole: mini-batches are densified one at a time for the
first sparse layer, and the regrowth scores of the input layer, ``|X[:, rows]^T dL/dz|``, are a
sparse x dense product over the stored non-zeros only.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

__all__ = ["FeatureMatrix", "dense_column_scores"]


def dense_column_scores(x: torch.Tensor, columns: torch.Tensor | None, dz: torch.Tensor) -> torch.Tensor:
    """``|x[:, columns]^T @ dz|`` (all columns when ``None``) as a contiguous block.

    ``dz^T @ x`` keeps both operands row-major: 3x faster than ``x^T @ dz`` on one CPU thread.
    """
    block = x if columns is None else x[:, columns]
    return (dz.t() @ block).abs_().t().contiguous()


class FeatureMatrix:
    """Features ``(n_samples, n_features)`` as float32 on ``device``; dense or sparse storage."""

    def __init__(self, x: np.ndarray | sp.spmatrix | sp.sparray, device: torch.device) -> None:
        self.device = device
        if sp.issparse(x):
            coo = sp.coo_array(x, dtype=np.float32)
            indices = torch.from_numpy(np.vstack([coo.row, coo.col]).astype(np.int64))
            values = torch.from_numpy(coo.data.astype(np.float32, copy=False))
            self.shape = tuple(int(s) for s in coo.shape)
            self.sparse = (
                torch.sparse_coo_tensor(indices, values, self.shape, check_invariants=True)
                .coalesce()
                .to(device)
            )
            self.sparse_t = self.sparse.t().coalesce()
            self.dense = None
        else:
            self.dense = torch.as_tensor(np.ascontiguousarray(x), dtype=torch.float32).to(device)
            self.shape = tuple(self.dense.shape)
            self.sparse = self.sparse_t = None

    @property
    def is_sparse(self) -> bool:
        return self.dense is None

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        """Dense ``(len(idx), n_features)`` block of the given samples."""
        if self.dense is not None:
            return self.dense[idx]
        return torch.index_select(self.sparse, 0, idx).to_dense()

    def span(self, start: int, stop: int) -> torch.Tensor:
        """Dense block of samples ``start:stop``."""
        if self.dense is not None:
            return self.dense[start:stop]
        return self.rows(torch.arange(start, min(stop, self.shape[0]), device=self.device))

    def column_scores(self, columns: torch.Tensor | None, dz: torch.Tensor) -> torch.Tensor:
        """``|X[:, columns]^T @ dz|`` (all columns when ``None``): the absolute loss gradient of the
        first layer's weights on those input neurons (``dz`` = dL/d(pre-activation), ``(n_samples,
        n_out)``), as a contiguous ``(len(columns), n_out)`` block."""
        if self.dense is not None:
            return dense_column_scores(self.dense, columns, dz)
        block = self.sparse_t if columns is None else torch.index_select(self.sparse_t, 0, columns)
        return torch.sparse.mm(block, dz).abs()
