"""Release smoke test, run by `nox -s "release(usv-planner)"` in a clean venv holding only the wheel."""

from research_systems_core.smoke import check_installed_package


def test_installed_package_imports_and_its_cli_answers() -> None:
    check_installed_package("usv-planner")
