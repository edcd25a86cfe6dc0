"""The release smoke check every package runs in a clean venv (``nox -s "release(<package>)"``):
the installed distribution imports, its version matches its metadata, and its CLI answers
``--help`` and ``--version``."""

from __future__ import annotations

import importlib
import importlib.metadata

__all__ = ["check_installed_package"]


def check_installed_package(distribution: str) -> None:
    """Raise AssertionError unless ``distribution`` (e.g. ``"gnn-soup"``) is installed and sound."""
    from typer.testing import CliRunner

    module = importlib.import_module(distribution.replace("-", "_"))
    version = importlib.metadata.version(distribution)
    assert module.__version__ == version, f"{distribution}: __version__ {module.__version__} != {version}"
    app = importlib.import_module(f"{module.__name__}.cli").app
    runner = CliRunner()
    help_result = runner.invoke(app, ["--help"])
    assert help_result.exit_code == 0 and "Usage" in help_result.output, help_result.output
    version_result = runner.invoke(app, ["--version"])
    assert version_result.exit_code == 0, version_result.output
    assert version_result.output.strip() == f"{distribution} {version}", version_result.output
