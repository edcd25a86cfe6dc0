"""Ocean-current fields behind one interface: ``velocity(points, t) -> (c, dc/dp)``.

``points`` is ``(M, 2)`` metres, ``t`` seconds (scalar or ``(M,)``); ``c`` is ``(M, 2)`` m/s and
``dc/dp`` is ``(M, 2, 2)`` with ``jac[m, i, j] = d c_i / d p_j``. Fields that carry a Bayesian
uncertainty also implement ``std(points, t) -> (sigma (M,), d sigma / dp (M, 2))``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from research_systems_core.registry import Registry
from research_systems_core.validation import check_finite, check_positive

__all__ = [
    "CURRENTS",
    "CurrentField",
    "DoubleGyre",
    "FrozenField",
    "GriddedField",
    "PeninsulaFlow",
    "RankineVortex",
    "ShearJet",
    "UniformCurrent",
    "sample_to_grid",
]

CURRENTS = Registry("current field")


def _prepare(points: np.ndarray, t: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    p = np.atleast_2d(np.asarray(points, dtype=float))
    if p.ndim != 2 or p.shape[1] != 2:
        raise ValueError(f"points must have shape (M, 2), got {p.shape}")
    tt = np.broadcast_to(np.asarray(t, dtype=float), (p.shape[0],))
    return p, tt


class CurrentField:
    """Base class. Subclasses implement :meth:`velocity`; :meth:`std` defaults to a certain field."""

    has_uncertainty = False

    def velocity(self, points: np.ndarray, t: float | np.ndarray = 0.0) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def std(self, points: np.ndarray, t: float | np.ndarray = 0.0) -> tuple[np.ndarray, np.ndarray]:
        p, _ = _prepare(points, t)
        return np.zeros(len(p)), np.zeros((len(p), 2))

    def __call__(self, point: Sequence[float], t: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Single point: ``(velocity (2,), jacobian (2, 2))``."""
        c, jac = self.velocity(np.asarray(point, dtype=float)[None, :], t)
        return c[0], jac[0]

    def max_speed_estimate(
        self, bounds: tuple[float, float, float, float], times: Sequence[float] = (0.0,)
    ) -> float:
        """Largest speed on a 41 x 41 grid over ``bounds`` at the given times (for A* heuristics)."""
        xs = np.linspace(bounds[0], bounds[1], 41)
        ys = np.linspace(bounds[2], bounds[3], 41)
        pts = np.stack(np.meshgrid(xs, ys), axis=-1).reshape(-1, 2)
        return max(float(np.linalg.norm(self.velocity(pts, t)[0], axis=1).max()) for t in times)


@CURRENTS.register("uniform")
class UniformCurrent(CurrentField):
    """Constant current ``(u, v)`` everywhere."""

    def __init__(self, u: float = 0.0, v: float = 0.0) -> None:
        check_finite("uniform current", [u, v])
        self.value = np.array([u, v], dtype=float)

    def velocity(self, points, t=0.0):
        p, _ = _prepare(points, t)
        return np.tile(self.value, (len(p), 1)), np.zeros((len(p), 2, 2))


@CURRENTS.register("shear-jet")
class ShearJet(CurrentField):
    """Jet along +x: ``u = U sech^2((y - y0) / width)``, ``v = 0``."""

    def __init__(self, speed: float = 1.0, y0: float = 0.0, width: float = 1.0) -> None:
        check_finite("jet speed", speed)
        self.speed, self.y0, self.width = float(speed), float(y0), check_positive("jet width", width)

    def velocity(self, points, t=0.0):
        p, _ = _prepare(points, t)
        s = (p[:, 1] - self.y0) / self.width
        sech2 = 1.0 / np.cosh(s) ** 2
        c = np.zeros_like(p)
        c[:, 0] = self.speed * sech2
        jac = np.zeros((len(p), 2, 2))
        jac[:, 0, 1] = -2.0 * self.speed * sech2 * np.tanh(s) / self.width
        return c, jac


