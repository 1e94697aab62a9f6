"""With no tenant bound, tenant models fail closed before any SQL is sent."""

from __future__ import annotations

import pytest
from models import ACME, Plan, Project, Task, assert_all_refused, capture_sql, snapshot
from sqlalchemy import delete, func, insert, select, update

from fastapi_tenancy import TenantRequired
from fastapi_tenancy.session import TenantScopedSession


def test_statements_on_tenant_models_with_no_tenant_fail_before_any_sql(
    tenancy, session_for, world
):
    before = snapshot(tenancy)
    statements = {
        "select": select(Project),
        "select column": select(Project.name),
        "count": select(func.count()).select_from(Project),
        "join to a tenant model": select(Plan.name).join(Task, Task.id == Plan.id),
        "subquery on a tenant model": select(Plan).where(Plan.id.in_(select(Task.id))),
        "update": update(Project).values(name="x"),
        "delete": delete(Task),
        "insert": insert(Project).values(name="x", tenant_id=ACME),
    }

    with session_for(None) as session, capture_sql(tenancy.engine) as sent:
        assert_all_refused(session, TenantRequired, statements)
        session.commit()

    assert sent == []
    assert snapshot(tenancy) == before


def test_session_get_with_no_tenant_fails_before_any_sql(tenancy, session_for, world):
    with (
        session_for(None) as session,
        capture_sql(tenancy.engine) as sent,
        pytest.raises(TenantRequired),
    ):
        session.get(Project, world.apollo)

    assert sent == []


def test_flush_of_a_new_row_with_no_tenant_fails_before_any_sql(tenancy, session_for, world):
    before = snapshot(tenancy)

    with session_for(None) as session:
        session.add(Project(name="orphan", tenant_id=ACME))
        with capture_sql(tenancy.engine) as sent, pytest.raises(TenantRequired):
            session.flush()

    assert sent == []
    assert snapshot(tenancy) == before


def test_session_made_without_a_scope_fails_closed(tenancy, world):
    with (
        TenantScopedSession(tenancy.engine) as session,
        capture_sql(tenancy.engine) as sent,
        pytest.raises(TenantRequired),
    ):
        session.execute(select(Project))

    assert sent == []


def test_models_without_tenant_work_with_no_tenant(tenancy, session_for, plans):
    with session_for(None) as session:
        session.add(Plan(name="team"))
        session.commit()
        names = session.execute(select(Plan.name).order_by(Plan.id)).scalars().all()

    assert names == ["free", "pro", "team"]


def test_flush_of_a_changed_detached_row_with_no_tenant_fails_before_any_sql(
    tenancy, session_for, world
):
    before = snapshot(tenancy)
    with session_for(ACME) as session:
        apollo = session.get(Project, world.apollo)
        session.expunge(apollo)

    with session_for(None) as session:
        session.add(apollo)
        apollo.name = "pwned"
        with capture_sql(tenancy.engine) as sent, pytest.raises(TenantRequired):
            session.flush()

    assert sent == []
    assert snapshot(tenancy) == before
