"""Input checks that fail with a clear message naming the parameter, the value and what is allowed."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

__all__ = [
    "UnknownNameError",
    "check_choice",
    "check_finite",
    "check_int",
    "check_positive",
    "check_range",
]


class UnknownNameError(ValueError, KeyError):
    """An unknown name (model, method, dataset...) was asked for; the message lists the known ones."""

    def __str__(self) -> str:  # KeyError would otherwise quote the message
        return str(self.args[0]) if self.args else ""


def _check_real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a real number, got {value!r} ({type(value).__name__})")
    value = float(value)
    if math.isnan(value):
        raise ValueError(f"{name} must be a number, got nan")
    return value


def check_range(
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> float:
    """Check ``low <= value <= high`` (bounds optional, inclusivity configurable); return the float."""
    v = _check_real(name, value)
    ok_low = low is None or (v >= low if low_inclusive else v > low)
    ok_high = high is None or (v <= high if high_inclusive else v < high)
    if not (ok_low and ok_high):
        left = "(-inf" if low is None else ("[" if low_inclusive else "(") + f"{low:g}"
        right = "inf)" if high is None else f"{high:g}" + ("]" if high_inclusive else ")")
        raise ValueError(f"{name} must be in {left}, {right}, got {value!r}")
    return v


def check_positive(name: str, value: Any, strict: bool = True) -> float:
    """Check that ``value`` is finite and ``> 0`` (or ``>= 0`` when not strict); return the float."""
    v = _check_real(name, value)
    if (strict and not v > 0) or (not strict and not v >= 0):
        raise ValueError(f"{name} must be {'> 0' if strict else '>= 0'}, got {value!r}")
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {value!r}")
    return v


def check_int(name: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    """Check that ``value`` is an integer (not a bool) within the optional bounds; return it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r} ({type(value).__name__})")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_choice(name: str, value: Any, choices: Iterable[Any]) -> Any:
    """Check that ``value`` is one of ``choices``; raise :class:`UnknownNameError` listing them."""
    choices = list(choices)
    if value not in choices:
        listed = ", ".join(repr(c) for c in choices) or "(none registered)"
        raise UnknownNameError(f"unknown {name} {value!r}; choose one of: {listed}")
    return value


def check_finite(name: str, array: Any) -> None:
    """Raise ValueError if an array-like (numpy or torch) holds NaN or infinity."""
    if hasattr(array, "isfinite") and not isinstance(array, numbers.Number):  # torch tensor
        finite = bool(array.isfinite().all())
    else:
        import numpy as np

        finite = bool(np.isfinite(np.asarray(array, dtype=float)).all())
    if not finite:
        raise ValueError(f"{name} contains NaN or infinite values")
