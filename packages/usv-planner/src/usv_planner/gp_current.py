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

__all__ = ["GPHyperparameters", "SpatioTemporalGP"]

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
        n = len(xyt)
        k = self._kernel(xyt, xyt, hyper) + (hyper.noise_std**2 + 1e-9 * hyper.signal_std**2) * np.eye(n)
        try:
            chol = linalg.cho_factor(k, lower=True)
        except linalg.LinAlgError:
            return -np.inf
        alpha = linalg.cho_solve(chol, y)
        logdet = 2.0 * np.log(np.diag(chol[0])).sum()
        return float(-0.5 * (y * alpha).sum() - y.shape[1] * (0.5 * logdet + 0.5 * n * np.log(2 * np.pi)))

    # ------------------------------------------------------------------ fit / predict
    def fit(self, xyt: np.ndarray, velocities: np.ndarray, optimize_hyper: bool = True) -> SpatioTemporalGP:
        """Condition on observations ``xyt (M, 3)`` with velocities ``(M, 2)``; optionally fit hyperparameters."""
        xyt = np.asarray(xyt, dtype=float)
        velocities = np.asarray(velocities, dtype=float)
        if xyt.ndim != 2 or xyt.shape[1] != 3 or len(xyt) == 0:
            raise ValueError(f"observation inputs must have shape (M>0, 3) as (x, y, t), got {xyt.shape}")
        if velocities.shape != (len(xyt), 2):
            raise ValueError(f"observed velocities must have shape ({len(xyt)}, 2), got {velocities.shape}")
        check_finite("observation inputs", xyt)
        check_finite("observed velocities", velocities)
        self._inputs = xyt
        self._targets = self._residual_targets(xyt, velocities)
        if optimize_hyper and len(xyt) >= 5:
            theta0 = self.hyper.as_log()
            # Stay within a factor e^2 (about 7) of the initial guess: sparse data can otherwise
            # drive the fit to degenerate length scales that extrapolate wildly.
            bounds = [(b - 2.0, b + 2.0) for b in theta0[:4]] + [(np.log(1e-4), np.log(10.0))]

            def objective(theta: np.ndarray) -> float:
                value = self._lml(xyt, self._targets, GPHyperparameters.from_log(theta))
                return 1e12 if not np.isfinite(value) else -value

            res = optimize.minimize(
                objective, theta0, method="L-BFGS-B", bounds=bounds, options={"maxiter": 60}
            )
            if res.fun < objective(theta0):
                self.hyper = GPHyperparameters.from_log(res.x)
            log.info(
                "GP hyperparameters: %s (log marginal likelihood %.2f)",
                self.hyper,
                -min(res.fun, objective(theta0)),
            )
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
