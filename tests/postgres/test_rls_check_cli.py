"""``fastapi-tenancy-check`` takes the application's async URL (asyncpg, psycopg async) as it is,
and answers exactly what it answers for the sync URL of the same database.

The URLs here carry no ``options`` (asyncpg takes none), so the application's role is given the
test's schema as its own ``search_path``. The gaps planted on an otherwise correct tenant table
(a TRUNCATE grant, a view and a materialized view of it) read catalog columns of type ``"char"``,
which asyncpg answers as bytes.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from rls_models import KEY_CAST_TYPE, KEY_SQL_TYPE
from rls_support import as_owner
from sqlalchemy import text
from sqlalchemy.engine import URL

from fastapi_tenancy.postgres import TenantTable
from fastapi_tenancy.postgres.check import main
from fastapi_tenancy.postgres.policies import enable_statements
from tests.pg_roles import quote

pytestmark = pytest.mark.backends("postgres")

ASYNC_DRIVERS = ["postgresql+asyncpg", "postgresql+psycopg_async"]


@pytest.fixture
def urls(owner, app_role) -> dict[str, str]:
    """The application role's URL per driver name (``postgresql``: the sync default)."""
    role, schema = quote(owner, app_role.name), quote(owner, app_role.database.name)
    with as_owner(owner) as conn:
        for statement in [
            f"CREATE TABLE gap (id serial PRIMARY KEY, tenant_id {KEY_SQL_TYPE} NOT NULL)",
            "CREATE INDEX ON gap (tenant_id)",
            *enable_statements(TenantTable("gap", tenant_type=KEY_CAST_TYPE)),
            f"GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON gap TO {role}",
            "CREATE VIEW gap_view AS SELECT * FROM gap",
            "CREATE MATERIALIZED VIEW gap_totals AS SELECT tenant_id, count(*) FROM gap "
            "GROUP BY tenant_id",
            f"GRANT SELECT ON gap_view, gap_totals TO {role}",
            f"ALTER ROLE {role} SET search_path TO {schema}",
        ]:
            conn.execute(text(statement))
    base: URL = app_role.url().difference_update_query(["options", "application_name"])
    return {
        driver: base.set(drivername=driver).render_as_string(hide_password=False)
        for driver in ["postgresql", *ASYNC_DRIVERS]
    }


@pytest.mark.parametrize("driver", ASYNC_DRIVERS)
@pytest.mark.parametrize("flags", [[], ["--json"], ["--schema", "{schema}", "--strict-keys"]])
def test_an_async_url_answers_what_the_sync_url_answers(urls, app_role, capsys, driver, flags):
    flags = [flag.format(schema=app_role.database.name) for flag in flags]
    sync_status = main([urls["postgresql"], *flags])
    sync_out = capsys.readouterr().out

    status = main([urls[driver], *flags])

    captured = capsys.readouterr()
    assert (status, captured.out) == (sync_status, sync_out)
    assert status == 1
    assert "truncate_granted" in captured.out
    assert "a materialized view stores every tenant's rows" in captured.out
    assert captured.err == ""
    if "--json" in flags:
        assert [finding["code"] for finding in json.loads(captured.out)] == [
            "truncate_granted",
            "view_bypasses_rls",
            "view_bypasses_rls",
        ]


def test_an_async_url_exits_with_zero_on_a_correct_schema(owner, urls, app_role, capsys):
    with as_owner(owner) as conn:
        conn.execute(text(f"REVOKE TRUNCATE ON gap FROM {quote(owner, app_role.name)}"))
        conn.execute(text("DROP VIEW gap_view"))
        conn.execute(text("DROP MATERIALIZED VIEW gap_totals"))

    status = main([urls["postgresql+asyncpg"]])

    assert status == 0
    assert capsys.readouterr().out.strip() == "no problems found"


@pytest.mark.parametrize("driver", ASYNC_DRIVERS)
def test_an_async_url_exits_with_two_when_it_cannot_connect(capsys, driver):
    status = main([f"{driver}://nobody@127.0.0.1:1/none"])

    assert status == 2
    assert "fastapi-tenancy-check:" in capsys.readouterr().err


def test_the_command_takes_an_asyncpg_url(urls):
    done = subprocess.run(
        [sys.executable, "-m", "fastapi_tenancy.postgres", urls["postgresql+asyncpg"]],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 1, done.stderr
    assert "truncate_granted: " in done.stdout
    assert "never awaited" not in done.stderr
