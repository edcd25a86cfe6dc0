"""Command-line interface of llm-sparsity."""

from __future__ import annotations

import typer

from llm_sparsity import __version__

app = typer.Typer(
    name="llm-sparsity",
    help="Essential Sparsity, Junk DNA Hypothesis, Instant Soup Pruning and SMC-Bench for pre-trained transformers.",
    no_args_is_help=True,
    add_completion=False,
)


def _version_callback(value: bool) -> None:
    if value:
        typer.echo(f"llm-sparsity {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: bool = typer.Option(
        False, "--version", callback=_version_callback, is_eager=True, help="Show the version and exit."
    ),
) -> None:
    """Essential Sparsity, Junk DNA Hypothesis, Instant Soup Pruning and SMC-Bench for pre-trained transformers."""
