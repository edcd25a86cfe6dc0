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
from typing import Any

import gtsam
import numpy as np

__all__ = [
    "SegmentEvaluator",
    "checked_custom_factor",
    "current_energy_error",
    "gp_prior_covariance",
    "gp_prior_error",
    "hermite_accelerations",
    "numerical_jacobian",
    "obstacle_hinge_error",
    "segment_error",
    "speed_hinge_batch",
    "speed_limit_error",
]

FactorFn = Callable[[list[np.ndarray]], tuple[np.ndarray, list[np.ndarray]]]
SdfFn = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
CurrentFn = Callable[[np.ndarray, float], tuple[np.ndarray, np.ndarray]]
StdFn = Callable[[np.ndarray, float], tuple[np.ndarray, np.ndarray]]


def checked_custom_factor(
    noise_model: gtsam.noiseModel.Base,
    keys: Sequence[int],
    fn: FactorFn,
    error_dim: int,
    var_dim: int = 2,
    before: Callable[[gtsam.Values], None] | None = None,
) -> gtsam.CustomFactor:
    """A ``gtsam.CustomFactor`` over 2-D (Point2-stored) variables whose shapes are checked in Python.

    Raises ``ValueError`` (propagated through gtsam) if ``fn`` returns an error that is not
    ``(error_dim,)`` or finite, or a Jacobian list of the wrong length or block shape.
    ``before(values)``, if given, sees the full values first (shared evaluations read them).
    """
    keys = [int(k) for k in keys]
    wants_flag = _takes_jacobian_flag(fn)
    if noise_model.dim() != error_dim:
        raise ValueError(f"noise model dimension {noise_model.dim()} does not match error_dim {error_dim}")

    def error_func(
        this: gtsam.CustomFactor, values: gtsam.Values, jacobians: list[np.ndarray] | None
    ) -> np.ndarray:
        if before is not None:
            before(values)
        xs = [values.atPoint2(k) for k in keys]
        error, jacs = fn(xs, jacobians is not None) if wants_flag else fn(xs)
        error = np.asarray(error, dtype=float)
        if error.shape != (error_dim,):
            raise ValueError(f"factor error has shape {error.shape}, expected ({error_dim},)")
        if not np.isfinite(error).all():
            raise ValueError(f"factor error is not finite: {error} (NaN in the current field or SDF?)")
        if jacobians is not None:
            if len(jacs) != len(keys):
                raise ValueError(f"factor returned {len(jacs)} Jacobians for {len(keys)} keys")
            jacs = [np.asarray(jac, dtype=float) for jac in jacs]
            for i, jac in enumerate(jacs):
                if jac.shape != (error_dim, var_dim):
                    raise ValueError(f"Jacobian {i} has shape {jac.shape}, expected ({error_dim}, {var_dim})")
            if not np.isfinite(np.concatenate(jacs, axis=1)).all():
                bad = next(i for i, jac in enumerate(jacs) if not np.isfinite(jac).all())
                raise ValueError(f"Jacobian {bad} is not finite")
            for i, jac in enumerate(jacs):
                jacobians[i] = jac
        return error

    return gtsam.CustomFactor(noise_model, keys, error_func)


def _takes_jacobian_flag(fn: Callable) -> bool:
    """Whether ``fn`` accepts ``(xs, want_jacobians)`` (it can then skip Jacobians for error-only calls)."""
    import inspect

    try:
        return len(inspect.signature(fn).parameters) >= 2
    except (TypeError, ValueError):
        return False


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


