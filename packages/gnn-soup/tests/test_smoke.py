"""Release smoke test: the installed package imports, reports its version, and its CLI answers
--help and --version. Run by `nox -s "release(gnn-soup)"` inside a clean venv holding only the wheel."""

from __future__ import annotations

import importlib.metadata

from typer.testing import CliRunner

import gnn_soup
from gnn_soup.cli import app


def test_version_matches_the_installed_metadata() -> None:
    assert gnn_soup.__version__ == importlib.metadata.version("gnn-soup")


def test_cli_answers_help_and_version() -> None:
    runner = CliRunner()
    help_result = runner.invoke(app, ["--help"])
    assert help_result.exit_code == 0 and "Usage" in help_result.output
    version_result = runner.invoke(app, ["--version"])
    assert version_result.exit_code == 0
    assert version_result.output.strip() == f"gnn-soup {gnn_soup.__version__}"
