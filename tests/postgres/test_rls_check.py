"""The checker finds every kind of gap planted in a deliberately broken schema, and nothing on a
correct one.

Each case plants one gap next to (or in) an otherwise correct tenant table ``gap``, made with
the kit's own DDL, and runs the check as the application's ordinary role. The hand-made tables'
tenant columns are of the run's key type (``KEY_SQL_TYPE``), their policies cast to it.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from rls_models import ACME, KEY_CAST_TYPE, KEY_SQL_TYPE, metadata
from rls_support import as_owner
from sqlalchemy import text

from fastapi_tenancy.postgres import TenantTable, check_database
from fastapi_tenancy.postgres.check import main
from fastapi_tenancy.postgres.policies import enable_statements

pytestmark = pytest.mark.backends("postgres")

BARE = f"CREATE TABLE gap (id serial PRIMARY KEY, tenant_id {KEY_SQL_TYPE} NOT NULL)"
"""A tenant table ``gap`` with nothing else: no index, no policies."""


def policies(name: str = "gap") -> list[str]:
    """The kit's DDL for a hand-made tenant table ``name`` of this run's key type."""
    return enable_statements(TenantTable(name, tenant_type=KEY_CAST_TYPE))


def good(name: str = "gap") -> list[str]:
    """A correct tenant table: indexed, policies on, forced."""
    return [
        f"CREATE TABLE {name} (id serial PRIMARY KEY, tenant_id {KEY_SQL_TYPE} NOT NULL, "
        "label text)",
        f"CREATE INDEX ON {name} (tenant_id)",
        f"ALTER TABLE {name} ADD UNIQUE (tenant_id, id)",
        *policies(name),
    ]


# code -> (statements planting the gap, a piece of the finding's subject or detail)
GAPS = {
    "rls_disabled": ([BARE], "gap"),
    "rls_not_forced": ([*good(), "ALTER TABLE gap NO FORCE ROW LEVEL SECURITY"], "gap"),
    "policy_missing": ([*good(), "DROP POLICY tenancy_delete ON gap"], "DELETE"),
    "policy_not_tenant": (
        [*good(), "CREATE POLICY everyone ON gap FOR SELECT USING (true)"],
        "everyone",
    ),
    "tenant_index_missing": (
        [BARE, *policies()],
        "gap",
    ),
    "unique_without_tenant": ([*good(), "ALTER TABLE gap ADD COLUMN email text UNIQUE"], "email"),
    "foreign_key_without_tenant": (
        [
            *good(),
            *good("gap_child"),
            "ALTER TABLE gap_child ADD COLUMN gap_id int REFERENCES gap (id)",
        ],
        "gap_child",
    ),
    "role_owns_table": ([*good(), "ALTER TABLE gap OWNER TO {role}"], "gap"),
    "truncate_granted": ([*good(), "GRANT TRUNCATE ON gap TO {role}"], "gap"),
    "partition_readable": (
        [
            f"CREATE TABLE gap (id int, tenant_id {KEY_SQL_TYPE} NOT NULL, "
            "PRIMARY KEY (tenant_id, id)) PARTITION BY LIST (tenant_id)",
            f"CREATE TABLE gap_acme PARTITION OF gap FOR VALUES IN ('{ACME}')",
            *policies(),
        ],
        "gap_acme",
    ),
    "view_bypasses_rls": ([*good(), "CREATE VIEW gap_view AS SELECT * FROM gap"], "gap_view"),
    "security_definer_function": (
        [
            *good(),
            "CREATE FUNCTION gap_count() RETURNS bigint LANGUAGE sql SECURITY DEFINER "
            "AS 'SELECT count(*) FROM gap'",
        ],
        "gap_count",
    ),
}


def plant(owner, statements: list[str], role: str) -> None:
    with as_owner(owner) as conn:
        for statement in statements:
            if statement.strip():
                conn.execute(text(statement.format(role=role)))


def codes(findings) -> set[str]:
    return {finding.code for finding in findings}


@pytest.mark.parametrize(("code", "gap"), GAPS.items(), ids=GAPS.keys())
def test_the_checker_reports_each_kind_of_planted_gap(code, gap, owner, app_role):
    statements, where = gap
    plant(owner, statements, app_role.name)

    findings = check_database(app_role.engine())

    reported = [f for f in findings if f.code == code]
    assert reported, f"{code} not reported; got {findings}"
    assert any(where in f.subject or where in f.detail for f in reported), reported


def test_the_checker_reports_a_materialized_view_of_a_tenant_table(owner, app_role):
    plant(owner, [*good(), "CREATE MATERIALIZED VIEW gap_mv AS SELECT * FROM gap"], app_role.name)

    findings = check_database(app_role.engine())

    assert [f.subject for f in findings if f.code == "view_bypasses_rls"] == [
        f"{app_role.name} on gap_mv"
    ]


def test_the_checker_reports_a_unique_index_without_the_tenant(owner, app_role):
    plant(owner, [*good(), "CREATE UNIQUE INDEX gap_label ON gap (lower(label))"], app_role.name)

    findings = check_database(app_role.engine())

    assert [f.subject for f in findings if f.code == "unique_without_tenant"] == ["gap gap_label"]


def test_the_checker_reports_a_superuser(owner, world):
    assert "role_superuser" in codes(check_database(owner))


def test_the_checker_reports_a_role_with_bypassrls_named_from_the_owners_connection(
    owner, app_role, world
):
    bypassing = app_role.make_role("BYPASSRLS")

    findings = check_database(owner, role=bypassing)

    assert codes(findings) == {"role_bypassrls"}


def test_the_checker_reports_a_role_that_can_become_a_bypassing_one(owner, app_role, world):
    bypassing = app_role.make_role("BYPASSRLS")
    plant(owner, [f"GRANT {bypassing} TO {{role}}"], app_role.name)

    findings = check_database(app_role.engine())

    assert codes(findings) == {"role_can_become_bypassing"}


def test_the_checker_reports_nothing_on_the_correct_schema(owner, app_role, world):
    plant(
        owner,
        [
            *good(),
            "CREATE VIEW gap_view WITH (security_invoker = true) AS SELECT * FROM gap",
            "CREATE FUNCTION gap_count() RETURNS bigint LANGUAGE sql SECURITY INVOKER "
            "AS 'SELECT count(*) FROM gap'",
        ],
        app_role.name,
    )
    engine = app_role.engine()

    assert check_database(engine) == []
    assert check_database(engine, metadata=metadata) == []
    assert check_database(owner, role=app_role.name) == []


def test_the_checker_finds_metadata_tables_by_their_own_tenant_column(owner, app_role, world):
    plant(owner, ["ALTER TABLE rls_badge NO FORCE ROW LEVEL SECURITY"], app_role.name)
    engine = app_role.engine()

    assert check_database(engine) == []  # rls_badge's tenant column is "org", not tenant_id
    assert codes(check_database(engine, metadata=metadata)) == {"rls_not_forced"}
    assert codes(check_database(engine, tenant_columns=["tenant_id", "org"])) == {"rls_not_forced"}


def test_the_command_exits_with_one_and_lists_the_gaps(owner, app_role, capsys):
    plant(owner, [*good(), "GRANT TRUNCATE ON gap TO {role}"], app_role.name)
    url = app_role.url().render_as_string(hide_password=False)

    status = main([url])

    out = capsys.readouterr().out
    assert status == 1
    assert "truncate_granted" in out
    assert "REVOKE TRUNCATE ON gap" in out
    assert "1 problem(s) found" in out


def test_the_command_exits_with_zero_on_a_correct_schema(app_role, world, capsys):
    status = main([app_role.url().render_as_string(hide_password=False), "--json"])

    assert status == 0
    assert capsys.readouterr().out.strip() == "[]"


def test_the_command_exits_with_two_when_it_cannot_connect(capsys):
    status = main(["postgresql://nobody@127.0.0.1:1/none"])

    assert status == 2
    assert "fastapi-tenancy-check:" in capsys.readouterr().err


def test_the_module_runs_as_a_command_and_fails_on_gaps(owner, app_role):
    plant(owner, [*good(), "ALTER TABLE gap NO FORCE ROW LEVEL SECURITY"], app_role.name)
    url = app_role.url().render_as_string(hide_password=False)

    done = subprocess.run(
        [sys.executable, "-m", "fastapi_tenancy.postgres", url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 1, done.stderr
    assert "rls_not_forced: gap" in done.stdout
