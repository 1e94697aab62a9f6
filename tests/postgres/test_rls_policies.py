"""The generated DDL: what each tenant table gets, how it is quoted, and how PostgreSQL runs it."""

from __future__ import annotations

import uuid

import pytest
from rls_models import ACME, KEY_TYPE, Project, metadata
from rls_support import as_owner
from sqlalchemy import Uuid, select, text

from fastapi_tenancy.postgres import TenantTable, apply_rls, remove_rls, rls_statements
from fastapi_tenancy.postgres.policies import enable_statements, tenant_tables

pytestmark = pytest.mark.backends("postgres")

POLICIES_SQL = text(
    "SELECT tablename, policyname, cmd, qual, with_check FROM pg_policies "
    "WHERE schemaname = current_schema() ORDER BY tablename, policyname"
)


def statements_for(table: str) -> list[str]:
    return [s for s in rls_statements(metadata) if f" {table} " in f"{s} "]


def test_each_tenant_table_gets_enable_force_and_one_policy_per_command():
    statements = statements_for("rls_project")

    assert statements[:2] == [
        "ALTER TABLE rls_project ENABLE ROW LEVEL SECURITY",
        "ALTER TABLE rls_project FORCE ROW LEVEL SECURITY",
    ]
    created = [s.split(" ON rls_project ")[1].split(" (")[0] for s in statements if "CREATE" in s]
    assert created == [
        "FOR SELECT USING",
        "FOR INSERT WITH CHECK",
        "FOR UPDATE USING",
        "FOR DELETE USING",
    ]
    update = next(s for s in statements if "FOR UPDATE" in s)
    assert "WITH CHECK" in update


def test_tables_without_a_tenant_get_nothing():
    assert statements_for("rls_plan") == []


def test_only_global_access_models_get_the_global_read_policy():
    global_reads = [
        s for s in rls_statements(metadata) if s.startswith("CREATE POLICY tenancy_global")
    ]

    assert global_reads == [
        "CREATE POLICY tenancy_global_read ON rls_template FOR SELECT USING "
        "(NULLIF(current_setting('fastapi_tenancy.global_read', true), '') = 'on')"
    ]


# The SQL type a run's tenant column compares the setting with: text as it is, else a cast.
CAST_TO = {str: None, int: "INTEGER", uuid.UUID: "UUID"}[KEY_TYPE]


def test_the_policy_compares_with_the_setting_without_a_subquery():
    select_policy = next(s for s in statements_for("rls_task") if "FOR SELECT" in s)
    setting = "NULLIF(current_setting('fastapi_tenancy.tenant_id', true), '')"
    if CAST_TO is not None:
        setting = f"CAST({setting} AS {CAST_TO})"

    assert select_policy.endswith(f"USING (tenant_id = {setting})")
    assert "SELECT" not in select_policy.split("USING", 1)[1]  # Citus refuses subqueries


def test_a_non_text_tenant_column_compares_with_the_setting_cast_to_its_type():
    [badge] = [t for t in tenant_tables(metadata) if t.name == "rls_badge"]

    assert badge.tenant_column == "org"
    assert isinstance(badge.tenant_type, Uuid)
    assert "org = CAST(NULLIF(current_setting(" in enable_statements(badge)[3]
    assert enable_statements(badge)[3].endswith(", '') AS UUID))")


def test_identifiers_are_quoted():
    table = TenantTable('Odd "Name"', schema="My Schema", tenant_column="Org")

    statements = enable_statements(table)

    assert statements[0] == 'ALTER TABLE "My Schema"."Odd ""Name""" ENABLE ROW LEVEL SECURITY'
    assert '("Org" = NULLIF(' in statements[3]


def test_admin_roles_get_a_policy_admitting_every_row():
    statements = enable_statements(TenantTable("project", admin_roles=["ops admin"]))

    assert (
        'CREATE POLICY tenancy_admin ON project FOR ALL TO "ops admin" USING (true) '
        "WITH CHECK (true)"
    ) in statements


def test_without_a_metadata_the_tables_of_every_tenant_model_are_found():
    names = {t.name for t in tenant_tables()}

    assert {"rls_project", "rls_task", "rls_template"} <= names
    assert "rls_plan" not in names
    assert "rls_badge" not in names  # a core table is found through its MetaData only


# --------------------------------------------------------------------------------------------
# On the database


def test_applying_twice_leaves_the_same_policies(owner, world):
    with as_owner(owner) as conn:
        before = conn.execute(POLICIES_SQL).all()
        apply_rls(conn, metadata)
        after = conn.execute(POLICIES_SQL).all()

    assert after == before
    assert len(before) == 4 * 4 + 1  # four tables, one policy per command, one global read


def test_postgres_uses_the_tenant_index_with_the_policys_setting(wall, world):
    with wall(ACME) as session:
        session.execute(text("SET LOCAL enable_seqscan = off"))
        plan = session.execute(text("EXPLAIN SELECT * FROM rls_task")).scalars().all()

    shown = "\n".join(plan)
    # current_setting() is stable: compared once per scan, as the index condition (of an index
    # scan, or of the bitmap index scan under a bitmap heap scan)
    assert any(
        "Index Cond" in line and "current_setting('fastapi_tenancy.tenant_id'" in line
        for line in plan
    ), shown
    assert "SubPlan" not in shown, shown
    assert "InitPlan" not in shown, shown


def test_remove_rls_takes_the_wall_down(owner, world):
    with as_owner(owner) as conn:
        remove_rls(conn, metadata)
        policies = conn.execute(POLICIES_SQL).all()
        secured = conn.execute(
            text(
                "SELECT relname FROM pg_class WHERE relrowsecurity AND relname LIKE 'rls_%' "
                "AND relnamespace = current_schema()::regnamespace"
            )
        ).all()

    assert policies == []
    assert secured == []


def test_a_role_named_in_admin_roles_reads_every_tenant_without_bypassrls(owner, app_role, world):
    admin = app_role.make_role()
    with as_owner(owner) as conn:
        apply_rls(conn, metadata, admin_roles=[admin])
    engine = app_role.engine(admin)

    with engine.connect() as conn:
        names = sorted(conn.execute(select(Project.name)).scalars())
    with app_role.engine().connect() as conn:
        none = conn.execute(select(Project.name)).all()

    assert names == ["apollo", "zeus"]
    assert none == []
