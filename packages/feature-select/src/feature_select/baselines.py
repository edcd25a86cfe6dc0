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
        return self.rank_with_info(x, y, k, seed, **overrides)[0]

    def rank_with_info(self, x, y, k: int, seed: int, **overrides) -> tuple[np.ndarray, dict]:
        """Ranking plus what the method reports about its fit (NeuroFS: final training accuracy).

        Caps for the slow baselines in the full protocol (any method, both off by default):
        ``prefilter=P``: when ``x`` has more than P columns the method only sees the P best by the
        F-test (on the same training data); the other columns follow in F-test order.
        ``max_samples=m``: the method is fitted on a stratified random subset of m training rows.
        """
        params = {**self.params, **overrides}
        prefilter = params.pop("prefilter", None)
        max_samples = params.pop("max_samples", None)
        order = _f_test_order(x, y, prefilter, k)
        rows = _stratified_rows(y, max_samples, seed)
        x_fit = x if order is None else x[:, order[:prefilter]]
        out = self.fn(
            x_fit if rows is None else x_fit[rows], y if rows is None else y[rows], k, seed, **params
        )
        ranking, info = out if isinstance(out, tuple) else (out, {})
        ranking = np.asarray(ranking, dtype=np.int64)
        if order is not None:
            ranking = _expand_prefiltered(ranking, order, prefilter)
            info = {**info, "prefilter": prefilter}
        if rows is not None:
            info = {**info, "max_samples": len(rows)}
        if len(np.unique(ranking)) != len(ranking) or len(ranking) < min(k, x.shape[1]):
            raise RuntimeError(
                f"method {self.name} returned an invalid ranking (duplicates or < {k} features)"
            )
        return ranking, info


def _f_test_order(x, y: np.ndarray, prefilter: int | None, k: int) -> np.ndarray | None:
    """Every column, best first by the F-test, when a ``prefilter`` cap applies; else None."""
    if prefilter is None:
        return None
    if isinstance(prefilter, bool) or not isinstance(prefilter, int | np.integer) or prefilter < k:
        raise ValueError(f"prefilter must be an integer >= k={k} (or None), got {prefilter!r}")
    if x.shape[1] <= prefilter:
        return None
    return _f_classif(x, y, k, 0)


def _stratified_rows(y: np.ndarray, max_samples: int | None, seed: int) -> np.ndarray | None:
    """A stratified random subset of ``max_samples`` row indices (sorted), or None if n <= it."""
    if max_samples is None:
        return None
    if isinstance(max_samples, bool) or not isinstance(max_samples, int | np.integer) or max_samples < 2:
        raise ValueError(f"max_samples must be an integer >= 2 (or None), got {max_samples!r}")
    if len(y) <= max_samples:
        return None
    from sklearn.model_selection import train_test_split

    rows, _ = train_test_split(np.arange(len(y)), train_size=int(max_samples), stratify=y, random_state=seed)
    return np.sort(rows)


def _expand_prefiltered(ranking: np.ndarray, order: np.ndarray, prefilter: int) -> np.ndarray:
    """Map a ranking over ``x[:, order[:prefilter]]`` back to column indices; every column it
    did not rank follows in F-test order, so no column is lost or repeated."""
    if ranking.size and (ranking.min() < 0 or ranking.max() >= prefilter):
        raise RuntimeError("a prefiltered method returned indices outside its columns")
    head = order[:prefilter][ranking]
    rest = np.ones(len(order), dtype=bool)
    rest[head] = False
    return np.concatenate([head, order[rest[order]]]).astype(np.int64)


def _register(name: str, nested: bool, **params):
    def decorator(fn):
        METHODS.register(name)(lambda: Method(name, fn, nested, dict(params)))
        return fn

    return decorator


def _top(scores: np.ndarray) -> np.ndarray:
    scores = np.nan_to_num(np.asarray(scores, dtype=np.float64), nan=-np.inf)
    return np.argsort(-scores, kind="stable")


@_register("neurofs", nested=True)
def _neurofs(x, y, k, seed, **params):
    """One fit at the largest K; smaller K are served from the complete ranking (``ranking_``)."""
    from feature_select.selector import NeuroFS

    params.setdefault("scale", None)  # the harness scales the data already
    selector = NeuroFS(n_features_to_select=k, random_state=seed, **params).fit(x, y)
    last = selector.history_[-1]
    info = {"train_acc": last["train_acc"], "loss": last["loss"], "batch_size": selector.batch_size_}
    return selector.ranking_, info


