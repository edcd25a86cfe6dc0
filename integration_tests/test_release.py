"""`nox -s "release(<package>)"` refuses an unbumped version or a missing CHANGELOG entry, and passes
after a bump: checked on a temporary git repository with a temporary tag."""

from __future__ import annotations

import importlib.util
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("release_check", ROOT / "scripts" / "release_check.py")
release_check = importlib.util.module_from_spec(spec)
assert spec.loader is not None
spec.loader.exec_module(release_check)


def _git(repo: pathlib.Path, *args: str) -> None:
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True)


@pytest.fixture
def repo(tmp_path: pathlib.Path) -> pathlib.Path:
    package = tmp_path / "packages" / "gnn-soup"
    package.mkdir(parents=True)
    (package / "pyproject.toml").write_text('[project]\nname = "gnn-soup"\nversion = "0.2.0"\n')
    (package / "CHANGELOG.md").write_text("# Changelog\n\n## 0.2.0 (unreleased)\n\n- things\n")
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qam", "x", "--allow-empty")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "package")
    return tmp_path


def test_release_refuses_an_unbumped_version_and_passes_after_a_bump(repo: pathlib.Path) -> None:
    assert release_check.check_release("gnn-soup", repo) == "gnn-soup-v0.2.0"  # no tag yet
    _git(repo, "tag", "gnn-soup-v0.2.0")
    with pytest.raises(
        release_check.ReleaseError, match=r"0\.2\.0, not above its last tag gnn-soup-v0\.2\.0"
    ):
        release_check.check_release("gnn-soup", repo)
    pyproject = repo / "packages" / "gnn-soup" / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace("0.2.0", "0.2.1"))
    with pytest.raises(release_check.ReleaseError, match="no '## 0.2.1' entry"):
        release_check.check_release("gnn-soup", repo)
    changelog = repo / "packages" / "gnn-soup" / "CHANGELOG.md"
    changelog.write_text(changelog.read_text().replace("# Changelog\n", "# Changelog\n\n## 0.2.1\n\n- fix\n"))
    assert release_check.check_release("gnn-soup", repo) == "gnn-soup-v0.2.1"


def test_versions_compare_numerically_not_as_text(repo: pathlib.Path) -> None:
    _git(repo, "tag", "gnn-soup-v0.10.0")
    _git(repo, "tag", "gnn-soup-v0.9.0")
    assert release_check.last_tagged_version("gnn-soup", repo) == "0.10.0"
    with pytest.raises(release_check.ReleaseError, match="not above"):
        release_check.check_release("gnn-soup", repo)


def test_every_real_package_has_a_changelog_entry_for_its_version() -> None:
    for directory in [*sorted((ROOT / "packages").iterdir()), ROOT / "shared" / "research-systems-core"]:
        version = release_check.current_version(directory)
        assert f"## {version}" in (directory / "CHANGELOG.md").read_text(), directory.name
