"""Attacks through the legacy bulk methods (``bulk_save_objects`` and the ``*_mappings``).

They write without the unit of work's flush and without ``do_orm_execute``, so the kit must
check them some other way, or refuse them in scoped sessions: either answer is fine, as long
as nothing reaches another tenant's rows.
"""

from __future__ import annotations

import pytest
from models import ACME, GLOBEX, Project, snapshot

from fastapi_tenancy import CrossTenantWrite, TenantRequired, UnscopedStatement

# Checking the rows (CrossTenantWrite) or refusing the method outright (UnscopedStatement).
REFUSED = (CrossTenantWrite, UnscopedStatement)


def test_bulk_save_objects_of_a_row_for_another_tenant_is_refused(tenancy, session_for, world):
    before = snapshot(tenancy)

    with session_for(ACME) as session:
        with pytest.raises(REFUSED):
            session.bulk_save_objects([Project(name="intruder", tenant_id=GLOBEX)])
        session.commit()

    assert snapshot(tenancy) == before


def test_bulk_save_objects_updating_another_tenants_detached_row_is_refused(
    tenancy, session_for, world
):
    before = snapshot(tenancy)
    with session_for(GLOBEX) as session:
        zeus = session.get(Project, world.zeus)
        session.expunge(zeus)
    zeus.name = "pwned"

    with session_for(ACME) as session:
        with pytest.raises(REFUSED):
            session.bulk_save_objects([zeus])
        session.commit()

    assert snapshot(tenancy) == before


def test_bulk_insert_mappings_for_another_tenant_is_refused(tenancy, session_for, world):
    before = snapshot(tenancy)

    with session_for(ACME) as session:
        with pytest.raises(REFUSED):
            session.bulk_insert_mappings(Project, [{"name": "intruder", "tenant_id": GLOBEX}])
        session.commit()

    assert snapshot(tenancy) == before


def test_bulk_update_mappings_of_another_tenants_row_is_refused(tenancy, session_for, world):
    before = snapshot(tenancy)

    with session_for(ACME) as session:
        with pytest.raises(REFUSED):
            session.bulk_update_mappings(Project, [{"id": world.zeus, "name": "pwned"}])
        session.commit()

    assert snapshot(tenancy) == before


def test_legacy_bulk_methods_with_no_tenant_fail_closed(tenancy, session_for, world):
    before = snapshot(tenancy)

    with session_for(None) as session:
        with pytest.raises((TenantRequired, UnscopedStatement)):
            session.bulk_insert_mappings(Project, [{"name": "orphan", "tenant_id": GLOBEX}])
        with pytest.raises((TenantRequired, UnscopedStatement)):
            session.bulk_update_mappings(Project, [{"id": world.zeus, "name": "pwned"}])
        session.commit()

    assert snapshot(tenancy) == before
