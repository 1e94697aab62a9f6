"""A model with a tenant column that forgets to be a tenant model is refused at start.

Such a model is never scoped: a tenant session would read and write every tenant's rows of it.
``Tenancy.install()`` and the first session refuse to start while one is mapped beside tenant
models; ``__tenancy_exempt__ = True`` marks a table every tenant shares on purpose. Each test
maps its models in a registry of its own and disposes it, so no other test sees them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, create_engine, select
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel

from fastapi_tenancy import (
    Access,
    HeaderResolver,
    SessionScope,
    Tenancy,
    TenancyMisuse,
    TenantScoped,
    tenant_field,
    with_tenant,
)
from fastapi_tenancy.checks import find_forgotten_tenant_models


@pytest.fixture
def models() -> Iterator[registry]:
    own = registry()
    try:
        yield own
    finally:
        own.dispose()


@pytest.fixture
def sqlite() -> Iterator[Engine]:
    engine = create_engine("sqlite://")
    try:
        yield engine
    finally:
        engine.dispose()


def define(own: registry, *, exempt: bool = False) -> tuple[Any, Any]:
    class Base(SQLModel, registry=own):
        pass

    class Order(Base, TenantScoped, table=True):
        __tablename__ = "forgotten_order"
        id: int | None = Field(default=None, primary_key=True)

    class Receipt(Base, table=True):  # a tenant_id of its own, but not a tenant model
        __tablename__ = "forgotten_receipt"
        __tenancy_exempt__ = exempt
        id: int | None = Field(default=None, primary_key=True)
        tenant_id: str = Field(max_length=63)
        total: int = 0

    return Order, Receipt


def test_a_tenant_session_beside_a_forgotten_model_is_refused(models, sqlite):
    """The attack: a tenant session reading the forgotten model would get both tenants'
    receipts, as ORM scoping never touches a table it does not know; no session is made."""
    _order, receipt = define(models)
    models.metadata.create_all(sqlite)
    with sqlite.begin() as conn:
        conn.execute(receipt.__table__.insert(), [{"tenant_id": "acme"}, {"tenant_id": "globex"}])
    tenancy = Tenancy(sqlite, resolvers=[HeaderResolver()])
    with pytest.raises(TenancyMisuse, match="Receipt"), with_tenant("acme"):
        tenancy.session()


def test_install_refuses_to_start_and_names_the_fix(models, sqlite):
    _order, _receipt = define(models)  # held: unreferenced classes vanish at the next gc
    tenancy = Tenancy(sqlite, resolvers=[HeaderResolver()])
    with pytest.raises(TenancyMisuse) as refused:
        tenancy.install(FastAPI())
    message = str(refused.value)
    assert "tenant_model_forgotten: Receipt (table forgotten_receipt)" in message
    assert "__tenancy_exempt__ = True" in message
    assert "class Receipt(TenantScoped, table=True)" in message


def test_the_first_session_refuses_for_scripts_without_install(models, sqlite):
    _order, _receipt = define(models)  # held: unreferenced classes vanish at the next gc
    tenancy = Tenancy(sqlite, resolvers=[HeaderResolver()])
    for _ in range(2):  # refused every time, not only once
        with pytest.raises(TenancyMisuse, match="Receipt"):
            tenancy.make_session(SessionScope("acme"))


def test_an_exempt_table_is_shared_on_purpose(models, sqlite):
    _order, receipt = define(models, exempt=True)
    models.metadata.create_all(sqlite)
    tenancy = Tenancy(sqlite, resolvers=[HeaderResolver()])
    tenancy.install(FastAPI())
    assert find_forgotten_tenant_models(models.metadata) == []
    with tenancy.make_session(SessionScope(None, Access.UNSCOPED)) as session:
        assert session.execute(select(receipt)).all() == []


def test_a_column_named_like_a_custom_tenant_column_is_found(models):
    class Base(SQLModel, registry=models):
        pass

    class Ledger(Base, TenantScoped, table=True):
        __tablename__ = "forgotten_ledger"
        id: int | None = Field(default=None, primary_key=True)
        tenant_id: str = tenant_field(column_name="workspace_id")

    class Entry(Base, table=True):
        __tablename__ = "forgotten_entry"
        id: int | None = Field(default=None, primary_key=True)
        workspace_id: str = Field(max_length=63)

    findings = find_forgotten_tenant_models(models.metadata)
    assert [(f.code, f.subject) for f in findings] == [
        ("tenant_model_forgotten", "Entry (table forgotten_entry)")
    ]


def test_other_registries_and_plain_tables_are_not_checked(models, sqlite):
    class Base(SQLModel, registry=models):
        pass

    class Loose(Base, table=True):  # no tenant model in its registry: another app's tables
        __tablename__ = "forgotten_loose"
        id: int | None = Field(default=None, primary_key=True)
        tenant_id: str = Field(max_length=63)

    assert find_forgotten_tenant_models(models.metadata) == []
    Tenancy(sqlite, resolvers=[HeaderResolver()]).install(FastAPI())


@pytest.mark.backends("postgres")
def test_the_postgres_checker_reports_a_forgotten_model_of_the_metadata(models, engine):
    from fastapi_tenancy.postgres import check_database

    _order, _receipt = define(models)  # held: unreferenced classes vanish at the next gc
    codes = {f.code for f in check_database(engine, metadata=models.metadata)}
    assert "tenant_model_forgotten" in codes
