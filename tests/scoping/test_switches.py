"""The global-access switch and unscoped sessions: what each lets through, and what not."""

from __future__ import annotations

import pytest
from models import ACME, GLOBEX, Project, Task, Template, assert_all_refused, capture_sql, snapshot
from scoping_places import UNSCOPED_READS_SHARED
from sqlalchemy import delete, insert, select, update

from fastapi_tenancy import Access, TenantRequired


def test_global_access_without_tenant_reads_global_models_across_tenants(session_for, templates):
    with session_for(None, Access.GLOBAL) as session:
        names = session.execute(select(Template.name).order_by(Template.id)).scalars().all()
        fetched = session.get(Template, templates.globex)

    assert names == ["acme-template", "globex-template"]
    assert fetched is not None


def test_global_access_without_tenant_still_fails_closed_on_other_tenant_models(
    tenancy, session_for, world, templates
):
    with session_for(None, Access.GLOBAL) as session, capture_sql(tenancy.engine) as sent:
        with pytest.raises(TenantRequired):
            session.execute(select(Project))
        with pytest.raises(TenantRequired):
            session.get(Task, world.secret_plan)
        with pytest.raises(TenantRequired):
            session.execute(select(Template.name).join(Task, Task.id == Template.id))

    assert sent == []


def test_global_access_without_tenant_refuses_bulk_writes_to_tenant_models(
    tenancy, session_for, templates
):
    before = snapshot(tenancy, Template)
    writes = {
        "insert": insert(Template).values(name="x", tenant_id=ACME),
        "update": update(Template).values(name="pwned"),
        "delete": delete(Template).where(Template.id == templates.globex),
    }

    with session_for(None, Access.GLOBAL) as session, capture_sql(tenancy.engine) as sent:
        assert_all_refused(session, TenantRequired, writes)
        session.commit()

    assert sent == []
    assert snapshot(tenancy, Template) == before


def test_global_access_without_tenant_refuses_flushing_tenant_rows(tenancy, session_for, templates):
    before = snapshot(tenancy, Template)

    with session_for(None, Access.GLOBAL) as session:
        template = session.get(Template, templates.globex)
        template.name = "pwned"
        with pytest.raises(TenantRequired):
            session.commit()
        session.rollback()

        session.delete(session.get(Template, templates.acme))
        with pytest.raises(TenantRequired):
            session.commit()
        session.rollback()

        session.add(Template(name="new", tenant_id=ACME))
        with pytest.raises(TenantRequired):
            session.commit()

    assert snapshot(tenancy, Template) == before


def test_global_access_with_a_tenant_is_scoped_as_usual(session_for, templates):
    with session_for(ACME, Access.GLOBAL) as session:
        names = session.execute(select(Template.name)).scalars().all()
        projects = session.execute(select(Project.name)).scalars().all()
        other = session.get(Template, templates.globex)

    assert names == ["acme-template"]
    assert projects == ["apollo"]
    assert other is None


@UNSCOPED_READS_SHARED
def test_unscoped_session_sees_every_tenant(session_for, world):
    with session_for(None, Access.UNSCOPED) as session:
        projects = session.execute(select(Project.name).order_by(Project.id)).scalars().all()
        apollo = session.get(Project, world.apollo)
        task_names = {t.name for t in apollo.tasks}

    assert projects == ["apollo", "zeus", "hermes"]
    assert task_names == {"design", "build", "planted"}


def test_unscoped_session_refuses_a_new_tenant_row_without_a_tenant(tenancy, session_for, world):
    before = snapshot(tenancy)
    with session_for(None, Access.UNSCOPED) as session, capture_sql(tenancy.engine) as sent:
        session.add(Project(name="nobody's"))
        with pytest.raises(TenantRequired, match="needs its tenant_id"):
            session.flush()
    assert not any(statement.lstrip().upper().startswith("INSERT") for statement in sent)
    assert snapshot(tenancy) == before


@UNSCOPED_READS_SHARED
def test_unscoped_session_writes_a_new_row_that_names_its_tenant(tenancy, session_for, world):
    with session_for(None, Access.UNSCOPED) as session:
        session.add(Project(name="hera", tenant_id=GLOBEX))
        session.commit()
    with session_for(GLOBEX) as session:
        names = session.execute(select(Project.name)).scalars().all()
    assert "hera" in names
