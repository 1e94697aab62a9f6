"""Hierarchical tenants (docs/policies.md): a vendor's catalogue shared down to resellers and
their customers, and a reseller reading its customers' orders.

Tenants are named by the ``X-Tenant-ID`` header here, to keep the sample short; use a verified
source (a JWT claim) in an app.
"""

# No "from __future__ import annotations": SQLModel reads the real annotations.

from fastapi import FastAPI, HTTPException
from sqlalchemy import Engine, MetaData
from sqlalchemy.orm import registry
from sqlmodel import Field, Session, SQLModel, col, select

from fastapi_tenancy import (
    HeaderResolver,
    Tenancy,
    TenantHierarchy,
    TenantKey,
    TenantRecord,
    TenantRegistry,
    TenantScoped,
    TenantSession,
)

hierarchy_registry = registry()


class HierarchyModel(SQLModel, registry=hierarchy_registry):
    """Base of this sample's tables: a registry of their own."""


metadata: MetaData = hierarchy_registry.metadata


# --8<-- [start:models]
class Organization(HierarchyModel, TenantRecord, table=True):
    """The tenants: a vendor, its resellers, their customers."""

    __tablename__ = "hierarchy_organization"

    parent_slug: str | None = Field(default=None, sa_type=TenantKey, max_length=63)


class CatalogItem(HierarchyModel, TenantScoped, table=True):
    """A tenant reads its own items and its ancestors' (the vendor's, its reseller's)."""

    __tablename__ = "hierarchy_catalog_item"
    __tenant_reads__ = "ancestors"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100)


class Order(HierarchyModel, TenantScoped, table=True):
    """A tenant reads its own orders and its descendants' (a reseller, its customers')."""

    __tablename__ = "hierarchy_order"
    __tenant_reads__ = "descendants"

    id: int | None = Field(default=None, primary_key=True)
    item: str = Field(max_length=100)


# --8<-- [end:models]


class ItemIn(SQLModel):
    name: str


def create_app(engine: Engine) -> FastAPI:
    # --8<-- [start:tenancy]
    def children(slug: str) -> list[str]:
        with Session(engine) as session:
            query = select(Organization.slug).where(Organization.parent_slug == slug)
            return list(session.exec(query).all())

    tenancy = Tenancy(
        engine,
        resolvers=[HeaderResolver()],
        registry=TenantRegistry(Organization),
        hierarchy=TenantHierarchy(parent="parent_slug", children=children, max_depth=4),
    )
    # --8<-- [end:tenancy]
    app = FastAPI()
    tenancy.install(app)

    # --8<-- [start:routes]
    @app.get("/catalog")
    def catalog(session: TenantSession) -> list[CatalogItem]:
        return list(session.exec(select(CatalogItem).order_by(col(CatalogItem.id))).all())

    @app.post("/catalog", status_code=201)
    def add_item(body: ItemIn, session: TenantSession) -> CatalogItem:
        item = CatalogItem(name=body.name)  # stamped with the bound tenant, never a parent
        session.add(item)
        session.commit()
        return item

    @app.patch("/catalog/{item_id}")
    def rename_item(item_id: int, body: ItemIn, session: TenantSession) -> CatalogItem:
        item = session.get(CatalogItem, item_id)  # a parent's item is read...
        if item is None:
            raise HTTPException(404, "No such item.")
        item.name = body.name
        session.commit()  # ...but not written: 403 cross_tenant_write
        return item

    @app.get("/orders")
    def orders(session: TenantSession) -> list[Order]:
        return list(session.exec(select(Order).order_by(col(Order.id))).all())

    # --8<-- [end:routes]

    return app
