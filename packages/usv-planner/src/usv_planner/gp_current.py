"""Spatiotemporal Bayesian current model: a Gaussian process over ``(x, y, t)``.

Each velocity component is an independent GP with a shared squared-exponential kernel
``k = s^2 exp(-dx^2/2lx^2 - dy^2/2ly^2 - dt^2/2lt^2)`` and Gaussian observation noise. With an
optional ``prior`` field (a forecast), the GP models the residual ``observation - forecast`` and
predictions are ``forecast + residual mean``. Hyperparameters are fitted by maximising the sum
of both components' log marginal likelihoods. Predictions are cached onto a grid
(:meth:`SpatioTemporalGP.to_field`) for the planner's many queries.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import linalg, optimize

from research_systems_core.validation import check_finite, check_positive
from usv_planner.currents import CurrentField, GriddedField

__all__ = [
    "ACCURACY_PRESETS",
    "DivergenceFreeGP",
    "GPHyperparameters",
    "SparseSpatioTemporalGP",
    "SpatioTemporalGP",
    "check_observations",
    "fit_hyperparameters",
]

log = logging.getLogger(__name__)


@dataclass
class GPHyperparameters:
    """Kernel length scales (metres, metres, seconds), signal and noise standard deviations (m/s)."""

    length_x: float = 300.0
    length_y: float = 300.0
    length_t: float = 3600.0
    signal_std: float = 0.5
    noise_std: float = 0.05

    def as_log(self) -> np.ndarray:
        return np.log([self.length_x, self.length_y, self.length_t, self.signal_std, self.noise_std])

    @classmethod
    def from_log(cls, theta: np.ndarray) -> GPHyperparameters:
        return cls(*(float(v) for v in np.exp(theta)))


def check_observations(xyt: np.ndarray, velocities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Validated float arrays ``(M, 3)`` and ``(M, 2)``."""
    xyt = np.asarray(xyt, dtype=float)
    velocities = np.asarray(velocities, dtype=float)
    if xyt.ndim != 2 or xyt.shape[1] != 3 or len(xyt) == 0:
        raise ValueError(f"observation inputs must have shape (M>0, 3) as (x, y, t), got {xyt.shape}")
    if velocities.shape != (len(xyt), 2):
        raise ValueError(f"observed velocities must have shape ({len(xyt)}, 2), got {velocities.shape}")
    check_finite("observation inputs", xyt)
    check_finite("observed velocities", velocities)
    return xyt, velocities


def fit_hyperparameters(
    model: SpatioTemporalGP,
    xyt: np.ndarray,
    targets: np.ndarray,
    initial: GPHyperparameters,
    subset: int | None = None,
    seed: int = 0,
) -> GPHyperparameters:
    """Maximise the exact log marginal likelihood (analytic gradients, L-BFGS-B), optionally on a subset.

    The search stays within a factor e^2 (about 7) of the initial length scales and signal: sparse
    data can otherwise drive the fit to degenerate length scales that extrapolate wildly."""
    if subset is not None and len(xyt) > subset:
        pick = np.random.default_rng(seed).choice(len(xyt), subset, replace=False)
        xyt, targets = xyt[pick], targets[pick]
    theta0 = initial.as_log()
    bounds = [(b - 2.0, b + 2.0) for b in theta0[:4]] + [(np.log(1e-4), np.log(10.0))]

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        value, grad = model._lml_and_grad(xyt, targets, GPHyperparameters.from_log(theta))
        if not np.isfinite(value):
            return 1e12, np.zeros_like(theta)
        return -value, -grad

    start = objective(theta0)[0]
    res = optimize.minimize(
        objective, theta0, jac=True, method="L-BFGS-B", bounds=bounds, options={"maxiter": 80}
    )
    best = GPHyperparameters.from_log(res.x) if res.fun < start else initial
    log.info(
        "GP hyperparameters: %s (log marginal likelihood %.2f on %d points)",
        best,
        -min(res.fun, start),
        len(xyt),
    )
    return best


