"""The app the command line tests drive, as ``fastapi-tenancy --app cli_app:make_tenancy``.

A tenants table (the kit's ``TenantRecord`` with fields of its own), projects, and tasks that
reference their project (following it through a rename on every database), on the database
that ``CLI_TEST_DATABASE_URL`` names; ``make_async_tenancy`` is the same app on an
``AsyncEngine`` (``CLI_TEST_ASYNC_DATABASE_URL``, with ``CLI_TEST_ASYNC_CONNECT_ARGS`` as JSON).
The jobs for ``fastapi-tenancy run`` add a project to the bound tenant and fail for initech.
"""

from __future__ import annotations

import json
import os
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import Field, SQLModel

from fastapi_tenancy import (
    HeaderResolver,
    Tenancy,
    TenantChanges,
    TenantRecord,
    TenantRegistry,
    TenantScoped,
    get_current_tenant,
    tenant_foreign_key,
    tenant_unique,
)

TENANTS = ("acme", "globex", "initech")
BROKEN = "initech"  # the jobs fail for this tenant


class CliOrg(TenantRecord, table=True):
    __tablename__ = "cli_org"

    name: str = Field(default="", max_length=100)
    plan: str = Field(default="free", max_length=20)
    seats: int = 1


class CliProject(TenantScoped, table=True):
    __tablename__ = "cli_project"
    __table_args__ = (tenant_unique("id"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100)


class CliTask(TenantScoped, table=True):
    __tablename__ = "cli_task"
    __table_args__ = (tenant_foreign_key("project_id", "cli_project.id", onupdate="CASCADE"),)

    id: int | None = Field(default=None, primary_key=True)
    project_id: int
    title: str = Field(max_length=100)


class CliNote(TenantScoped, table=True):
    """No test creates its table but the MariaDB check's, by hand, with a tenant column that
    ignores case (what ``fastapi-tenancy check`` reports there)."""

    __tablename__ = "cli_note"

    id: int | None = Field(default=None, primary_key=True)


TABLES = (CliOrg, CliProject, CliTask)  # the tables every test has
REGISTRY = TenantRegistry(CliOrg)

_made: dict[str, Tenancy] = {}


def make_tenancy() -> Tenancy:
    """The app's Tenancy on a sync engine (one per process: the jobs use it too)."""
    if "sync" not in _made:
        engine = create_engine(os.environ["CLI_TEST_DATABASE_URL"])
        _sqlite_foreign_keys(engine)
        _made["sync"] = Tenancy(engine, resolvers=[HeaderResolver()], registry=REGISTRY)
    return _made["sync"]


def make_async_tenancy() -> Tenancy:
    """The same app on a pooled ``AsyncEngine``."""
    if "async" not in _made:
        connect_args = json.loads(os.environ.get("CLI_TEST_ASYNC_CONNECT_ARGS") or "{}")
        engine = create_async_engine(
            os.environ["CLI_TEST_ASYNC_DATABASE_URL"], connect_args=connect_args
        )
        _sqlite_foreign_keys(engine.sync_engine)
        _made["async"] = Tenancy(engine, resolvers=[HeaderResolver()], registry=REGISTRY)
    return _made["async"]


def make_tenancy_with_changes() -> Tenancy:
    """The app telling every worker of its tenant changes on the channel the test names:
    ``CLI_TEST_CHANGES`` is ``postgres`` (``LISTEN``/``NOTIFY`` on this database) or a Redis
    URL, and ``CLI_TEST_CHANNEL`` the channel."""
    engine = create_engine(os.environ["CLI_TEST_DATABASE_URL"])
    _sqlite_foreign_keys(engine)
    return Tenancy(
        engine,
        resolvers=[HeaderResolver()],
        registry=REGISTRY,
        tenant_changes=changes_for(
            engine, os.environ["CLI_TEST_CHANGES"], os.environ["CLI_TEST_CHANNEL"]
        ),
    )


def changes_for(engine: Engine, where: str, channel: str) -> TenantChanges:
    """Tenant changes on ``channel``: ``where`` is ``postgres`` or a Redis URL."""
    if where == "postgres":
        from fastapi_tenancy.postgres.notify import PostgresChanges

        return PostgresChanges(engine, channel=channel)
    from fastapi_tenancy.redis_changes import RedisChanges

    return RedisChanges(where, channel=channel)


def make_tenancy_without_registry() -> Tenancy:
    """An app that keeps no tenants table: the tenants commands refuse it."""
    engine = create_engine(os.environ["CLI_TEST_DATABASE_URL"])
    return Tenancy(engine, resolvers=[HeaderResolver()])


def add_project(key: str) -> None:
    """A job: add a project named after the bound tenant (and fail for initech)."""
    with make_tenancy().session() as session:
        session.add(CliProject(name=f"job for {get_current_tenant()}"))
        if key == BROKEN:
            raise RuntimeError(f"{key} is broken")
        session.commit()


async def add_project_async(key: str) -> None:
    """``add_project`` for the async app."""
    async with make_async_tenancy().async_session() as session:
        session.add(CliProject(name=f"job for {get_current_tenant()}"))
        if key == BROKEN:
            raise RuntimeError(f"{key} is broken")
        await session.commit()


NOT_A_TENANCY = SQLModel.metadata


def _sqlite_foreign_keys(engine: Engine) -> None:
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _foreign_keys_on)


def _foreign_keys_on(dbapi_connection: Any, connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()
