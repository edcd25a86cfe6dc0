import pytest
import torch

from gnn_soup.features import NodeFeatures
from gnn_soup.models import MODELS, create_model


def _x() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    x = torch.rand(30, 12, generator=g)
    return x * (torch.rand(30, 12, generator=g) < 0.05)


def test_rows_and_dense_agree() -> None:
    x = _x()
    feats = NodeFeatures(x, sparse=True)
    assert torch.equal(feats.to_dense(), x)
    idx = torch.tensor([5, 0, 29, 5])
    assert torch.equal(feats.rows(idx).to_dense(), x[idx])
    assert torch.equal(feats.to_dense(), x)  # no mutation


def test_sparse_dropout_is_dense_dropout_on_the_nonzeros() -> None:
    x = _x() + 0.0
    x[0, :] = 1.0  # some non-zeros for sure
    feats = NodeFeatures(x, sparse=True)
    torch.manual_seed(1)
    out = feats.dropout(0.5, training=True).to_dense()
    assert torch.all(out[x == 0] == 0)
    kept = out[x != 0]
    assert set(torch.unique(kept / x[x != 0] * 0.5).round(decimals=5).tolist()) <= {0.0, 1.0}
    assert torch.equal(feats.dropout(0.5, training=False).to_dense(), x)
    # mean over many draws matches x (inverted dropout keeps the expectation)
    mean = torch.stack([feats.dropout(0.5, True).to_dense() for _ in range(400)]).mean(0)
    assert torch.allclose(mean, x, atol=0.25)


@pytest.mark.parametrize("name", ["gcn", "sage", "gat"])
def test_sparse_input_path_equals_dense_path(name) -> None:
    x = _x()
    edge_index = torch.tensor([[0, 1, 1, 2, 3, 4, 5, 6], [1, 0, 2, 1, 4, 3, 6, 5]])
    torch.manual_seed(0)
    model = create_model(name, in_dim=12, out_dim=3, hidden_dim=4, dropout=0.0)
    graph = model.prepare(edge_index, 30)
    model.train()  # dropout 0: deterministic, and gradients are compared too
    sparse_out = model(NodeFeatures(x, sparse=True), graph)
    sparse_out.sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    dense_out = model(x, graph)
    dense_out.sum().backward()
    assert torch.allclose(sparse_out, dense_out, atol=1e-6)
    for g, p in zip(grads, model.parameters(), strict=True):
        assert torch.allclose(g, p.grad, atol=1e-5)


def test_gcn_matches_hand_computed_propagation() -> None:
    # 2-node graph with one undirected edge: A_hat = D^-1/2 (A + I) D^-1/2 = [[.5, .5], [.5, .5]]
    model = create_model("gcn", in_dim=2, out_dim=1, hidden_dim=1, num_layers=1, dropout=0.0)
    conv = model.convs[0]
    with torch.no_grad():
        conv.lin.weight.copy_(torch.tensor([[1.0, 2.0]]))
        conv.bias.fill_(0.5)
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    out = model(x, model.prepare(torch.tensor([[0, 1], [1, 0]]), 2))
    assert torch.allclose(out.flatten(), torch.tensor([2.0, 2.0]))


def test_model_registry_and_bad_names() -> None:
    assert set(MODELS.names()) == {"gcn", "sage", "gat", "sgc", "sign"}
    with pytest.raises(ValueError, match="gin"):
        create_model("gin", in_dim=3, out_dim=2)
    with pytest.raises(ValueError, match="dropout"):
        create_model("gcn", in_dim=3, out_dim=2, dropout=1.0)
    with pytest.raises(ValueError, match="num_layers"):
        create_model("gcn", in_dim=3, out_dim=2, num_layers=0)
