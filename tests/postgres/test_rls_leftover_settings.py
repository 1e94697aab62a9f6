"""A setting left for the whole connection cannot reach the transactions the kit begins.

Trusted code may leave ``fastapi_tenancy.tenant_id`` or ``fastapi_tenancy.global_read`` set at
session level (``set_config(..., false)`` or ``SET``, on a raw connection or in a
``without_tenant()`` session), and the pool hands that connection to the next checkout. Every
transaction of the kit names both settings for itself, transaction-locally, so what was left
behind is overridden: a tenant session sees its tenant's rows only, of global-access models too;
a session with no tenant sees no row; the global switch reads global-access models only. Each
engine here has a pool of one connection, so every session gets the one with the leftover. Raw
SQL runs on the very connection the kit began, through the driver's own cursor: past the ORM
wall, so the policies alone answer.

Here too: the ORM wall refuses ``set_config`` in tenant sessions, and naming both settings costs
no round trip more than naming the tenant did.
"""

from __future__ import annotations

import warnings
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import pytest
from rls_models import ACME, GLOBEX, KEY_TYPE, Plan, Project, Template
from rls_support import AppRole
from rls_wire import RoundTripCounter
from sqlalchemy import event, func, text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.sql import Executable
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from fastapi_tenancy import (
    Access,
    SessionScope,
    Tenancy,
    TenantRequired,
    UnscopedStatement,
    without_tenant,
)
from fastapi_tenancy.postgres import (
    GLOBAL_READ_SETTING,
    TENANT_SETTING,
    RLSSession,
    RowLevelSecurity,
    set_tenant,
    tenant_savepoint,
)
from fastapi_tenancy.session import SCOPE_KEY

pytestmark = [pytest.mark.backends("postgres"), pytest.mark.anyio]

KINDS = ("psycopg", "psycopg-separate", "asyncpg", "psycopg-async")
"""psycopg: the settings travel with the BEGIN; the others send them as a statement of their own
(``psycopg-separate`` is ``RowLevelSecurity(with_begin=False)``)."""

# The leftover values, as SQL text: the tenant setting carries the key's spelling.
LEFTOVERS = {
    "tenant_id": (TENANT_SETTING, str(GLOBEX)),
    "global_read": (GLOBAL_READ_SETTING, "on"),
}

# One row: the tenants of the rls_project rows, and of the (global-access) rls_template rows.
SEEN = (
    "SELECT ARRAY(SELECT tenant_id FROM rls_project ORDER BY tenant_id), "
    "ARRAY(SELECT tenant_id FROM rls_template ORDER BY tenant_id)"
)
SETTINGS = (
    f"SELECT current_setting('{TENANT_SETTING}', true), "
    f"current_setting('{GLOBAL_READ_SETTING}', true)"
)


def driver_row(connection: Connection, sql: str) -> tuple[Any, ...]:
    """The first row of ``sql``, run by the driver's own cursor: no SQLAlchemy hook sees it."""
    cursor = connection.connection.cursor()
    try:
        cursor.execute(sql)
        row = cursor.fetchone()
        assert row is not None
        return tuple(row)
    finally:
        cursor.close()


