"""Command-line interface of vision-kd."""

from __future__ import annotations

import typer

from vision_kd import __version__

app = typer.Typer(
    name="vision-kd",
    help="Large-kernel ConvNets as knowledge-distillation teachers for small-kernel ConvNets.",
    no_args_is_help=True,
    add_completion=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"vision-kd {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """Large-kernel ConvNets as knowledge-distillation teachers for small-kernel ConvNets."""