@CURRENTS.register("rankine-vortex")
class RankineVortex(CurrentField):
    """Counter-clockwise Rankine vortex: solid-body rotation inside ``radius``, ``1/r`` decay outside.

    ``peak_speed`` is the tangential speed at ``r = radius`` (negative for clockwise).
    """

    def __init__(
        self, center: Sequence[float] = (0.0, 0.0), peak_speed: float = 1.0, radius: float = 1.0
    ) -> None:
        self.center = np.asarray(center, dtype=float)
        self.peak_speed = float(peak_speed)
        self.radius = check_positive("vortex radius", radius)

    def velocity(self, points, t=0.0):
        p, _ = _prepare(points, t)
        d = p - self.center
        r2 = np.maximum((d**2).sum(axis=1), 1e-300)
        inside = r2 <= self.radius**2
        k_in = self.peak_speed / self.radius
        k_out = self.peak_speed * self.radius
        c = np.empty_like(p)
        jac = np.empty((len(p), 2, 2))
        perp = np.stack([-d[:, 1], d[:, 0]], axis=1)
        c[inside] = k_in * perp[inside]
        jac[inside] = k_in * np.array([[0.0, -1.0], [1.0, 0.0]])
        out = ~inside
        c[out] = k_out * perp[out] / r2[out, None]
        dx, dy, rr = d[out, 0], d[out, 1], r2[out]
        jac[out, 0, 0] = k_out * 2 * dx * dy / rr**2
        jac[out, 0, 1] = k_out * (-1.0 / rr + 2 * dy**2 / rr**2)
        jac[out, 1, 0] = k_out * (1.0 / rr - 2 * dx**2 / rr**2)
        jac[out, 1, 1] = -k_out * 2 * dx * dy / rr**2
        return c, jac


@CURRENTS.register("double-gyre")
class DoubleGyre(CurrentField):
    """Time-varying double gyre (Shadden et al. 2005) on ``[x0, x0 + 2L] x [y0, y0 + L]``.

    Stream function ``psi = A sin(pi f(x', t)) sin(pi y')`` with ``x' = (x - x0)/L``,
    ``f = a x'^2 + b x'``, ``a = eps sin(omega t)``, ``b = 1 - 2 a``; velocities are scaled so
    ``speed`` is the peak of ``|u|`` (``speed = pi A`` in the nondimensional form).
    """

    def __init__(
        self,
        speed: float = 1.0,
        length: float = 1.0,
        epsilon: float = 0.25,
        period: float = 10.0,
        origin: Sequence[float] = (0.0, 0.0),
    ) -> None:
        self.speed = float(speed)
        self.length = check_positive("gyre length", length)
        self.epsilon = float(epsilon)
        self.omega = 2.0 * math.pi / check_positive("gyre period", period)
        self.origin = np.asarray(origin, dtype=float)

    def velocity(self, points, t=0.0):
        p, tt = _prepare(points, t)
        xs = (p[:, 0] - self.origin[0]) / self.length
        ys = (p[:, 1] - self.origin[1]) / self.length
        a = self.epsilon * np.sin(self.omega * tt)
        b = 1.0 - 2.0 * a
        f = a * xs**2 + b * xs
        fp = 2.0 * a * xs + b
        sf, cf = np.sin(np.pi * f), np.cos(np.pi * f)
        sy, cy = np.sin(np.pi * ys), np.cos(np.pi * ys)
        U = self.speed
        c = np.stack([-U * sf * cy, U * cf * sy * fp], axis=1)
        jac = np.empty((len(p), 2, 2))
        jac[:, 0, 0] = -U * np.pi * cf * fp * cy
        jac[:, 0, 1] = U * np.pi * sf * sy
        jac[:, 1, 0] = U * (-np.pi * sf * fp**2 * sy + cf * sy * 2.0 * a)
        jac[:, 1, 1] = U * np.pi * cf * cy * fp
        return c, jac / self.length


