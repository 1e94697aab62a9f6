"""Fixtures of the scoping attacks: a seeded database and sessions scoped by name."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from models import (
    ACME,
    CORE_MODELS,
    GLOBEX,
    KEY_TYPE,
    Note,
    Pair,
    Plan,
    Template,
    World,
    seed,
    seed_pair,
)
from scoping_places import STRATEGY, Places
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlmodel.ext.asyncio.session import AsyncSession

from fastapi_tenancy import Access, HeaderResolver, SessionScope, Tenancy
from fastapi_tenancy.isolation import Strategy
from fastapi_tenancy.session import TenantScopedSession

SessionFactory = Callable[..., TenantScopedSession]
AsyncSessionFactory = Callable[..., AsyncSession]


@pytest.fixture
def places(database: Any, engine: Engine, tmp_path: Path) -> Iterator[Places]:
    """Where this run keeps acme's and globex's rows (see scoping_places.py); their places
    are dropped, on the test's engine, when the test ends."""
    if STRATEGY is Strategy.SCHEMA and database.backend == "sqlite":
        pytest.skip("SQLite has no schemas: the schema strategy runs on PostgreSQL and MariaDB")
    made = Places(database, engine, tmp_path)
    yield made
    made.close()


@pytest.fixture
def create_tables(create_tables: Any, places: Places) -> Any:
    """``create_tables(engine, *models)``, which also makes the placed tables in every placed
    tenant's place when this run places tenants apart."""
    return places.table_creator(create_tables)


@pytest.fixture
def tenancy(engine: Engine, create_tables, places: Places) -> Tenancy:
    """A Tenancy on the test's sync engine, with the tables of Project and Task."""
    create_tables(engine, *CORE_MODELS)
    return Tenancy(
        engine, resolvers=[HeaderResolver()], key_type=KEY_TYPE, **places.options(engine)
    )


@pytest.fixture
def world(tenancy: Tenancy) -> World:
    """acme's and globex's rows, seeded unscoped (see models.py)."""
    return seed(tenancy)


@pytest.fixture
def plans(tenancy: Tenancy, create_tables) -> None:
    """The Plan table (no tenant column) with the plans "free" and "pro"."""
    create_tables(tenancy.engine, Plan)
    with tenancy.make_session(SessionScope(None, Access.UNSCOPED)) as session:
        session.add_all([Plan(name="free"), Plan(name="pro")])
        session.commit()


@pytest.fixture
def templates(tenancy: Tenancy, create_tables) -> Pair:
    """One Template (a global-access model) of each tenant."""
    create_tables(tenancy.engine, Template)
    return seed_pair(
        tenancy,
        Template(name="acme-template", tenant_id=ACME),
        Template(name="globex-template", tenant_id=GLOBEX),
    )


@pytest.fixture
def notes(tenancy: Tenancy, create_tables) -> Pair:
    """One Note (tenant stored in ``org_id``) of each tenant."""
    create_tables(tenancy.engine, Note)
    return seed_pair(
        tenancy,
        Note(title="acme-note", tenant_id=ACME),
        Note(title="globex-note", tenant_id=GLOBEX),
    )


@pytest.fixture
def session_for(tenancy: Tenancy, world: World) -> SessionFactory:
    """``session_for(ACME)``: a sync session on the seeded world with that scope."""

    def make(tenant_id: str | None, access: Access = Access.TENANT) -> TenantScopedSession:
        return tenancy.make_session(SessionScope(tenant_id, access))

    return make


@pytest.fixture
def async_tenancy(async_engine: AsyncEngine, places: Places) -> Tenancy:
    return Tenancy(
        async_engine,
        resolvers=[HeaderResolver()],
        key_type=KEY_TYPE,
        **places.options(async_engine),
    )


@pytest.fixture
def async_session_for(async_tenancy: Tenancy, world: World) -> AsyncSessionFactory:
    """``async_session_for(ACME)``: an AsyncSession on the seeded world with that scope.

    The world is seeded through the sync engine on the same database.
    """

    def make(tenant_id: str | None, access: Access = Access.TENANT) -> AsyncSession:
        return async_tenancy.make_async_session(SessionScope(tenant_id, access))

    return make