def _need(module: str, package: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # optional extra
        raise ImportError(
            f"the {package} baseline needs `pip install feature-select[baselines]` ({exc})"
        ) from exc


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
    """L1-penalised logistic regression, importance = sum over classes of |coef|. Solver
    liblinear (scikit-learn's advice for small data sets; one-vs-rest for > 2 classes, wrapped as
    its error message says): 0.8-1.7 s per fit on BASEHOCK / Isolet here, where saga took 21-27 s."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    model = LogisticRegression(l1_ratio=1.0, C=C, solver="liblinear", max_iter=300, random_state=seed)
    if len(np.unique(y)) > 2:
        model = OneVsRestClassifier(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        warnings.simplefilter("ignore", FutureWarning)
        model.fit(x, y)
    coef = np.vstack([e.coef_ for e in model.estimators_]) if hasattr(model, "estimators_") else model.coef_
    weight = np.abs(coef).sum(axis=0)
    return np.lexsort((np.arange(x.shape[1]), -weight))  # ties (zeroed by L1): lower index first


@_register("lassonet", nested=True, hidden_dims=(100,), path_multiplier=1.02, M=10)
def _lassonet(x, y, k, seed, hidden_dims=(100,), path_multiplier=1.02, M=10, **params):
    """LassoNet (Lemhadri et al., package ``lassonet``) at its documented defaults (one hidden
    layer of 100, M = 10, path multiplier 1.02); importance = the lambda at which a feature leaves
    the model."""
    lassonet = _need("lassonet", "lassonet")
    model = lassonet.LassoNetClassifier(
        hidden_dims=tuple(hidden_dims),
        path_multiplier=path_multiplier,
        M=M,
        verbose=0,
        random_state=seed,
        torch_seed=seed,
        device="cpu",
        **params,
    )
    model.path(x, y, return_state_dicts=False)
    return _top(model.feature_importances_.numpy())


@_register("relieff", nested=True, n_neighbors=100)
def _relieff(x, y, k, seed, n_neighbors=100):
    """ReliefF (package ``skrebate``, its default 100 neighbours, capped by the class sizes)."""
    skrebate = _need("skrebate", "skrebate")
    neighbours = int(min(n_neighbors, max(1, np.bincount(y).min() - 1)))
    model = skrebate.ReliefF(n_features_to_select=k, n_neighbors=neighbours, n_jobs=1)
    model.fit(x.astype(np.float64), y)
    return _top(model.feature_importances_)


@_register("hsic_lasso", nested=True, B=20, M=3)
def _hsic_lasso(x, y, k, seed, B=20, M=3):
    """HSIC Lasso (package ``pyHSICLasso``, block size B = 20, M = 3 permutations, its defaults);
    its ranked ``k`` features first, the rest in random order (it ranks only what it selects)."""
    api = _need("pyHSICLasso", "pyHSICLasso")
    import contextlib
    import io
    import warnings

    if not hasattr(np.linalg, "linalg"):  # pyHSICLasso 1.4.2 catches np.linalg.linalg.LinAlgError,
        np.linalg.linalg = np.linalg._linalg  # a module numpy 2 renamed; without it a singular step crashes
    model = api.HSICLasso()
    np.random.seed(seed)  # its permutations use the global generator
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "B must divide n": it drops the remainder
        model.input(x.astype(np.float64), (y + 1).astype(np.int64))
        model.classification(num_feat=k, B=B, M=M, n_jobs=1)
    chosen = np.asarray(model.get_index(), dtype=np.int64)
    rest = np.setdiff1d(np.arange(x.shape[1]), chosen)
    return np.concatenate([chosen, np.random.default_rng(seed).permutation(rest)])


@_register("mrmr", nested=True)
def _mrmr(x, y, k, seed):
    """mRMR (package ``mrmr-selection``: F-statistic relevance, Pearson redundancy); greedy order,
    then the rest by F-statistic."""
    mrmr = _need("mrmr", "mrmr-selection")
    import pandas as pd

    frame = pd.DataFrame(x, columns=[str(i) for i in range(x.shape[1])])
    chosen = mrmr.mrmr_classif(X=frame, y=pd.Series(y), K=k, n_jobs=1, show_progress=False)
    chosen = np.asarray([int(c) for c in chosen], dtype=np.int64)
    rest = _f_classif(x, y, k, seed)
    return np.concatenate([chosen, rest[~np.isin(rest, chosen)]])


def rank_features(method: str, x: np.ndarray, y: np.ndarray, k: int, seed: int, **params) -> np.ndarray:
    """Ranked feature indices (best first) from a registered method."""
    return METHODS.create(method)(x, y, k, seed, **params)
