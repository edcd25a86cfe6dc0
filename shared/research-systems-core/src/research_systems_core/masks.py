"""Named boolean masks over a model's parameters (True = kept weight).

Exactness: asking for sparsity ``s`` over ``n`` targeted weights prunes exactly ``round(s * n)``
of them (Python's round, half to even). The lowest scores are pruned first. Ties are broken by
position: among equal scores, the earlier one is pruned first, where "earlier" means earlier in
the masks' dict order, then earlier in the tensor's row-major (flattened) order. Row allocation
prunes ``round(s * row_length)`` per row and N:M keeps ``n`` of every ``m`` consecutive weights,
with the same tie rule inside a row or group.

The global threshold is found without concatenating the scores: :func:`kth_smallest` narrows a
value range with per-tensor histograms and exact counts, so extra memory stays at one tensor's
temporaries plus a small candidate set.
"""

from __future__ import annotations

import math
import os
import pathlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
from torch import nn

from research_systems_core.files import atomic_write
from research_systems_core.validation import check_choice, check_int, check_range

__all__ = [
    "MaskHandle",
    "MaskSet",
    "erk_densities",
    "kth_smallest",
    "magnitude_scores",
    "uniform_densities",
]

Transform = Callable[[torch.Tensor], torch.Tensor] | None
ALLOCATIONS = ("global", "layer", "row")


def _as_compare_dtype(t: torch.Tensor) -> torch.Tensor:
    """float32/float64 tensors as they are, everything else upcast to float32 (order preserved)."""
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


def _scores(t: torch.Tensor, transform: Transform) -> torch.Tensor:
    t = t.detach()
    return _as_compare_dtype(transform(t) if transform is not None else t)


def kth_smallest(
    tensors: Iterable[torch.Tensor],
    k: int,
    transform: Transform = None,
    bins: int = 2048,
    max_candidates: int = 1 << 20,
) -> float:
    """The exact ``k``-th smallest value (1-based, with multiplicity) over all ``tensors``.

    ``transform`` (for example ``torch.abs``) is applied to one tensor at a time, so global
    magnitude pruning needs no copy of all magnitudes. NaN scores raise ValueError.
    """
    tensors = list(tensors)
    total = sum(t.numel() for t in tensors)
    k = check_int("k", k, minimum=1, maximum=max(total, 1))
    if total == 0:
        raise ValueError("kth_smallest needs at least one value")
    lo, hi = math.inf, -math.inf
    for i, t in enumerate(tensors):
        if t.numel() == 0:
            continue
        s = _scores(t, transform)
        if torch.isnan(s).any():
            raise ValueError(f"scores of tensor #{i} contain NaN")
        lo, hi = min(lo, float(s.min())), max(hi, float(s.max()))
    below = 0  # number of values < lo
    inside = total  # number of values in [lo, hi]
    while True:
        if lo == hi:
            return lo
        if inside <= max_candidates:
            parts = []
            for t in tensors:
                s = _scores(t, transform).reshape(-1)
                parts.append(s[(s >= lo) & (s <= hi)].to(torch.float64))
            cand = torch.cat(parts).sort().values
            return float(cand[k - below - 1])
        edges = torch.linspace(lo, hi, bins + 1, dtype=torch.float64)
        hist = torch.zeros(bins, dtype=torch.float64)
        for t in tensors:
            s = _scores(t, transform)
            hist += torch.histc(s, bins=bins, min=lo, max=hi).to(torch.float64)
        cum = torch.cumsum(hist, 0)
        b = int(torch.searchsorted(cum, torch.tensor([float(k - below)], dtype=torch.float64)))
        b = min(max(b, 0), bins - 1)
        width = 0
        while True:  # histc's binning may round differently from exact counts: verify, widen if needed
            new_lo = float(edges[max(b - width, 0)])
            new_hi = float(edges[min(b + 1 + width, bins)])
            new_below = sum(int((_scores(t, transform) < new_lo).sum()) for t in tensors)
            new_inside = sum(
                int(((s := _scores(t, transform)) >= new_lo).logical_and_(s <= new_hi).sum()) for t in tensors
            )
            if new_below < k <= new_below + new_inside:
                break
            width += 1
        if (new_lo, new_hi) == (lo, hi):  # cannot narrow further (denormal-sized range): sort candidates
            max_candidates = inside
        lo, hi, below, inside = new_lo, new_hi, new_below, new_inside


