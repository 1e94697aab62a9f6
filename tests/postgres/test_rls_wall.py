"""Attacks on the database's own wall, with the ORM scoping switched off.

Every session here comes from ``wall(tenant)``: a session of ``Tenancy(..., rls=True)`` on an
ordinary role, whose ORM scoping is off (``Access.UNSCOPED``) but whose transactions name the
tenant to the policies. Whatever stops the attacks below is PostgreSQL, not the kit's Python.
"""

from __future__ import annotations

import psycopg
import pytest
from rls_models import (
    ACME,
    ACME_ORG,
    GLOBEX,
    KEY_SQL_TYPE,
    KEY_TYPE,
    Project,
    Task,
    Template,
    badge,
)
from rls_support import World, as_owner
from sqlalchemy import delete, func, insert, select, text, update
from sqlalchemy.exc import DBAPIError, IntegrityError

from fastapi_tenancy.postgres import (
    read_tenant_setting,
    set_tenant,
    tenant_savepoint,
)

pytestmark = pytest.mark.backends("postgres")

project = Project.__table__  # type: ignore[attr-defined]
task = Task.__table__  # type: ignore[attr-defined]


def sqlstate(error: DBAPIError) -> str | None:
    return getattr(error.orig, "sqlstate", None)


def owner_names(owner, table=project) -> list[tuple[object, str]]:
    """What the owner (who bypasses the policies) sees: every tenant's rows."""
    with as_owner(owner) as conn:
        rows = conn.execute(select(table.c.tenant_id, table.c.name).order_by(table.c.id))
        return [(tenant, name) for tenant, name in rows]


# --------------------------------------------------------------------------------------------
# Raw SQL


def test_raw_select_returns_only_the_tenants_rows(wall, world: World):
    with wall(ACME) as session:
        rows = session.execute(text("SELECT tenant_id, name FROM rls_project")).all()
        by_id = session.execute(
            text("SELECT name FROM rls_project WHERE id = :id"), {"id": world.zeus}
        ).all()

    assert rows == [(ACME, "apollo")]
    assert by_id == []


def test_raw_aggregates_and_joins_count_only_the_tenants_rows(wall, world: World):
    with wall(GLOBEX) as session:
        count = session.execute(text("SELECT count(*) FROM rls_task")).scalar_one()
        joined = session.execute(
            text("SELECT t.name, p.name FROM rls_task t JOIN rls_project p ON p.id = t.project_id")
        ).all()

    assert count == 1
    assert joined == [("secret", "zeus")]


def test_raw_insert_naming_another_tenant_is_refused_by_the_policy(wall, world, owner):
    with wall(ACME) as session, pytest.raises(DBAPIError) as caught:
        session.execute(
            text("INSERT INTO rls_project (tenant_id, name) VALUES (:tenant, 'x')"),
            {"tenant": GLOBEX},
        )

    assert sqlstate(caught.value) == "42501"  # insufficient_privilege: row-level security
    assert "row-level security" in str(caught.value)
    assert (GLOBEX, "x") not in owner_names(owner)


def test_raw_insert_for_the_own_tenant_is_admitted(wall, world, owner):
    with wall(ACME) as session:
        session.execute(
            text("INSERT INTO rls_project (tenant_id, name) VALUES (:tenant, 'ares')"),
            {"tenant": ACME},
        )
        session.commit()

    assert (ACME, "ares") in owner_names(owner)


def test_raw_update_of_another_tenants_row_changes_nothing(wall, world: World, owner):
    with wall(ACME) as session:
        result = session.execute(
            text("UPDATE rls_project SET name = 'pwned' WHERE id = :id"), {"id": world.zeus}
        )
        everything = session.execute(text("UPDATE rls_project SET name = name || '!'"))
        session.commit()

    assert result.rowcount == 0
    assert everything.rowcount == 1
    assert owner_names(owner) == [(ACME, "apollo!"), (GLOBEX, "zeus")]


