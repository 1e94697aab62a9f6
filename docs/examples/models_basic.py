"""Models of docs/models-and-scoping.md: tenant models, a relationship, per-tenant keys.

The tables live in a registry of their own (``metadata`` below), so they never mix with other
SQLModel tables in the same process; an application would usually inherit ``SQLModel`` itself.
"""

# No "from __future__ import annotations": SQLModel resolves relationships from real annotations.

from sqlalchemy import MetaData
from sqlalchemy.orm import registry
from sqlmodel import Field, Relationship, SQLModel

from fastapi_tenancy import TenantKey, TenantScoped, tenant_foreign_key, tenant_unique

models_registry = registry()


class DocsModel(SQLModel, registry=models_registry):
    """Base of this page's tables."""


metadata: MetaData = models_registry.metadata


# --8<-- [start:plain]
class Plan(DocsModel, table=True):
    """Shared reference data: no tenant column, so never scoped."""

    __tablename__ = "models_plan"

    code: str = Field(primary_key=True, max_length=20)
    name: str = Field(max_length=50)


# --8<-- [end:plain]


# --8<-- [start:project]
class Project(DocsModel, TenantScoped, table=True):
    __tablename__ = "models_project"
    __table_args__ = (
        tenant_unique("name"),  # UNIQUE (tenant_id, name): one "roadmap" per tenant
        tenant_unique("id"),  # UNIQUE (tenant_id, id): what the tasks' foreign key points at
    )

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100)

    tasks: list["Task"] = Relationship(
        back_populates="project", sa_relationship_kwargs={"foreign_keys": "[Task.project_id]"}
    )


# --8<-- [end:project]


# --8<-- [start:task]
class Task(DocsModel, TenantScoped, table=True):
    __tablename__ = "models_task"
    # FOREIGN KEY (tenant_id, project_id) REFERENCES models_project (tenant_id, id)
    __table_args__ = (tenant_foreign_key("project_id", "models_project.id"),)

    id: int | None = Field(default=None, primary_key=True)
    title: str = Field(max_length=200)
    done: bool = False
    project_id: int

    project: Project | None = Relationship(
        back_populates="tasks", sa_relationship_kwargs={"foreign_keys": "[Task.project_id]"}
    )


# --8<-- [end:task]


# --8<-- [start:global]
class Template(DocsModel, TenantScoped, table=True):
    """Each tenant publishes its own templates; everyone may browse all of them."""

    __tablename__ = "models_template"
    __global_access__ = True

    id: int | None = Field(default=None, primary_key=True)
    title: str = Field(max_length=100)


# --8<-- [end:global]


# --8<-- [start:custom_column]
class Invoice(DocsModel, TenantScoped, table=True):
    """A table whose tenant column is called ``org_id`` in the database."""

    __tablename__ = "models_invoice"
    __table_args__ = (tenant_unique("number", tenant_column="org_id"),)

    id: int | None = Field(default=None, primary_key=True)
    tenant_id: str = Field(
        sa_type=TenantKey, index=True, max_length=63, sa_column_kwargs={"name": "org_id"}
    )
    number: str = Field(max_length=20)


# --8<-- [end:custom_column]
