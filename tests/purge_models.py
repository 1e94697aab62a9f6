"""The world of the lifecycle tests: a tenants table, projects, tasks that reference them, and
a catalogue with rows shared by every tenant; an app serving them, and the registry's calls on
sync and async engines alike."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from http_app import build_app, client
from sqlalchemy import Engine, Table, insert, select, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel import Field, Session, SQLModel

from fastapi_tenancy import (
    HeaderResolver,
    Tenancy,
    TenantRegistry,
    TenantScoped,
    owner_field,
    tenant_foreign_key,
    tenant_unique,
)

TENANTS = ("acme", "globex", "initech")


class PurgeOrg(SQLModel, table=True):
    __tablename__ = "purge_org"

    id: int | None = Field(default=None, primary_key=True)
    slug: str = Field(unique=True, max_length=63)
    active: bool = True


class PurgeProject(TenantScoped, table=True):
    __tablename__ = "purge_project"
    __table_args__ = (tenant_unique("id"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100)


class PurgeTask(TenantScoped, table=True):
    __tablename__ = "purge_task"
    # Follows its project through a rename on every database.
    __table_args__ = (tenant_foreign_key("project_id", "purge_project.id", onupdate="CASCADE"),)

    id: int | None = Field(default=None, primary_key=True)
    project_id: int
    title: str = Field(max_length=100)


class PurgeCatalog(TenantScoped, table=True):
    """Rows with no tenant are read by every tenant: a purge must leave them."""

    __tablename__ = "purge_catalog"
    __shared_rows__ = True

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100)


class PurgeNote(TenantScoped, table=True):
    """Owner-only rows: the operations on a whole tenant move every owner's alike."""

    __tablename__ = "purge_note"

    id: int | None = Field(default=None, primary_key=True)
    owner_id: str | None = owner_field()
    body: str = Field(max_length=100)


TABLES = (PurgeOrg, PurgeProject, PurgeTask, PurgeCatalog, PurgeNote)


def dump(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table, in primary key order."""
    with Session(engine) as session:
        return {
            model.__tablename__: [
                tuple(row)
                for row in session.execute(select(table).order_by(*table.primary_key.columns)).all()
            ]
            for model in TABLES
            for table in [model.__table__]
            if isinstance(table, Table)
        }


def seed(engine: Engine) -> None:
    """Three tenants with 4 projects of 3 tasks each, a catalogue row each, 3 shared rows."""
    with engine.begin() as conn:
        conn.execute(insert(PurgeOrg), [{"slug": t} for t in TENANTS])
        conn.execute(insert(PurgeCatalog), [{"name": f"shared {i}"} for i in range(3)])
        project_id = 0
        for round_ in range(4):
            for tenant in TENANTS:
                project_id += 1
                conn.execute(
                    insert(PurgeProject),
                    [{"id": project_id, "tenant_id": tenant, "name": f"{tenant} {round_}"}],
                )
                conn.execute(
                    insert(PurgeTask),
                    [
                        {"tenant_id": tenant, "project_id": project_id, "title": f"t{i}"}
                        for i in range(3)
                    ],
                )
        conn.execute(insert(PurgeCatalog), [{"tenant_id": t, "name": t} for t in TENANTS])
        conn.execute(
            insert(PurgeNote),
            [
                {"tenant_id": t, "owner_id": owner, "body": f"{owner}'s note"}
                for t in TENANTS
                for owner in ("ann", "bob")
            ],
        )
        if conn.dialect.name == "postgresql":  # the ids above were given: move the sequence on
            conn.execute(text("SELECT setval(pg_get_serial_sequence('purge_project', 'id'), 99)"))


def without(rows: dict[str, list[tuple[Any, ...]]], tenant: str) -> dict[str, list[Any]]:
    """The dump without ``tenant``'s rows (its record included)."""
    return {name: [row for row in found if tenant not in row] for name, found in rows.items()}


class World:
    """The seeded tables behind an app whose lookup is a registry of ``PurgeOrg``."""

    def __init__(self, engine: Engine, any_engine: Engine | AsyncEngine) -> None:
        self.engine = engine
        self.app, self.tenancy = build_app(
            any_engine,
            resolvers=[HeaderResolver()],
            registry=TenantRegistry(PurgeOrg, key="slug", active="active"),
        )
        self.client: TestClient = client(self.app).__enter__()
        seed(engine)

    def call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return call_tenants(self.tenancy, self.client, method, *args, **kwargs)

    def close(self) -> None:
        self.client.__exit__(None, None, None)


def call_tenants(tenancy: Tenancy, http: TestClient, method: str, *args: Any, **kwargs: Any) -> Any:
    """``tenancy.tenants.<method>(...)``, or its async twin run on the app's loop."""
    tenants = tenancy.async_tenants if tenancy.is_async else tenancy.tenants
    operation = getattr(tenants, method)
    if tenancy.is_async:
        return http.portal.call(lambda: operation(*args, **kwargs))  # type: ignore[union-attr]
    return operation(*args, **kwargs)
