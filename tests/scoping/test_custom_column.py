"""A model storing its tenant in a column named ``org_id`` is scoped the same way."""

from __future__ import annotations

import pytest
from models import ACME, GLOBEX, Note, capture_sql, owned_by, rows_of, snapshot
from sqlalchemy import delete, insert, select, update

from fastapi_tenancy import AlreadyExists, CrossTenantWrite


def test_reads_of_another_tenants_rows_filter_on_the_custom_column(tenancy, session_for, notes):
    with session_for(ACME) as session, capture_sql(tenancy.engine) as sent:
        titles = session.execute(select(Note.title)).scalars().all()
        other = session.get(Note, notes.globex)

    assert titles == ["acme-note"]
    assert other is None
    assert all("org_id" in statement for statement in sent)


def test_bulk_writes_reach_only_the_tenants_rows(tenancy, session_for, notes):
    before = snapshot(tenancy, Note)

    with session_for(ACME) as session:
        updated = session.execute(update(Note).values(title="renamed"))
        deleted = session.execute(delete(Note).where(Note.id == notes.globex))
        session.commit()

    after = snapshot(tenancy, Note)
    assert (updated.rowcount, deleted.rowcount) == (1, 0)
    assert owned_by(after[Note], GLOBEX) == owned_by(before[Note], GLOBEX)


def test_new_rows_are_stamped_in_the_custom_column(tenancy, session_for, notes):
    with session_for(ACME) as session:
        session.add(Note(title="added"))
        session.execute(insert(Note).values(title="inserted"))
        session.execute(insert(Note), [{"title": "bulk"}])
        session.commit()

    assert {n.title for n in rows_of(tenancy, Note, ACME).values()} == {
        "acme-note",
        "added",
        "inserted",
        "bulk",
    }


def test_writes_naming_another_tenant_are_refused(tenancy, session_for, notes):
    before = snapshot(tenancy, Note)

    with session_for(ACME) as session:
        with pytest.raises(CrossTenantWrite):
            session.execute(insert(Note).values(title="x", tenant_id=GLOBEX))
        with pytest.raises(CrossTenantWrite):
            session.execute(insert(Note), [{"title": "x", "tenant_id": GLOBEX}])
        with pytest.raises(CrossTenantWrite):
            session.execute(update(Note).values(tenant_id=GLOBEX))
        with pytest.raises(CrossTenantWrite):
            session.add(Note(title="x", tenant_id=GLOBEX))
        session.rollback()
        session.get(Note, notes.acme).tenant_id = GLOBEX
        with pytest.raises(CrossTenantWrite):
            session.flush()

    assert snapshot(tenancy, Note) == before


def test_unique_per_tenant_on_the_custom_column(tenancy, session_for, notes):
    with session_for(GLOBEX) as session:
        session.add(Note(title="acme-note"))
        session.commit()

    with session_for(ACME) as session:
        session.add(Note(title="acme-note"))
        with pytest.raises(AlreadyExists):
            session.flush()
