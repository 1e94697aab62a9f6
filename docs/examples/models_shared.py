"""docs/models-and-scoping.md, shared rows and forgotten models: vendor defaults every tenant
reads beside its own rows, and a table with a tenant column that is deliberately not scoped.

tests/docs/test_models_shared_docs.py runs these on SQLite, PostgreSQL and MariaDB.
"""

# No "from __future__ import annotations": SQLModel resolves its fields from real annotations.

from sqlalchemy import MetaData
from sqlalchemy.orm import registry
from sqlmodel import Field, Session, SQLModel, col, select

from fastapi_tenancy import Tenancy, TenantScoped, with_tenant, without_tenant

shared_registry = registry()


class SharedDocsModel(SQLModel, registry=shared_registry):
    """Base of this sample's tables, in a registry of their own (an app inherits SQLModel)."""


metadata: MetaData = shared_registry.metadata


# --8<-- [start:shared]
class Category(SharedDocsModel, TenantScoped, table=True):
    """Categories: the vendor's defaults (no tenant) and each tenant's own."""

    __tablename__ = "shared_category"
    __shared_rows__ = True  # rows with a NULL tenant_id are read by every tenant

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=50)


# --8<-- [end:shared]


# --8<-- [start:exempt]
class LoginAudit(SharedDocsModel, table=True):
    """Every tenant's logins, read by the operators: tenant_id here is data, not a scope."""

    __tablename__ = "shared_login_audit"
    __tenancy_exempt__ = True  # without it, the kit refuses to start beside this table

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: str = Field(max_length=63, index=True)
    user: str = Field(max_length=100)


# --8<-- [end:exempt]


# --8<-- [start:use]
def seed_defaults(tenancy: Tenancy) -> None:
    """Shared rows are written by trusted code: without_tenant() or the admin switch."""
    with without_tenant(reason="vendor defaults"), tenancy.session() as session:
        session.add_all([Category(name="books"), Category(name="music")])
        session.commit()


def add_category(tenancy: Tenancy, tenant: str, name: str) -> None:
    """A tenant's own category: stamped with the tenant, like every row it writes."""
    with with_tenant(tenant), tenancy.session() as session:
        session.add(Category(name=name))
        session.commit()


def category_names(tenancy: Tenancy, tenant: str) -> list[str]:
    """The shared categories and the tenant's own; never another tenant's."""
    with with_tenant(tenant), tenancy.session() as session:
        return list(session.exec(select(Category.name).order_by(col(Category.name))).all())


def rename_category(session: Session, category_id: int, name: str) -> None:
    """Refused (CrossTenantWrite) for a shared category in a tenant session."""
    category = session.get(Category, category_id)
    if category is not None:
        category.name = name
        session.commit()


# --8<-- [end:use]