def _prune_lowest(score: torch.Tensor, threshold: float, ties_to_prune: int) -> tuple[torch.Tensor, int]:
    """Keep-mask pruning ``score < threshold`` and the first ``ties_to_prune`` entries equal to it."""
    flat = score.reshape(-1)
    keep = flat > threshold
    eq = flat == threshold
    n_eq = int(eq.sum())
    take = min(ties_to_prune, n_eq)
    if n_eq and take < n_eq:  # keep the later ties
        later = torch.cumsum(eq, 0, dtype=torch.int64) > take
        keep |= eq & later
    return keep.reshape(score.shape), take


def _check_sparsity(sparsity: float) -> float:
    return check_range("sparsity", sparsity, 0.0, 1.0, high_inclusive=False)


def _check_names(names: Iterable[str], available: Mapping[str, Any], what: str) -> None:
    missing = [n for n in names if n not in available]
    if missing:
        some = ", ".join(list(available)[:8])
        raise ValueError(
            f"{what} has no parameter {missing[0]!r} (and {len(missing) - 1} more missing); it has: {some}..."
        )


class MaskHandle:
    """Keeps a :class:`MaskSet` enforced through ``optimizer.step()``; ``remove()`` detaches it."""

    def __init__(
        self, maskset: MaskSet, params: dict[str, nn.Parameter], optimizer: torch.optim.Optimizer
    ) -> None:
        self.maskset = maskset
        self.params = params
        self.optimizer = optimizer
        self._hooks = [
            optimizer.register_step_pre_hook(self._before_step),
            optimizer.register_step_post_hook(self._after_step),
        ]

    @torch.no_grad()
    def _before_step(self, *_: Any) -> None:
        for name, p in self.params.items():
            if p.grad is not None:
                p.grad.mul_(self.maskset.masks[name])

    @torch.no_grad()
    def _after_step(self, *_: Any) -> None:
        for name, p in self.params.items():
            mask = self.maskset.masks[name]
            p.mul_(mask)
            for value in self.optimizer.state.get(p, {}).values():
                if isinstance(value, torch.Tensor) and value.shape == p.shape:
                    value.mul_(mask)

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []


