"""``NeuroFS``: a scikit-learn feature selector (``fit`` / ``transform`` / ``get_support``)."""

from __future__ import annotations

import copy
import numbers
import warnings

import numpy as np
import scipy.sparse as sp
from sklearn.base import BaseEstimator
from sklearn.feature_selection import SelectorMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from feature_select.training import NeuroFSConfig, train_neurofs

__all__ = ["NeuroFS", "check_feature_matrix"]

SCALINGS = ("standard", "minmax", None)


def _column_list(columns: np.ndarray, limit: int = 8) -> str:
    shown = ", ".join(str(int(c)) for c in columns[:limit])
    return f"[{shown}{', ...' if len(columns) > limit else ''}] ({len(columns)} of them)"


def check_feature_matrix(X) -> None:
    """Clear errors for data NeuroFS cannot use: NaN/inf (naming the columns; a sparse matrix
    storing explicit NaN is named as such) and a matrix whose every column is constant."""
    if sp.issparse(X):
        data = np.asarray(X.data)
        if data.size and not np.isfinite(data).all():
            coo = sp.coo_array(X)
            bad = np.unique(coo.col[~np.isfinite(coo.data)])
            raise ValueError(
                f"sparse X stores explicit NaN or inf values in columns {_column_list(bad)}; "
                "NeuroFS does not impute: drop or impute them first"
            )
        return
    X = np.asarray(X, dtype=np.float64)
    finite = np.isfinite(X)
    if not finite.all():
        all_nan = np.nonzero(np.isnan(X).all(axis=0))[0]
        if all_nan.size:
            raise ValueError(
                f"X has all-NaN columns {_column_list(all_nan)}; drop them (NeuroFS does not impute)"
            )
        bad = np.nonzero(~finite.all(axis=0))[0]
        raise ValueError(
            f"X contains NaN or inf values in columns {_column_list(bad)}; NeuroFS does not impute: "
            "drop or impute them first"
        )
    if X.shape[0] > 1 and X.shape[1] > 0 and (np.ptp(X, axis=0) == 0).all():
        raise ValueError(
            f"every feature of X is constant (all {X.shape[1]} columns): there is nothing to select"
        )


