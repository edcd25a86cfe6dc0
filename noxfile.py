"""All automation of the monorepo: lint, per-package tests, integration, builds, benchmarks, demo.

Default sessions (`uv run nox`): lint, tests (every package, each in its own venv), integration,
build (every wheel installed alone into a clean venv).
"""

from __future__ import annotations

import os
import pathlib
import shutil
import sys

import nox

nox.options.default_venv_backend = "uv"
nox.options.sessions = ["lint", "tests", "integration", "build"]
nox.options.reuse_existing_virtualenvs = False

ROOT = pathlib.Path(__file__).resolve().parent
PACKAGES: dict[str, pathlib.Path] = {"research-systems-core": ROOT / "shared" / "research-systems-core"}
PACKAGES |= {p.name: p for p in sorted((ROOT / "packages").iterdir()) if (p / "pyproject.toml").is_file()}
RESEARCH_PACKAGES = [name for name in PACKAGES if name != "research-systems-core"]
PACKAGE_PARAMS = [nox.param(name, id=name) for name in PACKAGES]
RESEARCH_PARAMS = [nox.param(name, id=name) for name in RESEARCH_PACKAGES]

# Two cores: one torch thread per process, or oversubscription makes everything slower.
THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}

# Peer libraries that benchmarks compare against; installed only in the benchmark venv.
BENCH_PEERS: dict[str, list[str]] = {
    "robust-at": ["torchattacks==3.5.1", "requests>=2.31"],
    "sparse-dst": ["rigl-torch==0.5.2", "torch-pruning>=1.5"],
    "vision-kd": ["torchdistill>=1.1"],
}


def _sync(session: nox.Session, *args: str) -> None:
    """Install exactly what uv.lock says into this session's venv."""
    session.run_install(
        "uv",
        "sync",
        "--locked",
        *args,
        env={"UV_PROJECT_ENVIRONMENT": session.virtualenv.location},
    )


def _data_env() -> dict[str, str]:
    env = dict(THREAD_ENV)
    if "RESEARCH_DATA_DIR" not in os.environ and (ROOT.parent / "shared" / "data").is_dir():
        env["RESEARCH_DATA_DIR"] = str(ROOT.parent / "shared" / "data")
    return env


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over the whole tree."""
    _sync(session, "--only-group", "dev")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
@nox.parametrize("package", PACKAGE_PARAMS)
def tests(session: nox.Session, package: str) -> None:
    """One package's tests in a venv holding only what that package declares."""
    _sync(session, "--package", package, "--all-extras")
    session.run("pytest", str(PACKAGES[package] / "tests"), *session.posargs, env=_data_env())


@nox.session
def integration(session: nox.Session) -> None:
    """Every member in one venv; cross-package tests."""
    _sync(session, "--all-packages", "--all-extras")
    session.run("pytest", str(ROOT / "integration_tests"), *session.posargs, env=_data_env())


@nox.session
@nox.parametrize("package", PACKAGE_PARAMS)
def build(session: nox.Session, package: str) -> None:
    """Build sdist + wheel with --no-sources, install the wheel into a clean venv, import it.

    research-systems-core is not on PyPI yet under this name, so its freshly built wheel stands in for
    the published release; everything else comes from the registry.
    """
    dist = ROOT / "dist" / package
    shutil.rmtree(dist, ignore_errors=True)
    session.run("uv", "build", "--package", package, "--no-sources", "--out-dir", str(dist), external=True)
    if package != "research-systems-core":
        session.run(
            "uv", "build", "--package", "research-systems-core", "--no-sources", "--wheel",
            "--out-dir", str(dist / "deps"), external=True,
        )  # fmt: skip
    wheel = next(dist.glob("*.whl"))
    venv = pathlib.Path(session.create_tmp()) / "clean-venv"
    shutil.rmtree(venv, ignore_errors=True)
    session.run("uv", "venv", "--quiet", "--python", sys.executable, str(venv), external=True)
    python = str(venv / "bin" / "python")
    # The fresh research-systems-core wheel is passed by path and refreshed: same name and version as
    # earlier builds, and uv's cache would otherwise hand back a stale one.
    deps = [str(w) for w in (dist / "deps").glob("*.whl")] if package != "research-systems-core" else []
    session.run(
        "uv", "pip", "install", "--python", python, "--refresh-package", "research-systems-core",
        "--reinstall-package", "research-systems-core", *deps, str(wheel), external=True,
    )  # fmt: skip
    module = package.replace("-", "_")
    session.run(
        python, "-c", f"import {module}; print({module}.__name__, {module}.__version__)", external=True
    )
    if package != "research-systems-core":
        session.run(str(venv / "bin" / package), "--help", external=True, silent=True)


@nox.session
@nox.parametrize("package", RESEARCH_PARAMS)
def bench(session: nox.Session, package: str) -> None:
    """Benchmarks, side by side with peer libraries; JSON under results/bench/<package>/."""
    _sync(session, "--package", package, "--all-extras")
    if BENCH_PEERS.get(package):
        session.install(*BENCH_PEERS[package])
    script = PACKAGES[package] / "benchmarks" / "bench.py"
    if not script.is_file():
        session.skip(f"{package} has no benchmarks/bench.py yet")
    out = ROOT / "results" / "bench" / package
    session.run("python", str(script), "--out", str(out), *session.posargs, env=_data_env())


@nox.session
def demo(session: nox.Session) -> None:
    """The main job: every package's quick reproduction, then one report (results/demo/)."""
    _sync(session, "--all-packages", "--all-extras")
    session.run("python", str(ROOT / "scripts" / "demo.py"), *session.posargs, env=_data_env())