def test_raw_update_cannot_move_a_row_into_another_tenant(wall, world: World, owner):
    with wall(ACME) as session, pytest.raises(DBAPIError) as caught:
        session.execute(
            text("UPDATE rls_project SET tenant_id = :tenant WHERE id = :id"),
            {"tenant": GLOBEX, "id": world.apollo},
        )

    assert sqlstate(caught.value) == "42501"
    assert owner_names(owner) == [(ACME, "apollo"), (GLOBEX, "zeus")]


def test_raw_delete_of_another_tenants_rows_deletes_nothing(wall, world: World, owner):
    with wall(ACME) as session:
        result = session.execute(text("DELETE FROM rls_task WHERE name = 'secret'"))
        session.commit()

    assert result.rowcount == 0
    assert owner_names(owner, task) == [(ACME, "design"), (GLOBEX, "secret")]


# --------------------------------------------------------------------------------------------
# Core Table statements


def test_core_select_on_the_table_returns_only_the_tenants_rows(wall, world: World):
    with wall(GLOBEX) as session:
        names = session.execute(select(project.c.name)).scalars().all()
        counted = session.execute(select(func.count()).select_from(task)).scalar_one()

    assert names == ["zeus"]
    assert counted == 1


def test_core_insert_update_and_delete_cannot_reach_another_tenant(wall, world: World, owner):
    with wall(ACME) as session:
        with pytest.raises(DBAPIError) as caught:
            session.execute(insert(project).values(tenant_id=GLOBEX, name="planted"))
        session.rollback()
        moved = session.execute(
            update(project).where(project.c.id == world.zeus).values(name="pwned")
        )
        removed = session.execute(delete(task).where(task.c.id == world.secret))
        session.commit()

    assert sqlstate(caught.value) == "42501"
    assert moved.rowcount == 0
    assert removed.rowcount == 0
    assert owner_names(owner) == [(ACME, "apollo"), (GLOBEX, "zeus")]


def test_a_uuid_tenant_column_is_compared_through_a_cast(wall, world: World):
    with wall(ACME_ORG) as session:
        labels = session.execute(select(badge.c.label)).scalars().all()

    assert labels == ["acme-badge"]


# --------------------------------------------------------------------------------------------
# No tenant


def test_a_transaction_without_a_tenant_sees_no_row_and_raises_nothing(wall, world: World):
    with wall(None) as session:
        assert session.execute(text("SELECT * FROM rls_project")).all() == []
        assert session.execute(select(badge)).all() == []  # the uuid cast meets NULL, no error
        assert session.execute(text("DELETE FROM rls_task")).rowcount == 0
        assert session.execute(text("UPDATE rls_project SET name = 'x'")).rowcount == 0
        # shared reference data is no tenant table: still readable
        assert session.execute(text("SELECT count(*) FROM rls_plan")).scalar_one() == 2


def test_a_transaction_without_a_tenant_cannot_insert(wall, world: World):
    with wall(None) as session, pytest.raises(DBAPIError) as caught:
        session.execute(
            text("INSERT INTO rls_project (tenant_id, name) VALUES (:tenant, 'x')"),
            {"tenant": ACME},
        )

    assert sqlstate(caught.value) == "42501"


def test_an_emptied_setting_on_a_reused_connection_breaks_no_cast(app_role, world: World):
    # After a transaction has set it, the setting reads '' (not NULL) for the connection's life.
    engine = app_role.engine(pool_size=1, max_overflow=0)
    with engine.begin() as conn:
        set_tenant(conn, ACME_ORG)
        assert conn.execute(select(badge.c.label)).scalars().all() == ["acme-badge"]
    with engine.begin() as conn:
        raw = conn.execute(text("SELECT current_setting('fastapi_tenancy.tenant_id', true)"))
        assert raw.scalar_one() == ""
        assert conn.execute(select(badge)).all() == []
        assert conn.execute(text("SELECT * FROM rls_project")).all() == []


def test_a_plain_connection_of_the_app_role_sees_nothing(app_engine, world: World):
    with app_engine.connect() as conn:
        assert conn.execute(text("SELECT * FROM rls_task")).all() == []


# --------------------------------------------------------------------------------------------
# Views


