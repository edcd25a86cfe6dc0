"""Feature selection methods in one harness: NeuroFS and the baselines.

Every method is ``rank(x_train, y_train, k, seed) -> indices`` returning at least ``k`` feature
indices, best first. Methods marked ``nested`` produce one ranking that does not depend on ``k``
(the harness then runs them once per data set and seed and takes the top ``k`` for every K).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from research_systems_core.registry import Registry

__all__ = ["METHODS", "Method", "rank_features"]

log = logging.getLogger(__name__)

METHODS = Registry("method")


@dataclass
class Method:
    """A feature-ranking method: ``fn(x, y, k, seed, **params) -> ranked indices``."""

    name: str
    fn: Callable[..., np.ndarray]
    nested: bool
    params: dict = field(default_factory=dict)

    def __call__(self, x: np.ndarray, y: np.ndarray, k: int, seed: int, **overrides) -> np.ndarray:
        return np.asarray(self.fn(x, y, k, seed, **{**self.params, **overrides}), dtype=np.int64)


def _register(name: str, nested: bool, **params):
    def decorator(fn):
        METHODS.register(name)(lambda: Method(name, fn, nested, dict(params)))
        return fn

    return decorator


def _top(scores: np.ndarray) -> np.ndarray:
    scores = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf)
    return np.argsort(-scores, kind="stable")


@_register("neurofs", nested=False)
def _neurofs(x, y, k, seed, **params):
    from feature_select.selector import NeuroFS

    params.setdefault("scale", None)  # the harness scales the data already
    selector = NeuroFS(n_features_to_select=k, random_state=seed, **params).fit(x, y)
    return selector.selected_features_


@_register("random", nested=True)
def _random(x, y, k, seed):
    return np.random.default_rng(seed).permutation(x.shape[1])


@_register("f_classif", nested=True)
def _f_classif(x, y, k, seed):
    import warnings

    from sklearn.feature_selection import f_classif

    with warnings.catch_warnings():  # constant features give NaN scores, ranked last
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.filterwarnings("ignore", message="Features .* are constant")
        return _top(f_classif(x, y)[0])


@_register("mutual_info", nested=True)
def _mutual_info(x, y, k, seed):
    from sklearn.feature_selection import mutual_info_classif

    return _top(mutual_info_classif(x, y, random_state=seed))


@_register("rfe_svm", nested=False, step=0.2)
def _rfe(x, y, k, seed, step=0.2):
    from sklearn.feature_selection import RFE
    from sklearn.svm import LinearSVC

    rfe = RFE(LinearSVC(C=1.0, max_iter=2000, random_state=seed), n_features_to_select=k, step=step)
    rfe.fit(x, y)
    order = np.lexsort((np.arange(x.shape[1]), rfe.ranking_))
    return order


@_register("sfm_extratrees", nested=True, n_estimators=100)
def _extra_trees(x, y, k, seed, n_estimators=100):
    from sklearn.ensemble import ExtraTreesClassifier

    model = ExtraTreesClassifier(n_estimators=n_estimators, random_state=seed, n_jobs=1).fit(x, y)
    return _top(model.feature_importances_)


@_register("sfm_l1", nested=True, C=1.0)
def _l1_logistic(x, y, k, seed, C=1.0):
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", FutureWarning)
        model = LogisticRegression(l1_ratio=1.0, C=C, solver="saga", max_iter=300, random_state=seed).fit(
            x, y
        )
    weight = np.abs(model.coef_).sum(axis=0)
    # features the L1 penalty zeroed are ranked by |coef| of a light L2 fit (ties otherwise arbitrary)
    return np.lexsort((np.arange(x.shape[1]), -weight))


@_register("lassonet", nested=True, hidden=20, path_multiplier=1.5, n_iters=(100, 10), patience=(10, 3), M=10)
def _lassonet(x, y, k, seed, hidden=20, path_multiplier=1.5, n_iters=(100, 10), patience=(10, 3), M=10):
    """LassoNet (Lemhadri et al.) with a short, coarse path so the grid fits on a CPU."""
    try:
        from lassonet import LassoNetClassifier
    except ImportError as exc:  # optional extra
        raise ImportError("the lassonet baseline needs `pip install feature-select[lassonet]`") from exc
    model = LassoNetClassifier(
        hidden_dims=(hidden,),
        path_multiplier=path_multiplier,
        n_iters=tuple(n_iters),
        patience=tuple(patience),
        M=M,
        verbose=0,
        random_state=seed,
        torch_seed=seed,
        device="cpu",
    )
    model.path(x, y, return_state_dicts=False)
    # feature importance = the lambda at which a feature leaves the model (later = more important)
    return _top(model.feature_importances_.numpy())


def rank_features(method: str, x: np.ndarray, y: np.ndarray, k: int, seed: int, **params) -> np.ndarray:
    """Ranked feature indices (best first) from a registered method."""
    return METHODS.create(method)(x, y, k, seed, **params)
