"""Errors that mean "the user asked for something invalid": the CLIs turn them into one line, exit 2."""

from __future__ import annotations

__all__ = ["UserError"]


class UserError(ValueError):
    """Bad input that is not naturally a ValueError (a missing column, an unreachable hub id, ...).

    The message names the bad value and what is allowed."""
