"""A linear layer with a sparse, changeable set of connections and two interchangeable backends.

Connections are stored as ``(rows, cols, values)`` with ``rows`` the input index and ``cols`` the
output index, sorted row-major. Two backends compute the same function:

* ``"sparse"``: only the active weights exist (a 1-D parameter of length ``n_active``). The forward
  pass is a CSR sparse x dense product, the weight gradient a sampled dense-dense product
  (``torch.sparse.sampled_addmm``, SDDMM) on the connection pattern, the input gradient another CSR
  product. Time and memory grow with the number of active connections, not ``n_in * n_out``.
* ``"dense"``: a dense ``(n_in, n_out)`` weight multiplied by a 0/1 mask before a dense matmul
  (what the Keras reference does). Faster than the sparse kernels when the layer is not very sparse.

``backend="auto"`` picks ``"sparse"`` when the density is at most ``SPARSE_DENSITY_THRESHOLD``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from research_systems_core.validation import check_choice, check_int, check_range

__all__ = [
    "BACKENDS",
    "SPARSE_DENSITY_THRESHOLD",
    "SparseLinear",
    "Topology",
    "er_density",
    "sample_er_connections",
]

BACKENDS = ("sparse", "dense", "auto")
# Measured in benchmarks/bench.py (kernel sweep): below ~5-10 % density the CSR/SDDMM kernels beat a
# dense masked matmul on one CPU thread; above it BLAS wins.
SPARSE_DENSITY_THRESHOLD = 0.05

# torch marks CSR support as beta; the kernels we use are stable, the warning is noise here.
warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta state")


def er_density(n_in: int, n_out: int, epsilon: float) -> float:
    """Erdős–Rényi connection probability ``epsilon * (n_in + n_out) / (n_in * n_out)``, capped at 1."""
    check_int("n_in", n_in, minimum=1)
    check_int("n_out", n_out, minimum=1)
    check_range("epsilon", epsilon, 0.0, None, low_inclusive=False)
    return min(1.0, float(epsilon) * (n_in + n_out) / (n_in * n_out))


def sample_er_connections(
    n_in: int, n_out: int, epsilon: float, rng: np.random.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample an Erdős–Rényi mask as sorted ``(rows, cols)`` index tensors.

    Every one of the ``n_in * n_out`` positions is kept independently with probability
    :func:`er_density` (as the reference does with a dense uniform matrix), but without ever
    building the dense matrix: the count is drawn from the binomial, then that many distinct
    positions uniformly, so memory stays proportional to the number of connections.
    """
    p = er_density(n_in, n_out, epsilon)
    total = n_in * n_out
    count = int(rng.binomial(total, p)) if p < 1.0 else total
    count = max(count, 1)
    if count == total:
        flat = np.arange(total, dtype=np.int64)
    else:
        flat = np.sort(rng.choice(total, size=count, replace=False)).astype(np.int64)
    flat_t = torch.from_numpy(flat)
    return flat_t // n_out, flat_t % n_out


@dataclass
class Topology:
    """Index structures of one connection pattern (CSR of W and of W^T, sharing one value order)."""

    n_in: int
    n_out: int
    rows: torch.Tensor  # (nnz,) input index, sorted row-major together with cols
    cols: torch.Tensor  # (nnz,) output index
    crow: torch.Tensor  # (n_in + 1,) CSR row pointer of W (n_in x n_out)
    t_crow: torch.Tensor  # (n_out + 1,) CSR row pointer of W^T
    t_col: torch.Tensor  # (nnz,) column index (= input index) of W^T
    t_perm: torch.Tensor  # (nnz,) W^T values = values[t_perm]
    ones: torch.Tensor  # (nnz,) pattern values for the SDDMM

    @classmethod
    def build(cls, n_in: int, n_out: int, rows: torch.Tensor, cols: torch.Tensor) -> Topology:
        """Index structures of connections ``(rows, cols)`` given in row-major order."""
        rows = rows.to(torch.int64)
        cols = cols.to(torch.int64)
        device = rows.device
        crow = torch.zeros(n_in + 1, dtype=torch.int64, device=device)
        crow[1:] = torch.cumsum(torch.bincount(rows, minlength=n_in), 0)
        # rows are sorted row-major, so a stable sort by column alone gives column-major order
        t_perm = torch.argsort(cols.to(torch.int32), stable=True)
        t_crow = torch.zeros(n_out + 1, dtype=torch.int64, device=device)
        t_crow[1:] = torch.cumsum(torch.bincount(cols, minlength=n_out), 0)
        ones = torch.ones(len(rows), device=device)
        return cls(n_in, n_out, rows, cols, crow, t_crow, rows[t_perm], t_perm, ones)

    @property
    def nnz(self) -> int:
        return int(self.rows.numel())


