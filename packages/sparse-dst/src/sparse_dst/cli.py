"""Command-line interface of sparse-dst."""

from __future__ import annotations

import typer

from sparse_dst import __version__

app = typer.Typer(
    name="sparse-dst",
    help="Chase: channel-aware dynamic sparse training.",
    no_args_is_help=True,
    add_completion=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"sparse-dst {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """Chase: channel-aware dynamic sparse training."""
