"""All members resolve into one environment; every CLI answers --help; versions agree."""

from __future__ import annotations

import importlib
import importlib.metadata as md
import os
import pathlib
import shutil
import subprocess
import sys
import tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PACKAGE_DIRS = sorted(p for p in (ROOT / "packages").iterdir() if (p / "pyproject.toml").is_file())


def _project(path: pathlib.Path) -> dict:
    return tomllib.loads((path / "pyproject.toml").read_text())["project"]


@pytest.mark.parametrize("package_dir", PACKAGE_DIRS, ids=lambda p: p.name)
def test_cli_answers_help(package_dir: pathlib.Path) -> None:
    # the running interpreter's scripts folder first: `.venv/bin/python -m pytest` without activation
    search = os.pathsep.join([str(pathlib.Path(sys.executable).parent), os.environ.get("PATH", "")])
    exe = shutil.which(package_dir.name, path=search)
    assert exe, f"console script {package_dir.name} is not installed"
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=300, check=True)
    assert "Usage" in out.stdout


@pytest.mark.parametrize("package_dir", PACKAGE_DIRS, ids=lambda p: p.name)
def test_installed_version_matches_pyproject(package_dir: pathlib.Path) -> None:
    project = _project(package_dir)
    module = importlib.import_module(project["name"].replace("-", "_"))
    assert module.__version__ == project["version"] == md.version(project["name"])


def test_research_systems_core_version_satisfies_every_package() -> None:
    from packaging.requirements import Requirement

    installed = md.version("research-systems-core")
    assert installed == _project(ROOT / "shared" / "research-systems-core")["version"]
    for package_dir in PACKAGE_DIRS:
        reqs = [Requirement(r) for r in _project(package_dir)["dependencies"]]
        (req,) = [r for r in reqs if r.name == "research-systems-core"]
        assert req.specifier.contains(installed), f"{package_dir.name} wants {req}, installed {installed}"
