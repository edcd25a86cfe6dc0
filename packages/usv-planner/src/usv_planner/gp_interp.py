"""Constant-velocity (white-noise-on-acceleration) GP interpolation between support states.

For state ``x = [p; v]`` with transition ``Phi(d) = [[I, d I], [0, I]]`` and process covariance
``Q(d)``, the posterior mean at ``tau`` in ``[t0, t1]`` is ``x(tau) = Lambda x0 + Psi x1`` with
``Psi = Q(tau - t0) Phi(t1 - tau)^T Q(t1 - t0)^-1`` and ``Lambda = Phi(tau - t0) - Psi Phi(t1 - t0)``
(Barfoot et al. 2014; GPMP2's ``GaussianProcessInterpolatorLinear``). With a diagonal ``Qc`` the
PSD cancels, so the interpolation does not depend on it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["interpolate_states", "lambda_psi"]


def _phi(d: float) -> np.ndarray:
    return np.array([[1.0, d], [0.0, 1.0]])


def _q(d: float) -> np.ndarray:
    return np.array([[d**3 / 3.0, d**2 / 2.0], [d**2 / 2.0, d]])


def lambda_psi(dt: float, tau: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-axis ``(Lambda, Psi)`` 2x2 matrices acting on ``[p, v]`` of one coordinate."""
    if not 0.0 < tau < dt:
        if tau <= 0.0:
            return np.eye(2), np.zeros((2, 2))
        return np.zeros((2, 2)), np.eye(2)
    psi = _q(tau) @ _phi(dt - tau).T @ np.linalg.inv(_q(dt))
    lam = _phi(tau) - psi @ _phi(dt)
    return lam, psi


def interpolate_states(
    times: np.ndarray, positions: np.ndarray, velocities: np.ndarray, per_interval: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dense ``(times, positions, velocities)`` with ``per_interval`` extra states between supports."""
    times = np.asarray(times, dtype=float)
    positions = np.asarray(positions, dtype=float)
    velocities = np.asarray(velocities, dtype=float)
    k = len(times) - 1
    m = per_interval + 1
    dts = np.diff(times)
    fractions = np.arange(m) / m
    lam = np.empty((k, m, 2, 2))
    psi = np.empty((k, m, 2, 2))
    cache: dict[float, tuple[np.ndarray, np.ndarray]] = {}
    for i, dt in enumerate(dts):
        if dt not in cache:
            pairs = [lambda_psi(dt, dt * f) for f in fractions]
            cache[dt] = (np.stack([a for a, _ in pairs]), np.stack([b for _, b in pairs]))
        lam[i], psi[i] = cache[dt]
    x = np.stack([positions, velocities], axis=1)  # (N, [p, v], axis)
    dense = np.einsum("kmab,kbc->kmac", lam, x[:-1]) + np.einsum("kmab,kbc->kmac", psi, x[1:])
    dense = np.concatenate([dense.reshape(k * m, 2, 2), x[-1:]], axis=0)
    dense_t = np.concatenate([(times[:-1, None] + dts[:, None] * fractions[None, :]).reshape(-1), times[-1:]])
    return dense_t, dense[:, 0].copy(), dense[:, 1].copy()
