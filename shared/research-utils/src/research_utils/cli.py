"""The part every package's typer CLI shares: ``--version``, ``--log-level``, clean error exits."""

from __future__ import annotations

from typing import NoReturn

import typer

from research_utils.logs import setup_logging

__all__ = ["create_app", "fail"]

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def create_app(name: str, help: str, version: str) -> typer.Typer:
    """A typer app with ``--help``, ``--version`` and ``--log-level``; add commands with ``@app.command()``."""
    app = typer.Typer(name=name, help=help, no_args_is_help=True, add_completion=False)

    def show_version(value: bool) -> None:
        if value:
            typer.echo(f"{name} {version}")
            raise typer.Exit()

    @app.callback(help=help)
    def main(
        show: bool = typer.Option(
            False, "--version", callback=show_version, is_eager=True, help="Show the version and exit."
        ),
        log_level: str = typer.Option(
            "INFO", "--log-level", help="Logging level: DEBUG, INFO, WARNING or ERROR."
        ),
    ) -> None:
        level = log_level.upper()
        if level not in LOG_LEVELS:
            raise typer.BadParameter(f"--log-level must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}")
        setup_logging(level)

    return app


def fail(error: BaseException | str, code: int = 2) -> NoReturn:
    """Print ``error: <message>`` on stderr and exit with ``code`` (no traceback for bad input)."""
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(code)
