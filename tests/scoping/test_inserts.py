"""Attacks with INSERT: acme tries to write rows that belong to globex.

Refusals that the kit can decide from the statement alone happen before any SQL is sent.
"""

from __future__ import annotations

import pytest
from models import ACME, GLOBEX, Project, Task, capture_sql, rows_of, snapshot
from sqlalchemy import insert, literal, select
from sqlalchemy.dialects import mysql, postgresql, sqlite

from fastapi_tenancy import CrossTenantWrite, UnscopedStatement


def test_adding_a_row_for_another_tenant_is_refused_on_add(tenancy, session_for, world):
    before = snapshot(tenancy)

    with session_for(ACME) as session:
        with capture_sql(tenancy.engine) as sent, pytest.raises(CrossTenantWrite):
            session.add(Project(name="intruder", tenant_id=GLOBEX))
        session.flush()

    assert sent == []
    assert snapshot(tenancy) == before


def test_insert_statements_naming_another_tenant_are_refused_before_any_sql(
    tenancy, session_for, world
):
    before = snapshot(tenancy)
    intruder = {"name": "intruder", "tenant_id": GLOBEX}

    with session_for(ACME) as session, capture_sql(tenancy.engine) as sent:
        with pytest.raises(CrossTenantWrite):
            session.execute(insert(Project).values(**intruder))
        with pytest.raises(CrossTenantWrite):
            session.execute(insert(Project), [{"name": "mine"}, intruder])
        with pytest.raises(CrossTenantWrite):
            session.execute(insert(Project).values([{"name": "mine", "tenant_id": ACME}, intruder]))
        session.commit()

    assert sent == []
    assert snapshot(tenancy) == before


def test_multi_row_insert_values_naming_the_tenant_is_allowed(tenancy, session_for, world):
    rows = [{"name": "one", "tenant_id": ACME}, {"name": "two", "tenant_id": ACME}]

    with session_for(ACME) as session:
        session.execute(insert(Project).values(rows))
        session.commit()

    assert {p.name for p in rows_of(tenancy, Project, ACME).values()} == {
        "apollo",
        "one",
        "two",
    }


def test_multi_row_insert_values_without_tenant_are_stamped(tenancy, session_for, world):
    with session_for(ACME) as session:
        session.execute(insert(Project).values([{"name": "one"}, {"name": "two"}]))
        session.commit()

    assert {p.name for p in rows_of(tenancy, Project, ACME).values()} == {
        "apollo",
        "one",
        "two",
    }


def test_rows_without_tenant_are_stamped_with_the_sessions_tenant(tenancy, session_for, world):
    with session_for(ACME) as session:
        added = Project(name="added")
        session.add(added)
        session.add(Task(name="child", project=added))
        session.execute(insert(Project).values(name="inserted"))
        session.execute(insert(Project), [{"name": "bulk-1"}, {"name": "bulk-2"}])
        session.commit()
        assert added.tenant_id == ACME

    projects = {p.name: p.tenant_id for p in rows_of(tenancy, Project, ACME).values()}
    tasks = {t.name: t.tenant_id for t in rows_of(tenancy, Task, ACME).values()}
    assert set(projects) == {"apollo", "added", "inserted", "bulk-1", "bulk-2"}
    assert "child" in tasks
    assert {p.name for p in rows_of(tenancy, Project, GLOBEX).values()} == {"zeus", "hermes"}


def test_rows_naming_the_sessions_tenant_are_written(tenancy, session_for, world):
    with session_for(ACME) as session:
        session.add(Project(name="explicit", tenant_id=ACME))
        session.execute(insert(Project).values(name="core-style", tenant_id=ACME))
        session.commit()
        found = session.execute(select(Project.name).order_by(Project.id)).scalars().all()

    assert found == ["apollo", "explicit", "core-style"]


def upsert(backend):
    if backend == "mariadb":
        return mysql.insert(Project).values(name="zeus").on_duplicate_key_update(name="pwned")
    dialect = postgresql if backend == "postgres" else sqlite
    return (
        dialect.insert(Project)
        .values(name="zeus")
        .on_conflict_do_update(index_elements=["tenant_id", "name"], set_={"name": "pwned"})
    )


def test_upserts_and_insert_from_select_are_refused_before_any_sql(
    tenancy, session_for, world, backend
):
    before = snapshot(tenancy)
    copies = select(Project.name + "-copy", literal(ACME))

    with session_for(ACME) as session, capture_sql(tenancy.engine) as sent:
        # An upsert's UPDATE branch could land on another tenant's conflicting row.
        with pytest.raises(UnscopedStatement):
            session.execute(upsert(backend))
        with pytest.raises(UnscopedStatement):
            session.execute(insert(Project).from_select(["name", "tenant_id"], copies))
        session.commit()

    assert sent == []
    assert snapshot(tenancy) == before
