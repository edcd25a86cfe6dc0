"""Command-line interface of feature-select."""

from __future__ import annotations

import typer

from feature_select import __version__

app = typer.Typer(
    name="feature-select",
    help="NeuroFS: supervised feature selection by neuron evolution in sparse neural networks.",
    no_args_is_help=True,
    add_completion=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"feature-select {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """NeuroFS: supervised feature selection by neuron evolution in sparse neural networks."""