class MaskSet:
    """Boolean keep-masks by parameter name (``True`` = weight kept)."""

    def __init__(self, masks: Mapping[str, torch.Tensor]) -> None:
        self.masks: dict[str, torch.Tensor] = {}
        for name, m in masks.items():
            if not isinstance(m, torch.Tensor):
                raise TypeError(f"mask {name!r} must be a torch tensor, got {type(m).__name__}")
            self.masks[name] = m if m.dtype == torch.bool else m.ne(0)

    # ----------------------------------------------------------------- constructors
    @classmethod
    def ones(cls, shapes: Mapping[str, Sequence[int]]) -> MaskSet:
        return cls({n: torch.ones(tuple(s), dtype=torch.bool) for n, s in shapes.items()})

    @classmethod
    def from_scores(
        cls,
        scores: Mapping[str, torch.Tensor],
        sparsity: float,
        allocation: str = "global",
        transform: Transform = None,
    ) -> MaskSet:
        """Prune the lowest scores: ``global`` (one ranking), ``layer`` (per tensor) or ``row``."""
        sparsity = _check_sparsity(sparsity)
        check_choice("allocation", allocation, ALLOCATIONS)
        if not scores:
            raise ValueError("scores is empty: no parameter is targeted")
        if allocation == "layer":
            return cls(
                {n: _prune_k(_scores(s, transform), round(sparsity * s.numel())) for n, s in scores.items()}
            )
        if allocation == "row":
            return cls({n: _row_mask(_scores(s, transform), sparsity) for n, s in scores.items()})
        total = sum(s.numel() for s in scores.values())
        k = round(sparsity * total)
        if k == 0:
            return cls({n: torch.ones(s.shape, dtype=torch.bool, device=s.device) for n, s in scores.items()})
        threshold = kth_smallest(scores.values(), k, transform=transform)
        below = sum(int((_scores(s, transform) < threshold).sum()) for s in scores.values())
        ties_left = k - below
        masks = {}
        for name, s in scores.items():
            masks[name], taken = _prune_lowest(_scores(s, transform), threshold, ties_left)
            ties_left -= taken
        return cls(masks)

    @classmethod
    def from_densities(
        cls, scores: Mapping[str, torch.Tensor], densities: Mapping[str, float], transform: Transform = None
    ) -> MaskSet:
        """Per tensor: keep the ``round(density * n)`` highest scores."""
        _check_names(densities, scores, "scores")
        masks = {}
        for name, s in scores.items():
            if name not in densities:
                raise ValueError(f"no density given for {name!r}")
            d = check_range(f"density of {name!r}", densities[name], 0.0, 1.0)
            masks[name] = _prune_k(_scores(s, transform), s.numel() - round(d * s.numel()))
        return cls(masks)

    @classmethod
    def from_nm(
        cls, scores: Mapping[str, torch.Tensor], n: int, m: int, transform: Transform = None
    ) -> MaskSet:
        """Keep the ``n`` highest of every ``m`` consecutive weights along the input dimension."""
        m = check_int("m", m, minimum=1)
        n = check_int("n", n, minimum=1)
        if n >= m:
            raise ValueError(f"N:M sparsity needs n < m, got n={n}, m={m}")
        masks = {}
        for name, s in scores.items():
            sc = _scores(s, transform)
            rows = sc.reshape(sc.shape[0], -1) if sc.dim() > 1 else sc.reshape(1, -1)
            if rows.shape[1] % m:
                raise ValueError(
                    f"{name!r} has {rows.shape[1]} inputs per row, not divisible by m={m}; N:M needs a multiple of m"
                )
            groups = rows.reshape(rows.shape[0], -1, m)
            order = torch.sort(groups, dim=-1, stable=True).indices[..., : m - n]
            keep = torch.ones_like(groups, dtype=torch.bool).scatter_(-1, order, False)
            masks[name] = keep.reshape(s.shape)
        return cls(masks)

    @classmethod
    def random(
        cls,
        shapes: Mapping[str, Sequence[int]],
        densities: Mapping[str, float] | float,
        generator: torch.Generator | None = None,
    ) -> MaskSet:
        """Uniformly random masks with exactly ``round(density * n)`` kept weights per tensor."""
        if not isinstance(densities, Mapping):
            densities = dict.fromkeys(shapes, densities)
        _check_names(densities, shapes, "shapes")
        masks = {}
        for name, shape in shapes.items():
            d = check_range(f"density of {name!r}", densities[name], 0.0, 1.0)
            numel = math.prod(shape)
            keep = torch.zeros(numel, dtype=torch.bool)
            keep[torch.randperm(numel, generator=generator)[: round(d * numel)]] = True
            masks[name] = keep.reshape(tuple(shape))
        return cls(masks)

    # ----------------------------------------------------------------- combining
    @staticmethod
    def _aligned(masksets: Sequence[MaskSet]) -> list[MaskSet]:
        masksets = list(masksets)
        if not masksets:
            raise ValueError("need at least one MaskSet")
        first = masksets[0]
        for i, other in enumerate(masksets[1:], 1):
            if list(other.masks) != list(first.masks):
                raise ValueError(f"MaskSet #{i} covers different parameters than MaskSet #0")
            for name, m in other.masks.items():
                if m.shape != first.masks[name].shape:
                    raise ValueError(
                        f"MaskSet #{i}: {name!r} has shape {tuple(m.shape)}, #0 has {tuple(first.masks[name].shape)}"
                    )
        return masksets

    @classmethod
    def vote(cls, masksets: Sequence[MaskSet], k: int) -> MaskSet:
        """Keep where at least ``k`` of the masks keep (k=1: union, k=len: intersection)."""
        masksets = cls._aligned(masksets)
        k = check_int("k", k, minimum=1, maximum=len(masksets))
        out = {}
        for name in masksets[0].masks:
            count = torch.zeros(masksets[0].masks[name].shape, dtype=torch.int32)
            for ms in masksets:
                count += ms.masks[name]
            out[name] = count >= k
        return cls(out)

    @classmethod
    def union(cls, masksets: Sequence[MaskSet]) -> MaskSet:
        return cls.vote(masksets, 1)

    @classmethod
    def intersection(cls, masksets: Sequence[MaskSet]) -> MaskSet:
        return cls.vote(masksets, len(list(masksets)))

    def iou(self, other: MaskSet) -> float:
        """Intersection over union of the kept weights, over all tensors (1.0 for two empty masks)."""
        self._aligned([self, other])
        inter = sum(int((a & other.masks[n]).sum()) for n, a in self.masks.items())
        union = sum(int((a | other.masks[n]).sum()) for n, a in self.masks.items())
        return 1.0 if union == 0 else inter / union

    # ----------------------------------------------------------------- use with a model
    def _params(self, module: nn.Module) -> dict[str, nn.Parameter]:
        available = dict(module.named_parameters())
        _check_names(self.masks, available, type(module).__name__)
        params = {n: available[n] for n in self.masks}
        for name, p in params.items():
            if p.shape != self.masks[name].shape:
                raise ValueError(
                    f"mask {name!r} has shape {tuple(self.masks[name].shape)}, parameter has {tuple(p.shape)}"
                )
            if self.masks[name].device != p.device:
                self.masks[name] = self.masks[name].to(p.device)
        return params

    @torch.no_grad()
    def apply(self, module: nn.Module) -> nn.Module:
        """Zero the pruned entries of the named parameters in place; returns ``module``."""
        for name, p in self._params(module).items():
            p.masked_fill_(~self.masks[name], 0)
        return module

    def attach(self, module: nn.Module, optimizer: torch.optim.Optimizer) -> MaskHandle:
        """Apply now and after every ``optimizer.step()`` (grads, weights and optimizer state masked)."""
        self.apply(module)
        return MaskHandle(self, self._params(module), optimizer)

    def to(self, device: torch.device | str) -> MaskSet:
        return MaskSet({n: m.to(device) for n, m in self.masks.items()})

    # ----------------------------------------------------------------- reporting
    @property
    def names(self) -> list[str]:
        return list(self.masks)

    @property
    def n_total(self) -> int:
        return sum(m.numel() for m in self.masks.values())

    @property
    def n_active(self) -> int:
        return sum(int(m.sum()) for m in self.masks.values())

    def density(self) -> float:
        return self.n_active / self.n_total if self.n_total else 1.0

    def sparsity(self) -> float:
        return 1.0 - self.density()

    def report(self) -> dict[str, dict[str, float | int]]:
        """Per tensor: kept count, total, density and sparsity."""
        out: dict[str, dict[str, float | int]] = {}
        for name, m in self.masks.items():
            active = int(m.sum())
            out[name] = {"active": active, "total": m.numel(), "density": active / max(m.numel(), 1)}
            out[name]["sparsity"] = 1.0 - out[name]["density"]
        return out

    def __repr__(self) -> str:
        return f"MaskSet({len(self.masks)} tensors, sparsity={self.sparsity():.4f})"

    # ----------------------------------------------------------------- files
    def save(self, path: str | os.PathLike[str]) -> pathlib.Path:
        """Save as safetensors (bool tensors), atomically."""
        from safetensors.torch import save

        path = pathlib.Path(path)
        data = save(
            {n: m.detach().cpu().contiguous() for n, m in self.masks.items()}, metadata={"kind": "maskset"}
        )
        with atomic_write(path, "wb") as handle:
            handle.write(data)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> MaskSet:
        from safetensors.torch import load_file

        path = pathlib.Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"mask file {path} does not exist")
        try:
            tensors = load_file(str(path))
        except Exception as exc:
            raise ValueError(f"mask file {path} is not a valid safetensors file: {exc}") from None
        bad = [n for n, t in tensors.items() if t.dtype != torch.bool]
        if bad:
            raise ValueError(f"mask file {path}: tensor {bad[0]!r} is not boolean")
        return cls(tensors)