def test_a_view_owned_by_a_superuser_bypasses_the_policies_unless_security_invoker(
    wall, world: World, owner
):
    with as_owner(owner) as conn:
        conn.execute(
            text("CREATE VIEW rls_all_projects AS SELECT tenant_id, name FROM rls_project")
        )

    with wall(ACME) as session:
        leaked = session.execute(text("SELECT tenant_id FROM rls_all_projects")).scalars().all()

    with as_owner(owner) as conn:
        conn.execute(text("ALTER VIEW rls_all_projects SET (security_invoker = true)"))

    with wall(ACME) as session:
        fixed = session.execute(text("SELECT tenant_id FROM rls_all_projects")).scalars().all()

    assert sorted(leaked) == sorted([ACME, GLOBEX])  # the documented gap the checker reports
    assert fixed == [ACME]


def test_a_view_owned_by_an_ordinary_table_owner_applies_the_forced_policies(
    wall, world: World, owner, app_role, database
):
    table_owner = app_role.make_role()
    with as_owner(owner) as conn:
        conn.execute(text(f'GRANT CREATE ON SCHEMA "{database.name}" TO {table_owner}'))
        conn.execute(text(f"ALTER TABLE rls_project OWNER TO {table_owner}"))
        conn.execute(text(f"SET ROLE {table_owner}"))
        conn.execute(text("CREATE VIEW rls_owner_view AS SELECT tenant_id, name FROM rls_project"))
        conn.execute(text(f"GRANT SELECT ON rls_owner_view TO {app_role.name}"))
        conn.execute(text("RESET ROLE"))

    with wall(GLOBEX) as session:
        seen = session.execute(text("SELECT tenant_id FROM rls_owner_view")).scalars().all()

    assert seen == [GLOBEX]  # FORCE: the owner's view is filtered by the caller's tenant


# --------------------------------------------------------------------------------------------
# COPY


def test_copy_to_stdout_copies_only_the_tenants_rows(wall, world: World):
    with wall(ACME) as session:
        driver = session.connection().connection.driver_connection
        assert isinstance(driver, psycopg.Connection)
        with driver.cursor() as cursor:
            with cursor.copy("COPY rls_project (tenant_id, name) TO STDOUT") as copy:
                rows = list(copy.rows())
            with cursor.copy("COPY (SELECT name FROM rls_task) TO STDOUT") as copy:
                tasks = list(copy.rows())

    assert rows == [(str(ACME), "apollo")]  # COPY's text format: the key's spelling
    assert tasks == [("design",)]


def test_copy_on_a_raw_connection_with_no_tenant_copies_nothing(app_engine, world: World):
    with app_engine.connect() as conn:
        driver = conn.connection.driver_connection
        assert isinstance(driver, psycopg.Connection)
        with driver.cursor() as cursor, cursor.copy("COPY rls_project TO STDOUT") as copy:
            rows = list(copy.rows())

    assert rows == []  # no session named a tenant: the wall fails closed


def test_copy_from_into_a_protected_table_is_refused(wall, world: World):
    with wall(ACME) as session:
        driver = session.connection().connection.driver_connection
        with (
            pytest.raises(psycopg.errors.FeatureNotSupported),
            driver.cursor() as cursor,
            cursor.copy("COPY rls_project (tenant_id, name) FROM STDIN") as copy,
        ):
            copy.write_row((str(GLOBEX), "planted"))


# --------------------------------------------------------------------------------------------
# Foreign keys


def test_a_row_cannot_point_at_another_tenants_row_through_the_tenant_foreign_key(
    wall, world: World
):
    with wall(ACME) as session, pytest.raises(IntegrityError) as caught:
        session.execute(
            text("INSERT INTO rls_task (tenant_id, name, project_id) VALUES (:tenant, 'x', :p)"),
            {"tenant": ACME, "p": world.zeus},
        )

    assert sqlstate(caught.value) == "23503"  # foreign_key_violation


def test_a_row_cannot_be_repointed_at_another_tenants_row(wall, world: World):
    with wall(ACME) as session, pytest.raises(IntegrityError):
        session.execute(
            text("UPDATE rls_task SET project_id = :p WHERE id = :t"),
            {"p": world.zeus, "t": world.design},
        )


