"""Command-line interface of gnn-soup."""

from __future__ import annotations

import typer

from gnn_soup import __version__

app = typer.Typer(
    name="gnn-soup",
    help="Graph Ladling: data-centric model soups for GNNs.",
    no_args_is_help=True,
    add_completion=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"gnn-soup {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """Graph Ladling: data-centric model soups for GNNs."""