# ---------------------------------------------------------------------------- vehicle limits
def speed_hinge_batch(
    v: np.ndarray, c: np.ndarray, jc: np.ndarray, limit: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Hinge ``max(0, |v - c| - limit)`` ``(M,)`` and its Jacobians w.r.t. position and velocity ``(M, 2)``."""
    u = v - c
    norm = np.sqrt((u**2).sum(axis=1))
    active = norm > limit
    unit = np.where(active[:, None], u / np.where(norm > 0, norm, 1.0)[:, None], 0.0)
    jv = unit
    jp = -np.einsum("mi,mij->mj", unit, jc)
    return np.where(active, norm - limit, 0.0), jp, jv


def hermite_accelerations(p0, v0, p1, v1, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """Accelerations of the constant-velocity GP mean (a cubic Hermite) at both ends of an interval.

    Within an interval the acceleration is linear in time, so its norm is largest at an end:
    ``a(0) = (6 dp - dt (4 v0 + 2 v1)) / dt^2``, ``a(dt) = (-6 dp + dt (2 v0 + 4 v1)) / dt^2``.
    """
    dp = p1 - p0
    a0 = (6.0 * dp - dt * (4.0 * v0 + 2.0 * v1)) / dt**2
    a1 = (-6.0 * dp + dt * (2.0 * v0 + 4.0 * v1)) / dt**2
    return a0, a1


# d a / d [p0, v0, p1, v1] (per axis) for the two end accelerations, divided by the dt powers later
_ACCEL_COEF = np.array([[-6.0, -4.0, 6.0, -2.0], [6.0, 2.0, -6.0, 4.0]])


def _accel_rows(st: np.ndarray, dt: float, limit: float, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Acceleration hinge residuals ``(K, 2)`` and Jacobians ``(K, 2, 4 [p0, v0, p1, v1], 2)``."""
    a0, a1 = hermite_accelerations(st[:-1, 0], st[:-1, 1], st[1:, 0], st[1:, 1], dt)
    acc = np.stack([a0, a1], axis=1)  # (K, 2 ends, 2 axes)
    norm = np.sqrt((acc**2).sum(axis=2))
    active = norm > limit
    unit = np.where(active[..., None], acc / np.where(norm > 0, norm, 1.0)[..., None], 0.0) / sigma
    scale = np.array([1.0 / dt**2, 1.0 / dt, 1.0 / dt**2, 1.0 / dt])
    coef = _ACCEL_COEF * scale  # (2 ends, 4 blocks)
    jac = np.einsum("kex,eb->kebx", unit, coef)
    return np.where(active, norm - limit, 0.0) / sigma, jac


def speed_limit_error(current: CurrentFn, t: float, limit: float, sigma: float) -> FactorFn:
    """Whitened hinge ``max(0, |v - c(p, t)| - limit) / sigma`` on keys ``(p, v)`` (one state)."""

    def fn(xs: list[np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        p, v = xs
        c, jc = current(p[None, :], t)
        e, jp, jv = speed_hinge_batch(v[None, :], c, jc, limit)
        return e / sigma, [jp / sigma, jv / sigma]

    return fn


# ---------------------------------------------------------------------------- batched intervals
class SegmentEvaluator:
    """Obstacle, energy and limit residuals at the GP-interpolated points of ``K`` consecutive intervals.

    All intervals are evaluated in one vectorised call (one SDF and one current lookup); the
    factors of a graph that share an evaluator reuse that evaluation while their own states are
    unchanged (each factor compares its states with the cached ones, so a stale cache is never
    used). See :func:`segment_error` for the residual layout.
    """

    def __init__(
        self,
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
        *,
        energy: bool = True,
        speed_limit: float | None = None,
        speed_sigma: float = 1.0,
        accel_limit: float | None = None,
        accel_sigma: float = 1.0,
        include_end: bool = False,
    ) -> None:
        from usv_planner.gp_interp import lambda_psi

        self.sdf, self.epsilon, self.obstacle_sigma, self.dt = sdf, epsilon, obstacle_sigma, dt
        self.current, self.std, self.kappa = current, std, kappa
        self.taus = np.asarray(taus, dtype=float)
        self.k = int(n_intervals)
        # include_end adds the last interval's right end (the final state) as one more point per
        # interval, masked out (zero hinge and weight) everywhere but in the last interval.
        self.mask = np.ones((self.k, len(self.taus) + include_end))
        if include_end:
            self.taus = np.append(self.taus, dt)
            self.mask[:-1, -1] = 0.0
        self.mask = self.mask.reshape(-1)
        self.m = len(self.taus)
        pairs = [lambda_psi(dt, tau) for tau in self.taus]
        self.lam = np.stack([a for a, _ in pairs])
        self.psi = np.stack([b for _, b in pairs])
        self.sqrt_w = np.sqrt(np.broadcast_to(np.asarray(weights, dtype=float), (self.k, self.m))).reshape(-1)
        self.times = (t_left + dt * np.arange(self.k)[:, None] + self.taus[None, :]).reshape(-1)
        self.use_energy = current is not None and energy
        self.speed_limit, self.speed_sigma = speed_limit, speed_sigma
        self.accel_limit, self.accel_sigma = accel_limit, accel_sigma
        self.per = 1 + 3 * self.use_energy + (speed_limit is not None)
        self.n_acc = 2 if accel_limit is not None else 0
        self.rows = self.m * self.per + self.n_acc
        self._cache: tuple[np.ndarray, bool, tuple] | None = None

    def _point_terms(self, p: np.ndarray, v: np.ndarray, want: bool):
        total = len(p)
        err = np.zeros((total, self.per))
        jx = np.zeros((total, self.per, 2, 2)) if want else None  # d error / d interpolated ([p, v], axis)
        d, grad = self.sdf(p)
        h, jh = hinge_batch(d, grad, self.epsilon)
        err[:, 0] = h * (self.mask / self.obstacle_sigma)
        if want:
            jx[:, 0, 0] = jh * (self.mask / self.obstacle_sigma)[:, None]
        if self.current is not None:
            c, jc = self.current(p, self.times)
        else:
            c, jc = np.zeros_like(v), np.zeros((total, 2, 2))
        col = 1
        if self.use_energy:
            if self.std is not None:
                s, ds = self.std(p, self.times)
            else:
                s, ds = np.zeros(total), np.zeros((total, 2))
            e, jp, jv = energy_batch(v, c, jc, s, ds, self.kappa)
            err[:, 1:4] = e * self.sqrt_w[:, None]
            if want:
                jx[:, 1:4, 0] = jp * self.sqrt_w[:, None, None]
                jx[:, 1:4, 1] = jv * self.sqrt_w[:, None, None]
            col = 4
        if self.speed_limit is not None:
            e, jp, jv = speed_hinge_batch(v, c, jc, float(self.speed_limit))
            scale = self.mask / self.speed_sigma
            err[:, col] = e * scale
            if want:
                jx[:, col, 0] = jp * scale[:, None]
                jx[:, col, 1] = jv * scale[:, None]
        return err, jx

    def evaluate(self, st: np.ndarray, want: bool) -> tuple:
        """``st`` ``(K+1, 2 [p, v], 2)``: errors ``(K, rows)`` and, with ``want``, Jacobian blocks
        w.r.t. the left and right state of each interval ``(K, rows, 2 [p, v], 2)``."""
        cache = self._cache
        if cache is not None and (cache[1] or not want) and np.array_equal(cache[0], st):
            return cache[2]
        k, m, per = self.k, self.m, self.per
        states = np.einsum("mab,kbc->kmac", self.lam, st[:-1]) + np.einsum("mab,kbc->kmac", self.psi, st[1:])
        states = states.reshape(k * m, 2, 2)
        err, jx = self._point_terms(states[:, 0], states[:, 1], want)
        err = err.reshape(k, m * per)
        if self.n_acc:
            acc_err, acc_jac = _accel_rows(st, self.dt, float(self.accel_limit), self.accel_sigma)
            err = np.concatenate([err, acc_err], axis=1)
        if not want:
            out: tuple = (err, None, None)
        else:
            jx = jx.reshape(k, m, per, 2, 2)
            # interpolated x[a] = sum_b lam[a, b] x_left[b] + psi[a, b] x_right[b]  (a, b in {p, v})
            left = np.einsum("kmeax,mab->kmebx", jx, self.lam).reshape(k, m * per, 2, 2)
            right = np.einsum("kmeax,mab->kmebx", jx, self.psi).reshape(k, m * per, 2, 2)
            if self.n_acc:
                blocks = acc_jac.reshape(k, 2, 2, 2, 2)  # (K, end, [left, right], [p, v], axis)
                left = np.concatenate([left, blocks[:, :, 0]], axis=1)
                right = np.concatenate([right, blocks[:, :, 1]], axis=1)
            out = (err, left, right)
        self._cache = (st.copy(), want, out)
        return out

    def block_fn(self, i0: int, count: int) -> FactorFn:
        """Factor function over keys ``(p_i0, v_i0, ..., p_{i0+count}, v_{i0+count})`` reading states
        of all intervals through ``all_states()`` (set by :meth:`bind`) or only its own."""

        def fn(xs: list[np.ndarray], want_jacobians: bool = True) -> tuple[np.ndarray, list[np.ndarray]]:
            own = np.asarray(xs).reshape(count + 1, 2, 2)
            full = self._full_states(own, i0)
            err, left, right = self.evaluate(full, want_jacobians)
            err = err[i0 : i0 + count].reshape(-1)
            if not want_jacobians:
                return err, []
            idx = np.arange(count)
            jac = np.zeros((count, self.rows, count + 1, 2, 2))
            jac[idx, :, idx] = left[i0 : i0 + count]
            jac[idx, :, idx + 1] = right[i0 : i0 + count]
            jac = jac.reshape(count * self.rows, count + 1, 2, 2)
            return err, [jac[:, state, kind, :] for state in range(count + 1) for kind in (0, 1)]

        fn.rows_per_interval = self.rows  # type: ignore[attr-defined]
        return fn

    def _full_states(self, own: np.ndarray, i0: int) -> np.ndarray:
        """All ``K + 1`` states: the cached ones where they agree with this factor's own, else re-read."""
        if self.k + 1 == len(own):
            return own
        cache = self._cache
        if cache is not None and np.array_equal(cache[0][i0 : i0 + len(own)], own):
            return cache[0]
        if self._reader is None:
            raise RuntimeError("a shared SegmentEvaluator needs bind(reader) to read all states")
        full = self._reader()
        if not np.array_equal(full[i0 : i0 + len(own)], own):
            raise RuntimeError("segment evaluator read states that differ from the factor's own")
        return full

    _reader = None

    def bind(self, reader: Callable[[], np.ndarray]) -> None:
        """``reader()`` returns all ``(K+1, 2, 2)`` states of the values being evaluated now."""
        self._reader = reader


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
    **limits: Any,
) -> FactorFn:
    """Whitened obstacle, energy and limit residuals at GP-interpolated points of consecutive intervals.

    Keys ``(p_0, v_0, p_1, v_1, ..., p_K, v_K)`` for ``K = n_intervals`` intervals of length
    ``dt`` starting at time ``t_left``. In each interval the points sit at offsets ``taus``
    (``0 <= tau < dt``) from its left support state; ``weights`` ``(K, len(taus))`` (or
    ``(len(taus),)`` for all intervals) are the energy quadrature weights: energy residuals are
    pre-multiplied by ``sqrt(weight)`` and hinge residuals divided by their sigma, so use a
    unit noise model. Per point the error is ``[hinge, energy(3) if current and energy,
    speed hinge if speed_limit]``; with ``accel_limit`` each interval adds two acceleration hinges
    (the GP mean's acceleration at both ends, where its norm peaks). Keyword options
    (``energy``, ``speed_limit``, ``speed_sigma``, ``accel_limit``, ``accel_sigma``) as in
    :class:`SegmentEvaluator`. Without limits this is the same model as per-point factors wrapped
    in ``WnoaInterpFactorPoint2``, evaluated in one call. The returned function takes
    ``(xs, want_jacobians=True)``; without Jacobians it skips their cost.
    """
    evaluator = SegmentEvaluator(
        sdf, epsilon, obstacle_sigma, dt, t_left, taus, weights, current, std, kappa, n_intervals, **limits
    )
    return evaluator.block_fn(0, int(n_intervals))


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