@CURRENTS.register("peninsula")
class PeninsulaFlow(CurrentField):
    """Potential flow of speed ``speed`` along +x past a semicircular headland on the coast ``y = center_y``.

    Complex potential ``W = U (z + R^2 / z)`` around the headland centre; the coast is a
    streamline. Inside the headland (land) the velocity is zero.
    """

    def __init__(self, speed: float = 1.0, center: Sequence[float] = (0.0, 0.0), radius: float = 1.0) -> None:
        self.speed = float(speed)
        self.center = np.asarray(center, dtype=float)
        self.radius = check_positive("headland radius", radius)

    def velocity(self, points, t=0.0):
        p, _ = _prepare(points, t)
        z = (p[:, 0] - self.center[0]) + 1j * (p[:, 1] - self.center[1])
        land = np.abs(z) < self.radius
        z = np.where(land, self.radius * 2.0 + 0j, z)
        w = self.speed * (1.0 - self.radius**2 / z**2)  # u - i v
        dw = 2.0 * self.speed * self.radius**2 / z**3  # d(u - i v)/dz = a + i b
        c = np.stack([w.real, -w.imag], axis=1)
        jac = np.empty((len(p), 2, 2))
        jac[:, 0, 0] = dw.real
        jac[:, 0, 1] = -dw.imag
        jac[:, 1, 0] = -dw.imag
        jac[:, 1, 1] = -dw.real
        c[land] = 0.0
        jac[land] = 0.0
        return c, jac


class FrozenField(CurrentField):
    """A field evaluated at a fixed time ``t0`` whatever time is asked (a frozen snapshot)."""

    def __init__(self, field: CurrentField, t0: float = 0.0) -> None:
        self.field, self.t0 = field, float(t0)
        self.has_uncertainty = field.has_uncertainty

    def velocity(self, points, t=0.0):
        return self.field.velocity(points, self.t0)

    def std(self, points, t=0.0):
        return self.field.std(points, self.t0)


def _regular(name: str, axis: np.ndarray) -> tuple[float, float]:
    axis = np.asarray(axis, dtype=float)
    if axis.ndim != 1 or len(axis) < 2:
        raise ValueError(f"{name} axis needs at least 2 values, got shape {axis.shape}")
    check_finite(f"{name} axis", axis)
    step = np.diff(axis)
    if not (step > 0).all() or np.ptp(step) > 1e-6 * abs(step.mean()) + 1e-12:
        raise ValueError(f"{name} axis must be increasing and evenly spaced")
    return float(axis[0]), float(step.mean())


