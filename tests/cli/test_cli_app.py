"""Finding the app, and failing with one line: a missing, unimportable or wrong ``--app``, an
app without a tenants table, a database that is down. No test database needed."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest
from cli_support import ERROR, run_cli

DOWN = "postgresql+psycopg://nobody@127.0.0.1:1/nowhere"  # nothing listens on port 1


def environment(**values: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CLI_TEST_", "FASTAPI_"))}
    return {**env, **values}


@pytest.mark.parametrize(
    ("args", "status", "line"),
    [
        pytest.param(
            [],
            2,
            "which app? give --app module:attribute or set FASTAPI_TENANCY_APP (the attribute "
            "is a Tenancy, or a function of no arguments that returns one)",
            id="no-app",
        ),
        pytest.param(
            ["--app", "cli_app"],
            2,
            "the app must be given as module:attribute, not 'cli_app'",
            id="no-attribute",
        ),
        pytest.param(
            ["--app", "nowhere:make"],
            1,
            "cannot import nowhere (the app): No module named 'nowhere'",
            id="no-module",
        ),
        pytest.param(
            ["--app", "cli_app:missing"],
            1,
            "cli_app has no attribute 'missing' (the app)",
            id="no-such-attribute",
        ),
        pytest.param(
            ["--app", "cli_app:NOT_A_TENANCY"],
            1,
            "cli_app:NOT_A_TENANCY is a MetaData, not a Tenancy (nor a function that returns one)",
            id="not-a-tenancy",
        ),
        pytest.param(
            ["--app", "cli_app:add_project"],
            1,
            "cli_app:add_project is neither a Tenancy nor a function of no arguments that "
            "returns one",
            id="a-function-with-arguments",
        ),
        pytest.param(
            ["--app", "cli_app:make_tenancy"],
            1,
            "cli_app:make_tenancy() failed: KeyError: 'CLI_TEST_DATABASE_URL'",
            id="a-failing-factory",
        ),
    ],
)
def test_an_app_that_cannot_be_found_is_one_line(args: list[str], status: int, line: str) -> None:
    result = run_cli(*args, "tenants", "list", env=environment())
    assert result.failure(status) == line


def test_an_app_is_found_through_the_environment_or_after_the_command() -> None:
    env = environment(
        FASTAPI_TENANCY_APP="cli_app:make_tenancy_without_registry",
        CLI_TEST_DATABASE_URL="sqlite://",
    )
    no_registry = (
        "the app's Tenancy has no tenants table: this command needs "
        "Tenancy(..., registry=TenantRegistry(...))"
    )
    assert run_cli("tenants", "list", env=env).failure() == no_registry
    after = run_cli(
        "tenants", "list", "--app", "cli_app:make_tenancy_without_registry", env=environment()
    )
    assert "CLI_TEST_DATABASE_URL" in after.failure()  # the app given after the command was used


def test_a_database_that_is_down_is_one_line_and_traceback_shows_more() -> None:
    env = environment(FASTAPI_TENANCY_APP="cli_app:make_tenancy", CLI_TEST_DATABASE_URL=DOWN)
    down = run_cli("tenants", "list", env=env)
    assert down.failure().startswith("database error: connection failed: ")
    with_traceback = run_cli("--traceback", "tenants", "suspend", "acme", env=env)
    assert with_traceback.status == 1
    assert with_traceback.err.startswith("Traceback (most recent call last):")
    assert with_traceback.err.splitlines()[-1].startswith(f"{ERROR}database error: ")
    check = run_cli("check", DOWN, env=environment())
    assert check.failure(status=2).startswith("the check cannot run: database error: ")


def test_the_installed_command_finds_the_app_in_the_current_directory() -> None:
    script = shutil.which("fastapi-tenancy", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the fastapi-tenancy script is not installed (pip install -e .)")
    helped = run_cli("--help", program=[script], env=environment())
    assert helped.status == 0, helped
    assert helped.out.startswith("usage: fastapi-tenancy ")
    for command in ("tenants", "check", "shell", "run"):
        assert f"\n    {command} " in helped.out
    env = environment(CLI_TEST_DATABASE_URL="sqlite://")
    found = run_cli(
        "--app",
        "cli_app:make_tenancy_without_registry",
        "tenants",
        "list",
        program=[script],
        env=env,
    )
    assert "has no tenants table" in found.failure()  # cli_app was imported from the directory
