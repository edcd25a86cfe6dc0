"""The part every package's typer CLI shares: ``--version``, ``--log-level``, clean error exits."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import typer

from research_systems_core.checkpoint import CheckpointError
from research_systems_core.logs import setup_logging

__all__ = ["USER_ERRORS", "ErrorBoundaryTyper", "create_app", "fail"]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# Exceptions that mean "bad input": one line, exit 2. UserError and UnknownNameError are ValueErrors.
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, FileNotFoundError, CheckpointError)
_state = {"debug": False}
F = TypeVar("F", bound=Callable[..., Any])


def _setup_logging(log_level: str) -> None:
    level = log_level.upper()
    if level not in LOG_LEVELS:
        raise typer.BadParameter(f"--log-level must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}")
    _state["debug"] = level == "DEBUG"
    setup_logging(level)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split()) or type(error).__name__
    return text[:2000]


def error_boundary(fn: F) -> F:
    """Wrap a command: bad input becomes ``error: <message>`` and exit 2; anything unexpected one
    line and exit 1, with the traceback only under ``--log-level DEBUG``."""

    @functools.wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, KeyboardInterrupt, SystemExit):
            raise
        except USER_ERRORS as error:
            if _state["debug"]:
                raise
            fail(_one_line(error))
        except Exception as error:
            if _state["debug"]:
                raise
            typer.echo(
                f"error: unexpected {type(error).__name__}: {_one_line(error)} "
                "(rerun with --log-level DEBUG for the traceback)",
                err=True,
            )
            raise typer.Exit(1) from None

    return wrapped  # type: ignore[return-value]


class ErrorBoundaryTyper(typer.Typer):
    """A Typer whose every command runs inside :func:`error_boundary`."""

    def command(self, *args: Any, **kwargs: Any) -> Callable[[F], F]:
        register = super().command(*args, **kwargs)

        def decorator(fn: F) -> F:
            register(error_boundary(fn))
            return fn

        return decorator


def create_app(name: str, help: str, version: str, default_threads: int | None = None) -> typer.Typer:
    """A typer app with ``--help``, ``--version`` and ``--log-level``; add commands with ``@app.command()``.

    Every command runs inside an error boundary: ValueError, TypeError, FileNotFoundError,
    CheckpointError and :class:`~research_systems_core.errors.UserError` print one line and exit 2;
    any other exception prints one line with a hint and exits 1 (its traceback with DEBUG logging).

    With ``default_threads`` the app also takes ``--threads N`` (torch CPU threads, imported lazily).
    """
    app = ErrorBoundaryTyper(name=name, help=help, no_args_is_help=True, add_completion=False)

    def show_version(value: bool) -> None:
        if value:
            typer.echo(f"{name} {version}")
            raise typer.Exit()

    version_option = typer.Option(
        False, "--version", callback=show_version, is_eager=True, help="Show the version and exit."
    )
    log_option = typer.Option("INFO", "--log-level", help="Logging level: DEBUG, INFO, WARNING or ERROR.")
    if default_threads is None:

        @app.callback(help=help)
        def main(show: bool = version_option, log_level: str = log_option) -> None:
            _setup_logging(log_level)

    else:

        @app.callback(help=help)
        def main_with_threads(
            show: bool = version_option,
            log_level: str = log_option,
            threads: int = typer.Option(
                default_threads,
                "--threads",
                min=1,
                help="torch CPU threads (more than the cores slows it down).",
            ),
        ) -> None:
            from research_systems_core.torch_utils import set_torch_threads

            _setup_logging(log_level)
            set_torch_threads(threads)

    return app


def fail(error: BaseException | str, code: int = 2) -> NoReturn:
    """Print ``error: <message>`` on stderr and exit with ``code`` (no traceback for bad input)."""
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(code)