class GriddedField(CurrentField):
    """Current on a regular ``(t, y, x)`` grid; trilinear interpolation, clamped at the borders.

    ``u``/``v`` have shape ``(nt, ny, nx)`` (or ``(ny, nx)`` for a static field). ``std``
    (optional, same shape) is the one-sigma uncertainty of each velocity component.
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        u: np.ndarray,
        v: np.ndarray,
        times: np.ndarray | None = None,
        std: np.ndarray | None = None,
    ) -> None:
        u = np.asarray(u, dtype=float)
        v = np.asarray(v, dtype=float)
        if u.ndim == 2:
            u, v = u[None], v[None]
            std = None if std is None else np.asarray(std, dtype=float)[None]
        if u.shape != v.shape or u.ndim != 3:
            raise ValueError(f"u and v must share a (nt, ny, nx) shape, got {u.shape} and {v.shape}")
        nt, ny, nx = u.shape
        if len(x) != nx or len(y) != ny:
            raise ValueError(
                f"grid axes x ({len(x)}) and y ({len(y)}) do not match the field shape {u.shape}"
            )
        check_finite("current field u", u)
        check_finite("current field v", v)
        self.x0, self.dx = _regular("x", x)
        self.y0, self.dy = _regular("y", y)
        if nt > 1:
            if times is None or len(times) != nt:
                raise ValueError(f"a time-varying field with {nt} frames needs {nt} times")
            self.t0, self.dt = _regular("time", np.asarray(times))
        else:
            self.t0, self.dt = float(times[0]) if times is not None else 0.0, 1.0
        self.x, self.y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
        self.times = np.asarray(times, dtype=float) if times is not None else np.array([self.t0])
        self.u, self.v = u, v
        if std is not None:
            std = np.asarray(std, dtype=float)
            if std.shape != u.shape:
                raise ValueError(f"std must have the field's shape {u.shape}, got {std.shape}")
            check_finite("current field std", std)
            if (std < 0).any():
                raise ValueError("current field std must be >= 0")
            self.has_uncertainty = True
        self.sigma = std

    def _weights(self, points, t):
        p, tt = _prepare(points, t)
        nt, ny, nx = self.u.shape
        gx = (p[:, 0] - self.x0) / self.dx
        gy = (p[:, 1] - self.y0) / self.dy
        ix = (gx >= 0) & (gx <= nx - 1)
        iy = (gy >= 0) & (gy <= ny - 1)
        gx, gy = np.clip(gx, 0, nx - 1), np.clip(gy, 0, ny - 1)
        j0 = np.minimum(np.floor(gx).astype(int), nx - 2)
        i0 = np.minimum(np.floor(gy).astype(int), ny - 2)
        if nt > 1:
            gt = np.clip((tt - self.t0) / self.dt, 0, nt - 1)
            k0 = np.minimum(np.floor(gt).astype(int), nt - 2)
            ft = gt - k0
        else:
            k0 = np.zeros(len(p), dtype=int)
            ft = np.zeros(len(p))
        return j0, i0, k0, gx - j0, gy - i0, ft, ix, iy

    def _interp(self, grid, w):
        j0, i0, k0, fx, fy, ft, ix, iy = w
        k1 = np.minimum(k0 + 1, grid.shape[0] - 1)
        val = np.zeros(len(j0))
        ddx = np.zeros(len(j0))
        ddy = np.zeros(len(j0))
        for k, wt in ((k0, 1 - ft), (k1, ft)):
            f00, f01 = grid[k, i0, j0], grid[k, i0, j0 + 1]
            f10, f11 = grid[k, i0 + 1, j0], grid[k, i0 + 1, j0 + 1]
            val += wt * ((1 - fy) * ((1 - fx) * f00 + fx * f01) + fy * ((1 - fx) * f10 + fx * f11))
            ddx += wt * ((1 - fy) * (f01 - f00) + fy * (f11 - f10)) / self.dx
            ddy += wt * ((1 - fx) * (f10 - f00) + fx * (f11 - f01)) / self.dy
        return val, np.where(ix, ddx, 0.0), np.where(iy, ddy, 0.0)

    def velocity(self, points, t=0.0):
        w = self._weights(points, t)
        u, ux, uy = self._interp(self.u, w)
        v, vx, vy = self._interp(self.v, w)
        jac = np.stack([np.stack([ux, uy], axis=1), np.stack([vx, vy], axis=1)], axis=1)
        return np.stack([u, v], axis=1), jac

    def std(self, points, t=0.0):
        if self.sigma is None:
            return super().std(points, t)
        s, sx, sy = self._interp(self.sigma, self._weights(points, t))
        return s, np.stack([sx, sy], axis=1)


def sample_to_grid(
    field: CurrentField, x: np.ndarray, y: np.ndarray, times: np.ndarray | None = None
) -> GriddedField:
    """Cache any field (and its uncertainty) on a regular grid for fast queries."""
    times_arr = np.array([0.0]) if times is None else np.asarray(times, dtype=float)
    xx, yy = np.meshgrid(x, y)
    pts = np.stack([xx.ravel(), yy.ravel()], axis=1)
    u = np.empty((len(times_arr), len(y), len(x)))
    v = np.empty_like(u)
    s = np.empty_like(u) if field.has_uncertainty else None
    for k, t in enumerate(times_arr):
        c, _ = field.velocity(pts, t)
        u[k] = c[:, 0].reshape(xx.shape)
        v[k] = c[:, 1].reshape(xx.shape)
        if s is not None:
            s[k] = field.std(pts, t)[0].reshape(xx.shape)
    return GriddedField(x, y, u, v, times_arr, s)
