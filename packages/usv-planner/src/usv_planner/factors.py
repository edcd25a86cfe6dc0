"""GPMP2 factors for 2-D position/velocity states on gtsam.

Every custom factor is a pure numpy function ``fn(values: list[array]) -> (error, jacobians)``
(testable by finite differences) turned into a ``gtsam.CustomFactor`` by
:func:`checked_custom_factor`, which checks the error and Jacobian shapes in Python: gtsam's
``CustomFactor`` would otherwise crash the interpreter on a wrong-shaped or missing Jacobian.

Factors:

* GP prior (constant velocity, white noise on acceleration with PSD ``Qc``): native
  ``gtsam.WnoaMotionFactorPoint2``; :func:`gp_prior_error` is the same model written out
  (``e = [p1 - p0 - dt v0; v1 - v0]``, covariance ``Q(dt) = [[dt^3/3, dt^2/2], [dt^2/2, dt]] (x) Qc``).
* Obstacle hinge loss (GPMP2): ``e = max(0, eps - d(p))`` with ``d`` the signed distance.
* Ocean-current energy: with through-water velocity ``u = v - c(p, t)`` and current uncertainty
  ``sigma(p, t)``, ``w = [u; sqrt(2 kappa) sigma]`` and ``e = |w|^(1/2) w`` so that
  ``|e|^2 = (|u|^2 + 2 kappa sigma^2)^(3/2)``: the cubic drag power of a hull moving at ``u``
  (``P = k |u|^3``), with the expected squared speed under a Gaussian current error when
  ``kappa = 1`` (``kappa > 1`` is risk-averse). The Jacobian includes ``dc/dp`` and ``dsigma/dp``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import gtsam
import numpy as np

__all__ = [
    "checked_custom_factor",
    "current_energy_error",
    "gp_prior_covariance",
    "gp_prior_error",
    "numerical_jacobian",
    "obstacle_hinge_error",
]

FactorFn = Callable[[list[np.ndarray]], tuple[np.ndarray, list[np.ndarray]]]
SdfFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
CurrentFn = Callable[[np.ndarray, float], tuple[np.ndarray, np.ndarray]]
StdFn = Callable[[np.ndarray, float], tuple[np.ndarray, np.ndarray]]


def checked_custom_factor(
    noise_model: gtsam.noiseModel.Base, keys: Sequence[int], fn: FactorFn, error_dim: int, var_dim: int = 2
) -> gtsam.CustomFactor:
    """A ``gtsam.CustomFactor`` over 2-D (Point2-stored) variables whose shapes are checked in Python.

    Raises ``ValueError`` (propagated through gtsam) if ``fn`` returns an error that is not
    ``(error_dim,)`` or finite, or a Jacobian list of the wrong length or block shape.
    """
    keys = [int(k) for k in keys]
    if noise_model.dim() != error_dim:
        raise ValueError(f"noise model dimension {noise_model.dim()} does not match error_dim {error_dim}")

    def error_func(
        this: gtsam.CustomFactor, values: gtsam.Values, jacobians: list[np.ndarray] | None
    ) -> np.ndarray:
        xs = [values.atPoint2(k) for k in keys]
        error, jacs = fn(xs)
        error = np.asarray(error, dtype=float)
        if error.shape != (error_dim,):
            raise ValueError(f"factor error has shape {error.shape}, expected ({error_dim},)")
        if not np.isfinite(error).all():
            raise ValueError(f"factor error is not finite: {error} (NaN in the current field or SDF?)")
        if jacobians is not None:
            if len(jacs) != len(keys):
                raise ValueError(f"factor returned {len(jacs)} Jacobians for {len(keys)} keys")
            for i, jac in enumerate(jacs):
                jac = np.asarray(jac, dtype=float)
                if jac.shape != (error_dim, var_dim):
                    raise ValueError(f"Jacobian {i} has shape {jac.shape}, expected ({error_dim}, {var_dim})")
                if not np.isfinite(jac).all():
                    raise ValueError(f"Jacobian {i} is not finite")
                jacobians[i] = jac
        return error

    return gtsam.CustomFactor(noise_model, keys, error_func)


# ---------------------------------------------------------------------------- GP prior
def gp_prior_covariance(dt: float, qc: float | np.ndarray) -> np.ndarray:
    """``Q(dt)`` of the constant-velocity GP for state ``[p (2); v (2)]``, ``Qc`` scalar or diag(2)."""
    qc = np.broadcast_to(np.asarray(qc, dtype=float), (2,))
    block = np.array([[dt**3 / 3.0, dt**2 / 2.0], [dt**2 / 2.0, dt]])
    return np.kron(block, np.diag(qc))


def gp_prior_error(dt: float) -> FactorFn:
    """Error ``[p1 - p0 - dt v0; v1 - v0]`` over keys ``(p0, v0, p1, v1)`` (the native factor's form)."""
    eye, zero = np.eye(2), np.zeros((2, 2))

    def fn(xs: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        p0, v0, p1, v1 = xs
        err = np.concatenate([p1 - p0 - dt * v0, v1 - v0])
        jacs = [
            np.vstack([-eye, zero]),
            np.vstack([-dt * eye, -eye]),
            np.vstack([eye, zero]),
            np.vstack([zero, eye]),
        ]
        return err, jacs

    return fn


# ---------------------------------------------------------------------------- batched math
def hinge_batch(d: np.ndarray, grad: np.ndarray, epsilon: float) -> tuple[np.ndarray, np.ndarray]:
    """Hinge ``max(0, eps - d)`` ``(M,)`` and its gradient w.r.t. position ``(M, 2)``."""
    active = d < epsilon
    return np.where(active, epsilon - d, 0.0), np.where(active[:, None], -grad, 0.0)


def energy_batch(
    v: np.ndarray, c: np.ndarray, jc: np.ndarray, s: np.ndarray, ds: np.ndarray, kappa: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Energy residuals ``(M, 3)`` and Jacobians w.r.t. position and velocity ``(M, 3, 2)`` each."""
    root = float(np.sqrt(2.0 * kappa))
    m = len(v)
    w = np.empty((m, 3))
    w[:, :2] = v - c
    w[:, 2] = root * s
    norm = np.sqrt((w**2).sum(axis=1))
    sq = np.sqrt(norm)
    err = sq[:, None] * w
    safe = np.where(norm > 0, norm, 1.0)
    dr_dw = sq[:, None, None] * (
        np.eye(3)[None] + 0.5 * np.einsum("mi,mj->mij", w, w) / (safe**2)[:, None, None]
    )
    dw_dp = np.concatenate([-jc, root * ds[:, None, :]], axis=1)  # (M, 3, 2)
    jp = np.einsum("mij,mjk->mik", dr_dw, dw_dp)
    jv = dr_dw[:, :, :2].copy()
    return err, jp, jv


# ---------------------------------------------------------------------------- obstacles
def obstacle_hinge_error(sdf: SdfFn, epsilon: float) -> FactorFn:
    """GPMP2 hinge loss on one position key: ``max(0, eps - d(p))``, Jacobian ``-grad d`` when active."""

    def fn(xs: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        d, grad = sdf(xs[0][None, :])
        e, j = hinge_batch(d, grad, epsilon)
        return e, [j]

    return fn


# ---------------------------------------------------------------------------- currents
def current_energy_error(
    current: CurrentFn, t: float, std: StdFn | None = None, kappa: float = 1.0
) -> FactorFn:
    """Energy residual on keys ``(p, v)`` at time ``t``: ``|w|^(1/2) w``, ``w = [v - c(p, t); sqrt(2 kappa) sigma]``."""

    def fn(xs: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        p, v = xs
        c, jc = current(p[None, :], t)
        if std is not None:
            s, ds = std(p[None, :], t)
        else:
            s, ds = np.zeros(1), np.zeros((1, 2))
        err, jp, jv = energy_batch(v[None, :], c, jc, s, ds, kappa)
        return err[0], [jp[0], jv[0]]

    return fn


# ---------------------------------------------------------------------------- batched intervals
def segment_error(
    sdf: SdfFn,
    epsilon: float,
    obstacle_sigma: float,
    dt: float,
    t_left: float,
    taus: np.ndarray,
    weights: np.ndarray,
    current: CurrentFn | None,
    std: StdFn | None = None,
    kappa: float = 1.0,
    n_intervals: int = 1,
) -> FactorFn:
    """Whitened obstacle + energy residuals at GP-interpolated points of consecutive intervals, vectorised.

    Keys ``(p_0, v_0, p_1, v_1, ..., p_K, v_K)`` for ``K = n_intervals`` intervals of length
    ``dt`` starting at time ``t_left``. In each interval the points sit at offsets ``taus``
    (``0 <= tau < dt``) from its left support state; ``weights`` ``(K, len(taus))`` (or
    ``(len(taus),)`` for all intervals) are the energy quadrature weights: energy residuals are
    pre-multiplied by ``sqrt(weight)`` and hinge residuals divided by ``obstacle_sigma``, so use a
    unit noise model. Per point the error is ``[hinge, energy(3)]`` (``[hinge]`` without a
    current). This is the same model as per-point factors wrapped in ``WnoaInterpFactorPoint2``
    (with a fixed noise model), evaluated in one call.
    """
    from usv_planner.gp_interp import lambda_psi

    taus = np.asarray(taus, dtype=float)
    k_int = int(n_intervals)
    m = len(taus)
    lam = np.empty((m, 2, 2))
    psi = np.empty((m, 2, 2))
    for j, tau in enumerate(taus):
        lam[j], psi[j] = lambda_psi(dt, tau)
    sqrt_w = np.sqrt(np.broadcast_to(np.asarray(weights, dtype=float), (k_int, m))).reshape(-1)
    times = (t_left + dt * np.arange(k_int)[:, None] + taus[None, :]).reshape(-1)
    per = 1 if current is None else 4
    total = k_int * m

    def fn(xs: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        st = np.asarray(xs).reshape(k_int + 1, 2, 2)  # (state, [p, v], axis)
        states = np.einsum("mab,kbc->kmac", lam, st[:-1]) + np.einsum("mab,kbc->kmac", psi, st[1:])
        states = states.reshape(total, 2, 2)
        p, v = states[:, 0], states[:, 1]
        d, grad = sdf(p)
        h, jh = hinge_batch(d, grad, epsilon)
        err = np.zeros((total, per))
        jx = np.zeros((total, per, 2, 2))  # d error / d interpolated ([p, v], axis)
        err[:, 0] = h / obstacle_sigma
        jx[:, 0, 0] = jh / obstacle_sigma
        if current is not None:
            c, jc = current(p, times)
            if std is not None:
                s, ds = std(p, times)
            else:
                s, ds = np.zeros(total), np.zeros((total, 2))
            e, jp, jv = energy_batch(v, c, jc, s, ds, kappa)
            err[:, 1:] = e * sqrt_w[:, None]
            jx[:, 1:, 0] = jp * sqrt_w[:, None, None]
            jx[:, 1:, 1] = jv * sqrt_w[:, None, None]
        jx = jx.reshape(k_int, m, per, 2, 2)
        # interpolated x[a] = sum_b lam[a, b] x_left[b] + psi[a, b] x_right[b]  (a, b in {p, v})
        d_left = np.einsum("kmeax,mab->kmebx", jx, lam)  # (K, m, per, [p, v] of left, axis)
        d_right = np.einsum("kmeax,mab->kmebx", jx, psi)
        full = np.zeros((k_int, m * per, k_int + 1, 2, 2))
        rows = d_left.reshape(k_int, m * per, 2, 2)
        rows_r = d_right.reshape(k_int, m * per, 2, 2)
        idx = np.arange(k_int)
        full[idx, :, idx] += rows
        full[idx, :, idx + 1] += rows_r
        full = full.reshape(total * per, k_int + 1, 2, 2)
        jacs = []
        for state in range(k_int + 1):
            for kind in (0, 1):
                jacs.append(full[:, state, kind, :])
        return err.reshape(-1), jacs

    return fn


def numerical_jacobian(
    fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, eps: float = 1e-6
) -> np.ndarray:
    """Central finite-difference Jacobian of ``fn: R^n -> R^m`` at ``x`` (to check analytic Jacobians)."""
    x = np.asarray(x, dtype=float)
    f0 = np.asarray(fn(x), dtype=float).ravel()
    jac = np.zeros((f0.size, x.size))
    for k in range(x.size):
        dx = np.zeros_like(x)
        dx.flat[k] = eps
        jac[:, k] = (
            np.asarray(fn(x + dx), dtype=float).ravel() - np.asarray(fn(x - dx), dtype=float).ravel()
        ) / (2 * eps)
    return jac
