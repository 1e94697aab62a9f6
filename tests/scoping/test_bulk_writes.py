"""Attacks with ORM bulk UPDATE and DELETE: acme tries to reach globex's rows.

Every attack ends by reading the whole database back unscoped and comparing it with what it
held before (``snapshot``), so "nothing changed" means no tenant's row changed.
"""

from __future__ import annotations

import pytest
from models import ACME, GLOBEX, Project, Task, owned_by, snapshot
from sqlalchemy import delete, select, update

from fastapi_tenancy import CrossTenantWrite


def test_bulk_update_without_where_changes_only_the_tenants_rows(tenancy, session_for, world):
    before = snapshot(tenancy)

    with session_for(ACME) as session:
        result = session.execute(update(Project).values(name="renamed"))
        session.commit()

    after = snapshot(tenancy)
    assert result.rowcount == 1
    assert [p["name"] for p in owned_by(after[Project], ACME)] == ["renamed"]
    assert owned_by(after[Project], GLOBEX) == owned_by(before[Project], GLOBEX)


def test_bulk_update_of_another_tenants_id_changes_nothing(tenancy, session_for, world):
    before = snapshot(tenancy)

    with session_for(ACME) as session:
        result = session.execute(
            update(Project).where(Project.id == world.zeus).values(name="pwned")
        )
        session.commit()

    assert result.rowcount == 0
    assert snapshot(tenancy) == before


def test_bulk_update_with_fetch_synchronization_changes_nothing_of_another_tenant(
    tenancy, session_for, world
):
    before = snapshot(tenancy)

    with session_for(ACME) as session:
        result = session.execute(
            update(Task)
            .where(Task.project_id == world.zeus)
            .values(done=True)
            .execution_options(synchronize_session="fetch")
        )
        session.commit()

    # Only acme's own leak-probe points at zeus; globex's secret-plan must stay open.
    assert result.rowcount == 1
    after = snapshot(tenancy)
    assert owned_by(after[Task], GLOBEX) == owned_by(before[Task], GLOBEX)


def test_bulk_delete_without_where_deletes_only_the_tenants_rows(tenancy, session_for, world):
    before = snapshot(tenancy)

    with session_for(ACME) as session:
        result = session.execute(delete(Task))
        session.commit()

    after = snapshot(tenancy)
    assert result.rowcount == 3
    assert after[Task] == owned_by(before[Task], GLOBEX)


def test_bulk_delete_of_another_tenants_id_deletes_nothing(tenancy, session_for, world):
    before = snapshot(tenancy)

    with session_for(ACME) as session:
        tasks = session.execute(delete(Task).where(Task.id == world.secret_plan))
        projects = session.execute(delete(Project).where(Project.id == world.hermes))
        session.commit()

    assert (tasks.rowcount, projects.rowcount) == (0, 0)
    assert snapshot(tenancy) == before


def test_update_from_cannot_update_another_tenants_target_rows(tenancy, session_for, world):
    before = snapshot(tenancy)

    with session_for(ACME) as session:
        # Joined to apollo, whose tasks include globex's planted one.
        result = session.execute(
            update(Task)
            .where(Task.project_id == Project.id, Project.name == "apollo")
            .values(done=True)
        )
        session.commit()

    after = snapshot(tenancy)
    assert result.rowcount == 2
    assert owned_by(after[Task], GLOBEX) == owned_by(before[Task], GLOBEX)


def test_update_from_cannot_match_through_another_tenants_joined_rows(tenancy, session_for, world):
    before = snapshot(tenancy)

    with session_for(ACME) as session:
        # Targets globex's zeus through acme's own leak-probe task...
        to_zeus = session.execute(
            update(Project)
            .where(Project.id == Task.project_id, Task.name == "leak-probe")
            .values(name="pwned")
        )
        # ...and acme's own rows through globex's zeus and planted task (an oracle).
        via_zeus = session.execute(
            update(Task)
            .where(Task.project_id == Project.id, Project.name == "zeus")
            .values(name="pwned")
        )
        via_planted = session.execute(
            update(Project)
            .where(Project.id == Task.project_id, Task.name == "planted")
            .values(name="pwned")
        )
        session.commit()

    assert (to_zeus.rowcount, via_zeus.rowcount, via_planted.rowcount) == (0, 0, 0)
    assert snapshot(tenancy) == before