class SpatioTemporalGP:
    """GP regression of currents from sparse noisy observations ``(x, y, t) -> (u, v)``."""

    def __init__(self, hyper: GPHyperparameters | None = None, prior: CurrentField | None = None) -> None:
        self.hyper = hyper or GPHyperparameters()
        for name in ("length_x", "length_y", "length_t", "signal_std", "noise_std"):
            check_positive(name, getattr(self.hyper, name))
        self.prior = prior
        self._inputs: np.ndarray | None = None

    # ------------------------------------------------------------------ kernel
    def _scaled(self, xyt: np.ndarray, hyper: GPHyperparameters) -> np.ndarray:
        return xyt / np.array([hyper.length_x, hyper.length_y, hyper.length_t])

    def _kernel(self, a: np.ndarray, b: np.ndarray, hyper: GPHyperparameters) -> np.ndarray:
        sa, sb = self._scaled(a, hyper), self._scaled(b, hyper)
        d2 = (sa**2).sum(1)[:, None] + (sb**2).sum(1)[None, :] - 2.0 * sa @ sb.T
        return hyper.signal_std**2 * np.exp(-0.5 * np.maximum(d2, 0.0))

    def _residual_targets(self, xyt: np.ndarray, velocities: np.ndarray) -> np.ndarray:
        if self.prior is None:
            return velocities
        return velocities - self.prior.velocity(xyt[:, :2], xyt[:, 2])[0]

    def log_marginal_likelihood(self, hyper: GPHyperparameters | None = None) -> float:
        """Sum over u and v of ``log p(y | X, theta)`` for the stored observations."""
        if self._inputs is None:
            raise RuntimeError("fit() the GP before asking for its likelihood")
        hyper = hyper or self.hyper
        return self._lml(self._inputs, self._targets, hyper)

    def _lml(self, xyt: np.ndarray, y: np.ndarray, hyper: GPHyperparameters) -> float:
        return self._lml_and_grad(xyt, y, hyper, gradient=False)[0]

    def _lml_and_grad(
        self, xyt: np.ndarray, y: np.ndarray, hyper: GPHyperparameters, gradient: bool = True
    ) -> tuple[float, np.ndarray]:
        """Log marginal likelihood (summed over u and v) and its gradient w.r.t. the log hyperparameters.

        ``d LML / d theta = 1/2 tr((alpha alpha^T - D K^-1) dK/d theta)`` (Rasmussen & Williams 5.9).
        """
        n, dims = len(xyt), y.shape[1]
        se = self._kernel(xyt, xyt, hyper)
        jitter = 1e-9 * hyper.signal_std**2
        k = se + (hyper.noise_std**2 + jitter) * np.eye(n)
        try:
            chol = linalg.cho_factor(k, lower=True)
        except linalg.LinAlgError:
            return -np.inf, np.zeros(5)
        alpha = linalg.cho_solve(chol, y)
        logdet = 2.0 * np.log(np.diag(chol[0])).sum()
        value = float(-0.5 * (y * alpha).sum() - dims * (0.5 * logdet + 0.5 * n * np.log(2 * np.pi)))
        if not gradient:
            return value, np.zeros(5)
        w = alpha @ alpha.T - dims * linalg.cho_solve(chol, np.eye(n))
        scales = np.array([hyper.length_x, hyper.length_y, hyper.length_t])
        grad = np.empty(5)
        for d in range(3):
            diff2 = ((xyt[:, None, d] - xyt[None, :, d]) / scales[d]) ** 2
            grad[d] = 0.5 * np.sum(w * se * diff2)
        grad[3] = 0.5 * np.sum(w * (2.0 * se)) + 0.5 * np.trace(w) * 2.0 * jitter
        grad[4] = 0.5 * np.trace(w) * 2.0 * hyper.noise_std**2
        return value, grad

    # ------------------------------------------------------------------ fit / predict
    def fit(
        self,
        xyt: np.ndarray,
        velocities: np.ndarray,
        optimize_hyper: bool = True,
        hyper_subset: int | None = None,
        seed: int = 0,
    ) -> SpatioTemporalGP:
        """Condition on observations ``xyt (M, 3)`` with velocities ``(M, 2)``; optionally fit hyperparameters
        (on a random ``hyper_subset`` of the observations if given: exact GP cost is cubic)."""
        xyt, velocities = check_observations(xyt, velocities)
        self._inputs = xyt
        self._targets = self._residual_targets(xyt, velocities)
        if optimize_hyper and len(xyt) >= 5:
            self.hyper = fit_hyperparameters(self, xyt, self._targets, self.hyper, hyper_subset, seed)
        n = len(xyt)
        k = self._kernel(xyt, xyt, self.hyper) + (
            self.hyper.noise_std**2 + 1e-9 * self.hyper.signal_std**2
        ) * np.eye(n)
        self._chol = linalg.cho_factor(k, lower=True)
        self._alpha = linalg.cho_solve(self._chol, self._targets)
        return self

    def predict(self, xyt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean velocity ``(Q, 2)`` and one-sigma std of each component ``(Q,)`` (noise-free)."""
        if self._inputs is None:
            raise RuntimeError("fit() the GP before predicting")
        xyt = np.atleast_2d(np.asarray(xyt, dtype=float))
        ks = self._kernel(xyt, self._inputs, self.hyper)
        mean = ks @ self._alpha
        if self.prior is not None:
            mean = mean + self.prior.velocity(xyt[:, :2], xyt[:, 2])[0]
        v = linalg.solve_triangular(self._chol[0], ks.T, lower=True)
        var = np.maximum(self.hyper.signal_std**2 - (v**2).sum(0), 0.0)
        return mean, np.sqrt(var)

    def to_field(self, x: np.ndarray, y: np.ndarray, times: Sequence[float]) -> GriddedField:
        """Cache mean and std on a regular ``(t, y, x)`` grid as a :class:`GriddedField`."""
        times = np.asarray(times, dtype=float)
        xx, yy = np.meshgrid(x, y)
        u = np.empty((len(times), len(y), len(x)))
        v = np.empty_like(u)
        s = np.empty_like(u)
        for k, t in enumerate(times):
            q = np.stack([xx.ravel(), yy.ravel(), np.full(xx.size, t)], axis=1)
            mean, std = self.predict(q)
            u[k], v[k], s[k] = (a.reshape(xx.shape) for a in (mean[:, 0], mean[:, 1], std))
        return GriddedField(x, y, u, v, times if len(times) > 1 else None, s)


ACCURACY_PRESETS = {"fast": 150, "balanced": 300, "accurate": 600}


class SparseSpatioTemporalGP(SpatioTemporalGP):
    """Sparse GP over ``(x, y, t)`` with ``M`` inducing points (Titsias' variational / SGPR posterior).

    Cost ``O(N M^2)`` instead of ``O(N^3)``: the accuracy/speed setting is the number of inducing
    points, ``accuracy`` in :data:`ACCURACY_PRESETS` (``fast`` 150, ``balanced`` 300, ``accurate``
    600) or an explicit ``n_inducing``. Inducing inputs are k-means centres of the observations in
    kernel-scaled coordinates; hyperparameters maximise the exact likelihood on a random subset of
    ``hyper_subset`` observations. With ``M >= N`` (inducing = observations) the posterior equals
    the exact GP's (tested). Same interface as :class:`SpatioTemporalGP`.
    """

    def __init__(
        self,
        hyper: GPHyperparameters | None = None,
        prior: CurrentField | None = None,
        accuracy: str = "balanced",
        n_inducing: int | None = None,
        hyper_subset: int = 500,
        seed: int = 0,
    ) -> None:
        super().__init__(hyper, prior)
        if n_inducing is None:
            if accuracy not in ACCURACY_PRESETS:
                raise ValueError(f"accuracy must be one of {', '.join(ACCURACY_PRESETS)}, got {accuracy!r}")
            n_inducing = ACCURACY_PRESETS[accuracy]
        if not isinstance(n_inducing, int | np.integer) or n_inducing < 1:
            raise ValueError(f"n_inducing must be a positive integer, got {n_inducing!r}")
        if not isinstance(hyper_subset, int | np.integer) or hyper_subset < 5:
            raise ValueError(f"hyper_subset must be an integer >= 5, got {hyper_subset!r}")
        self.n_inducing, self.hyper_subset, self.seed = int(n_inducing), int(hyper_subset), seed

    def _inducing(self, xyt: np.ndarray) -> np.ndarray:
        from scipy.cluster.vq import kmeans2

        if len(xyt) <= self.n_inducing:
            return xyt.copy()
        scale = np.array([self.hyper.length_x, self.hyper.length_y, self.hyper.length_t])
        centres, _ = kmeans2(xyt / scale, self.n_inducing, iter=10, minit="++", seed=self.seed)
        return centres * scale

    def fit(
        self,
        xyt: np.ndarray,
        velocities: np.ndarray,
        optimize_hyper: bool = True,
        hyper_subset: int | None = None,
        seed: int | None = None,
    ) -> SparseSpatioTemporalGP:
        """Condition on ``xyt (N, 3)`` / ``velocities (N, 2)`` through ``M`` inducing points."""
        xyt, velocities = check_observations(xyt, velocities)
        self._inputs = xyt
        self._targets = self._residual_targets(xyt, velocities)
        if optimize_hyper and len(xyt) >= 5:
            subset = hyper_subset or self.hyper_subset
            self.hyper = fit_hyperparameters(
                self, xyt, self._targets, self.hyper, subset, self.seed if seed is None else seed
            )
        z = self._inducing(xyt)
        noise2 = self.hyper.noise_std**2
        kuu = self._kernel(z, z, self.hyper) + 1e-6 * self.hyper.signal_std**2 * np.eye(len(z))
        chol_u = linalg.cholesky(kuu, lower=True)
        a = linalg.solve_triangular(chol_u, self._kernel(z, xyt, self.hyper), lower=True) / np.sqrt(noise2)
        b = np.eye(len(z)) + a @ a.T
        chol_b = linalg.cholesky(b, lower=True)
        self._z, self._chol_u, self._chol_b = z, chol_u, chol_b
        self._c = linalg.solve_triangular(chol_b, a @ self._targets, lower=True) / np.sqrt(noise2)
        return self

    def predict(self, xyt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior mean ``(Q, 2)`` and one-sigma std ``(Q,)`` (noise-free) of the sparse GP."""
        if self._inputs is None:
            raise RuntimeError("fit() the GP before predicting")
        xyt = np.atleast_2d(np.asarray(xyt, dtype=float))
        t1 = linalg.solve_triangular(self._chol_u, self._kernel(self._z, xyt, self.hyper), lower=True)
        t2 = linalg.solve_triangular(self._chol_b, t1, lower=True)
        mean = t2.T @ self._c
        if self.prior is not None:
            mean = mean + self.prior.velocity(xyt[:, :2], xyt[:, 2])[0]
        var = self.hyper.signal_std**2 - (t1**2).sum(0) + (t2**2).sum(0)
        return mean, np.sqrt(np.maximum(var, 0.0))


class DivergenceFreeGP(SpatioTemporalGP):
    """Exact GP whose velocity samples are divergence-free: ``(u, v) = (d psi/dy, -d psi/dx)``.

    The stream function ``psi`` is a GP with kernel ``s^2 l^2 exp(-|dp|^2 / 2 l^2 - dt^2 / 2 lt^2)``
    (isotropic in space: ``length_x`` is used, ``length_y`` ignored); the velocity covariance is its
    second derivatives, ``K_uu = k (1 - dy^2 / l^2)``, ``K_vv = k (1 - dx^2 / l^2)``,
    ``K_uv = k dx dy / l^2`` with ``k = s^2 exp(...)`` (so ``s`` is each component's std). Surface
    currents are close to divergence-free away from up/downwelling; the kernel couples u and v,
    so one observation of u informs v. Hyperparameters: exact likelihood (L-BFGS-B, numerical
    gradients) on a subset; cost ``O((2N)^3)``, for a few hundred observations.
    """

    def _blocks(self, a: np.ndarray, b: np.ndarray, hyper: GPHyperparameters) -> np.ndarray:
        length = hyper.length_x
        dx = a[:, None, 0] - b[None, :, 0]
        dy = a[:, None, 1] - b[None, :, 1]
        dt = a[:, None, 2] - b[None, :, 2]
        k = hyper.signal_std**2 * np.exp(-0.5 * (dx**2 + dy**2) / length**2 - 0.5 * dt**2 / hyper.length_t**2)
        kuu = k * (1.0 - dy**2 / length**2)
        kvv = k * (1.0 - dx**2 / length**2)
        kuv = k * dx * dy / length**2
        return np.block([[kuu, kuv], [kuv, kvv]])

    def _joint(self, xyt: np.ndarray, hyper: GPHyperparameters) -> np.ndarray:
        n = 2 * len(xyt)
        return self._blocks(xyt, xyt, hyper) + (hyper.noise_std**2 + 1e-8 * hyper.signal_std**2) * np.eye(n)

    def _lml_and_grad(self, xyt, y, hyper, gradient=True):
        try:
            chol = linalg.cho_factor(self._joint(xyt, hyper), lower=True)
        except linalg.LinAlgError:
            return -np.inf, np.zeros(5)
        flat = np.concatenate([y[:, 0], y[:, 1]])
        alpha = linalg.cho_solve(chol, flat)
        logdet = 2.0 * np.log(np.diag(chol[0])).sum()
        value = float(-0.5 * flat @ alpha - 0.5 * logdet - 0.5 * len(flat) * np.log(2 * np.pi))
        if not gradient:
            return value, np.zeros(5)
        theta, grad, step = hyper.as_log(), np.zeros(5), 1e-4
        for i in (0, 2, 3, 4):  # length_y is unused
            up, down = theta.copy(), theta.copy()
            up[i] += step
            down[i] -= step
            grad[i] = (
                self._lml_and_grad(xyt, y, GPHyperparameters.from_log(up), False)[0]
                - self._lml_and_grad(xyt, y, GPHyperparameters.from_log(down), False)[0]
            ) / (2 * step)
        return value, grad

    def fit(self, xyt, velocities, optimize_hyper=True, hyper_subset=300, seed=0):
        """Condition on ``xyt (N, 3)`` / ``velocities (N, 2)``; hyperparameters on ``hyper_subset`` points."""
        xyt, velocities = check_observations(xyt, velocities)
        self._inputs = xyt
        self._targets = self._residual_targets(xyt, velocities)
        if optimize_hyper and len(xyt) >= 5:
            self.hyper = fit_hyperparameters(self, xyt, self._targets, self.hyper, hyper_subset, seed)
        self._chol = linalg.cho_factor(self._joint(xyt, self.hyper), lower=True)
        self._alpha = linalg.cho_solve(self._chol, np.concatenate([self._targets[:, 0], self._targets[:, 1]]))
        return self

    def predict(self, xyt):
        """Posterior mean ``(Q, 2)`` and the mean of the two components' posterior stds ``(Q,)``."""
        if self._inputs is None:
            raise RuntimeError("fit() the GP before predicting")
        xyt = np.atleast_2d(np.asarray(xyt, dtype=float))
        q = len(xyt)
        cross = self._blocks(xyt, self._inputs, self.hyper)  # (2Q, 2N)
        flat = cross @ self._alpha
        mean = np.stack([flat[:q], flat[q:]], axis=1)
        if self.prior is not None:
            mean = mean + self.prior.velocity(xyt[:, :2], xyt[:, 2])[0]
        v = linalg.solve_triangular(self._chol[0], cross.T, lower=True)
        var = np.maximum(self.hyper.signal_std**2 - (v**2).sum(0), 0.0)
        std = 0.5 * (np.sqrt(var[:q]) + np.sqrt(var[q:]))
        return mean, std
