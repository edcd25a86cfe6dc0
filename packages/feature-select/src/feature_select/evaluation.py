"""Evaluation protocol: classifiers on the selected features and the ranking-based score."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

import numpy as np

__all__ = ["CLASSIFIERS", "evaluate_subset", "ranking_scores", "recovery_rate"]

CLASSIFIERS = ("knn", "extratrees", "svc")


def evaluate_subset(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    features: np.ndarray,
    seed: int = 0,
) -> dict[str, float]:
    """Test accuracy of 1-NN, ExtraTrees(50) and SVC (RBF, default) on the given feature subset,
    the reference's three classifiers (``eval_subset_supervised``)."""
    from sklearn.ensemble import ExtraTreesClassifier
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.svm import SVC

    features = np.asarray(features, dtype=np.int64)
    if features.size == 0:
        raise ValueError("features must select at least one column")
    a, b = x_train[:, features], x_test[:, features]
    models = {
        "knn": KNeighborsClassifier(n_neighbors=1, algorithm="brute"),
        "extratrees": ExtraTreesClassifier(n_estimators=50, random_state=seed, n_jobs=1),
        "svc": SVC(),
    }
    return {name: float(model.fit(a, y_train).score(b, y_test)) for name, model in models.items()}


def ranking_scores(
    rows: Iterable[Mapping], metric: str = "svc", cell_keys: tuple[str, ...] = ("dataset", "k")
) -> dict[str, float]:
    """Ranking-based score across data sets and K (the paper's summary score).

    In every cell (data set, K) the methods are ranked by their accuracy averaged over seeds; a
    method gets one point for every method it beats (ties share: half a point each), i.e. the
    best of ``m`` methods gets ``m - 1`` points and the worst 0. The score is the sum over cells.
    """
    sums: dict[tuple, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        sums[tuple(row[key] for key in cell_keys)][row["method"]].append(float(row[metric]))
    scores: dict[str, float] = defaultdict(float)
    for cell in sums.values():
        means = {method: float(np.mean(values)) for method, values in cell.items()}
        for method, value in means.items():
            beaten = sum(1.0 for other in means.values() if value > other)
            tied = sum(0.5 for other in means.values() if value == other) - 0.5  # not against itself
            scores[method] += beaten + tied
    return dict(sorted(scores.items(), key=lambda item: -item[1]))


def recovery_rate(selected: np.ndarray, informative: np.ndarray) -> float:
    """Fraction of the selected features that are truly informative (precision of the selection)."""
    selected = np.asarray(selected)
    if selected.size == 0:
        raise ValueError("selected is empty")
    return float(np.isin(selected, informative).mean())
