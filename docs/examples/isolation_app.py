"""Isolation strategies (docs/isolation.md): contracts kept in each tenant's own place, as its
record says; plans shared by everyone.

Tenants are rows of ``strategies_organization``; the ``isolation`` column says where each one's
contracts are: ``shared`` (the default), ``schema`` or ``database``.
"""

# No "from __future__ import annotations": SQLModel reads the real annotations.

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from pydantic import BaseModel
from sqlalchemy import Engine
from sqlalchemy.engine import URL
from sqlalchemy.orm import registry
from sqlmodel import Field, Relationship, SQLModel, col, select

from fastapi_tenancy import (
    TENANT_SCHEMA,
    HeaderResolver,
    Isolation,
    Tenancy,
    TenantRecord,
    TenantRegistry,
    TenantScoped,
    TenantSession,
)

strategies_registry = registry()


class StrategiesModel(SQLModel, registry=strategies_registry):
    """This page's tables (a registry of their own, beside the other pages')."""


# --8<-- [start:models]
class Organization(StrategiesModel, TenantRecord, table=True):
    """The tenants table: where each tenant's rows are is a column of its record."""

    __tablename__ = "strategies_organization"

    name: str = Field(default="", max_length=100)
    isolation: str = Field(default="shared", max_length=20)


class Plan(StrategiesModel, table=True):
    """Shared by every tenant: no tenant column, no placeholder schema."""

    __tablename__ = "strategies_plan"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=50)


class Contract(StrategiesModel, TenantScoped, table=True):
    """In each tenant's own place: declared in the placeholder schema."""

    __tablename__ = "strategies_contract"
    __table_args__ = {"schema": TENANT_SCHEMA}

    id: int | None = Field(default=None, primary_key=True)
    title: str = Field(max_length=100)

    signatures: list["Signature"] = Relationship(back_populates="contract")


class Signature(StrategiesModel, TenantScoped, table=True):
    __tablename__ = "strategies_signature"
    __table_args__ = {"schema": TENANT_SCHEMA}

    id: int | None = Field(default=None, primary_key=True)
    signer: str = Field(max_length=100)
    contract_id: int = Field(foreign_key=f"{TENANT_SCHEMA}.strategies_contract.id")

    contract: Contract | None = Relationship(back_populates="signatures")
    # --8<-- [end:models]


class ContractIn(BaseModel):
    title: str


# --8<-- [start:tenancy]
def make_tenancy(
    engine: Engine,
    *,
    schema_prefix: str = "tenant_",
    database_url: Callable[[str, Any], URL | str] | None = None,
) -> Tenancy:
    """Each tenant where its record's ``isolation`` says; a database tenant at
    ``database_url(key, record)``."""
    return Tenancy(
        engine,
        resolvers=[HeaderResolver()],
        registry=TenantRegistry(Organization),
        isolation=Isolation(
            field="isolation", schema_prefix=schema_prefix, database_url=database_url
        ),
    )
    # --8<-- [end:tenancy]


# --8<-- [start:app]
def create_app(tenancy: Tenancy) -> FastAPI:
    """The same routes as for shared tables: the session is placed, the route does not know."""
    app = FastAPI()
    tenancy.install(app)

    @app.get("/contracts")
    def list_contracts(session: TenantSession) -> list[Contract]:
        return list(session.exec(select(Contract).order_by(col(Contract.id))))

    @app.post("/contracts", status_code=201)
    def create_contract(body: ContractIn, session: TenantSession) -> Contract:
        contract = Contract(title=body.title)
        session.add(contract)
        session.commit()
        return contract

    @app.get("/plans")
    def list_plans(session: TenantSession) -> list[Plan]:
        return list(session.exec(select(Plan)))

    return app
    # --8<-- [end:app]
