"""Overload: more requests in flight than the pool has connections never deadlock.

A sync route runs in a worker thread, holds its connection until the session closes after the
response is sent, and its response is serialized in another worker thread. With more requests
in flight than threads and connections together, every thread can end up waiting for a
connection held by a request that waits for a thread. The kit bounds the sessions in use per
engine to the pool's size: a request waits for a session in the event loop (no thread held),
and answers ``503 database_busy`` when none frees up in time.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio.to_thread
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm import registry
from sqlalchemy.pool import NullPool
from sqlmodel import Field, SQLModel, select

from fastapi_tenancy import (
    AsyncTenantSession,
    HeaderResolver,
    SessionLimits,
    Tenancy,
    TenantScoped,
    TenantSession,
)

overload_registry = registry()


class OverloadModel(SQLModel, registry=overload_registry):
    """This module's tables: a registry of their own."""


class Crate(OverloadModel, TenantScoped, table=True):
    __tablename__ = "overload_crate"

    id: int | None = Field(default=None, primary_key=True)
    label: str = Field(max_length=50)


ACME = {"X-Tenant-ID": "acme"}
POOL_SIZE = 2
THREADS = 3
IN_FLIGHT = 4 * (POOL_SIZE + THREADS)


def build(engine: Engine | AsyncEngine, **tenancy_options: Any) -> FastAPI:
    tenancy = Tenancy(engine, resolvers=[HeaderResolver()], **tenancy_options)
    app = FastAPI()
    tenancy.install(app)

    @app.get("/crates")
    def crates(session: TenantSession) -> list[Crate]:
        time.sleep(0.01)  # a route doing a little work while it holds its connection
        return list(session.exec(select(Crate)).all())

    @app.get("/async-crates")
    async def async_crates(session: AsyncTenantSession) -> list[Crate]:
        await asyncio.sleep(0.01)
        return list((await session.exec(select(Crate))).all())

    @app.get("/ping")
    def ping() -> str:
        return "pong"

    return app


@pytest.fixture
def small_pool(database: Any, create_tables: Any) -> Iterator[Engine]:
    """An engine of two connections with no overflow, on the test database."""
    engine: Engine = database.create_engine(pool_size=POOL_SIZE, max_overflow=0, pool_timeout=10)
    create_tables(engine, Crate)
    with Tenancy(engine, resolvers=[HeaderResolver()]).session(tenant="acme") as session:
        session.add_all(Crate(label=f"crate {n}") for n in range(3))
        session.commit()
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
async def few_threads() -> AsyncIterator[None]:
    """Fewer worker threads than requests in flight, as under real load."""
    limiter = anyio.to_thread.current_default_thread_limiter()
    total = limiter.total_tokens
    limiter.total_tokens = THREADS
    try:
        yield
    finally:
        limiter.total_tokens = total


async def fire(app: FastAPI, path: str, count: int) -> list[httpx.Response]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        return await asyncio.gather(*(client.get(path, headers=ACME) for _ in range(count)))


@pytest.mark.anyio
@pytest.mark.usefixtures("few_threads")
async def test_four_times_the_pool_in_flight_all_get_an_answer_with_no_deadlock(
    small_pool: Engine,
) -> None:
    app = build(small_pool)
    with anyio.fail_after(30):
        responses = await fire(app, "/crates", IN_FLIGHT)
    assert [r.status_code for r in responses] == [200] * IN_FLIGHT, [r.text for r in responses]
    assert all(len(r.json()) == 3 for r in responses)
    assert small_pool.pool.checkedout() == 0  # type: ignore[attr-defined]


def add_slow_route(app: FastAPI, release: threading.Event) -> None:
    @app.get("/slow")
    def slow(session: TenantSession) -> int:
        session.exec(select(Crate)).all()  # takes a connection, and keeps it
        release.wait(10)
        return 1


