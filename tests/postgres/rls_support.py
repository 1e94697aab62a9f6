"""Helpers of the PostgreSQL wall's tests: roles, the seeded world, the owner's connection."""

from __future__ import annotations

import contextlib
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from rls_models import (
    ACME,
    ACME_ORG,
    GLOBEX,
    GLOBEX_ORG,
    Plan,
    Project,
    Task,
    Template,
    badge,
    metadata,
)
from sqlalchemy import create_engine, insert
from sqlalchemy.engine import URL, Engine
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from fastapi_tenancy.postgres import apply_rls
from tests.pg_roles import create_role, drop_role


@dataclass
class AppRole:
    """An ordinary role made for one test, and the engines that connect as it."""

    name: str
    owner: Engine
    database: Any
    _engines: list[Engine | AsyncEngine] = field(default_factory=list)
    _roles: list[str] = field(default_factory=list)

    def url(self, role: str | None = None, *, port: int | None = None) -> URL:
        """The sync URL of the test's schema as ``role``; ``port`` reaches 127.0.0.1 there."""
        url: URL = self.database.url.set(username=role or self.name)
        return url if port is None else url.set(host="127.0.0.1", port=port)

    def engine(self, role: str | None = None, *, port: int | None = None, **kwargs: Any) -> Engine:
        engine = create_engine(self.url(role, port=port), **kwargs)
        self._engines.append(engine)
        return engine

    def async_engine(
        self, role: str | None = None, *, port: int | None = None, **kwargs: Any
    ) -> AsyncEngine:
        """An asyncpg engine on the test's schema as ``role``; ``port`` as in :meth:`url`."""
        kwargs["connect_args"] = {
            **self.database.async_connect_args,
            **kwargs.get("connect_args", {}),
        }
        url: URL = self.database.async_url.set(username=role or self.name)
        if port is not None:
            url = url.set(host="127.0.0.1", port=port)
        engine = create_async_engine(url, **kwargs)
        self._engines.append(engine)
        return engine

    def async_engine_at(self, url: URL, **kwargs: Any) -> AsyncEngine:
        """An async engine on an explicit URL (another async driver, say)."""
        engine = create_async_engine(url, **kwargs)
        self._engines.append(engine)
        return engine

    def make_role(self, attributes: str = "") -> str:
        """Another role (``attributes`` such as ``"BYPASSRLS"``), with the same grants."""
        name = f"tenancy_{secrets.token_hex(5)}"
        create_role(self.owner, self.database.name, name, attributes)
        self._roles.append(name)
        return name

    def dispose(self) -> None:
        for engine in self._engines:
            engine.sync_engine.dispose() if isinstance(engine, AsyncEngine) else engine.dispose()

    def drop(self) -> None:
        self.dispose()
        for role in [self.name, *self._roles]:
            drop_role(self.owner, role)


@dataclass(frozen=True)
class World:
    """Primary keys of the seeded rows."""

    apollo: int  # acme's project
    zeus: int  # globex's project
    design: int  # acme's task on apollo
    secret: int  # globex's task on zeus
    acme_template: int
    globex_template: int


def build_world(owner: Engine) -> World:
    """Create the tables, apply the kit's policies and seed two tenants, as the owner."""
    with owner.begin() as conn:
        metadata.create_all(conn)
        apply_rls(conn, metadata)
        apollo = conn.execute(
            insert(Project).values(tenant_id=ACME, name="apollo").returning(Project.id)
        ).scalar_one()
        zeus = conn.execute(
            insert(Project).values(tenant_id=GLOBEX, name="zeus").returning(Project.id)
        ).scalar_one()
        design = conn.execute(
            insert(Task).values(tenant_id=ACME, name="design", project_id=apollo).returning(Task.id)
        ).scalar_one()
        secret = conn.execute(
            insert(Task).values(tenant_id=GLOBEX, name="secret", project_id=zeus).returning(Task.id)
        ).scalar_one()
        templates = [
            conn.execute(
                insert(Template)
                .values(tenant_id=tenant, name=f"{name}-template")
                .returning(Template.id)
            ).scalar_one()
            for name, tenant in (("acme", ACME), ("globex", GLOBEX))
        ]
        conn.execute(insert(Plan).values([{"name": "free"}, {"name": "pro"}]))
        conn.execute(
            insert(badge).values(
                [{"org": ACME_ORG, "label": "acme-badge"}, {"org": GLOBEX_ORG, "label": "globex"}]
            )
        )
    return World(apollo, zeus, design, secret, *templates)


@contextlib.contextmanager
def as_owner(owner: Engine) -> Iterator[Any]:
    with owner.begin() as conn:
        yield conn
