"""All automation of the monorepo: lint, per-package tests, integration, builds, benchmarks, demo.

Default sessions (`uv run nox`): lint, tests (every package, each in its own venv), integration,
build (every wheel installed alone into a clean venv), bench_smoke (every benchmark on tiny sizes).
On demand: bench (full benchmarks), fuzz (property tests with many examples), gpu (GPU checks),
release(<package>) (pre-release checks, build, twine check, clean install, smoke test), demo.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import sys

import nox

nox.options.default_venv_backend = "uv"
nox.options.sessions = ["lint", "tests", "integration", "build", "bench_smoke"]
nox.options.reuse_existing_virtualenvs = False

ROOT = pathlib.Path(__file__).resolve().parent
PACKAGES: dict[str, pathlib.Path] = {"research-systems-core": ROOT / "shared" / "research-systems-core"}
PACKAGES |= {p.name: p for p in sorted((ROOT / "packages").iterdir()) if (p / "pyproject.toml").is_file()}
RESEARCH_PACKAGES = [name for name in PACKAGES if name != "research-systems-core"]
PACKAGE_PARAMS = [nox.param(name, id=name) for name in PACKAGES]
RESEARCH_PARAMS = [nox.param(name, id=name) for name in RESEARCH_PACKAGES]

# Tests run in two pytest-xdist workers (one per core), each file kept on one worker.
PARALLEL = ["-n", os.environ.get("PYTEST_WORKERS", "2"), "--dist", "loadfile"]
# Two cores: one torch thread per process, or oversubscription makes everything slower.
THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}

# Peer libraries that benchmarks compare against; installed only in the benchmark venvs.
# BENCH_PEERS resolve together with the workspace; BENCH_PEERS_NO_DEPS are installed without their
# own requirements, because they pin something the workspace cannot take (torchattacks 3.5.1 pins
# requests<2.26) while everything they import at run time is already there.
BENCH_PEERS: dict[str, list[str]] = {
    "sparse-dst": ["rigl-torch==0.5.2", "torch-pruning>=1.5"],
    "vision-kd": ["torchdistill>=1.1"],
}
BENCH_PEERS_NO_DEPS: dict[str, list[str]] = {
    "robust-at": ["torchattacks==3.5.1"],
}
# Seconds each package's GPU checks may take (all together <= 8 minutes on one GPU).
GPU_BUDGETS_S: dict[str, int] = {
    "research-systems-core": 20,
    "llm-sparsity": 90,
    "robust-at": 75,
    "vision-kd": 75,
    "sparse-dst": 90,
    "gnn-soup": 60,
    "feature-select": 45,
    "usv-planner": 5,
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
    session.install("pytest-xdist>=3.5")  # the test runner's own plugin, not a package dependency
    session.run("pytest", *PARALLEL, str(PACKAGES[package] / "tests"), *session.posargs, env=_data_env())


@nox.session
def integration(session: nox.Session) -> None:
    """Every member in one venv; cross-package tests."""
    _sync(session, "--all-packages", "--all-extras")
    session.install("pytest-xdist>=3.5")
    session.run("pytest", *PARALLEL, str(ROOT / "integration_tests"), *session.posargs, env=_data_env())


def _clean_install(session: nox.Session, package: str, dist: pathlib.Path) -> str:
    """Install the wheel in ``dist`` into a fresh venv with its dependencies from the index; the
    shared package comes from its freshly built wheel (it is not published yet). Returns python."""
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
    return python


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
    python = _clean_install(session, package, dist)
    module = package.replace("-", "_")
    session.run(
        python, "-c", f"import {module}; print({module}.__name__, {module}.__version__)", external=True
    )
    if package != "research-systems-core":
        session.run(str(pathlib.Path(python).parent / package), "--help", external=True, silent=True)


def _install_peers(session: nox.Session, packages: list[str]) -> None:
    peers = [p for name in packages for p in BENCH_PEERS.get(name, [])]
    no_deps = [p for name in packages for p in BENCH_PEERS_NO_DEPS.get(name, [])]
    if peers:
        session.install(*peers)
    if no_deps:
        session.install("--no-deps", *no_deps)


@nox.session
@nox.parametrize("package", RESEARCH_PARAMS)
def bench(session: nox.Session, package: str) -> None:
    """Benchmarks, side by side with peer libraries; JSON under results/bench/<package>/.

    Pass ``-- --quick`` for the shorter run, ``-- --smoke`` for tiny sizes."""
    _sync(session, "--package", package, "--all-extras")
    _install_peers(session, [package])
    script = PACKAGES[package] / "benchmarks" / "bench.py"
    out = ROOT / "results" / "bench" / package
    session.run("python", str(script), "--out", str(out), *session.posargs, env=_data_env())


@nox.session
def bench_smoke(session: nox.Session) -> None:
    """Every package's benchmark in --smoke mode (tiny sizes, peers included), JSON schema checked."""
    _sync(session, "--all-packages", "--all-extras")
    _install_peers(session, RESEARCH_PACKAGES)
    for package in RESEARCH_PACKAGES:
        out = ROOT / "results" / "bench-smoke" / package
        shutil.rmtree(out, ignore_errors=True)
        script = PACKAGES[package] / "benchmarks" / "bench.py"
        session.run("python", str(script), "--smoke", "--out", str(out), env=_data_env())
        session.run(
            "python", "-c",
            "import sys, pathlib; from research_systems_core.bench import validate_bench_json; "
            "files = sorted(pathlib.Path(sys.argv[1]).glob('*.json')); "
            "assert files, f'no bench JSON written in {sys.argv[1]}'; "
            "[validate_bench_json(f) for f in files]; print(f'{len(files)} bench JSON file(s) valid')",
            str(out),
        )  # fmt: skip


