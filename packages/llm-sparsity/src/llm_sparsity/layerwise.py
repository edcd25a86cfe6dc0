"""Layer-wise pruning of one weight matrix from its calibration inputs: magnitude, Wanda, SparseGPT.

Conventions: ``weight`` is (out, in) (a GPT-2 ``Conv1D`` weight is passed transposed); a mask is
boolean, True = kept. Unstructured masks prune exactly the stated count; N:M masks keep exactly N
of every M consecutive input weights in each row.

- Wanda (Sun et al. 2023, locuslab/wanda ``lib/prune.py``): score |W_ij| * ||X_j||_2, compared
  within each output row (``round(s * in)`` pruned per row).
- SparseGPT (Frantar & Alistarh 2023, IST-DASLab/sparsegpt ``sparsegpt.py``): H = X^T X / n,
  1% dampening of the mean diagonal, upper Cholesky factor of H^-1, columns processed in lazy
  blocks of 128; the mask of each block is chosen by w^2 / [H^-1]_jj^2 and the error of every
  pruned weight is spread over the later columns (OBS update).
"""

from __future__ import annotations

import torch

__all__ = [
    "HessianAccumulator",
    "NormAccumulator",
    "magnitude_mask",
    "nm_mask",
    "row_mask",
    "sparsegpt_prune",
    "wanda_mask",
]


def _check(sparsity: float | None, nm: tuple[int, int] | None) -> None:
    if nm is None and (sparsity is None or not 0.0 <= sparsity < 1.0):
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity!r}")
    if nm is not None and not 0 < nm[0] < nm[1]:
        raise ValueError(f"N:M pattern needs 0 < N < M, got {nm[0]}:{nm[1]}")


def row_mask(score: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep-mask pruning the ``round(sparsity * in)`` lowest scores of every row (stable ties)."""
    k = round(sparsity * score.shape[1])
    keep = torch.ones(score.shape, dtype=torch.bool, device=score.device)
    if k:
        keep.scatter_(1, torch.sort(score, dim=1, stable=True).indices[:, :k], False)
    return keep


def nm_mask(score: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """Keep-mask with the N highest scores of every M consecutive inputs of each row kept."""
    rows, cols = score.shape
    if cols % m:
        raise ValueError(f"N:M with M={m} needs the input dimension ({cols}) divisible by {m}")
    groups = score.reshape(rows, cols // m, m)
    keep = torch.zeros(groups.shape, dtype=torch.bool, device=score.device)
    keep.scatter_(2, torch.topk(groups, n, dim=2).indices, True)
    return keep.reshape(rows, cols)


def magnitude_mask(
    weight: torch.Tensor, sparsity: float | None, nm: tuple[int, int] | None = None
) -> torch.Tensor:
    """Per-row magnitude mask (the layer-wise baseline the Wanda paper compares against)."""
    _check(sparsity, nm)
    score = weight.detach().abs().float()
    return nm_mask(score, *nm) if nm else row_mask(score, float(sparsity))


def wanda_mask(
    weight: torch.Tensor, input_norms: torch.Tensor, sparsity: float | None, nm: tuple[int, int] | None = None
) -> torch.Tensor:
    """Wanda's keep-mask: |W_ij| * ||X_j||_2, the lowest pruned within each output row (or N:M)."""
    _check(sparsity, nm)
    if input_norms.shape != (weight.shape[1],):
        raise ValueError(f"input_norms must have shape ({weight.shape[1]},), got {tuple(input_norms.shape)}")
    score = weight.detach().abs().float() * input_norms.float().to(weight.device)[None, :]
    return nm_mask(score, *nm) if nm else row_mask(score, float(sparsity))


class NormAccumulator:
    """Running sum of squares of every input feature over calibration tokens (Wanda's ||X_j||^2)."""

    def __init__(self, n_features: int, device: torch.device) -> None:
        self.sq = torch.zeros(n_features, dtype=torch.float32, device=device)
        self.n_tokens = 0

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).float()
        self.sq += (x * x).sum(0)
        self.n_tokens += x.shape[0]

    def norms(self) -> torch.Tensor:
        return self.sq.sqrt()


