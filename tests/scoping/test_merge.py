"""Attacks that bring another tenant's row into acme's session without reading it.

``merge(load=False)`` and ``add()`` of a detached object skip the scoped SELECT, so the kit
must prove on flush that the row is acme's before it writes an UPDATE or DELETE by primary key.
"""

from __future__ import annotations

import pytest
from models import ACME, GLOBEX, Project, Task, detached_row, owned_by, snapshot
from scoping_places import PLACED
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.orm import make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.orm.exc import ObjectDeletedError

from fastapi_tenancy import AlreadyExists, CrossTenantWrite


def detached_zeus(tenancy, world, *, disguise: bool) -> Project:
    """globex's zeus, loaded unscoped and detached; disguised as acme's if asked."""
    zeus = detached_row(tenancy, Project, world.zeus)
    if disguise:
        set_committed_value(zeus, "tenant_id", ACME)
    return zeus


def test_merge_with_load_of_another_tenants_key_does_not_update_it(tenancy, session_for, world):
    before = snapshot(tenancy)

    with session_for(ACME) as session:
        merged = session.merge(Project(id=world.zeus, name="pwned", tenant_id=ACME))
        # The scoped load found nothing: the merged object is a new row, not globex's zeus...
        assert merged in session.new
        if PLACED:  # zeus's key is free in acme's own place: acme gets a row of its own there
            session.commit()
        else:  # ...and inserting it collides with zeus's key without touching zeus.
            with pytest.raises(AlreadyExists):
                session.commit()

    after = snapshot(tenancy)
    for model in (Project, Task):
        assert owned_by(after[model], GLOBEX) == owned_by(before[model], GLOBEX)
    if not PLACED:
        assert after == before


def test_merge_with_load_naming_another_tenant_is_refused(tenancy, session_for, world):
    before = snapshot(tenancy)

    with session_for(ACME) as session:
        with pytest.raises(CrossTenantWrite):  # the merged copy names globex: refused at once
            session.merge(Project(id=world.zeus, name="pwned", tenant_id=GLOBEX))
        session.commit()

    assert snapshot(tenancy) == before


def test_merge_without_load_of_another_tenants_row_disguised_is_refused(
    tenancy, session_for, world
):
    before = snapshot(tenancy)
    zeus = detached_zeus(tenancy, world, disguise=True)

    with session_for(ACME) as session:
        merged = session.merge(zeus, load=False)
        merged.name = "pwned"
        with pytest.raises(CrossTenantWrite):
            session.flush()

    assert snapshot(tenancy) == before


def test_merge_without_load_of_a_transient_copy_of_another_tenants_key_is_refused(
    tenancy, session_for, world
):
    before = snapshot(tenancy)
    copy = Project(id=world.zeus, name="zeus", tenant_id=ACME)
    make_transient_to_detached(copy)

    with session_for(ACME) as session:
        merged = session.merge(copy, load=False)
        merged.name = "pwned"
        with pytest.raises(CrossTenantWrite):
            session.flush()

    assert snapshot(tenancy) == before


def test_merge_without_load_then_delete_of_another_tenants_row_is_refused(
    tenancy, session_for, world
):
    before = snapshot(tenancy)
    copy = Task(id=world.secret_plan, name="secret-plan", tenant_id=ACME)
    make_transient_to_detached(copy)

    with session_for(ACME) as session:
        session.delete(session.merge(copy, load=False))
        with pytest.raises(CrossTenantWrite):
            session.flush()

    assert snapshot(tenancy) == before


def test_merge_without_load_of_the_tenants_own_row_is_allowed(tenancy, session_for, world):
    copy = Project(id=world.apollo, name="apollo", tenant_id=ACME)
    make_transient_to_detached(copy)

    with session_for(ACME) as session:
        merged = session.merge(copy, load=False)
        merged.name = "apollo-2"
        session.commit()

    with session_for(ACME) as session:
        assert session.get(Project, world.apollo).name == "apollo-2"


def test_adding_a_detached_row_loaded_by_another_tenant_is_refused(tenancy, session_for, world):
    before = snapshot(tenancy)
    with session_for(GLOBEX) as session:
        zeus = session.get(Project, world.zeus)
        session.expunge(zeus)

    with session_for(ACME) as session:
        with pytest.raises(CrossTenantWrite):
            session.add(zeus)
        zeus.name = "pwned"
        session.flush()
        assert session.get(Project, world.zeus) is None

    assert snapshot(tenancy) == before


def test_adding_a_detached_row_of_another_tenant_disguised_is_refused(tenancy, session_for, world):
    before = snapshot(tenancy)
    zeus = detached_zeus(tenancy, world, disguise=True)

    with session_for(ACME) as session:
        session.add(zeus)
        zeus.name = "pwned"
        with pytest.raises(CrossTenantWrite):
            session.flush()

    assert snapshot(tenancy) == before


def test_deleting_a_detached_row_of_another_tenant_is_refused(tenancy, session_for, world):
    before = snapshot(tenancy)
    with session_for(GLOBEX) as session:
        secret = session.get(Task, world.secret_plan)
        session.expunge(secret)

    with session_for(ACME) as session:
        with pytest.raises(CrossTenantWrite):
            session.add(secret)
        with pytest.raises(CrossTenantWrite):
            session.delete(secret)  # delete() attaches the detached row first

    assert snapshot(tenancy) == before


# --------------------------------------------------------------------------------------------
# Reading such a row: the column load by primary key is scoped too


def planted_key(session, world) -> Project:
    """A bare key of globex's zeus, put into acme's session as if it had been loaded."""
    planted = Project(id=world.zeus)
    make_transient_to_detached(planted)  # every other attribute is expired: reads load them
    session.add(planted)
    return planted


def test_reading_an_attribute_of_a_planted_key_does_not_load_another_tenants_row(
    session_for, world
):
    with session_for(ACME) as session:
        planted = planted_key(session, world)
        with pytest.raises(ObjectDeletedError):
            _ = planted.name


def test_refreshing_a_planted_key_does_not_load_another_tenants_row(session_for, world):
    with session_for(ACME) as session:
        planted = planted_key(session, world)
        with pytest.raises(InvalidRequestError, match="Could not refresh instance"):
            session.refresh(planted)


def test_a_merged_key_without_load_does_not_read_another_tenants_row(session_for, world):
    copy = Project(id=world.zeus)
    make_transient_to_detached(copy)
    with session_for(ACME) as session:
        merged = session.merge(copy, load=False)
        with pytest.raises(ObjectDeletedError):
            _ = merged.name


def test_an_expired_own_row_reloads_as_usual(session_for, world):
    with session_for(ACME) as session:
        apollo = session.get(Project, world.apollo)
        session.expire(apollo)
        assert apollo.name == "apollo"
        session.refresh(apollo)
        assert apollo.tenant_id == ACME
