"""The tables the PostgreSQL wall is tested on: two tenants' projects and tasks.

The tenant keys are strings unless ``TENANCY_KEY_TYPE`` is ``int`` or ``uuid``: CI runs the
whole folder once per key type, with the tenants ``ACME``, ``GLOBEX`` and ``INITECH`` spelled
in that type (as tests/scoping does). The models live in a registry of their own, so their
names cannot clash with other tests' tables. Tasks reference projects through a tenant-aware
foreign key; templates are declared global-access; ``rls_badge`` is a core table whose tenant
column is a ``uuid`` whatever the run's key type, to test the cast path of the policies (its
tenants are ``ACME_ORG`` and ``GLOBEX_ORG``)."""

# No "from __future__ import annotations": SQLModel resolves relationships from real annotations.

import uuid
from typing import Any

from key_types import ACME, GLOBEX, INITECH, KEY_TYPE, Keyed  # noqa: F401 (re-exported)
from sqlalchemy import Column, Integer, MetaData, String, Table, Uuid
from sqlalchemy.orm import registry
from sqlalchemy.types import TypeEngine
from sqlmodel import Field, Relationship, SQLModel

from fastapi_tenancy import tenant_foreign_key, tenant_unique
from fastapi_tenancy.models import TENANT_TABLE_INFO_KEY

KEY_SQL_TYPE: str = {str: "text", int: "integer", uuid.UUID: "uuid"}[KEY_TYPE]
"""The SQL type of the tenant column of tables written by hand in raw DDL."""

KEY_CAST_TYPE: TypeEngine[Any] | None = {str: None, int: Integer(), uuid.UUID: Uuid()}[KEY_TYPE]
"""``TenantTable(..., tenant_type=KEY_CAST_TYPE)`` for such a table: what the setting is cast
to (``None``: a text column compares with the setting as it is)."""

rls_registry = registry()
metadata = rls_registry.metadata


class RLSModel(SQLModel, registry=rls_registry):
    """Base of this folder's tables: their own registry and metadata."""


class Project(RLSModel, Keyed, table=True):
    __tablename__ = "rls_project"
    __table_args__ = (
        tenant_unique("id", name="uq_rls_project_tenant_id"),
        tenant_unique("name", name="uq_rls_project_tenant_name"),
    )

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=50)

    tasks: list["Task"] = Relationship(
        back_populates="project", sa_relationship_kwargs={"foreign_keys": "[Task.project_id]"}
    )


class Task(RLSModel, Keyed, table=True):
    __tablename__ = "rls_task"
    __table_args__ = (tenant_foreign_key("project_id", "rls_project.id", name="fk_rls_task"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=50)
    project_id: int | None = None

    project: Project | None = Relationship(
        back_populates="tasks", sa_relationship_kwargs={"foreign_keys": "[Task.project_id]"}
    )


class Template(RLSModel, Keyed, table=True):
    """Declared global-access: the global switch may read it across tenants."""

    __tablename__ = "rls_template"
    __global_access__ = True

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=50)


class Plan(RLSModel, table=True):
    """Shared reference data: no tenant column, no policies."""

    __tablename__ = "rls_plan"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=50)


badge = Table(
    "rls_badge",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("org", Uuid, nullable=False, index=True),
    Column("label", String(50), nullable=False),
    info={TENANT_TABLE_INFO_KEY: "org"},
)

ACME_ORG = uuid.UUID("00000000-0000-0000-0000-00000000acfe")
GLOBEX_ORG = uuid.UUID("00000000-0000-0000-0000-0000000091be")


def scratch_metadata() -> MetaData:
    """A fresh MetaData, for tests that declare tables of their own."""
    return MetaData()
