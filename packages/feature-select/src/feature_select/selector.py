"""``NeuroFS``: a scikit-learn feature selector (``fit`` / ``transform`` / ``get_support``)."""

from __future__ import annotations

import numbers

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.feature_selection import SelectorMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from feature_select.training import NeuroFSConfig, train_neurofs

__all__ = ["NeuroFS"]

SCALINGS = ("standard", "minmax", None)


class NeuroFS(SelectorMixin, BaseEstimator):
    """Supervised feature selection by neuron evolution in a sparse MLP (Atashgahi et al., 2023).

    A sparse MLP with Erdős–Rényi layers is trained with SGD; after every epoch weak input neurons
    are removed (gradually, down to ``n_features_to_select``), a decaying number of weak neurons is
    swapped for inactive ones with large loss gradient, and all sparse layers are rewired (SET).
    The selected features are the ``n_features_to_select`` strongest input neurons (sum of absolute
    outgoing weights) at the end of training.

    Parameters mirror the reference implementation (``code/NeuroFS.py``); ``n_features_to_select``
    defaults to half of the features. ``scale`` standardises X with statistics of the data given to
    ``fit`` (for training the network only; ``transform`` returns the original columns).
    ``backend`` is ``"sparse"`` (CSR/SDDMM kernels, memory ∝ active connections), ``"dense"``
    (masked dense matmul, like the reference) or ``"auto"`` (sparse when density <= 5 %).

    Attributes: ``strengths_`` / ``feature_importances_`` (input-neuron strength), ``support_``,
    ``ranking_`` (feature indices, strongest first), ``selected_features_`` (the K chosen, strongest
    first), ``classes_``, ``history_`` (per-epoch loss, accuracy, active inputs, connections),
    ``model_`` (the trained :class:`~feature_select.model.SparseMLP`), ``n_features_in_``.
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
        swap_until_end: bool = True,
        warmup_epochs: int = 2,
        epochs: int = 100,
        batch_size: int = 100,
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 1e-5,
        regrowth: str = "gradient",
        backend: str = "auto",
        scale: str | None = "standard",
        random_state: int | np.random.RandomState | None = None,
    ) -> None:
        self.n_features_to_select = n_features_to_select
        self.hidden = hidden
        self.activation = activation
        self.epsilon = epsilon
        self.zeta_in = zeta_in
        self.zeta_hid = zeta_hid
        self.frac_epoch_remove = frac_epoch_remove
        self.swap_until_end = swap_until_end
        self.warmup_epochs = warmup_epochs
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.regrowth = regrowth
        self.backend = backend
        self.scale = scale
        self.random_state = random_state

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.target_tags.required = True
        tags.input_tags.allow_nan = False
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

    def _scaled(self, x: np.ndarray) -> np.ndarray:
        if self.scale is None:
            return x
        if self.scale == "standard":
            center, spread = x.mean(axis=0), x.std(axis=0)
        elif self.scale == "minmax":
            center, spread = x.min(axis=0), x.max(axis=0) - x.min(axis=0)
        else:
            raise ValueError(f"scale must be one of {SCALINGS}, got {self.scale!r}")
        spread = np.where(spread > 0, spread, 1.0)
        return (x - center) / spread

    def fit(self, X, y) -> NeuroFS:
        """Train the sparse network on ``(X, y)`` and select the strongest input features."""
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], ensure_min_samples=2)
        check_classification_targets(y)
        self.classes_, y_encoded = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(
                f"NeuroFS needs at least 2 classes in y, got 1 (every label is {self.classes_[0]!r})"
            )
        k = self._resolve_k(X.shape[1])
        if self.scale not in SCALINGS:
            raise ValueError(f"scale must be one of {SCALINGS}, got {self.scale!r}")
        seed = int(check_random_state(self.random_state).randint(0, 2**31 - 1))
        cfg = NeuroFSConfig(
            k=k,
            hidden=tuple(self.hidden) if not isinstance(self.hidden, int | str) else self.hidden,
            activation=self.activation,
            epsilon=self.epsilon,
            zeta_in=self.zeta_in,
            zeta_hid=self.zeta_hid,
            frac_epoch_remove=self.frac_epoch_remove,
            swap_until_end=bool(self.swap_until_end),
            warmup_epochs=self.warmup_epochs,
            epochs=self.epochs,
            batch_size=self.batch_size,
            lr=self.lr,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            regrowth=self.regrowth,
            backend=self.backend,
            seed=seed,
        )
        result = train_neurofs(self._scaled(X), y_encoded, len(self.classes_), cfg)
        self.strengths_ = result.strengths
        self.feature_importances_ = result.strengths
        self.ranking_ = np.argsort(-result.strengths, kind="stable")
        self.selected_features_ = result.selected
        support = np.zeros(X.shape[1], dtype=bool)
        support[result.selected] = True
        self.support_ = support
        self.history_ = result.history
        self.model_ = result.model
        self.n_features_to_select_ = k
        return self

    def _get_support_mask(self) -> np.ndarray:
        check_is_fitted(self, "support_")
        return self.support_
