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
    out_t, out_p, out_v = [times[0]], [positions[0]], [velocities[0]]
    for k in range(len(times) - 1):
        dt = times[k + 1] - times[k]
        for j in range(1, per_interval + 1):
            tau = dt * j / (per_interval + 1)
            lam, psi = lambda_psi(dt, tau)
            x0 = np.stack([positions[k], velocities[k]])  # (2 [p, v], 2 axes)
            x1 = np.stack([positions[k + 1], velocities[k + 1]])
            x = lam @ x0 + psi @ x1
            out_t.append(times[k] + tau)
            out_p.append(x[0])
            out_v.append(x[1])
        out_t.append(times[k + 1])
        out_p.append(positions[k + 1])
        out_v.append(velocities[k + 1])
    return np.asarray(out_t), np.asarray(out_p), np.asarray(out_v)