def test_a_plain_foreign_key_would_let_a_row_point_at_another_tenants_row(
    wall, world: World, owner, app_role
):
    # The gap the tenant foreign key closes: the existence check runs past the policies.
    with as_owner(owner) as conn:
        conn.execute(
            text(
                f"CREATE TABLE rls_loose (id serial PRIMARY KEY, tenant_id {KEY_SQL_TYPE} "
                "NOT NULL, project_id int REFERENCES rls_project (id))"
            )
        )
        conn.execute(text(f"GRANT SELECT, INSERT ON rls_loose TO {app_role.name}"))
        conn.execute(text(f"GRANT USAGE ON SEQUENCE rls_loose_id_seq TO {app_role.name}"))

    with wall(ACME) as session:
        session.execute(
            text("INSERT INTO rls_loose (tenant_id, project_id) VALUES (:tenant, :p)"),
            {"tenant": ACME, "p": world.zeus},
        )
        session.commit()

    with as_owner(owner) as conn:
        planted = conn.execute(text("SELECT project_id FROM rls_loose")).scalars().all()
    assert planted == [world.zeus]


# --------------------------------------------------------------------------------------------
# Transactions: savepoints, commits, errors


def test_a_tenant_override_in_a_savepoint_does_not_outlive_it(wall, world: World):
    with wall(ACME) as session:
        conn = session.connection()
        with tenant_savepoint(conn, GLOBEX):
            inside = conn.execute(text("SELECT name FROM rls_project")).scalars().all()
        after_release = conn.execute(text("SELECT name FROM rls_project")).scalars().all()

        with pytest.raises(RuntimeError), tenant_savepoint(conn, GLOBEX):
            raise RuntimeError("rolled back")
        after_rollback = conn.execute(text("SELECT name FROM rls_project")).scalars().all()

    assert inside == ["zeus"]
    assert after_release == ["apollo"]
    assert after_rollback == ["apollo"]


def test_a_raw_setting_in_a_rolled_back_savepoint_is_undone(wall, world: World):
    with wall(ACME) as session:
        conn = session.connection()
        savepoint = conn.begin_nested()
        conn.execute(text(f"SELECT set_config('fastapi_tenancy.tenant_id', '{GLOBEX}', true)"))
        assert read_tenant_setting(conn) == str(GLOBEX)
        savepoint.rollback()
        assert read_tenant_setting(conn) == str(ACME)


def test_an_orm_savepoint_keeps_the_sessions_tenant(wall, world: World):
    with wall(GLOBEX) as session:
        with session.begin_nested():
            inner = session.execute(select(Project.name)).scalars().all()
        outer = session.execute(select(Project.name)).scalars().all()

    assert inner == outer == ["zeus"]


def test_objects_reloaded_after_a_commit_are_read_under_the_tenant(wall, world: World):
    with wall(ACME) as session:
        apollo = session.get(Project, world.apollo)
        assert apollo is not None
        apollo.name = "apollo-2"
        session.commit()  # expires apollo; the next attribute access is a new transaction
        assert apollo.name == "apollo-2"
        assert session.get(Project, world.zeus) is None
        session.commit()
        assert [p.name for p in session.execute(select(Project)).scalars()] == ["apollo-2"]
        assert session.execute(select(Template.name)).scalars().all() == ["acme-template"]


def test_a_transaction_that_raised_leaves_no_setting_behind(app_role, world: World):
    from fastapi_tenancy import Access, HeaderResolver, SessionScope, Tenancy

    engine = app_role.engine(pool_size=1, max_overflow=0)
    tenancy = Tenancy(engine, resolvers=[HeaderResolver()], rls=True, key_type=KEY_TYPE)
    with tenancy.make_session(SessionScope(ACME, Access.UNSCOPED)) as session:
        with pytest.raises(DBAPIError):
            session.execute(text("SELECT name, 1 / 0 FROM rls_project"))
        session.rollback()

    with engine.connect() as conn:  # the same pooled connection
        assert conn.execute(text("SELECT * FROM rls_project")).all() == []
        assert read_tenant_setting(conn) is None
