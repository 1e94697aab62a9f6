"""The policies of a ``__shared_rows__`` model: every tenant reads the rows with a NULL tenant
beside its own, and none may write them, in raw SQL with the ORM scoping off.

Sessions come from ``wall(tenant)`` (see conftest.py): whatever refuses here is PostgreSQL.
"""

from __future__ import annotations

import pytest
from rls_models import ACME, GLOBEX, Keyed
from rls_support import as_owner
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from fastapi_tenancy.postgres import apply_rls

pytestmark = pytest.mark.backends("postgres")

shared_registry = registry()


class SharedModel(SQLModel, registry=shared_registry):
    """This module's tables: a registry of their own."""


class Category(SharedModel, Keyed, table=True):
    __tablename__ = "rls_category"
    __shared_rows__ = True

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=50)


@pytest.fixture
def categories(owner, world) -> None:
    with as_owner(owner) as conn:
        shared_registry.metadata.create_all(conn)
        tables = apply_rls(conn, shared_registry.metadata)
        assert [(t.name, t.shared_rows) for t in tables] == [("rls_category", True)]
        conn.execute(
            text(
                "INSERT INTO rls_category (tenant_id, name) VALUES "
                "(NULL, 'default'), (:acme, 'acme-cat'), (:globex, 'globex-cat')"
            ),
            {"acme": ACME, "globex": GLOBEX},
        )


def names(session) -> list[str]:
    return sorted(session.execute(text("SELECT name FROM rls_category")).scalars())


def test_a_tenant_reads_its_rows_and_the_shared_ones_in_raw_sql(wall, categories):
    with wall(ACME) as session:
        assert names(session) == ["acme-cat", "default"]
    with wall(GLOBEX) as session:
        assert names(session) == ["default", "globex-cat"]
    with wall(None) as session:
        assert names(session) == ["default"]


def test_raw_updates_and_deletes_of_shared_rows_reach_nothing(wall, owner, categories):
    with wall(ACME) as session:
        renamed = session.execute(text("UPDATE rls_category SET name = 'pwned'"))
        deleted = session.execute(text("DELETE FROM rls_category WHERE tenant_id IS NULL"))
        session.commit()

    assert (renamed.rowcount, deleted.rowcount) == (1, 0)
    with as_owner(owner) as conn:
        rows = conn.execute(text("SELECT name FROM rls_category ORDER BY id")).scalars().all()
    assert rows == ["default", "pwned", "globex-cat"]


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO rls_category (tenant_id, name) VALUES (NULL, 'disguised')",
        "UPDATE rls_category SET tenant_id = NULL WHERE name = 'acme-cat'",
    ],
)
def test_a_tenant_cannot_make_a_shared_row_in_raw_sql(wall, categories, statement):
    with wall(ACME) as session, pytest.raises(DBAPIError) as refused:
        session.execute(text(statement))
    assert getattr(refused.value.orig, "sqlstate", None) == "42501"  # row-level security
