"""Command-line interface of robust-at."""

from __future__ import annotations

import typer

from robust_at import __version__

app = typer.Typer(
    name="robust-at",
    help="Adversarial training with Weighted Optimization Trajectories (WOT).",
    no_args_is_help=True,
    add_completion=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"robust-at {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """Adversarial training with Weighted Optimization Trajectories (WOT)."""
