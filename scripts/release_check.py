"""Pre-release checks behind ``nox -s "release(<package>)"``: the version was bumped since the last
``<package>-v*`` tag, and the CHANGELOG has an entry for it. Prints the tag to push.

    python scripts/release_check.py gnn-soup
"""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parents[1]


class ReleaseError(RuntimeError):
    """The package is not ready to release; the message says why."""


def package_dir(package: str, root: pathlib.Path = ROOT) -> pathlib.Path:
    for candidate in (root / "packages" / package, root / "shared" / package):
        if (candidate / "pyproject.toml").is_file():
            return candidate
    raise ReleaseError(f"no package {package!r} under packages/ or shared/")


def _version_key(version: str) -> tuple[int, ...]:
    if not re.fullmatch(r"\d+(\.\d+)*", version):
        raise ReleaseError(f"version {version!r} is not of the form X.Y.Z")
    return tuple(int(part) for part in version.split("."))


def current_version(directory: pathlib.Path) -> str:
    return tomllib.loads((directory / "pyproject.toml").read_text())["project"]["version"]


def last_tagged_version(package: str, root: pathlib.Path = ROOT) -> str | None:
    """The highest version among the ``<package>-v*`` tags, or None when there is none."""
    tags = subprocess.run(
        ["git", "tag", "--list", f"{package}-v*"], cwd=root, capture_output=True, text=True, check=True
    ).stdout.split()
    versions = [tag.removeprefix(f"{package}-v") for tag in tags]
    versions = [v for v in versions if re.fullmatch(r"\d+(\.\d+)*", v)]
    return max(versions, key=_version_key) if versions else None


def check_release(package: str, root: pathlib.Path = ROOT) -> str:
    """Raise ReleaseError unless the package can be released; return the tag to push."""
    directory = package_dir(package, root)
    version = current_version(directory)
    previous = last_tagged_version(package, root)
    if previous is not None and _version_key(version) <= _version_key(previous):
        raise ReleaseError(
            f"{package} is at version {version}, not above its last tag {package}-v{previous}: "
            "bump the version in pyproject.toml first"
        )
    changelog = directory / "CHANGELOG.md"
    text = changelog.read_text() if changelog.is_file() else ""
    if not re.search(rf"^##\s+{re.escape(version)}\b", text, flags=re.MULTILINE):
        raise ReleaseError(f"{changelog} has no '## {version}' entry: describe the release there first")
    return f"{package}-v{version}"


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: release_check.py PACKAGE", file=sys.stderr)
        return 2
    try:
        print(check_release(sys.argv[1]))
    except ReleaseError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