def _prune_k(score: torch.Tensor, k: int) -> torch.Tensor:
    """Keep-mask of one tensor with exactly its ``k`` lowest scores pruned (tie rule as above)."""
    if k == 0:
        return torch.ones(score.shape, dtype=torch.bool, device=score.device)
    threshold = kth_smallest([score], k)
    below = int((score < threshold).sum())
    return _prune_lowest(score, threshold, k - below)[0]


def _row_mask(score: torch.Tensor, sparsity: float) -> torch.Tensor:
    rows = score.reshape(score.shape[0], -1) if score.dim() > 1 else score.reshape(1, -1)
    k = round(sparsity * rows.shape[1])
    keep = torch.ones_like(rows, dtype=torch.bool)
    if k:
        order = torch.sort(rows, dim=1, stable=True).indices[:, :k]
        keep.scatter_(1, order, False)
    return keep.reshape(score.shape)


def magnitude_scores(module: nn.Module, names: Iterable[str]) -> dict[str, torch.Tensor]:
    """``{name: |weight|}`` for the named parameters (a copy; for memory-light pruning pass the
    parameters themselves to :meth:`MaskSet.from_scores` with ``transform=torch.abs``)."""
    params = dict(module.named_parameters())
    names = list(names)
    _check_names(names, params, type(module).__name__)
    return {n: params[n].detach().abs() for n in names}


