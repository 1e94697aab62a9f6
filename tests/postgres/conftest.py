"""Fixtures of the PostgreSQL wall: the tables' owner, an ordinary application role, a world.

Superusers and table owners bypass row-level security, so every attack here runs as an
ordinary role made for the test (``tenancy_app_<hex>``: LOGIN, no SUPERUSER, no BYPASSRLS,
owning nothing, granted DML on the test's schema) and dropped at teardown. The owner is the
``engine`` fixture's role; it creates the tables, applies the policies and seeds the world.

Fixtures
    app_role      the application's role: ``app_role.engine(**kw)`` / ``app_role.async_engine``
                  make engines connecting as it on the test's schema (disposed at teardown);
                  ``app_role.make_role(**attributes)`` makes another role, dropped the same way
    world         the rls_models tables, with the kit's policies, seeded (see ``World``)
    tenancy       ``Tenancy(app engine, rls=True, key_type=KEY_TYPE)`` on the world
    wall          ``wall(ACME)``: a session of that Tenancy whose ORM scoping is OFF but whose
                  transactions name ``ACME`` to the policies: the database alone is tested

The tenant keys are of the run's ``KEY_TYPE`` (``TENANCY_KEY_TYPE``; see ``rls_models``).

Modules mark themselves ``pytestmark = pytest.mark.backends("postgres")``.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from rls_models import KEY_TYPE
from rls_support import AppRole, World, build_world
from sqlalchemy.engine import Engine
from sqlalchemy.pool import NullPool

from fastapi_tenancy import Access, HeaderResolver, SessionScope, Tenancy
from fastapi_tenancy.session import TenantScopedSession
from tests.pg_roles import create_role


@pytest.fixture
def owner(database: Any) -> Iterator[Engine]:
    """The tables' owner (the server's superuser) on the test's schema; never guarded."""
    engine = database.create_engine(poolclass=NullPool)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def app_role(owner: Engine, database: Any) -> Iterator[AppRole]:
    name = f"tenancy_app_{secrets.token_hex(5)}"
    create_role(owner, database.name, name)
    role = AppRole(name=name, owner=owner, database=database)
    try:
        yield role
    finally:
        role.drop()


@pytest.fixture
def world(owner: Engine, app_role: AppRole) -> World:
    return build_world(owner)


@pytest.fixture
def app_engine(app_role: AppRole, world: World) -> Engine:
    """The application's pooled sync engine (psycopg), connecting as the ordinary role."""
    return app_role.engine(pool_size=2, max_overflow=0)


@pytest.fixture
def tenancy(app_engine: Engine) -> Tenancy:
    return Tenancy(app_engine, resolvers=[HeaderResolver()], rls=True, key_type=KEY_TYPE)


WallFactory = Callable[[Any], TenantScopedSession]


@pytest.fixture
def wall(tenancy: Tenancy) -> WallFactory:
    """``wall(ACME)``: ORM scoping off, the policies admitting acme; ``wall(None)``: nobody."""

    def make(tenant_id: Any) -> TenantScopedSession:
        return tenancy.make_session(SessionScope(tenant_id, Access.UNSCOPED))

    return make