def call_async(session: AsyncSession, call: str, statement: Executable) -> Awaitable[Any]:
    """``session.<call>(statement)``; ``execute`` without SQLModel's warning that ``exec()`` is
    what it would rather we used."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", r"(?s).*session\.exec\(\)", DeprecationWarning)
        return getattr(session, call)(statement)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Seen:
    """What one session saw: through the ORM, and by raw SQL on the connection the kit began."""

    orm: list[Any]
    projects: list[Any]  # the tenants of the rls_project rows raw SQL sees
    templates: list[Any]  # the tenants of the rls_template (global-access) rows raw SQL sees


class Kit:
    """``Tenancy(engine, rls=...)`` on a pool of one connection of the ordinary role; sync and
    async engines behind one (async) interface."""

    def __init__(self, app_role: AppRole, kind: str, *, port: int | None = None) -> None:
        pool: dict[str, Any] = {"pool_size": 1, "max_overflow": 0}
        rls: bool | RowLevelSecurity = True
        engine: Engine | AsyncEngine
        if kind == "asyncpg":
            engine = app_role.async_engine(port=port, **pool)
        elif kind == "psycopg-async":
            url = app_role.url(port=port).set(drivername="postgresql+psycopg")
            engine = app_role.async_engine_at(url, **pool)
        else:
            engine = app_role.engine(port=port, **pool)
            if kind == "psycopg-separate":
                rls = RowLevelSecurity(with_begin=False)
        self.engine = engine
        self.tenancy = Tenancy(engine, resolvers=[], rls=rls, key_type=KEY_TYPE)

    async def __aenter__(self) -> Kit:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if isinstance(self.engine, AsyncEngine):
            await self.engine.dispose()

    async def plain(self, sql: str) -> tuple[Any, ...] | None:
        """``sql`` on a plain connection of the pool (no session of the kit), committed."""
        if isinstance(self.engine, AsyncEngine):
            async with self.engine.connect() as conn:
                result = await conn.exec_driver_sql(sql)
                row = result.first() if result.returns_rows else None
                await conn.commit()
        else:
            with self.engine.connect() as sync_conn:
                result = sync_conn.exec_driver_sql(sql)
                row = result.first() if result.returns_rows else None
                sync_conn.commit()
        return None if row is None else tuple(row)

    async def trusted(self, sql: str) -> None:
        """``sql`` in a ``without_tenant()`` session, committed; with no admin engine, that
        session runs on the application's role, on the pool's one connection."""
        with without_tenant(reason="a test leaves a setting behind"):
            if isinstance(self.engine, AsyncEngine):
                async with self.tenancy.async_session() as session:
                    await call_async(session, "execute", text(sql))
                    await session.commit()
            else:
                with self.tenancy.session() as sync_session:
                    sync_session.execute(text(sql))
                    sync_session.commit()

    async def settings(self) -> dict[str, str | None]:
        """The two settings as the connection holds them outside any transaction of the kit."""
        row = await self.plain(SETTINGS)
        assert row is not None
        return dict(zip((TENANT_SETTING, GLOBAL_READ_SETTING), row, strict=True))

    async def see(self, scope: SessionScope, statement: Executable) -> Seen:
        """A session of ``scope`` runs ``statement``, then raw SQL on the connection it began."""
        began: list[Connection] = []

        def record(session: Any, transaction: Any, connection: Connection) -> None:
            began.append(connection)

        if isinstance(self.engine, AsyncEngine):
            async with self.tenancy.make_async_session(scope) as session:
                event.listen(session.sync_session, "after_begin", record)
                orm = list((await session.exec(statement)).all())  # type: ignore[call-overload]
                row = await session.run_sync(lambda _: driver_row(began[0], SEEN))
        else:
            with self.tenancy.make_session(scope) as sync_session:
                event.listen(sync_session, "after_begin", record)
                orm = list(sync_session.exec(statement).all())  # type: ignore[call-overload]
                row = driver_row(began[0], SEEN)
        return Seen(sorted(orm), list(row[0]), list(row[1]))

    async def query(self, scope: SessionScope, statement: Executable) -> list[Any]:
        """What a session of ``scope`` answers to ``statement`` through the ORM."""
        if isinstance(self.engine, AsyncEngine):
            async with self.tenancy.make_async_session(scope) as session:
                return list((await session.exec(statement)).all())  # type: ignore[call-overload]
        with self.tenancy.make_session(scope) as sync_session:
            return list(sync_session.exec(statement).all())  # type: ignore[call-overload]


async def check_the_next_sessions(kit: Kit, name: str, value: str) -> None:
    """Every kind of session of the kit, on the one connection, which carries ``name=value``."""
    assert (await kit.settings())[name] == value  # the leftover is there

    tenant = await kit.see(SessionScope(ACME), select(Template.name))
    nobody = await kit.see(SessionScope(None), select(Plan.name))
    trusted = await kit.see(SessionScope(None, Access.UNSCOPED), select(Project.tenant_id))
    global_ = await kit.see(SessionScope(None, Access.GLOBAL), select(Template.name))
    with pytest.raises(TenantRequired):  # the ORM wall: no tenant, no tenant model
        await kit.query(SessionScope(None), select(Project.name))

    assert (await kit.settings())[name] == value  # and still is: it was overridden, not undone
    assert tenant == Seen(["acme-template"], [ACME], [ACME])
    assert nobody == Seen(["free", "pro"], [], [])
    assert trusted == Seen([], [], [])
    assert global_ == Seen(["acme-template", "globex-template"], [], sorted([ACME, GLOBEX]))


# --------------------------------------------------------------------------------------------
# A setting left for the connection


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("leftover", LEFTOVERS)
async def test_a_setting_left_by_set_config_on_a_raw_connection_reaches_no_later_session(
    app_role, world, kind, leftover
):
    name, value = LEFTOVERS[leftover]
    async with Kit(app_role, kind) as kit:
        await kit.plain(f"SELECT set_config('{name}', '{value}', false)")
        await check_the_next_sessions(kit, name, value)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("leftover", LEFTOVERS)
async def test_a_setting_left_by_a_set_statement_reaches_no_later_session(
    app_role, world, kind, leftover
):
    name, value = LEFTOVERS[leftover]
    async with Kit(app_role, kind) as kit:
        await kit.plain(f"SET {name} = '{value}'")
        await check_the_next_sessions(kit, name, value)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("leftover", LEFTOVERS)
async def test_a_setting_left_by_trusted_code_without_a_tenant_reaches_no_later_session(
    app_role, world, kind, leftover
):
    name, value = LEFTOVERS[leftover]
    async with Kit(app_role, kind) as kit:
        await kit.trusted(f"SELECT set_config('{name}', '{value}', false)")
        await check_the_next_sessions(kit, name, value)


@pytest.mark.parametrize("leftover", LEFTOVERS)
def test_a_session_made_by_hand_names_both_settings_too(app_role, world, leftover):
    name, value = LEFTOVERS[leftover]
    engine = app_role.engine(pool_size=1, max_overflow=0)
    with engine.connect() as conn:
        conn.exec_driver_sql(f"SET {name} = '{value}'")
        conn.commit()

    seen = {}
    for tenant in (ACME, None):
        scope = SessionScope(tenant, Access.UNSCOPED)  # ORM scoping off: the policies answer
        with RLSSession(engine, info={SCOPE_KEY: scope}) as session:
            seen[tenant] = tuple(session.execute(text(SEEN)).one())

    assert seen == {ACME: ([ACME], [ACME]), None: ([], [])}


def test_set_tenant_on_a_raw_connection_turns_a_leftover_global_read_off(app_role, world):
    engine = app_role.engine(pool_size=1, max_overflow=0)
    with engine.connect() as conn:
        conn.exec_driver_sql(f"SET {GLOBAL_READ_SETTING} = 'on'")
        conn.commit()
    with engine.begin() as conn:
        set_tenant(conn, ACME)
        templates = conn.execute(text("SELECT tenant_id FROM rls_template")).scalars().all()
        raw = conn.execute(text(SETTINGS)).one()

    assert templates == [ACME]
    assert tuple(raw) == (str(ACME), "")


def test_a_tenant_savepoint_in_a_global_read_restores_the_global_read(app_role, world):
    engine = app_role.engine(pool_size=1, max_overflow=0)
    templates = text("SELECT tenant_id FROM rls_template ORDER BY tenant_id")
    with engine.begin() as conn:
        conn.execute(text(f"SELECT set_config('{GLOBAL_READ_SETTING}', 'on', true)"))
        with tenant_savepoint(conn, ACME):
            inside = conn.execute(templates).scalars().all()
        after = conn.execute(templates).scalars().all()

    assert inside == [ACME]
    assert after == sorted([ACME, GLOBEX])


# --------------------------------------------------------------------------------------------
# set_config through the ORM, in a tenant session


@pytest.mark.parametrize("kind", ["psycopg", "asyncpg", "psycopg-async"])
@pytest.mark.parametrize("is_local", [True, False])
@pytest.mark.parametrize("call", ["execute", "exec", "scalar"])
async def test_set_config_through_the_orm_is_refused_in_a_tenant_session(
    app_role, world, kind, is_local, call
):
    attack = select(func.set_config(TENANT_SETTING, str(GLOBEX), is_local))
    read_tenant = select(func.current_setting(TENANT_SETTING))
    async with Kit(app_role, kind) as kit:
        if isinstance(kit.engine, AsyncEngine):
            async with kit.tenancy.make_async_session(SessionScope(ACME)) as session:
                with pytest.raises(UnscopedStatement) as caught:
                    await call_async(session, call, attack)
                names = (await session.exec(select(Project.name))).all()
                tenant = await session.scalar(read_tenant)
        else:
            with kit.tenancy.make_session(SessionScope(ACME)) as sync_session:
                with pytest.raises(UnscopedStatement) as caught:
                    getattr(sync_session, call)(attack)
                names = sync_session.exec(select(Project.name)).all()
                tenant = sync_session.scalar(read_tenant)
        left = await kit.settings()

    assert "set_config" in str(caught.value)
    assert list(names) == ["apollo"]
    assert tenant == str(ACME)  # the session's tenant, unchanged
    assert left[TENANT_SETTING] in (None, "")  # nothing was left on the connection either


# --------------------------------------------------------------------------------------------
# Round trips


@pytest.fixture
def relay(database) -> Iterator[RoundTripCounter]:
    counter = RoundTripCounter(database.url.host or "127.0.0.1", database.url.port or 5432)
    try:
        yield counter
    finally:
        counter.close()


async def round_trips(
    relay: RoundTripCounter, work: Callable[[], Awaitable[object]], times: int = 3
) -> float:
    for _ in range(6):  # past psycopg's prepare threshold, so every run is alike
        await work()
    before = relay.count()
    for _ in range(times):
        await work()
    return (relay.count() - before) / times


@pytest.mark.parametrize("kind", ["psycopg", "asyncpg", "psycopg-async"])
async def test_naming_both_settings_costs_no_round_trip_more_than_naming_the_tenant(
    app_role, world, relay, kind
):
    async with Kit(app_role, kind, port=relay.port) as kit:

        def session_of(scope: SessionScope, statement: Executable) -> Callable[[], Awaitable[Any]]:
            return lambda: kit.query(scope, statement)

        tenant = await round_trips(relay, session_of(SessionScope(ACME), select(Project.name)))
        global_ = await round_trips(
            relay, session_of(SessionScope(None, Access.GLOBAL), select(Template.name))
        )
        nobody = await round_trips(relay, session_of(SessionScope(None), select(Plan.name)))

    if kind in ("psycopg", "psycopg-async"):
        # BEGIN with both settings, the query, ROLLBACK: as many as a plain session.
        assert tenant == global_ == nobody == 3
    else:
        # asyncpg: BEGIN, both settings in one statement, the query, ROLLBACK: as before for a
        # tenant or the global switch. A session with no tenant used to send nothing (3) and let a
        # leftover setting through; it now pays the one statement too.
        assert tenant == global_ == nobody == 4
