"""Tables of the isolation tests: two tenant tables in the tenant schema placeholder (a document
and its comments, linked by a foreign key), a tenant table every tenant keeps in the shared
tables, and shared reference data. Their own registry and metadata keep them apart from other
tests' tables."""

# No "from __future__ import annotations": SQLModel resolves relationships from real annotations.

from sqlalchemy.orm import registry
from sqlmodel import Field, Relationship, SQLModel

from fastapi_tenancy import TenantRecord, TenantScoped
from fastapi_tenancy.isolation import TENANT_SCHEMA

isolation_registry = registry()


class IsolationModel(SQLModel, registry=isolation_registry):
    """Base of this folder's tables."""


class Doc(IsolationModel, TenantScoped, table=True):
    """Kept in each tenant's own place."""

    __tablename__ = "iso_doc"
    __table_args__ = {"schema": TENANT_SCHEMA}

    id: int | None = Field(default=None, primary_key=True)
    title: str = Field(max_length=50)

    comments: list["Comment"] = Relationship(back_populates="doc")


class Comment(IsolationModel, TenantScoped, table=True):
    """Kept in each tenant's own place, beside its document."""

    __tablename__ = "iso_comment"
    __table_args__ = {"schema": TENANT_SCHEMA}

    id: int | None = Field(default=None, primary_key=True)
    body: str = Field(max_length=50)
    doc_id: int | None = Field(default=None, foreign_key=f"{TENANT_SCHEMA}.iso_doc.id")

    doc: Doc | None = Relationship(back_populates="comments")


class Member(IsolationModel, TenantScoped, table=True):
    """A tenant table outside the placeholder: every tenant's rows stay in the shared tables."""

    __tablename__ = "iso_member"

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=50)


class Plan(IsolationModel, table=True):
    """Shared reference data."""

    __tablename__ = "iso_plan"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=50)


class Organization(IsolationModel, TenantRecord, table=True):
    """The tenants table: each tenant's record says where its rows are."""

    __tablename__ = "iso_organization"

    isolation: str = Field(default="shared", max_length=20)

    @property
    def __tenant_key__(self) -> str:
        return self.slug


PLACED = (Doc.__table__, Comment.__table__)
SHARED = (Member.__table__, Plan.__table__, Organization.__table__)
