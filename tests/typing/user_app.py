"""Users' code as the docs show it; tests/test_typing.py runs ``mypy --strict`` on it."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import FastAPI, HTTPException
from sqlalchemy import ColumnElement, create_engine, false
from sqlmodel import Field, SQLModel, col, select

from fastapi_tenancy import (
    HeaderResolver,
    RowPolicy,
    Tenancy,
    TenantScoped,
    TenantSession,
    tenant_field,
    with_tenant,
)


class Organization(SQLModel, table=True):
    id: uuid.UUID = Field(default_factory=uuid.uuid4, primary_key=True)
    slug: str

    @property
    def __tenant_key__(self) -> uuid.UUID:
        return self.id


class Project(TenantScoped, table=True):
    id: int | None = Field(default=None, primary_key=True)
    name: str


class OrgScoped(TenantScoped[uuid.UUID]):
    tenant_id: uuid.UUID = tenant_field(uuid.UUID, foreign_key="organization.id")


class Invoice(OrgScoped, table=True):
    id: int | None = Field(default=None, primary_key=True)
    total: int


class Counter(TenantScoped[int], table=True):
    id: int | None = Field(default=None, primary_key=True)


def live(cls: type[Document]) -> ColumnElement[bool]:
    return col(cls.archived) == false()


class Document(TenantScoped, table=True):
    __row_policies__ = (RowPolicy("live", live), RowPolicy("small", lambda cls: cls.size <= 10))

    id: int | None = Field(default=None, primary_key=True)
    archived: bool = False
    size: int = 0


engine = create_engine("sqlite://")
tenancy = Tenancy(engine, resolvers=[HeaderResolver()], key_type=uuid.UUID)
app = FastAPI()
tenancy.install(app)


@app.post("/invoices", status_code=201)
def create_invoice(body: dict[str, Any], session: TenantSession) -> Invoice:
    invoice = Invoice.model_validate(body)
    session.add(invoice)
    session.commit()
    session.refresh(invoice)
    return invoice


@app.get("/invoices/{invoice_id}")
def read_invoice(invoice_id: int, session: TenantSession) -> Invoice:
    invoice = session.get(Invoice, invoice_id)
    if invoice is None:
        raise HTTPException(404)
    return invoice


def nightly(org: Organization) -> list[Invoice]:
    project = Project(name="apollo")
    slug: str = project.tenant_id
    counter = Counter()
    number: int = counter.tenant_id
    owner: uuid.UUID = Invoice(total=3).tenant_id
    del slug, number, owner
    with with_tenant(org), tenancy.session() as session:
        return list(session.exec(select(Invoice).order_by(col(Invoice.id))).all())
