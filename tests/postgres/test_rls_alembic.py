"""The Alembic operations run the same DDL as ``apply_rls``, online and offline."""

from __future__ import annotations

import io

import pytest
from alembic.migration import MigrationContext
from alembic.operations import Operations
from rls_models import KEY_CAST_TYPE, KEY_SQL_TYPE
from rls_support import as_owner
from sqlalchemy import text

import fastapi_tenancy.postgres.alembic  # noqa: F401  (registers the operations)
from fastapi_tenancy.postgres import TenantTable
from fastapi_tenancy.postgres.alembic import DisableTenantRLSOp, EnableTenantRLSOp
from fastapi_tenancy.postgres.policies import enable_statements

pytestmark = pytest.mark.backends("postgres")

POLICIES = text(
    "SELECT policyname, cmd, qual, with_check FROM pg_policies "
    "WHERE schemaname = current_schema() AND tablename = :table ORDER BY policyname"
)
SECURED = text(
    "SELECT relrowsecurity, relforcerowsecurity FROM pg_class "
    "WHERE relname = :table AND relnamespace = current_schema()::regnamespace"
)


def make_tables(conn) -> None:
    """Two tenant tables whose tenant columns are of the run's key type."""
    for name in ("migrated", "applied"):
        conn.execute(
            text(f"CREATE TABLE {name} (id serial PRIMARY KEY, tenant_id {KEY_SQL_TYPE} NOT NULL)")
        )


def test_enable_tenant_rls_creates_what_apply_rls_creates(owner):
    with as_owner(owner) as conn:
        make_tables(conn)
        op = Operations(MigrationContext.configure(conn))
        op.enable_tenant_rls("migrated", global_read=True, tenant_type=KEY_CAST_TYPE)
        applied_table = TenantTable("applied", global_read=True, tenant_type=KEY_CAST_TYPE)
        for statement in enable_statements(applied_table):
            conn.execute(text(statement))

        migrated = conn.execute(POLICIES, {"table": "migrated"}).all()
        applied = conn.execute(POLICIES, {"table": "applied"}).all()
        secured = conn.execute(SECURED, {"table": "migrated"}).one()

    assert migrated == applied
    assert [row.policyname for row in migrated] == [
        "tenancy_delete",
        "tenancy_global_read",
        "tenancy_insert",
        "tenancy_select",
        "tenancy_update",
    ]
    assert tuple(secured) == (True, True)


def test_disable_tenant_rls_undoes_it(owner):
    with as_owner(owner) as conn:
        make_tables(conn)
        op = Operations(MigrationContext.configure(conn))
        op.enable_tenant_rls("migrated", tenant_type=KEY_CAST_TYPE)
        op.enable_tenant_rls("migrated", tenant_type=KEY_CAST_TYPE)  # idempotent
        op.disable_tenant_rls("migrated")

        policies = conn.execute(POLICIES, {"table": "migrated"}).all()
        secured = conn.execute(SECURED, {"table": "migrated"}).one()

    assert policies == []
    assert tuple(secured) == (False, False)


def test_offline_mode_prints_the_statements():
    buffer = io.StringIO()
    context = MigrationContext.configure(
        dialect_name="postgresql", opts={"as_sql": True, "output_buffer": buffer}
    )
    Operations(context).enable_tenant_rls("project", schema="app")

    printed = buffer.getvalue()
    assert "ALTER TABLE app.project FORCE ROW LEVEL SECURITY;" in printed
    assert "CREATE POLICY tenancy_insert ON app.project FOR INSERT WITH CHECK" in printed


def test_the_operations_reverse_each_other():
    enable = EnableTenantRLSOp("project", tenant_column="org_id", global_read=True)

    assert isinstance(enable.reverse(), DisableTenantRLSOp)
    assert enable.reverse().reverse().table == enable.table


def test_family_reads_and_public_rows_migrate_as_apply_rls_makes_them(owner):
    with as_owner(owner) as conn:
        for name in ("migrated", "applied"):
            conn.execute(
                text(
                    f"CREATE TABLE {name} (id serial PRIMARY KEY, tenant_id {KEY_SQL_TYPE} NOT "
                    "NULL, owner_id text NOT NULL, published boolean NOT NULL DEFAULT false)"
                )
            )
        op = Operations(MigrationContext.configure(conn))
        options = {
            "tenant_type": KEY_CAST_TYPE,
            "row_scopes": {"owner": "owner_id"},
            "row_scope_public": {"owner": "published"},
            "tenant_reads": "descendants",
        }
        op.enable_tenant_rls("migrated", **options)
        applied_table = EnableTenantRLSOp("applied", **options).table
        for statement in enable_statements(applied_table):
            conn.execute(text(statement))

        migrated = conn.execute(POLICIES, {"table": "migrated"}).all()
        applied = conn.execute(POLICIES, {"table": "applied"}).all()
        op.disable_tenant_rls("migrated", row_scopes={"owner": "owner_id"})
        left = conn.execute(POLICIES, {"table": "migrated"}).all()

    assert migrated == applied
    assert "fastapi_tenancy.descendants" in next(
        row.qual for row in migrated if row.policyname == "tenancy_select"
    )
    assert [row.policyname for row in migrated if row.policyname.startswith("tenancy_owned")] == [
        "tenancy_owned_delete_owner",
        "tenancy_owned_update_owner",
    ]
    assert left == []
    enable = EnableTenantRLSOp("project", **options)
    assert enable.reverse().reverse().table == enable.table


def test_row_policies_migrate_as_written_and_come_off(owner):
    with as_owner(owner) as conn:
        conn.execute(
            text(
                f"CREATE TABLE migrated (id serial PRIMARY KEY, tenant_id {KEY_SQL_TYPE} NOT "
                "NULL, archived boolean NOT NULL DEFAULT false)"
            )
        )
        op = Operations(MigrationContext.configure(conn))
        policies = {"live": "archived = false"}
        op.enable_tenant_rls("migrated", tenant_type=KEY_CAST_TYPE, row_policies=policies)
        migrated = conn.execute(POLICIES, {"table": "migrated"}).all()
        op.disable_tenant_rls("migrated", row_policies=policies)
        left = conn.execute(POLICIES, {"table": "migrated"}).all()

    live = next(row for row in migrated if row.policyname == "tenancy_policy_live")
    assert "archived = false" in live.qual
    assert "fastapi_tenancy.lift.live" in live.with_check
    assert left == []
    enable = EnableTenantRLSOp("migrated", row_policies=policies)
    assert enable.reverse().reverse().table == enable.table