def uniform_densities(shapes: Mapping[str, Sequence[int]], density: float) -> dict[str, float]:
    density = check_range("density", density, 0.0, 1.0, low_inclusive=False)
    return dict.fromkeys(shapes, density)


def erk_densities(
    shapes: Mapping[str, Sequence[int]],
    density: float,
    power_scale: float = 1.0,
    dense: Iterable[str] = (),
) -> dict[str, float]:
    """Erdős–Rényi-Kernel densities (RigL): density_l proportional to sum(shape)/prod(shape).

    Layers that would exceed density 1 are made dense and the rest rescaled, so the total number
    of kept weights equals ``density * total`` (up to rounding to whole weights). ``dense`` names
    layers kept dense from the start; they count against the budget.
    """
    density = check_range("density", density, 0.0, 1.0, low_inclusive=False)
    dense_layers = set(dense)
    _check_names(dense_layers, shapes, "shapes")
    numel = {n: math.prod(s) for n, s in shapes.items()}
    raw = {n: (sum(s) / math.prod(s)) ** power_scale for n, s in shapes.items()}
    while True:
        rhs = 0.0
        divisor = 0.0
        for name, n in numel.items():
            if name in dense_layers:
                rhs -= n * (1.0 - density)
            else:
                rhs += n * density
                divisor += raw[name] * n
        if divisor == 0:
            break
        eps = rhs / divisor
        if eps <= 0:
            raise ValueError(
                f"density {density} is too low to keep the layers {sorted(dense_layers)} dense; raise density"
            )
        sparse_names = [n for n in numel if n not in dense_layers]
        max_raw = max(raw[n] for n in sparse_names)
        if max_raw * eps <= 1.0:
            break
        dense_layers.update(n for n in sparse_names if raw[n] == max_raw)
    return {n: 1.0 if n in dense_layers else eps * raw[n] for n in numel}
