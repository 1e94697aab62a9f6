"""Tenant-aware keys: a task can only ever point at a project of its own tenant.

docs/postgres-rls.md includes this file; tests/docs/test_postgres_rls_docs.py tries to point a
task at another tenant's project with raw SQL, on SQLite, PostgreSQL and MariaDB.
"""

from sqlalchemy.orm import registry
from sqlmodel import Field, Relationship, SQLModel

from fastapi_tenancy import TenantScoped, tenant_foreign_key, tenant_unique


class KeysModel(SQLModel, registry=registry()):
    """This sample's own registry, so its tables stay out of other samples' metadata."""


# --8<-- [start:models]
class Project(KeysModel, TenantScoped, table=True):
    __tablename__ = "doc_keys_project"
    __table_args__ = (tenant_unique("id"),)  # the key the reference points at
    id: int | None = Field(default=None, primary_key=True)
    name: str


class Task(KeysModel, TenantScoped, table=True):
    __tablename__ = "doc_keys_task"
    __table_args__ = (tenant_foreign_key("project_id", "doc_keys_project.id"),)
    id: int | None = Field(default=None, primary_key=True)
    name: str
    project_id: int | None = None
    project: Project | None = Relationship(
        sa_relationship_kwargs={"foreign_keys": "[Task.project_id]"}
    )


# --8<-- [end:models]
metadata = KeysModel.metadata
