"""``fastapi-tenancy check``, ``shell`` and ``run`` as subprocesses, on every database."""

from __future__ import annotations

from cli_support import ERROR, CliWorld, progress_lines, run_cli
from sqlalchemy import text


def test_check_reports_what_the_database_lacks(cli_world: CliWorld, backend: str) -> None:
    if backend == "mariadb":  # a tenant table whose tenant column ignores case
        with cli_world.engine.begin() as conn:
            conn.execute(
                text(
                    "CREATE TABLE cli_note (id INTEGER PRIMARY KEY, tenant_id VARCHAR(63) "
                    "CHARACTER SET utf8mb4 COLLATE utf8mb4_general_ci NOT NULL)"
                )
            )
    checked = cli_world.run("check")
    if backend == "sqlite":
        assert (checked.status, checked.out, checked.err) == (0, "no problems found\n", "")
    elif backend == "mariadb":
        assert checked.status == 1, checked
        assert checked.out.startswith("tenant_collation_not_binary: ")
        assert ".cli_note.tenant_id: compares with the collation utf8mb4_general_ci" in checked.out
        assert checked.out.endswith("1 problem(s) found\n")
    else:  # fastapi-tenancy-check's findings: no row-level security on these tables
        assert checked.status == 1, checked
        assert "rls_disabled: cli_project: " in checked.out
        assert "rls_disabled: cli_task: " in checked.out
        # The URL given, with no app at all, is the same check.
        environment = {k: v for k, v in cli_world.env.items() if k != "FASTAPI_TENANCY_APP"}
        by_url = run_cli("check", environment["CLI_TEST_DATABASE_URL"], env=environment)
        assert (by_url.status, by_url.out) == (1, checked.out), by_url
    if backend != "postgres":
        postgres_only = cli_world.run("check", "--strict-keys", "--role", "app")
        assert postgres_only.failure(status=2) == "--role, --strict-keys: only on PostgreSQL"


def test_shell_binds_the_tenant_and_scopes_its_session(cli_world: CliWorld) -> None:
    script = (
        "session.add(CliProject(name='from the shell'))\n"
        "session.commit()\n"
        "print(len(session.exec(select(CliProject)).all()))\n"
        "print(sorted({project.tenant_id for project in session.exec(select(CliProject))}))\n"
        "print(tenant, record.name)\n"
    )
    shelled = cli_world.run("shell", "--tenant", "globex", stdin=script)
    assert (shelled.status, shelled.out, shelled.err) == (0, "3\n['globex']\nglobex Globex\n", "")
    assert "from the shell" in cli_world.dataset("globex")

    console = cli_world.run(
        "shell",
        "--tenant",
        "acme",
        "--interactive",
        stdin="len(session.exec(select(CliTask)).all())\n",
    )
    assert (console.status, console.out) == (0, "6\n"), console
    assert "tenant acme is bound" in console.err

    broken = cli_world.run("shell", "--tenant", "acme", stdin="x = 1\nprint(undefined)\n")
    assert broken.failure() == "<stdin> line 2: NameError: name 'undefined' is not defined"
    unknown = cli_world.run("shell", "--tenant", "nobody", stdin="print('never')\n")
    assert unknown.failure() == "no tenant 'nobody' (tenant_not_found)"


def test_run_calls_the_function_for_each_active_tenant_and_reports_failures(
    cli_world: CliWorld,
) -> None:
    ran = cli_world.run("run", "--all-tenants", "cli_app:add_project")
    assert ran.status == 1, ran
    assert ran.out == "ran cli_app:add_project for 3 tenant(s): 2 succeeded, 1 failed (initech)\n"
    errors = [line for line in ran.err.splitlines() if line.startswith(ERROR)]
    assert errors == [f"{ERROR}tenant initech: RuntimeError: initech is broken"]
    assert progress_lines(ran.err, "running cli_app:add_project")[-1] == (
        "running cli_app:add_project: 3/3 tenants (100%)"
    )
    assert "job for acme" in cli_world.dataset("acme")
    assert "job for globex" in cli_world.dataset("globex")
    assert not any(name.startswith("job") for name in cli_world.dataset("initech"))

    one = cli_world.run("run", "--tenant", "acme", "--jobs", "1", "cli_app:add_project")
    assert (one.status, one.out) == (
        0,
        "ran cli_app:add_project for 1 tenant(s): 1 succeeded, 0 failed\n",
    ), one
    unknown = cli_world.run("run", "--tenant", "nobody", "cli_app:add_project")
    assert unknown.failure() == "no tenant 'nobody' (tenant_not_found)"
    no_function = cli_world.run("run", "--tenant", "acme", "cli_app:no_such_job")
    assert no_function.failure() == "cli_app has no attribute 'no_such_job' (the function)"
