"""The maintained baselines (extra `baselines`) return full valid rankings that find a planted feature."""

import numpy as np
import pytest

from feature_select.baselines import METHODS, rank_features


def _planted(n=120, d=15, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 2
    x = rng.normal(size=(n, d)).astype(np.float32)
    x[:, 4] += 2.5 * y  # the informative feature
    return x, y


@pytest.mark.parametrize(
    ("method", "params"),
    [
        ("relieff", {}),
        ("hsic_lasso", {}),
        ("mrmr", {}),
        ("f_classif", {}),
        ("mutual_info", {}),
        ("sfm_extratrees", {}),
        ("sfm_l1", {}),
        ("lassonet", {"hidden_dims": (8,), "path_multiplier": 1.1, "n_iters": (30, 5)}),
        ("neurofs", {"hidden": (32, 32), "epochs": 20}),
    ],
)
def test_baseline_ranks_the_planted_feature_first(method, params):
    x, y = _planted()
    ranking = rank_features(method, x, y, 5, 0, **params)
    assert len(ranking) >= 5 and len(set(ranking.tolist())) == len(ranking)
    assert set(ranking.tolist()) <= set(range(15))
    assert 4 in ranking[:2].tolist(), (method, ranking[:5])


def test_every_registered_method_is_documented_nested_or_not():
    for name in METHODS.names():
        method = METHODS.create(name)
        assert isinstance(method.nested, bool)
    assert "stg" not in METHODS.names()  # left out: stg 0.1.2 needs collections.Sequence (Python < 3.10)
