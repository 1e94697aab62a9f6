"""docs/examples/models_shared.py on every database: shared rows and an exempt table."""

from __future__ import annotations

import pytest
from sqlalchemy import Engine
from sqlmodel import select

from docs.examples.models_shared import (
    Category,
    LoginAudit,
    add_category,
    category_names,
    metadata,
    rename_category,
    seed_defaults,
)
from fastapi_tenancy import CrossTenantWrite, HeaderResolver, Tenancy, with_tenant
from fastapi_tenancy.checks import find_forgotten_tenant_models


@pytest.fixture
def tenancy(engine: Engine, create_tables) -> Tenancy:
    create_tables(engine, metadata)
    return Tenancy(engine, resolvers=[HeaderResolver()])


def test_every_tenant_reads_the_shared_rows_and_its_own(tenancy: Tenancy) -> None:
    seed_defaults(tenancy)
    add_category(tenancy, "acme", "anvils")
    add_category(tenancy, "globex", "gadgets")

    assert category_names(tenancy, "acme") == ["anvils", "books", "music"]
    assert category_names(tenancy, "globex") == ["books", "gadgets", "music"]


def test_a_tenant_cannot_rename_a_shared_row(tenancy: Tenancy) -> None:
    seed_defaults(tenancy)
    with with_tenant("acme"), tenancy.session() as session:
        books = session.exec(select(Category).where(Category.name == "books")).one()
        with pytest.raises(CrossTenantWrite):
            rename_category(session, books.id, "mine now")  # type: ignore[arg-type]

    assert category_names(tenancy, "globex") == ["books", "music"]


def test_the_exempt_table_is_not_a_forgotten_model() -> None:
    assert LoginAudit.__tenancy_exempt__ is True
    assert find_forgotten_tenant_models(metadata) == []
