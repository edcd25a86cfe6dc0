"""The CLI error boundary: bad input is one line and exit 2; a bug is one line and exit 1 with a hint,
and its traceback only under --log-level DEBUG."""

from __future__ import annotations

from typer.testing import CliRunner

from research_systems_core.cli import create_app
from research_systems_core.errors import UserError

app = create_app("demo", "A demo CLI.", "1.0")


@app.command()
def go(n: int = 1) -> None:
    """Fail in several ways depending on n."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if n == 5:
        raise UserError("column 'Ques' missing; columns present: a, b")
    if n == 7:
        raise RuntimeError("boom")
    print("ok", n)


@app.command()
def other() -> None:
    """A second command, so typer keeps subcommands."""


def test_bad_input_is_one_line_exit_2() -> None:
    result = CliRunner().invoke(app, ["go", "--n", "-1"])
    assert result.exit_code == 2
    assert result.output == "error: n must be >= 0, got -1\n"
    result = CliRunner().invoke(app, ["go", "--n", "5"])
    assert result.exit_code == 2 and "columns present" in result.output


def test_unexpected_error_is_one_line_exit_1_and_debug_shows_it() -> None:
    result = CliRunner().invoke(app, ["go", "--n", "7"])
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "error: unexpected RuntimeError: boom (rerun with --log-level DEBUG for the traceback)"
    ]
    result = CliRunner().invoke(app, ["--log-level", "DEBUG", "go", "--n", "7"])
    assert isinstance(result.exception, RuntimeError)
    assert CliRunner().invoke(app, ["go", "--n", "2"]).output == "ok 2\n"