class HessianAccumulator:
    """H = X^T X / n over calibration tokens, accumulated in fp32 (SparseGPT's ``add_batch``)."""

    def __init__(self, n_features: int, device: torch.device) -> None:
        self.h = torch.zeros(n_features, n_features, dtype=torch.float32, device=device)
        self.n_tokens = 0

    def add(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).float()
        n_new = x.shape[0]
        total = self.n_tokens + n_new
        self.h.mul_(self.n_tokens / total).addmm_(x.t(), x, alpha=1.0 / total)
        self.n_tokens = total


def _inverse_cholesky(h: torch.Tensor, percdamp: float) -> torch.Tensor:
    """Upper Cholesky factor of (H + damp I)^-1, damp = percdamp * mean(diag H)."""
    h = h.clone()
    damp = percdamp * torch.diag(h).mean()
    h.diagonal().add_(damp)
    inv = torch.cholesky_inverse(torch.linalg.cholesky(h))
    return torch.linalg.cholesky(inv, upper=True)


def _block_prune_count(rows: int, i1: int, i2: int, sparsity: float) -> int:
    """Weights pruned in columns [i1, i2): cumulative rounding, so the layer total is exact."""
    return round(sparsity * rows * i2) - round(sparsity * rows * i1)


@torch.no_grad()
def sparsegpt_prune(
    weight: torch.Tensor,
    hessian: torch.Tensor,
    sparsity: float | None,
    nm: tuple[int, int] | None = None,
    *,
    blocksize: int = 128,
    percdamp: float = 0.01,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SparseGPT on one (out, in) weight: returns (updated weight in its dtype, keep-mask).

    Unstructured: exactly ``round(s * out * in)`` weights pruned (per lazy block, cumulative
    rounding); N:M: exactly N kept in every M consecutive columns of each row."""
    _check(sparsity, nm)
    if nm is not None and blocksize % nm[1]:
        raise ValueError(f"blocksize {blocksize} must be a multiple of M={nm[1]}")
    rows, cols = weight.shape
    if nm is not None and cols % nm[1]:
        raise ValueError(f"N:M with M={nm[1]} needs the input dimension ({cols}) divisible by {nm[1]}")
    w = weight.detach().float().clone()
    h = hessian.float().to(w.device).clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0
    hinv = _inverse_cholesky(h, percdamp)
    pruned = torch.zeros(rows, cols, dtype=torch.bool, device=w.device)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        _sparsegpt_block(w, hinv, pruned, i1, i2, sparsity, nm)
    return w.to(weight.dtype), ~pruned


def _sparsegpt_block(
    w: torch.Tensor,
    hinv: torch.Tensor,
    pruned: torch.Tensor,
    i1: int,
    i2: int,
    sparsity: float | None,
    nm: tuple[int, int] | None,
) -> None:
    """One lazy block of columns [i1, i2): choose its mask, prune column by column with OBS
    updates inside the block, then push the accumulated error to the columns after it."""
    w1 = w[:, i1:i2].clone()
    hinv1 = hinv[i1:i2, i1:i2]
    err1 = torch.zeros_like(w1)
    mask1 = torch.zeros(w1.shape, dtype=torch.bool, device=w.device)
    d = torch.diag(hinv1)
    if nm is None:
        k = _block_prune_count(w.shape[0], i1, i2, float(sparsity))
        if k:
            score = (w1**2 / d[None, :] ** 2).reshape(-1)
            mask1.view(-1)[torch.sort(score, stable=True).indices[:k]] = True
    n, m = nm if nm is not None else (0, 0)
    for i in range(i2 - i1):
        if nm is not None and i % m == 0:
            score = w1[:, i : i + m] ** 2 / d[i : i + m][None, :] ** 2
            drop = torch.topk(score, m - n, dim=1, largest=False).indices
            mask1[:, i : i + m].scatter_(1, drop, True)
        col = w1[:, i]
        q = col.masked_fill(mask1[:, i], 0.0)
        e = (col - q) / hinv1[i, i]
        w1[:, i:] -= e[:, None] * hinv1[i, i:][None, :]
        w1[:, i] = q
        err1[:, i] = e
    w[:, i1:i2] = w1
    pruned[:, i1:i2] = mask1
    w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
