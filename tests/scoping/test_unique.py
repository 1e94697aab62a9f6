"""Unique constraints per tenant: no error that tells one tenant about another's rows."""

from __future__ import annotations

import pytest
from models import ACME, GLOBEX, Project, rows_of
from sqlalchemy import insert, select

from fastapi_tenancy import AlreadyExists


def test_another_tenant_may_reuse_a_name_without_learning_it_exists(tenancy, session_for, world):
    with session_for(GLOBEX) as session:
        session.add(Project(name="apollo"))
        session.commit()

    assert {p.name for p in rows_of(tenancy, Project, GLOBEX).values()} == {
        "zeus",
        "hermes",
        "apollo",
    }
    assert [p.name for p in rows_of(tenancy, Project, ACME).values()] == ["apollo"]


def test_duplicate_within_the_tenant_raises_already_exists_on_flush(tenancy, session_for, world):
    with session_for(ACME) as session:
        session.add(Project(name="apollo"))
        with pytest.raises(AlreadyExists) as raised:
            session.flush()
        session.rollback()

        # The session is usable again after the rollback.
        session.add(Project(name="apollo-2"))
        session.commit()
        names = session.execute(select(Project.name).order_by(Project.id)).scalars().all()

    assert (raised.value.code, raised.value.status_code) == ("already_exists", 409)
    assert names == ["apollo", "apollo-2"]


def test_duplicate_within_the_tenant_raises_already_exists_on_insert(tenancy, session_for, world):
    with session_for(ACME) as session:
        with pytest.raises(AlreadyExists) as raised:
            session.execute(insert(Project).values(name="apollo"))
        session.rollback()
        session.execute(insert(Project).values(name="apollo-2"))
        session.commit()

    assert raised.value.code == "already_exists"
    assert {p.name for p in rows_of(tenancy, Project, ACME).values()} == {
        "apollo",
        "apollo-2",
    }


def test_duplicate_within_the_tenant_raises_already_exists_through_exec(
    tenancy, session_for, world
):
    # SQLModel's own Session.exec() is the API its users call for every statement.
    with session_for(ACME) as session, pytest.raises(AlreadyExists):
        session.exec(insert(Project).values(name="apollo"))