def _delete_using(session, statement):
    # MariaDB has no DELETE ... USING ... RETURNING: SQLAlchemy asks for this hint.
    result = session.execute(statement.execution_options(is_delete_using=True))
    session.commit()
    return result.rowcount


@pytest.mark.backends("postgres", "mariadb")
def test_delete_using_cannot_delete_another_tenants_target_rows(tenancy, session_for, world):
    before = snapshot(tenancy)

    with session_for(ACME) as session:
        deleted = _delete_using(
            session, delete(Task).where(Task.project_id == Project.id, Project.name == "apollo")
        )

    after = snapshot(tenancy)
    assert deleted == 2
    assert owned_by(after[Task], GLOBEX) == owned_by(before[Task], GLOBEX)


@pytest.mark.backends("postgres", "mariadb")
def test_delete_using_cannot_match_through_another_tenants_joined_rows(tenancy, session_for, world):
    before = snapshot(tenancy)

    with session_for(ACME) as session:
        deleted = _delete_using(
            session, delete(Task).where(Task.project_id == Project.id, Project.name == "zeus")
        )

    # leak-probe is acme's, but matching it through globex's zeus would be an oracle.
    assert deleted == 0
    assert snapshot(tenancy) == before


@pytest.mark.backends("sqlite")
def test_delete_using_is_an_error_on_sqlite_and_deletes_nothing(tenancy, session_for, world):
    before = snapshot(tenancy)

    with (
        session_for(ACME) as session,
        pytest.raises(NotImplementedError, match="multiple-table criteria within DELETE"),
    ):
        _delete_using(
            session, delete(Task).where(Task.project_id == Project.id, Project.name == "apollo")
        )

    assert snapshot(tenancy) == before


def test_bulk_update_by_primary_key_reaching_another_tenant_is_refused(tenancy, session_for, world):
    before = snapshot(tenancy)

    with session_for(ACME) as session:
        with pytest.raises(CrossTenantWrite):
            session.execute(update(Project), [{"id": world.zeus, "name": "pwned"}])
        with pytest.raises(CrossTenantWrite):
            session.execute(
                update(Project),
                [{"id": world.apollo, "name": "mine"}, {"id": world.hermes, "name": "pwned"}],
            )
        with pytest.raises(CrossTenantWrite):
            session.execute(
                update(Project), [{"id": world.apollo, "name": "x", "tenant_id": GLOBEX}]
            )
        session.commit()

    assert snapshot(tenancy) == before


def test_bulk_update_by_primary_key_of_the_tenants_rows_is_allowed(tenancy, session_for, world):
    with session_for(ACME) as session:
        session.execute(
            update(Task),
            [{"id": world.design, "name": "design-2"}, {"id": world.build, "done": False}],
        )
        session.commit()
        rows = session.execute(select(Task.name, Task.done).order_by(Task.id)).all()

    assert [tuple(r) for r in rows] == [
        ("design-2", False),
        ("build", False),
        ("leak-probe", False),
    ]


def test_bulk_writes_filtered_through_another_tenants_rows_match_nothing(
    tenancy, session_for, world
):
    before = snapshot(tenancy)
    planted_projects = select(Task.project_id).where(Task.name == "planted")

    with session_for(ACME) as session:
        # globex's planted task points at apollo; acme's leak-probe points at globex's zeus.
        renamed = session.execute(
            update(Project).where(Project.id.in_(planted_projects)).values(name="pwned")
        )
        deleted = session.execute(delete(Task).where(Task.project.has(Project.name == "zeus")))
        session.commit()

    assert (renamed.rowcount, deleted.rowcount) == (0, 0)
    assert snapshot(tenancy) == before
