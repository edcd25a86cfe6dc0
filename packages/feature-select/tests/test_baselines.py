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


def test_prefilter_and_max_samples_caps_keep_a_complete_ranking():
    """The full protocol's caps: the method sees the P best columns by the F-test (the rest follow
    in F-test order) and a stratified subset of m rows; every column still appears exactly once."""
    from feature_select.baselines import _f_classif

    x, y = _planted(n=120, d=15)
    f_order = _f_classif(x, y, 5, 0)
    seen = {}

    def probe(xs, ys, k, seed):  # records what the capped method was given; ranks columns backwards
        seen["shape"], seen["classes"] = xs.shape, np.bincount(ys).tolist()
        return np.arange(xs.shape[1])[::-1]

    from feature_select.baselines import Method

    ranking, info = Method("probe", probe, True).rank_with_info(x, y, 3, 0, prefilter=6, max_samples=40)
    assert seen["shape"] == (40, 6) and seen["classes"] == [20, 20]  # stratified: 60/60 -> 20/20
    assert info == {"prefilter": 6, "max_samples": 40}
    assert ranking.tolist() == f_order[:6][::-1].tolist() + f_order[6:].tolist()
    # no cap when the data is already within it
    ranking, info = Method("probe", probe, True).rank_with_info(x, y, 3, 0, prefilter=15, max_samples=120)
    assert info == {} and ranking.tolist() == list(range(15))[::-1]


@pytest.mark.parametrize(
    ("option", "value"), [("prefilter", 2), ("prefilter", 2.5), ("prefilter", True), ("max_samples", 1)]
)
def test_bad_cap_values_are_refused_with_the_option_named(option, value):
    x, y = _planted()
    with pytest.raises(ValueError, match=option):
        rank_features("f_classif", x, y, 5, 0, **{option: value})
