"""Attacks that move rows between tenants by changing ``tenant_id``.

Outside a ``mutable_tenant()`` block no session may move a row, not even an unscoped one;
inside it, acme may move its own rows (audited) and still cannot take globex's.
"""

from __future__ import annotations

import logging

import pytest
from models import ACME, GLOBEX, INITECH, Project, capture_sql, snapshot
from scoping_places import PLACED, ROWS_STAY_IN_PLACE, UNSCOPED_READS_SHARED
from sqlalchemy import select, update

from fastapi_tenancy import Access, CrossTenantWrite, mutable_tenant, with_tenant


def test_setting_tenant_id_of_a_loaded_row_is_refused_on_flush(tenancy, session_for, world):
    before = snapshot(tenancy)

    with session_for(ACME) as session:
        apollo = session.get(Project, world.apollo)
        apollo.tenant_id = GLOBEX
        with capture_sql(tenancy.engine) as sent, pytest.raises(CrossTenantWrite):
            session.commit()

    assert sent == []
    assert snapshot(tenancy) == before


def test_bulk_update_of_tenant_id_is_refused_before_any_sql(tenancy, session_for, world):
    before = snapshot(tenancy)

    with session_for(ACME) as session:
        with capture_sql(tenancy.engine) as sent:
            with pytest.raises(CrossTenantWrite):
                session.execute(update(Project).values(tenant_id=GLOBEX))
            with pytest.raises(CrossTenantWrite):
                session.execute(
                    update(Project).where(Project.id == world.apollo).values(tenant_id=GLOBEX)
                )
        session.commit()

    assert sent == []
    assert snapshot(tenancy) == before


@pytest.mark.skipif(not PLACED, reason="acme's rows are in the shared tables in this run")
def test_mutable_tenant_refuses_to_move_a_row_out_of_the_tenants_own_place(
    tenancy, session_for, world
):
    before = snapshot(tenancy)

    with with_tenant(ACME), mutable_tenant(reason="hand apollo over"):
        with session_for(ACME) as session:
            apollo = session.get(Project, world.apollo)
            apollo.tenant_id = GLOBEX
            with pytest.raises(CrossTenantWrite, match="own schema or database"):
                session.commit()
        with (
            session_for(ACME) as session,
            capture_sql(tenancy.engine) as sent,
            pytest.raises(CrossTenantWrite, match="own schema or database"),
        ):
            session.execute(update(Project).values(tenant_id=INITECH))
        assert sent == []

    assert snapshot(tenancy) == before


@ROWS_STAY_IN_PLACE
def test_mutable_tenant_allows_moving_the_tenants_own_row_and_audits_it(
    tenancy, session_for, world, caplog
):
    caplog.set_level(logging.INFO, logger="fastapi_tenancy.audit")

    with (
        with_tenant(ACME),
        mutable_tenant(reason="hand apollo over"),
        session_for(ACME) as session,
    ):
        apollo = session.get(Project, world.apollo)
        apollo.tenant_id = GLOBEX
        session.commit()

    moves = [r for r in caplog.records if getattr(r, "tenancy_event", None) == "tenant_moved"]
    assert [(m.tenancy_from, m.tenancy_to) for m in moves] == [(ACME, GLOBEX)]
    with session_for(GLOBEX) as session:
        assert session.get(Project, world.apollo).tenant_id == GLOBEX


@ROWS_STAY_IN_PLACE
def test_mutable_tenant_allows_a_bulk_move_of_the_tenants_own_rows(
    tenancy, session_for, world, caplog
):
    caplog.set_level(logging.INFO, logger="fastapi_tenancy.audit")

    with (
        with_tenant(ACME),
        mutable_tenant(reason="hand everything over"),
        session_for(ACME) as session,
    ):
        result = session.execute(update(Project).values(tenant_id=INITECH))
        session.commit()

    events = [getattr(r, "tenancy_event", None) for r in caplog.records]
    assert "mutable_tenant" in events
    moves = [r for r in caplog.records if getattr(r, "tenancy_event", None) == "tenant_moved"]
    assert [(m.tenancy_model, m.tenancy_from, m.tenancy_to) for m in moves] == [
        ("Project", ACME, INITECH)
    ]
    assert result.rowcount == 1
    with session_for(INITECH) as session:
        moved = session.execute(select(Project.id)).scalars().all()
    assert moved == [world.apollo]


def test_mutable_tenant_still_cannot_take_another_tenants_rows(tenancy, session_for, world):
    before = snapshot(tenancy)

    with with_tenant(ACME), mutable_tenant(reason="attack"), session_for(ACME) as session:
        assert session.get(Project, world.zeus) is None
        statement = update(Project).where(Project.id == world.zeus).values(tenant_id=ACME)
        if PLACED:  # no row of acme's own place moves at all
            with pytest.raises(CrossTenantWrite):
                session.execute(statement)
        else:
            assert session.execute(statement).rowcount == 0
        session.commit()

    assert snapshot(tenancy) == before


def test_mutable_tenant_refuses_a_detached_row_of_another_tenant(tenancy, session_for, world):
    before = snapshot(tenancy)
    with session_for(GLOBEX) as session:
        zeus = session.get(Project, world.zeus)
        session.expunge(zeus)

    with with_tenant(ACME), mutable_tenant(reason="attack"), session_for(ACME) as session:
        with pytest.raises(CrossTenantWrite):
            session.add(zeus)
        zeus.tenant_id = ACME
        session.commit()

    assert snapshot(tenancy) == before


@UNSCOPED_READS_SHARED
def test_unscoped_session_cannot_move_a_row_on_flush(tenancy, session_for, world):
    before = snapshot(tenancy)

    with session_for(None, Access.UNSCOPED) as session:
        zeus = session.get(Project, world.zeus)
        zeus.tenant_id = ACME
        with pytest.raises(CrossTenantWrite):
            session.commit()

    assert snapshot(tenancy) == before


def test_unscoped_session_cannot_move_rows_with_a_bulk_update(tenancy, session_for, world):
    before = snapshot(tenancy)

    with session_for(None, Access.UNSCOPED) as session:
        with pytest.raises(CrossTenantWrite):
            session.execute(update(Project).where(Project.id == world.zeus).values(tenant_id=ACME))
        session.commit()

    assert snapshot(tenancy) == before


@UNSCOPED_READS_SHARED
def test_unscoped_session_may_move_a_row_inside_mutable_tenant(tenancy, session_for, world):
    with mutable_tenant(reason="migration"), session_for(None, Access.UNSCOPED) as session:
        zeus = session.get(Project, world.zeus)
        zeus.tenant_id = ACME
        session.commit()

    with session_for(ACME) as session:
        assert session.get(Project, world.zeus) is not None
