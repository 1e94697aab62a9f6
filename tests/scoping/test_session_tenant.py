"""A session belongs to the tenant it was made for: used under another one, it refuses.

Otherwise code running for globex could be handed acme's identity map and read acme's
objects without any SQL at all.
"""

from __future__ import annotations

import pytest
from models import ACME, GLOBEX, Project, capture_sql, snapshot
from sqlalchemy import select, update

from fastapi_tenancy import SessionTenantMismatch, with_tenant


def test_execute_under_another_tenant_is_refused_before_any_sql(tenancy, session_for, world):
    with (
        session_for(ACME) as session,
        with_tenant(GLOBEX),
        capture_sql(tenancy.engine) as sent,
    ):
        with pytest.raises(SessionTenantMismatch):
            session.execute(select(Project))
        with pytest.raises(SessionTenantMismatch):
            session.execute(update(Project).values(name="x"))

    assert sent == []


def test_get_under_another_tenant_is_refused_even_from_the_identity_map(
    tenancy, session_for, world
):
    with session_for(ACME) as session:
        apollo = session.get(Project, world.apollo)
        assert apollo is not None
        with with_tenant(GLOBEX), capture_sql(tenancy.engine) as sent:
            with pytest.raises(SessionTenantMismatch):
                session.get(Project, world.apollo)
            with pytest.raises(SessionTenantMismatch):
                session.get_one(Project, world.apollo)
            with pytest.raises(SessionTenantMismatch):
                session.merge(apollo)

    assert sent == []


def test_flush_under_another_tenant_is_refused_before_any_sql(tenancy, session_for, world):
    before = snapshot(tenancy)

    with session_for(ACME) as session:
        session.get(Project, world.apollo).name = "renamed-by-globex"
        with (
            with_tenant(GLOBEX),
            capture_sql(tenancy.engine) as sent,
            pytest.raises(SessionTenantMismatch),
        ):
            session.flush()

    assert sent == []
    assert snapshot(tenancy) == before


def test_session_under_its_own_tenant_works(session_for, world):
    with session_for(ACME) as session, with_tenant(ACME):
        assert session.get(Project, world.apollo) is not None
