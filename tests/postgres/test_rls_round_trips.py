"""The per-transaction tenant costs no round trip of its own on psycopg 3.

The kit opens each transaction itself with ``BEGIN; SELECT set_config(...)`` in one message,
where psycopg would have sent ``BEGIN`` alone. A relay between the driver and the server counts
round trips. The remaining tests drive the first statement of a transaction through each kind
of execution, and the isolation options psycopg would have put in its own ``BEGIN``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator

import pytest
from rls_models import ACME, GLOBEX, KEY_TYPE, Project, Template
from rls_support import World
from rls_wire import RoundTripCounter
from sqlalchemy import select, text
from sqlalchemy.exc import DataError, DBAPIError
from sqlmodel import Session
from sqlmodel.ext.asyncio.session import AsyncSession

from fastapi_tenancy import AlreadyExists, HeaderResolver, SessionScope, Tenancy
from fastapi_tenancy.postgres import RowLevelSecurity, read_tenant_setting
from fastapi_tenancy.scope import Access

pytestmark = pytest.mark.backends("postgres")

READ = text("SELECT tenant_id, name FROM rls_project")


@pytest.fixture
def relay(database) -> Iterator[RoundTripCounter]:
    counter = RoundTripCounter(database.url.host or "127.0.0.1", database.url.port or 5432)
    try:
        yield counter
    finally:
        counter.close()


def round_trips(relay: RoundTripCounter, work: Callable[[], object], times: int = 3) -> float:
    for _ in range(6):  # past psycopg's prepare threshold, so every run is alike
        work()
    before = relay.count()
    for _ in range(times):
        work()
    return (relay.count() - before) / times


def test_the_setting_sent_with_begin_costs_no_round_trip_of_its_own(app_role, relay, world):
    bare_engine = app_role.engine(port=relay.port, pool_size=1)
    kit = Tenancy(
        app_role.engine(port=relay.port, pool_size=1), resolvers=[], rls=True, key_type=KEY_TYPE
    )
    separate = Tenancy(
        app_role.engine(port=relay.port, pool_size=1),
        resolvers=[],
        rls=RowLevelSecurity(with_begin=False),
        key_type=KEY_TYPE,
    )

    def bare() -> None:
        with Session(bare_engine) as session:
            session.execute(READ).all()

    def through(tenancy: Tenancy) -> Callable[[], None]:
        def work() -> None:
            with tenancy.make_session(SessionScope(ACME, Access.UNSCOPED)) as session:
                assert session.execute(READ).all() == [(ACME, "apollo")]

        return work

    bare_trips = round_trips(relay, bare)
    kit_trips = round_trips(relay, through(kit))
    separate_trips = round_trips(relay, through(separate))

    assert bare_trips == 3  # BEGIN, the query, ROLLBACK
    assert kit_trips == bare_trips
    assert separate_trips == bare_trips + 1


def test_every_transaction_of_a_session_carries_the_tenant_without_a_round_trip(
    app_role, relay, world
):
    kit = Tenancy(
        app_role.engine(port=relay.port, pool_size=1), resolvers=[], rls=True, key_type=KEY_TYPE
    )

    def two_transactions() -> None:
        with kit.make_session(SessionScope(GLOBEX, Access.UNSCOPED)) as session:
            assert session.execute(READ).all() == [(GLOBEX, "zeus")]
            session.commit()
            assert session.execute(READ).all() == [(GLOBEX, "zeus")]

    assert round_trips(relay, two_transactions) == 6


# --------------------------------------------------------------------------------------------
# The first statement of a transaction, through each path


def test_a_failing_first_statement_raises_its_own_error_and_the_session_recovers(wall, world):
    with wall(ACME) as session:
        with pytest.raises(AlreadyExists):
            session.execute(
                text("INSERT INTO rls_project (tenant_id, name) VALUES (:tenant, 'apollo')"),
                {"tenant": ACME},
            )
        session.rollback()
        assert session.execute(READ).all() == [(ACME, "apollo")]


def test_a_server_side_cursor_as_first_statement_gets_the_tenant(wall, world):
    with wall(GLOBEX) as session:
        result = session.execute(
            select(Project.name), execution_options={"stream_results": True, "yield_per": 1}
        )
        names = result.scalars().all()

    assert names == ["zeus"]


def test_executemany_as_first_statement_gets_the_tenant(wall, world, owner):
    insert_template = text("INSERT INTO rls_template (tenant_id, name) VALUES (:t, :n)")
    with wall(ACME) as session:
        session.execute(insert_template, [{"t": ACME, "n": "a"}, {"t": ACME, "n": "b"}])
        session.commit()
        with pytest.raises(DBAPIError):
            session.execute(insert_template, [{"t": ACME, "n": "c"}, {"t": GLOBEX, "n": "d"}])

    with wall(ACME) as session:
        names = sorted(session.execute(select(Template.name)).scalars())
    assert names == ["a", "acme-template", "b"]


def test_a_statement_without_parameters_as_first_statement_gets_the_tenant(wall, world):
    with wall(ACME) as session:
        rows = session.execute(READ, execution_options={"no_parameters": True}).all()

    assert rows == [(ACME, "apollo")]


def test_a_transaction_that_ends_before_any_statement_leaves_nothing_behind(app_role, world: World):
    engine = app_role.engine(pool_size=1, max_overflow=0)
    tenancy = Tenancy(engine, resolvers=[HeaderResolver()], rls=True, key_type=KEY_TYPE)
    with tenancy.make_session(SessionScope(ACME, Access.UNSCOPED)) as session:
        session.connection()  # begins, with the tenant
        session.rollback()  # before any statement of the session's own

    with engine.connect() as conn:  # the same pooled connection
        assert read_tenant_setting(conn) is None
        assert conn.execute(READ).all() == []


@pytest.mark.anyio
async def test_async_psycopg_carries_the_setting_with_begin_like_the_sync_driver(
    app_role, relay, world
):
    """As many round trips per transaction as the bare async engine: no statement of its own."""
    url = app_role.url().set(drivername="postgresql+psycopg", port=relay.port)
    bare_engine = app_role.async_engine_at(url, pool_size=1)
    kit_engine = app_role.async_engine_at(url, pool_size=1)
    separate_engine = app_role.async_engine_at(url, pool_size=1)
    kit = Tenancy(kit_engine, resolvers=[HeaderResolver()], rls=True, key_type=KEY_TYPE)
    separate = Tenancy(
        separate_engine,
        resolvers=[HeaderResolver()],
        rls=RowLevelSecurity(with_begin=False),
        key_type=KEY_TYPE,
    )

    async def bare() -> list[str]:
        async with AsyncSession(bare_engine) as session:
            return list((await session.exec(select(Project.name))).scalars().all())

    def scoped(tenancy: Tenancy, tenant: object) -> Callable[[], Awaitable[list[str]]]:
        async def read() -> list[str]:
            async with tenancy.make_async_session(SessionScope(tenant, Access.UNSCOPED)) as s:
                return list((await s.exec(select(Project.name))).scalars().all())

        return read

    async def async_round_trips(work: Callable[[], Awaitable[object]], times: int = 3) -> float:
        for _ in range(6):  # past psycopg's prepare threshold, so every run is alike
            await work()
        before = relay.count()
        for _ in range(times):
            await work()
        return (relay.count() - before) / times

    try:
        for tenant, expected in ((ACME, ["apollo"]), (GLOBEX, ["zeus"]), (ACME, ["apollo"])):
            assert await scoped(kit, tenant)() == expected
        assert await bare() == []  # the app role, with no tenant named: no row
        bare_trips = await async_round_trips(bare)
        assert await async_round_trips(scoped(kit, ACME)) == bare_trips
        assert await async_round_trips(scoped(separate, ACME)) == bare_trips + 1
    finally:
        for engine in (bare_engine, kit_engine, separate_engine):
            await engine.dispose()


# --------------------------------------------------------------------------------------------
# What psycopg would have put in its own BEGIN


@pytest.mark.parametrize(
    ("engine_options", "expected"),
    [
        ({}, ("read committed", "off")),
        ({"isolation_level": "REPEATABLE READ"}, ("repeatable read", "off")),
        ({"isolation_level": "SERIALIZABLE"}, ("serializable", "off")),
        ({"execution_options": {"postgresql_readonly": True}}, ("read committed", "on")),
    ],
)
def test_the_kits_begin_keeps_the_engines_isolation_options(
    app_role, relay, world, engine_options, expected
):
    kit = Tenancy(
        app_role.engine(port=relay.port, pool_size=1, **engine_options),
        resolvers=[],
        rls=True,
        key_type=KEY_TYPE,
    )
    show = text(
        "SELECT current_setting('transaction_isolation'), current_setting('transaction_read_only')"
    )

    def work() -> None:
        with kit.make_session(SessionScope(ACME, Access.UNSCOPED)) as session:
            assert tuple(session.execute(show).one()) == expected
            assert session.execute(READ).all() == [(ACME, "apollo")]

    assert round_trips(relay, work) == 4  # BEGIN with the setting, two queries, ROLLBACK


@pytest.mark.parametrize("hostile", ["o'brien", "acme', true); SELECT set_config('x", "\\'; --"])
def test_a_tenant_id_is_quoted_by_the_driver_never_spliced(wall, world, hostile):
    with wall(hostile) as session:
        assert read_tenant_setting(session.connection()) == hostile
        if KEY_TYPE is str:
            assert session.execute(READ).all() == []
            return
        # The policies cast the setting to the integer or uuid column: a value that spells no
        # key of that type fails the statement, whole, as the one value it is. Still no row.
        with pytest.raises(DataError) as caught:
            session.execute(READ)

    assert getattr(caught.value.orig, "sqlstate", None) == "22P02"  # invalid_text_representation


@pytest.mark.anyio
@pytest.mark.parametrize("hostile", ["o'brien", "acme', true); SELECT set_config('x", "\\'; --"])
async def test_a_tenant_id_is_quoted_by_the_driver_never_spliced_on_async_psycopg(
    app_role, world, hostile
):
    """The async connection's one-message BEGIN quotes the key with libpq, as the sync one."""
    engine = app_role.async_engine_at(app_role.url().set(drivername="postgresql+psycopg"))
    tenancy = Tenancy(engine, resolvers=[HeaderResolver()], rls=True, key_type=KEY_TYPE)
    try:
        async with tenancy.make_async_session(SessionScope(hostile, Access.UNSCOPED)) as session:
            setting = await session.run_sync(lambda s: read_tenant_setting(s.connection()))
            assert setting == hostile
            read = session.run_sync(lambda s: s.execute(READ).all())
            if KEY_TYPE is str:
                assert await read == []
            else:
                with pytest.raises(DataError):
                    await read
    finally:
        await engine.dispose()


def test_an_autocommit_engine_fails_closed(app_role, world):
    engine = app_role.engine(pool_size=1, isolation_level="AUTOCOMMIT")
    tenancy = Tenancy(engine, resolvers=[], rls=True, key_type=KEY_TYPE)
    with tenancy.make_session(SessionScope(ACME, Access.UNSCOPED)) as session:
        # Each statement is its own transaction: a transaction-local setting cannot reach it.
        assert session.execute(READ).all() == []