class NeuroFS(SelectorMixin, BaseEstimator):
    """Supervised feature selection by neuron evolution in a sparse MLP (Atashgahi et al., 2023).

    A sparse MLP with Erdős–Rényi layers is trained with SGD; after every epoch weak input neurons
    are removed (gradually, down to about ``zeta_in * d + n_features_to_select``, the reference's
    count; ``final_active="k"``: down to K), a decaying number of weak neurons is swapped for inactive ones with large loss
    gradient, and all sparse layers are rewired (SET). The selected features are the
    ``n_features_to_select`` strongest input neurons (sum of absolute outgoing weights) at the end.

    **Complete ranking.** Every input neuron gets an importance from the evolution history: the
    last epoch at which it was active (survivors: ``epochs``), then its strength at that moment.
    ``ranking_`` orders all features by it, so ``transform(X, k=k)`` / ``get_support(k=k)`` serve
    any ``k`` without refitting (the evolution optimised the fitted K; for ``k`` <= fitted K the
    result is the top ``k`` of the fitted selection).

    Inputs: numpy arrays, pandas DataFrames (column names kept: ``feature_names_in_``,
    ``get_feature_names_out``) and scipy.sparse matrices (kept sparse: mini-batches are densified
    one at a time, regrowth scores are sparse products; scaling then divides by the spread without
    centring). ``batch_size=None`` ties the batch to the sample count (``clip(n // 8, 16, 100)``).
    ``device="auto"`` fits on CUDA when present. ``init="sparse"`` scales the initial weights to
    the real fan-in (``"dense"``: the reference's dense Glorot bound, under which a 3-layer sparse
    network does not train at lr 0.01). ``max_candidates`` bounds the inactive inputs whose
    gradient is scored for neuron addition (a random subset each epoch; ``None``: all, as the
    reference), so the evolution step does not take a product over every input.

    Attributes: ``feature_importances_`` (``last_active_epoch + 1 + 0.5 * strength / max``, monotone
    with ``ranking_``), ``strengths_`` (final strength), ``last_active_epoch_``, ``ranking_`` (all
    feature indices, most important first), ``selected_features_`` (``ranking_[:K]``),
    ``support_``, ``classes_``, ``history_``, ``model_``, ``n_features_in_``, ``batch_size_``.
    """

    def __init__(
        self,
        n_features_to_select: int | None = None,
        *,
        hidden: tuple[int, ...] = (1000, 1000, 1000),
        activation: str = "tanh",
        epsilon: float = 13.0,
        zeta_in: float = 0.4,
        zeta_hid: float = 0.2,
        frac_epoch_remove: float = 0.65,
        final_active: str = "reference",
        swap_until_end: bool = True,
        warmup_epochs: int = 2,
        epochs: int = 100,
        batch_size: int | None = None,
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 1e-5,
        regrowth: str = "gradient",
        backend: str = "auto",
        init: str = "sparse",
        max_candidates: int | None = None,
        scale: str | None = "standard",
        device: str = "auto",
        random_state: int | np.random.RandomState | None = None,
    ) -> None:
        self.n_features_to_select = n_features_to_select
        self.hidden = hidden
        self.activation = activation
        self.epsilon = epsilon
        self.zeta_in = zeta_in
        self.zeta_hid = zeta_hid
        self.frac_epoch_remove = frac_epoch_remove
        self.final_active = final_active
        self.swap_until_end = swap_until_end
        self.warmup_epochs = warmup_epochs
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.regrowth = regrowth
        self.backend = backend
        self.init = init
        self.max_candidates = max_candidates
        self.scale = scale
        self.device = device
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        tags.input_tags.allow_nan = False
        tags.input_tags.sparse = True
        return tags

    def _resolve_k(self, n_features: int) -> int:
        k = self.n_features_to_select
        if k is None:
            return max(1, n_features // 2)
        if isinstance(k, bool) or not isinstance(k, numbers.Integral):
            raise TypeError(f"n_features_to_select must be an int or None, got {k!r} ({type(k).__name__})")
        if not 1 <= k <= n_features:
            raise ValueError(f"n_features_to_select must be in [1, n_features={n_features}], got {k}")
        return int(k)

    def _scaled(self, x):
        if self.scale is None:
            return x
        if sp.issparse(x):  # no centring: it would densify the matrix
            x = sp.csr_array(x, dtype=np.float64)
            if self.scale == "standard":
                mean = np.asarray(x.mean(axis=0)).ravel()
                spread = np.sqrt(np.maximum(np.asarray(x.multiply(x).mean(axis=0)).ravel() - mean**2, 0))
            else:
                spread = (
                    np.asarray(x.max(axis=0).toarray()).ravel() - np.asarray(x.min(axis=0).toarray()).ravel()
                )
            spread = np.where(spread > 0, spread, 1.0)
            return sp.csr_array(x @ sp.diags_array(1.0 / spread))
        if self.scale == "standard":
            center, spread = x.mean(axis=0), x.std(axis=0)
        else:
            center, spread = x.min(axis=0), x.max(axis=0) - x.min(axis=0)
        spread = np.where(spread > 0, spread, 1.0)
        return (x - center) / spread

    def _config(self, k: int) -> NeuroFSConfig:
        seed = int(check_random_state(self.random_state).randint(0, 2**31 - 1))
        return NeuroFSConfig(
            k=k,
            hidden=tuple(self.hidden) if not isinstance(self.hidden, int | str) else self.hidden,
            activation=self.activation,
            epsilon=self.epsilon,
            zeta_in=self.zeta_in,
            zeta_hid=self.zeta_hid,
            frac_epoch_remove=self.frac_epoch_remove,
            final_active=self.final_active,
            swap_until_end=bool(self.swap_until_end),
            warmup_epochs=self.warmup_epochs,
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            regrowth=self.regrowth,
            backend=self.backend,
            init=self.init,
            max_candidates=self.max_candidates,
            device=self.device,
            seed=seed,
        )

    def fit(self, X, y) -> NeuroFS:
        """Train the sparse network on ``(X, y)``; rank every feature and select the strongest K."""
        if self.scale not in SCALINGS:
            raise ValueError(f"scale must be one of {SCALINGS}, got {self.scale!r}")
        X, y = validate_data(
            self,
            X,
            y,
            accept_sparse=["csr", "csc", "coo"],
            dtype=[np.float64, np.float32],
            ensure_min_samples=2,
            ensure_all_finite=False,
        )
        check_feature_matrix(X)
        check_classification_targets(y)
        self.classes_, y_encoded = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(
                f"NeuroFS needs at least 2 classes in y, got 1 (every label is {self.classes_[0]!r})"
            )
        k = self._resolve_k(X.shape[1])
        self._warn_constant(X)
        cfg = self._config(k)
        result = train_neurofs(self._scaled(X), y_encoded, len(self.classes_), cfg)
        self.strengths_ = result.strengths
        self.last_active_epoch_ = result.last_active_epoch
        peak = max(float(result.exit_strength.max()), 1e-12)
        self.feature_importances_ = result.last_active_epoch + 1.0 + 0.5 * result.exit_strength / peak
        self.ranking_ = result.ranking
        self.selected_features_ = result.selected
        self.support_ = self._mask(k)
        self.history_ = result.history
        self.model_ = result.model
        self.batch_size_ = result.config["batch_size"]
        self.device_ = result.config["device"]
        self.n_features_to_select_ = k
        return self

    def _warn_constant(self, X) -> None:
        if sp.issparse(X):
            return
        constant = np.nonzero(np.ptp(X, axis=0) == 0)[0]
        if constant.size:
            warnings.warn(
                f"X has constant columns {_column_list(constant)}; they carry no information "
                "and should be dropped (e.g. sklearn's VarianceThreshold)",
                UserWarning,
                stacklevel=3,
            )

    def _check_k(self, k) -> int:
        check_is_fitted(self, "ranking_")
        if isinstance(k, bool) or not isinstance(k, numbers.Integral):
            raise TypeError(f"k must be an int, got {k!r} ({type(k).__name__})")
        if not 1 <= k <= self.n_features_in_:
            raise ValueError(f"k must be in [1, n_features_in_={self.n_features_in_}], got {k}")
        return int(k)

    def _mask(self, k: int) -> np.ndarray:
        mask = np.zeros(len(self.ranking_), dtype=bool)
        mask[self.ranking_[:k]] = True
        return mask

    def _get_support_mask(self) -> np.ndarray:
        check_is_fitted(self, "support_")
        return self.support_

    def _with_k(self, k) -> NeuroFS:
        view = copy.copy(self)
        view.support_ = self._mask(self._check_k(k))
        return view

    def get_support(self, indices: bool = False, k: int | None = None):
        """Mask (or indices) of the selected features; ``k`` picks the top ``k`` of ``ranking_``."""
        if k is None:
            return super().get_support(indices)
        return SelectorMixin.get_support(self._with_k(k), indices)

    def transform(self, X, k: int | None = None):
        """Reduce X to the selected features; ``k`` serves the top ``k`` without refitting."""
        if k is None:
            return super().transform(X)
        return SelectorMixin.transform(self._with_k(k), X)

    def get_feature_names_out(self, input_features=None, k: int | None = None):
        """Names of the selected features (``k``: of the top ``k``)."""
        if k is None:
            return super().get_feature_names_out(input_features)
        return SelectorMixin.get_feature_names_out(self._with_k(k), input_features)
