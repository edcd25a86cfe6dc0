"""The part every package's typer CLI shares: ``--version``, ``--log-level``, clean error exits."""

from __future__ import annotations

from typing import NoReturn

import typer

from research_systems_core.logs import setup_logging

__all__ = ["create_app", "fail"]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _setup_logging(log_level: str) -> None:
    level = log_level.upper()
    if level not in LOG_LEVELS:
        raise typer.BadParameter(f"--log-level must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}")
    setup_logging(level)


def create_app(name: str, help: str, version: str, default_threads: int | None = None) -> typer.Typer:
    """A typer app with ``--help``, ``--version`` and ``--log-level``; add commands with ``@app.command()``.

    With ``default_threads`` the app also takes ``--threads N`` (torch CPU threads, imported lazily).
    """
    app = typer.Typer(name=name, help=help, no_args_is_help=True, add_completion=False)

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
