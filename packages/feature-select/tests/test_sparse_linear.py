import numpy as np
import pytest
import torch

from feature_select.sparse_linear import (
    SparseLinear,
    Topology,
    _SparseMatmul,
    er_density,
    sample_er_connections,
)


def test_er_density_formula_hand_computed():
    # epsilon * (n_in + n_out) / (n_in * n_out)
    assert er_density(10, 20, 2.0) == pytest.approx(2.0 * 30 / 200)
    assert er_density(1000, 1000, 13) == pytest.approx(0.026)
    assert er_density(4, 4, 13) == 1.0  # capped


@pytest.mark.parametrize("bad", [0, -1.0, float("nan")])
def test_er_density_rejects_bad_epsilon(bad):
    with pytest.raises(ValueError, match="epsilon"):
        er_density(10, 10, bad)


def test_sampled_er_mask_has_expected_density_and_no_duplicates():
    rng = np.random.default_rng(0)
    n_in, n_out, eps = 2000, 300, 5.0
    rows, cols = sample_er_connections(n_in, n_out, eps, rng)
    p = er_density(n_in, n_out, eps)
    expected = p * n_in * n_out
    sd = np.sqrt(n_in * n_out * p * (1 - p))
    assert abs(len(rows) - expected) < 5 * sd
    flat = rows * n_out + cols
    assert torch.unique(flat).numel() == flat.numel()
    assert bool((flat[1:] > flat[:-1]).all())  # sorted row-major


def _layer_pair(n_in=7, n_out=5, nnz=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    flat = torch.randperm(n_in * n_out, generator=g)[:nnz]
    rows, cols = flat // n_out, flat % n_out
    values = torch.randn(nnz, generator=g)
    sparse = SparseLinear(n_in, n_out, rows, cols, values, backend="sparse")
    dense = SparseLinear(n_in, n_out, rows, cols, values, backend="dense")
    return sparse, dense


def test_sparse_and_dense_backends_compute_the_same_function_and_gradients():
    sparse, dense = _layer_pair()
    with torch.no_grad():
        sparse.bias.copy_(torch.arange(5.0))
        dense.bias.copy_(torch.arange(5.0))
    x = torch.randn(4, 7)
    xs, xd = x.clone().requires_grad_(), x.clone().requires_grad_()
    ys, yd = sparse(xs), dense(xd)
    torch.testing.assert_close(ys, yd)
    torch.testing.assert_close(ys, x @ sparse.to_dense() + torch.arange(5.0))
    w = torch.randn(4, 5)
    (ys * w).sum().backward()
    (yd * w).sum().backward()
    torch.testing.assert_close(xs.grad, xd.grad)
    rows, cols = sparse.topology.rows, sparse.topology.cols
    torch.testing.assert_close(sparse.weight_values.grad, dense.dense_weight.grad[rows, cols])
    # pruned entries of the dense weight get no gradient
    mask = torch.zeros(7, 5, dtype=torch.bool)
    mask[rows, cols] = True
    assert float(dense.dense_weight.grad[~mask].abs().sum()) == 0.0


def test_sparse_matmul_gradcheck_float64():
    n_in, n_out = 6, 4
    flat = torch.tensor([0, 3, 5, 9, 14, 17, 22])
    topo = Topology.build(n_in, n_out, flat // n_out, flat % n_out)
    x = torch.randn(3, n_in, dtype=torch.float64, requires_grad=True)
    v = torch.randn(flat.numel(), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: _SparseMatmul.apply(a, b, topo), (x, v))


def test_input_strength_is_sum_of_absolute_outgoing_weights():
    rows = torch.tensor([0, 0, 2, 2, 2])
    cols = torch.tensor([0, 1, 0, 1, 2])
    values = torch.tensor([1.0, -2.0, 0.5, -0.25, 3.0])
    layer = SparseLinear(3, 3, rows, cols, values, backend="sparse")
    torch.testing.assert_close(layer.input_strength(), torch.tensor([3.0, 0.0, 3.75]))
    assert layer.active_inputs().tolist() == [True, False, True]


def test_auto_backend_follows_density():
    rows, cols = torch.tensor([0]), torch.tensor([0])
    assert SparseLinear(100, 100, rows, cols, torch.ones(1), backend="auto").backend == "sparse"
    full = torch.arange(4)
    assert SparseLinear(2, 2, full // 2, full % 2, torch.ones(4), backend="auto").backend == "dense"


def test_bad_connections_and_inputs_are_rejected():
    with pytest.raises(ValueError, match="duplicate"):
        SparseLinear(3, 3, torch.tensor([1, 1]), torch.tensor([2, 2]), torch.ones(2))
    with pytest.raises(ValueError, match="out of range"):
        SparseLinear(3, 3, torch.tensor([3]), torch.tensor([0]), torch.ones(1))
    with pytest.raises(ValueError, match="backend"):
        SparseLinear(3, 3, torch.tensor([0]), torch.tensor([0]), torch.ones(1), backend="gpu")
    layer = SparseLinear(3, 3, torch.tensor([0]), torch.tensor([0]), torch.ones(1))
    with pytest.raises(ValueError, match=r"\(batch, 3\)"):
        layer(torch.ones(2, 4))
