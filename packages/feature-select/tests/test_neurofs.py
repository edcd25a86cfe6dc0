import itertools

import numpy as np
import pytest
import torch
from sklearn.model_selection import GridSearchCV
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline
from sklearn.utils.estimator_checks import parametrize_with_checks

from feature_select.data import make_synthetic
from feature_select.evaluation import recovery_rate
from feature_select.model import SparseMLP, create_model, layer_gradients
from feature_select.selector import NeuroFS
from feature_select.training import NeuroFSConfig, train_neurofs

torch.set_num_threads(1)

TINY = {"hidden": (8, 8), "epochs": 4, "batch_size": 16}


@parametrize_with_checks([NeuroFS(random_state=0, **TINY)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def _blobs(n=120, d=12, seed=0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(size=(n, d))
    x[:, 3] += 3 * y
    x[:, min(7, d - 1)] -= 3 * y
    return x, y


def test_strengths_match_hand_computed_tiny_network():
    x, y = _blobs(d=4)
    sel = NeuroFS(2, hidden=(3,), epochs=1, epsilon=13, random_state=0).fit(x, y)
    w = sel.model_.input_layer.to_dense().numpy()  # (4, 3) with zeros where not connected
    hand = [sum(abs(w[i, j]) for j in range(3)) for i in range(4)]
    np.testing.assert_allclose(sel.strengths_, hand, rtol=1e-6)
    assert set(sel.selected_features_) == set(np.argsort(hand)[-2:])
    assert sel.get_support().sum() == 2


def test_final_active_input_neurons_are_exactly_k_and_budget_is_kept():
    data = make_synthetic(n_samples=300, n_features=120, n_informative=6, seed=1)
    cfg = NeuroFSConfig(k=30, hidden=(64, 64), epochs=16, epsilon=5, batch_size=50, lr=0.05, seed=0)
    res = train_neurofs(data.x, data.y, 2, cfg)
    active = [h["active_inputs"] for h in res.history]
    assert active[0] == 120 and active[-1] == 30
    assert all(b <= a for a, b in itertools.pairwise(active))
    budgets = res.model.budgets
    for h in res.history[:-1]:
        # hidden layers keep their budget exactly; the input layer too while K * n_out allows it
        assert h["connections"][1] == budgets[1]
        assert h["connections"][0] == min(budgets[0], h["active_inputs"] * 64)
    assert res.model.input_layer.active_inputs().sum() == 30
    assert set(res.selected) == set(np.nonzero(res.model.input_layer.active_inputs().numpy())[0])
    assert any(h["added"] > 0 for h in res.history)  # neurons were swapped in


def test_sparse_and_dense_backends_select_the_same_features():
    x, y = _blobs(n=100, d=30, seed=2)
    common = {"hidden": (16, 16), "epochs": 8, "batch_size": 20, "random_state": 3}
    a = NeuroFS(5, backend="sparse", **common).fit(x, y)
    b = NeuroFS(5, backend="dense", **common).fit(x, y)
    assert sorted(a.selected_features_) == sorted(b.selected_features_)
    np.testing.assert_allclose(a.strengths_, b.strengths_, rtol=1e-4, atol=1e-5)


def test_seeded_runs_are_repeatable():
    x, y = _blobs(d=20)
    a = NeuroFS(4, random_state=7, **TINY).fit(x, y)
    b = NeuroFS(4, random_state=7, **TINY).fit(x, y)
    np.testing.assert_array_equal(a.strengths_, b.strengths_)


def test_synthetic_informative_features_recovered_well_above_chance():
    data = make_synthetic(n_samples=600, n_features=200, n_informative=10, seed=0)
    sel = NeuroFS(10, hidden=(100, 100), epochs=30, lr=0.05, batch_size=50, random_state=0).fit(
        data.x, data.y
    )
    rate = recovery_rate(sel.selected_features_, data.informative)
    chance = 10 / 200
    assert rate >= chance + 0.3, rate


def test_works_in_pipeline_and_grid_search():
    x, y = _blobs(n=90, d=10)
    pipe = Pipeline([("fs", NeuroFS(random_state=0, **TINY)), ("knn", KNeighborsClassifier(3))])
    search = GridSearchCV(pipe, {"fs__n_features_to_select": [2, 4]}, cv=2).fit(x, y)
    assert search.best_params_["fs__n_features_to_select"] in (2, 4)
    assert (
        search.best_estimator_.named_steps["fs"].transform(x).shape[1]
        == search.best_params_["fs__n_features_to_select"]
    )


@pytest.mark.parametrize(
    ("kwargs", "x_mod", "y_mod", "match"),
    [
        (
            {"n_features_to_select": 11},
            None,
            None,
            r"n_features_to_select must be in \[1, n_features=10\], got 11",
        ),
        ({"n_features_to_select": 0}, None, None, r"got 0"),
        ({}, "nan", None, "NaN"),
        ({}, "inf", None, "infinity|NaN"),
        ({}, None, "one", "at least 2 classes"),
        ({}, None, "short", "inconsistent numbers of samples"),
        ({}, "str", None, "could not convert|dtype"),
        ({"regrowth": "magic"}, None, None, "regrowth"),
        ({"hidden": ()}, None, None, "hidden"),
        ({"scale": "log"}, None, None, "scale"),
    ],
)
def test_bad_input_gives_clear_errors(kwargs, x_mod, y_mod, match):
    x, y = _blobs(n=40, d=10)
    x = x.astype(object) if x_mod == "str" else x.copy()
    if x_mod == "nan":
        x[0, 0] = np.nan
    elif x_mod == "inf":
        x[0, 0] = np.inf
    elif x_mod == "str":
        x[0, 0] = "abc"
    if y_mod == "one":
        y = np.zeros_like(y)
    elif y_mod == "short":
        y = y[:-1]
    with pytest.raises((ValueError, TypeError), match=match):
        NeuroFS(**{**TINY, **kwargs}).fit(x, y)


def test_layer_gradients_match_autograd_dense_weight_gradient():
    torch.manual_seed(0)
    model = create_model(
        "sparse_mlp", n_features=6, n_classes=3, hidden=(5, 4), epsilon=2.0, backend="dense", seed=0
    )
    assert isinstance(model, SparseMLP)
    x = torch.randn(13, 6)
    y = torch.randint(0, 3, (13,))
    pieces = layer_gradients(model, x, y, batch_size=4)
    loss = torch.nn.functional.cross_entropy(model(x), y)
    # gradient w.r.t. the full dense weight (mask included as a constant), connected or not
    full = [layer.dense_weight * layer.mask for layer in model.sparse_layers]
    h = x
    zs = []
    for w, layer in zip(full, model.sparse_layers, strict=True):
        wt = w.detach().requires_grad_()
        zs.append(wt)
        h = model.activation(h @ wt + layer.bias)
    loss = torch.nn.functional.cross_entropy(model.output(h), y)
    grads = torch.autograd.grad(loss, zs)
    for (a, dz), g in zip(pieces, grads, strict=True):
        torch.testing.assert_close(a.t() @ dz, g, rtol=1e-4, atol=1e-6)