class _SparseMatmul(torch.autograd.Function):
    """``x @ W`` for a CSR-stored W given by its values; gradients through CSR products and SDDMM."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, values: torch.Tensor, topo: Topology) -> torch.Tensor:
        w_t = torch.sparse_csr_tensor(
            topo.t_crow, topo.t_col, values[topo.t_perm], size=(topo.n_out, topo.n_in), check_invariants=False
        )
        x_t = x.t().contiguous()  # kept for the SDDMM of the backward pass (one transpose, not two)
        out = (w_t @ x_t).t()
        ctx.save_for_backward(x_t, values)
        ctx.topo = topo
        return out

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x_t, values = ctx.saved_tensors
        topo: Topology = ctx.topo
        grad_x = grad_values = None
        grad_out = grad_out.contiguous()
        if ctx.needs_input_grad[0]:
            w = torch.sparse_csr_tensor(
                topo.crow, topo.cols, values, size=(topo.n_in, topo.n_out), check_invariants=False
            )
            grad_x = (w @ grad_out.t().contiguous()).t()
        if ctx.needs_input_grad[1]:
            pattern = torch.sparse_csr_tensor(
                topo.crow,
                topo.cols,
                topo.ones.to(values.dtype),
                size=(topo.n_in, topo.n_out),
                check_invariants=False,
            )
            grad_values = torch.sparse.sampled_addmm(pattern, x_t, grad_out, beta=0.0, alpha=1.0).values()
        return grad_x, grad_values, None


INITS = ("sparse", "dense")


def glorot_limit(n_in: int, n_out: int) -> float:
    """Keras' glorot_uniform bound for a dense (n_in, n_out) kernel (the reference's initialiser)."""
    return math.sqrt(6.0 / (n_in + n_out))


def sparse_glorot_limit(n_in: int, n_out: int, n_active: int) -> float:
    """Glorot bound with the *actual* mean fan-in ``n_active / n_out`` and fan-out ``n_active / n_in``.

    The dense bound ``sqrt(6 / (n_in + n_out))`` on a layer with density p gives pre-activations
    whose variance is p times Glorot's, so the signal shrinks by p at every sparse layer (about
    1/40 per layer at 1000-1000 with epsilon 13): a 3-hidden-layer network then passes ~1e-3 of its
    input to the output and SGD at lr 0.01 does not move the loss (measured: loss stuck at log C).
    """
    n_active = max(1, n_active)
    return math.sqrt(6.0 / (n_active / n_out + n_active / n_in))


class SparseLinear(nn.Module):
    """``y = x @ W + b`` where W has only the connections ``(rows, cols)``; see the module docstring."""

    def __init__(
        self,
        n_in: int,
        n_out: int,
        rows: torch.Tensor,
        cols: torch.Tensor,
        values: torch.Tensor | None = None,
        backend: str = "auto",
        generator: torch.Generator | None = None,
        init: str = "sparse",
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        check_choice("backend", backend, BACKENDS)
        check_choice("init", init, INITS)
        self.n_in = check_int("n_in", n_in, minimum=1)
        self.n_out = check_int("n_out", n_out, minimum=1)
        self.requested_backend = backend
        self.bias = nn.Parameter(torch.zeros(n_out, device=device))
        if values is None:
            if init == "sparse":
                limit = sparse_glorot_limit(n_in, n_out, len(rows))
            else:
                limit = glorot_limit(n_in, n_out)
            values = (torch.rand(len(rows), generator=generator) * 2 - 1) * limit
        self.set_connections(rows, cols, values)

    # ----------------------------------------------------------------------------------- structure
    @property
    def backend(self) -> str:
        """The backend in use (``"auto"`` resolved by the current density)."""
        if self.requested_backend != "auto":
            return self.requested_backend
        return "sparse" if self.density <= SPARSE_DENSITY_THRESHOLD else "dense"

    @property
    def n_active(self) -> int:
        return self.topology.nnz

    @property
    def density(self) -> float:
        return self.n_active / (self.n_in * self.n_out)

    def set_connections(self, rows: torch.Tensor, cols: torch.Tensor, values: torch.Tensor) -> None:
        """Replace the connection pattern and its weights (duplicates are an error).

        The weight parameter is recreated, so an optimizer must be rebuilt afterwards.
        """
        device = self.bias.device
        rows = torch.as_tensor(rows, dtype=torch.int64, device=device)
        cols = torch.as_tensor(cols, dtype=torch.int64, device=device)
        values = torch.as_tensor(values, dtype=torch.float32, device=device).detach()
        if not (rows.shape == cols.shape == values.shape) or rows.ndim != 1:
            raise ValueError("rows, cols and values must be 1-D tensors of the same length")
        if rows.numel() and (
            int(rows.min()) < 0
            or int(rows.max()) >= self.n_in
            or int(cols.min()) < 0
            or int(cols.max()) >= self.n_out
        ):
            raise ValueError(f"connection indices out of range for a {self.n_in}x{self.n_out} layer")
        flat = rows * self.n_out + cols
        order = torch.argsort(flat)
        flat = flat[order]
        if flat.numel() > 1 and bool((flat[1:] == flat[:-1]).any()):
            raise ValueError("duplicate connections")
        rows, cols, values = rows[order], cols[order], values[order]
        self.topology = Topology.build(self.n_in, self.n_out, rows, cols)
        if self.backend == "sparse":
            self.weight_values = nn.Parameter(values.clone())
            self.dense_weight = None
            self.register_buffer("mask", None, persistent=False)
        else:
            dense = torch.zeros(self.n_in, self.n_out, device=device)
            dense[rows, cols] = values
            mask = torch.zeros(self.n_in, self.n_out, device=device)
            mask[rows, cols] = 1.0
            self.dense_weight = nn.Parameter(dense)
            self.weight_values = None
            self.register_buffer("mask", mask, persistent=False)

    def connections(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(rows, cols, values)`` of the active connections (row-major order, detached copies)."""
        topo = self.topology
        return topo.rows.clone(), topo.cols.clone(), self.values().detach().clone()

    def values(self) -> torch.Tensor:
        """Active weights in row-major connection order (differentiable)."""
        if self.weight_values is not None:
            return self.weight_values
        return self.dense_weight[self.topology.rows, self.topology.cols]

    def to_dense(self) -> torch.Tensor:
        """The weight as a dense ``(n_in, n_out)`` tensor (zeros where there is no connection)."""
        out = torch.zeros(self.n_in, self.n_out, device=self.bias.device)
        out[self.topology.rows, self.topology.cols] = self.values().detach()
        return out

    def input_strength(self) -> torch.Tensor:
        """Sum of absolute outgoing weights of every input neuron (the NeuroFS neuron strength)."""
        return torch.zeros(self.n_in, device=self.bias.device).index_add_(
            0, self.topology.rows, self.values().detach().abs()
        )

    def active_inputs(self) -> torch.Tensor:
        """Boolean (n_in,) mask of input neurons that have at least one connection."""
        return torch.bincount(self.topology.rows, minlength=self.n_in) > 0

    def l2_penalty(self) -> torch.Tensor:
        """Sum of squared weights and biases (Keras ``l2`` regulariser without the factor).

        The dense backend's weight is zero off the mask (set so, and its gradient is masked), so
        its whole square sum is the active weights' one, without gathering them."""
        weight = self.weight_values if self.weight_values is not None else self.dense_weight
        return (weight**2).sum() + (self.bias**2).sum()

    # ------------------------------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.n_in:
            raise ValueError(f"expected input of shape (batch, {self.n_in}), got {tuple(x.shape)}")
        if self.weight_values is not None:
            return _SparseMatmul.apply(x, self.weight_values, self.topology) + self.bias
        return torch.addmm(self.bias, x, self.dense_weight * self.mask)

    def extra_repr(self) -> str:
        return (
            f"n_in={self.n_in}, n_out={self.n_out}, active={self.n_active}, "
            f"density={self.density:.4f}, backend={self.backend}"
        )