@nox.session
def fuzz(session: nox.Session) -> None:
    """Every package's property-based bad-input tests, with many more examples than in CI."""
    _sync(session, "--all-packages", "--all-extras")
    files = [str(f) for name in PACKAGES for f in sorted((PACKAGES[name] / "tests").glob("test_fuzz*.py"))]
    examples = os.environ.get("FUZZ_EXAMPLES", "300")
    session.run("pytest", *files, *session.posargs, env={**_data_env(), "FUZZ_EXAMPLES": examples})


@nox.session
def gpu(session: nox.Session) -> None:
    """Every package's benchmarks/gpu_check.py on one CUDA GPU, then results/gpu/summary.md.

    Random or generated data only; no downloads. Without a GPU: one line, exit 0."""
    if shutil.which("nvidia-smi") is None:
        session.log("no NVIDIA GPU on this machine (nvidia-smi not found): GPU checks skipped")
        return
    _sync(session, "--all-packages", "--all-extras")
    _install_peers(session, RESEARCH_PACKAGES)  # GPU checks compare with the same peers
    out = ROOT / "results" / "gpu"
    budgets = ",".join(f"{name}={GPU_BUDGETS_S.get(name, 60)}" for name in PACKAGES)
    session.run("python", str(ROOT / "scripts" / "gpu_checks.py"), "--out", str(out), "--budgets", budgets)


@nox.session
@nox.parametrize("package", PACKAGE_PARAMS)
def release(session: nox.Session, package: str) -> None:
    """Release checks and artefacts: version bumped since the last <package>-v* tag and in the
    CHANGELOG, sdist + wheel built with --no-sources, twine check, the wheel installed into a clean
    venv with its dependencies from the index (the shared package from its fresh wheel), the
    package's smoke test run there. Prints the tag to push."""
    tag = session.run("python", str(ROOT / "scripts" / "release_check.py"), package, silent=True)
    dist = ROOT / "dist" / "release" / package
    shutil.rmtree(dist, ignore_errors=True)
    session.run("uv", "build", "--package", package, "--no-sources", "--out-dir", str(dist), external=True)
    session.install("twine>=5")
    artefacts = [str(p) for p in [*dist.glob("*.whl"), *dist.glob("*.tar.gz")]]
    session.run("twine", "check", "--strict", *artefacts)
    python = _clean_install(session, package, dist)
    session.run("uv", "pip", "install", "--python", python, "pytest>=8", external=True)
    smoke = PACKAGES[package] / "tests" / "test_smoke.py"
    session.run(python, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(smoke), external=True,
                env=_data_env())  # fmt: skip
    session.log(f"ready: push the tag with  git tag {str(tag).strip()} && git push origin {str(tag).strip()}")


@nox.session
def demo(session: nox.Session) -> None:
    """The main job: every package's quick reproduction, then one report (results/demo/)."""
    _sync(session, "--all-packages", "--all-extras")
    session.run("python", str(ROOT / "scripts" / "demo.py"), *session.posargs, env=_data_env())
