"""Statements the wall cannot prove scoped are refused in a tenant session before any SQL is sent.

Core ``Table`` statements that read or change tenant rows without a tenant filter, ``text()``,
``table()`` and the raw connection would all run unfiltered. Core statements that the wall can
prove (an INSERT writing the tenant's key, a DELETE by a key of the tenant's row) run; core
statements on tables without a tenant still work.
"""

from __future__ import annotations

import warnings

import pytest
from models import (
    ACME,
    GLOBEX,
    Plan,
    Project,
    Task,
    assert_all_refused,
    capture_sql,
    owned_by,
    snapshot,
)
from sqlalchemy import (
    column,
    delete,
    func,
    insert,
    literal,
    select,
    table,
    text,
    update,
)
from sqlalchemy.exc import SAWarning

from fastapi_tenancy import CrossTenantWrite, UnscopedStatement

PROJECTS = Project.__table__
TASKS = Task.__table__
PLANS = Plan.__table__
ALIAS = PROJECTS.alias()


def assert_refused_before_any_sql(tenancy, session_for, statements):
    before = snapshot(tenancy)

    with session_for(ACME) as session, capture_sql(tenancy.engine) as sent:
        assert_all_refused(session, UnscopedStatement, statements)
        session.commit()

    assert sent == []
    assert snapshot(tenancy) == before


def test_unfiltered_core_statements_on_tenant_tables_are_refused_before_any_sql(
    tenancy, session_for, world
):
    assert_refused_before_any_sql(
        tenancy,
        session_for,
        {
            "select table": select(PROJECTS),
            "select columns": select(PROJECTS.c.name).where(PROJECTS.c.id == world.zeus),
            "update": update(PROJECTS).values(name="pwned"),
            "delete": delete(TASKS),
            "alias": select(ALIAS).where(ALIAS.c.id > 0),
        },
    )


def test_core_writes_naming_another_tenants_rows_change_nothing(tenancy, session_for, world):
    before = snapshot(tenancy)

    with session_for(ACME) as session:
        deleted = session.execute(delete(TASKS).where(TASKS.c.id == world.secret_plan))
        updated = session.execute(
            update(PROJECTS).where(PROJECTS.c.id == world.zeus).values(name="x")
        )
        with pytest.raises(CrossTenantWrite):
            session.execute(insert(PROJECTS).values(name="x", tenant_id=GLOBEX))
        session.commit()

    assert (deleted.rowcount, updated.rowcount) == (0, 0)
    assert snapshot(tenancy) == before


def test_core_writes_proven_to_be_the_tenants_run(tenancy, session_for, world):
    with session_for(ACME) as session:
        session.execute(insert(PROJECTS).values(name="core", tenant_id=ACME))
        session.execute(update(TASKS).where(TASKS.c.id == world.design).values(name="core-design"))
        session.execute(delete(TASKS).where(TASKS.c.id == world.build))
        session.commit()

    acme = owned_by(snapshot(tenancy)[Project], ACME)
    assert {row["name"] for row in acme} == {"apollo", "core"}
    tasks = {row["name"] for row in owned_by(snapshot(tenancy)[Task], ACME)}
    assert tasks == {"core-design", "leak-probe"}


def test_orm_selects_mixing_in_a_core_tenant_table_are_refused_before_any_sql(
    tenancy, session_for, world
):
    on_project = Task.project_id == PROJECTS.c.id
    with warnings.catch_warnings():
        # select_from(PROJECTS) beside Task's own FROM is a cartesian product by construction
        warnings.simplefilter("ignore", SAWarning)
        assert_refused_before_any_sql(
            tenancy,
            session_for,
            {
                "join": select(Task).join(PROJECTS, on_project),
                "core column": select(Task.name, PROJECTS.c.name).join_from(
                    Task, PROJECTS, on_project
                ),
                "select_from": select(Task.name).select_from(PROJECTS),
            },
        )


def test_textual_sql_is_refused_before_any_sql(tenancy, session_for, world):
    assert_refused_before_any_sql(
        tenancy,
        session_for,
        {
            "text": text("SELECT name FROM scoping_project"),
            "text in where": select(Project).where(text("1 = 1")),
            "from_statement": select(Project).from_statement(text("SELECT * FROM scoping_project")),
            "table()": select(column("name")).select_from(table("scoping_project", column("name"))),
        },
    )


def test_raw_connection_of_a_tenant_session_is_refused(tenancy, session_for, world):
    with session_for(ACME) as session, pytest.raises(UnscopedStatement):
        session.connection()


def test_core_statements_on_tables_without_tenant_still_work(tenancy, session_for, plans):
    with session_for(ACME) as session:
        session.execute(insert(PLANS).values(name="team"))
        session.execute(update(PLANS).where(PLANS.c.name == "pro").values(name="business"))
        session.execute(delete(PLANS).where(PLANS.c.name == "free"))
        names = session.execute(select(PLANS.c.name).order_by(PLANS.c.id)).scalars().all()
        session.commit()

    assert names == ["business", "team"]


def test_statements_touching_no_table_still_work(tenancy, session_for, world):
    with session_for(ACME) as session:
        now = session.execute(select(func.now())).scalar()
        one = session.execute(select(literal(1))).scalar()

    assert now is not None
    assert one == 1


def test_orm_statements_on_models_without_tenant_still_work(tenancy, session_for, plans):
    with session_for(ACME) as session:
        session.add(Plan(name="team"))
        session.flush()
        names = session.execute(select(Plan.name).order_by(Plan.id)).scalars().all()

    assert names == ["free", "pro", "team"]
