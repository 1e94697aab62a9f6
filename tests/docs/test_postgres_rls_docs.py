"""docs/postgres-rls.md's migration and key samples, run for real.

(The page's app sample, docs/examples/postgres_rls.py, is driven by
tests/postgres/test_rls_docs.py as an ordinary role.)
"""

from __future__ import annotations

import pytest
from alembic.migration import MigrationContext
from alembic.operations import Operations
from sqlalchemy import Engine, inspect, text
from sqlalchemy.exc import IntegrityError

from docs.examples import postgres_rls_migration
from docs.examples.postgres_rls_keys import Project, Task

FORCED = text(
    "SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class "
    "WHERE relnamespace = current_schema()::regnamespace AND relname LIKE 'doc_%' "
    "AND relkind = 'r' ORDER BY relname"
)
POLICIES = text(
    "SELECT tablename, policyname FROM pg_policies WHERE schemaname = current_schema() "
    "ORDER BY tablename, policyname"
)


@pytest.mark.backends("postgres")
def test_the_migration_turns_the_wall_on_and_its_downgrade_takes_it_away(engine: Engine) -> None:
    with engine.begin() as conn, Operations.context(MigrationContext.configure(conn)):
        postgres_rls_migration.upgrade()
    with engine.connect() as conn:
        forced = [tuple(row) for row in conn.execute(FORCED)]
        policies = [tuple(row) for row in conn.execute(POLICIES)]
    assert forced == [("doc_invoice", True, True), ("doc_price_list", True, True)]
    commands = ["tenancy_delete", "tenancy_insert", "tenancy_select", "tenancy_update"]
    assert policies == [("doc_invoice", name) for name in commands] + [
        ("doc_price_list", name) for name in sorted([*commands, "tenancy_global_read"])
    ]

    with engine.begin() as conn, Operations.context(MigrationContext.configure(conn)):
        postgres_rls_migration.downgrade()
    assert not {"doc_invoice", "doc_price_list"} & set(inspect(engine).get_table_names())


@pytest.fixture
def projects(engine: Engine, create_tables) -> dict[str, int]:
    create_tables(engine, Project, Task)
    with engine.begin() as conn:
        for tenant in ("acme", "globex"):
            conn.execute(
                text("INSERT INTO doc_keys_project (tenant_id, name) VALUES (:t, 'p')"),
                {"t": tenant},
            )
        rows = conn.execute(text("SELECT tenant_id, id FROM doc_keys_project")).all()
    return {tenant: project_id for tenant, project_id in rows}


ADD_TASK = text(
    "INSERT INTO doc_keys_task (tenant_id, name, project_id) VALUES ('acme', 't', :project)"
)


def test_a_task_can_point_at_its_own_tenants_project(engine: Engine, projects) -> None:
    with engine.begin() as conn:
        conn.execute(ADD_TASK, {"project": projects["acme"]})
        assert conn.execute(text("SELECT count(*) FROM doc_keys_task")).scalar_one() == 1


def test_raw_sql_cannot_point_a_task_at_another_tenants_project(engine: Engine, projects) -> None:
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(ADD_TASK, {"project": projects["globex"]})
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM doc_keys_task")).scalar_one() == 0
