"""Command-line interface of usv-planner."""

from __future__ import annotations

import typer

from usv_planner import __version__

app = typer.Typer(
    name="usv-planner",
    help="GPMP2 path planning for unmanned surface vehicles with a spatiotemporal ocean-current factor.",
    no_args_is_help=True,
    add_completion=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"usv-planner {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """GPMP2 path planning for unmanned surface vehicles with a spatiotemporal ocean-current factor."""