@pytest.mark.anyio
@pytest.mark.usefixtures("few_threads")
async def test_a_session_that_does_not_free_up_in_time_is_503_database_busy(
    small_pool: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    app = build(small_pool, session_limits=SessionLimits(wait=0.2))
    release = threading.Event()
    add_slow_route(app, release)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        holders = [asyncio.create_task(client.get("/slow", headers=ACME)) for _ in range(POOL_SIZE)]
        await asyncio.sleep(0.3)
        with anyio.fail_after(5):
            busy = await asyncio.gather(*(client.get("/crates", headers=ACME) for _ in range(4)))
        release.set()
        with anyio.fail_after(20):
            held = await asyncio.gather(*holders)
        with anyio.fail_after(20):
            again = await client.get("/crates", headers=ACME)
    assert [r.status_code for r in held] == [200] * POOL_SIZE
    assert [r.status_code for r in busy] == [503] * 4, [r.text for r in busy]
    assert {r.json()["code"] for r in busy} == {"database_busy"}
    assert all(r.headers["Retry-After"] == "2" for r in busy)
    assert "session" not in busy[0].json()["detail"]  # the generic sentence of every 503
    failures = [r for r in caplog.records if r.name == "fastapi_tenancy.errors"]
    assert [getattr(r, "tenancy_code", None) for r in failures] == ["database_busy"] * 4
    assert {getattr(r, "tenancy_tenant", None) for r in failures} == {"acme"}
    assert again.status_code == 200, again.text


@pytest.mark.anyio
@pytest.mark.usefixtures("few_threads")
async def test_a_waiting_session_holds_no_worker_thread(small_pool: Engine) -> None:
    app = build(small_pool, session_limits=SessionLimits(wait=5))
    release = threading.Event()
    add_slow_route(app, release)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        slow_calls = [
            asyncio.create_task(client.get("/slow", headers=ACME)) for _ in range(POOL_SIZE)
        ]
        waiting = [asyncio.create_task(client.get("/crates", headers=ACME)) for _ in range(8)]
        await asyncio.sleep(0.3)
        # Two threads hold the two connections; eight requests wait for a session. A route
        # with no session still finds a thread.
        with anyio.fail_after(5):
            r = await client.get("/ping", headers=ACME)
        assert r.status_code == 200, r.text
        release.set()
        with anyio.fail_after(20):
            done = await asyncio.gather(*slow_calls, *waiting)
    assert [r.status_code for r in done] == [200] * (POOL_SIZE + 8)


@pytest.mark.anyio
async def test_async_sessions_are_bounded_by_the_pool_too(
    database: Any, create_tables: Any
) -> None:
    engine = database.create_async_engine(
        poolclass=None, pool_size=POOL_SIZE, max_overflow=0, pool_timeout=10
    )
    sync = database.create_engine()
    create_tables(sync, Crate)
    sync.dispose()
    try:
        app = build(engine)
        with anyio.fail_after(30):
            responses = await fire(app, "/async-crates", 4 * POOL_SIZE)
        assert [r.status_code for r in responses] == [200] * (4 * POOL_SIZE)
    finally:
        await engine.dispose()


def test_session_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="max_sessions"):
        SessionLimits(max_sessions=0)
    with pytest.raises(ValueError, match="wait"):
        SessionLimits(wait=-1)


def test_the_bound_is_the_pools_capacity_unless_given(database: Any) -> None:
    engine = database.create_engine(pool_size=3, max_overflow=4, pool_timeout=10)
    unpooled = database.create_engine(poolclass=NullPool)
    try:
        assert Tenancy(engine, resolvers=[HeaderResolver()]).session_limiter.total == 7
        explicit = SessionLimits(max_sessions=2)
        tenancy = Tenancy(engine, resolvers=[HeaderResolver()], session_limits=explicit)
        assert tenancy.session_limiter.total == 2
        assert tenancy.session_limiter.wait == 10  # the pool's timeout
        quick = SessionLimits(wait=0.5)
        assert (
            Tenancy(engine, resolvers=[HeaderResolver()], session_limits=quick).session_limiter.wait
            == 0.5
        )
        assert Tenancy(unpooled, resolvers=[HeaderResolver()]).session_limiter.total is None
        with pytest.raises(TypeError, match="session_limits"):
            Tenancy(engine, resolvers=[HeaderResolver()], session_limits=7)  # type: ignore[arg-type]
    finally:
        engine.dispose()
        unpooled.dispose()
