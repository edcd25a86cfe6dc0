"""Streaming global magnitude pruning: exact threshold from chunked histograms, applied in place.

research-systems-core' ``MaskSet.from_scores`` returns boolean masks (1 byte per weight, 25% of fp32
weight bytes on their own) and its histogram search makes several full passes with per-tensor
temporaries. When the masks are not needed as separate tensors (the pruned weights are the
zeros), this module finds the exact k-th smallest |w| over all targeted weights with bounded
memory (one chunk of temporaries) and zeroes the pruned weights in place. Same selection rule as
``MaskSet``: exactly round(s * n) pruned, lowest |w| first, ties pruned in dict order then
row-major order.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from llm_sparsity.pruning import check_sparsity
from llm_sparsity.targets import Targets

__all__ = ["magnitude_threshold", "prune_magnitude_in_place"]

CHUNK = 1 << 16  # elements per chunk (bounds the temporaries: 64 Ki fp32 = 256 KiB)


def _chunks(tensors: list[torch.Tensor], chunk: int) -> Iterator[torch.Tensor]:
    for t in tensors:
        flat = t.detach().reshape(-1)
        for start in range(0, flat.numel(), chunk):
            yield flat[start : start + chunk]


class _Scratch:
    """Chunk-sized buffers reused for every chunk: no allocation churn (and no heap fragmentation)."""

    def __init__(self, chunk: int) -> None:
        self.values = torch.empty(chunk, dtype=torch.float32)
        self.flag_a = torch.empty(chunk, dtype=torch.bool)
        self.flag_b = torch.empty(chunk, dtype=torch.bool)

    def abs(self, c: torch.Tensor) -> torch.Tensor:
        a = self.values[: c.numel()]
        a.copy_(c)
        return a.abs_()


def _bracket(tensors: list[torch.Tensor], lo: float, hi: float, chunk: int) -> tuple[int, torch.Tensor]:
    """One pass: the number of |w| < lo and the |w| in [lo, hi] (fp32, unsorted)."""
    scratch = _Scratch(chunk)
    below, parts = 0, []
    for c in _chunks(tensors, chunk):
        a = scratch.abs(c)
        lt, inside = scratch.flag_a[: a.numel()], scratch.flag_b[: a.numel()]
        torch.lt(a, lo, out=lt)
        below += int(lt.sum())
        torch.ge(a, lo, out=inside)
        torch.le(a, hi, out=lt)
        inside.logical_and_(lt)
        parts.append(a[inside])
    return below, torch.cat(parts) if parts else torch.empty(0)


def _kth(values: torch.Tensor, k: int) -> float:
    """The k-th smallest (1-based) of a 1-D tensor."""
    return float(torch.kthvalue(values, k).values)


def _sample(tensors: list[torch.Tensor], total: int, size: int) -> torch.Tensor:
    """A strided sample of |w| (fp32) written into one buffer, sorted."""
    stride = max(1, total // size)
    counts = [-(-t.numel() // stride) for t in tensors]
    buf = torch.empty(sum(counts), dtype=torch.float32)
    at = 0
    for t, n in zip(tensors, counts, strict=True):
        torch.abs(t.detach().reshape(-1)[::stride].float(), out=buf[at : at + n])
        at += n
    return buf.sort().values


def _threshold_and_below(
    tensors: list[torch.Tensor], k: int, bins: int = 4096, chunk: int = CHUNK, sample_size: int | None = None
) -> tuple[float, int]:
    """Exact k-th smallest |value| and the number of values strictly below it.

    Fast path: a strided sample (1/64 of the weights, at most 10^6 values) brackets the quantile
    (+- 6 binomial standard deviations), one exact pass counts what lies below the bracket and
    keeps what lies inside (about 1% of the weights, fp32), and ``kthvalue`` picks the answer. If
    the bracket misses (never for a representative sample, but possible for adversarial layouts),
    a histogram search narrows the range pass by pass; both end in an exact count, never an
    estimate. Extra memory: the sample, the bracket and one chunk of temporaries."""
    total = sum(t.numel() for t in tensors)
    if not 1 <= k <= total:
        raise ValueError(f"k must be in [1, {total}], got {k}")
    size = sample_size or min(max(total // 64, 1000), 1_000_000)
    sample = _sample(tensors, total, size)
    m = sample.numel()
    q = k / total
    margin = 6.0 * math.sqrt(max(q * (1 - q), 1.0 / m) / m) + 2.0 / m
    lo = float(sample[int(max(q - margin, 0.0) * (m - 1))]) if q - margin > 0 else 0.0
    hi = float(sample[min(math.ceil((q + margin) * (m - 1)), m - 1)]) if q + margin < 1 else math.inf
    del sample
    below, cand = _bracket(tensors, lo, hi, chunk)
    if below < k <= below + cand.numel() and cand.numel() <= 64 * chunk:
        thr = _kth(cand, k - below)
        return thr, below + int((cand < thr).sum())
    del cand
    # fallback: histogram narrowing over [0, max]
    lo, hi = 0.0, max(float(c.abs().max()) for c in _chunks(tensors, chunk))
    while True:
        hist = torch.zeros(bins, dtype=torch.float64)
        for c in _chunks(tensors, chunk):
            hist += torch.histc(c.abs().float(), bins=bins, min=lo, max=hi).double()
        n_lo, _ = _bracket(tensors, lo, lo, chunk)
        b = int(
            torch.searchsorted(torch.cumsum(hist, 0), torch.tensor([float(k - n_lo)], dtype=torch.float64))
        )
        width = (hi - lo) / bins
        for spread in range(bins):  # histc may bin edge values differently: verify with exact counts
            new_lo = lo + max(b - spread, 0) * width
            new_hi = lo + (b + 1 + spread) * width if b + 1 + spread < bins else hi
            n_below, cand = _bracket(tensors, new_lo, new_hi, chunk)
            if n_below < k <= n_below + cand.numel():
                break
        if cand.numel() <= 64 * chunk or (new_lo, new_hi) == (lo, hi):
            thr = _kth(cand, k - n_below)
            return thr, n_below + int((cand < thr).sum())
        lo, hi = new_lo, new_hi


def magnitude_threshold(tensors: list[torch.Tensor], k: int, bins: int = 4096, chunk: int = CHUNK) -> float:
    """The exact k-th smallest |value| (1-based) over ``tensors``, with bounded extra memory."""
    return _threshold_and_below(list(tensors), k, bins, chunk)[0]


@torch.no_grad()
def prune_magnitude_in_place(model: torch.nn.Module, targets: Targets, sparsity: float) -> dict[str, float]:
    """Global magnitude pruning of ``targets`` to exactly round(sparsity * n) zeros, in place, with
    bounded extra memory. Returns the threshold and counts; the mask is ``weight != 0`` afterwards
    (plus any weights that were exactly zero before and were kept)."""
    check_sparsity(sparsity)
    params = list(targets.parameters(model).values())
    total = sum(p.numel() for p in params)
    k = round(sparsity * total)
    if k == 0:
        return {"threshold": float("-inf"), "pruned": 0, "total": total}
    thr, below = _threshold_and_below(params, k)
    ties_left = k - below
    scratch = _Scratch(CHUNK)
    for p in params:
        flat = p.data.view(-1)  # a view: the zeros land in the parameter
        for start in range(0, flat.numel(), CHUNK):
            c = flat[start : start + CHUNK]
            a = scratch.abs(c)  # the same fp32 values the threshold was chosen among
            prune = scratch.flag_a[: a.numel()]
            torch.lt(a, thr, out=prune)
            if ties_left > 0:
                eq = scratch.flag_b[: a.numel()]
                torch.eq(a, thr, out=eq)
                n_eq = int(eq.sum())
                if n_eq:
                    take = min(ties_left, n_eq)
                    prune |= eq & (torch.cumsum(eq, 0) <= take)
                    ties_left -= take
            c.masked_fill_(prune, 0)
    if ties_left:
        raise AssertionError(f"streaming magnitude pruning left {ties_left} ties unpruned")
    return {"threshold": thr, "pruned": k, "total": total}
