"""What the fault suites share: the tables, the app under test, the databases it runs on, and
the assertions every failure answer must pass.

The database tests run on PostgreSQL, on PostgreSQL with the kit's row-level security
(``rls=True``, as an ordinary role that owns nothing) and on MariaDB, with the app's engine
connecting through a :class:`~faults.tcp_proxy.TcpProxy` with short timeouts and
``pool_pre_ping``, the way a production app should be set up: a failure of the database is an
answer within seconds, never a request that hangs.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import anyio
import anyio.to_thread
import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, func, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.orm import registry
from sqlmodel import Field, Session, SQLModel, select

from fastapi_tenancy import (
    AsyncTenantSession,
    HeaderResolver,
    Tenancy,
    TenantScoped,
    TenantSession,
)

from .tcp_proxy import TcpProxy

faults_registry = registry()


class FaultsModel(SQLModel, registry=faults_registry):
    """This package's tables: a registry of their own."""


class Note(FaultsModel, TenantScoped, table=True):
    __tablename__ = "faults_note"

    id: int | None = Field(default=None, primary_key=True)
    body: str = Field(max_length=50)


class Tenant(FaultsModel, table=True):
    """The tenants a ``TenantTableLookup`` reads."""

    __tablename__ = "faults_tenant"

    slug: str = Field(primary_key=True, max_length=63)
    active: bool = True


class Member(FaultsModel, table=True):
    """The tenants a membership predicate admits (one principal: whoever calls)."""

    __tablename__ = "faults_member"

    id: int | None = Field(default=None, primary_key=True)
    tenant: str = Field(max_length=63)


ACME = {"X-Tenant-ID": "acme"}

# The app engine's timeouts. psycopg rounds a connect timeout below 2 s up to 2 s (libpq's rule).
CONNECT_TIMEOUT = 1
READ_TIMEOUT = 1.0  # PyMySQL's read and write timeouts: the client's own bound on a silent server
STATEMENT_TIMEOUT = 0.5  # seconds: PostgreSQL statement_timeout, MariaDB max_statement_time
POOL_SIZE, MAX_OVERFLOW, POOL_TIMEOUT = 4, 2, 0.5

ANSWER_WITHIN = 4.0
"""Seconds within which a failure of the database must be answered: the timeouts above and
their retry by ``pool_pre_ping`` (a ping, then one new connection), with a margin."""

RECOVERY_WITHIN = 2.0
"""Seconds within which the app serves again once the network is back."""

UNAVAILABLE = "The service is temporarily unavailable. Retry later."

DATABASES = pytest.mark.parametrize(
    ("backend", "rls"),
    [
        pytest.param("postgres", False, id="postgres", marks=pytest.mark.postgres),
        pytest.param("postgres", True, id="postgres-rls", marks=pytest.mark.postgres),
        pytest.param("mariadb", False, id="mariadb", marks=pytest.mark.mariadb),
    ],
    indirect=True,
)
"""Run a test on PostgreSQL, PostgreSQL with ``rls=True``, and MariaDB (the ``faulty``
fixture)."""


@dataclass
class FaultyDatabase:
    """A test's private database, and the app's way to it through ``proxy``."""

    backend: str  # "postgres" or "mariadb"
    rls: bool
    proxy: TcpProxy
    engine: Engine  # the app's: through the proxy, short timeouts, as the app role with RLS on
    direct: Engine  # the owner's, straight to the server: what the database really holds
    async_url: URL  # the app's async driver (asyncpg, aiomysql) through the proxy
    async_connect_args: dict[str, Any]

    def async_engine(self) -> AsyncEngine:
        """A pooled ``AsyncEngine`` like :attr:`engine`; the test disposes of it, in its loop."""
        return create_async_engine(
            self.async_url,
            pool_pre_ping=True,
            pool_size=POOL_SIZE,
            max_overflow=MAX_OVERFLOW,
            pool_timeout=POOL_TIMEOUT,
            connect_args=self.async_connect_args,
        )

    def bodies(self) -> list[str]:
        """Every tenant's note bodies, as committed, read past the proxy."""
        with self.direct.connect() as conn:
            rows = conn.execute(text("SELECT body FROM faults_note ORDER BY body"))
            return list(rows.scalars())

    def sleep(self, seconds: float) -> Any:
        """A statement that takes ``seconds`` on the server."""
        if self.backend == "postgres":
            return select(func.pg_sleep(seconds))
        return select(func.sleep(seconds))

    def warm(self, connections: int) -> None:
        """Leave ``connections`` open connections in the app engine's pool."""
        with contextlib.ExitStack() as stack:
            for _ in range(connections):
                stack.enter_context(self.engine.connect())


async def warm_async(engine: AsyncEngine, connections: int) -> None:
    """Leave ``connections`` open connections in an ``AsyncEngine``'s pool."""
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(connections):
            await stack.enter_async_context(engine.connect())


GATE_TIMEOUT = 5.0  # seconds a request waits at a gate, and a test for its arrivals


class Gate:
    """Where requests wait, mid-transaction, until the test has broken the network."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._arrived = 0
        self._open = False

    def pass_(self) -> None:
        """Called in a route: arrive, and wait until the test opens the gate."""
        with self._condition:
            self._arrived += 1
            self._condition.notify_all()
            self._condition.wait_for(lambda: self._open, GATE_TIMEOUT)

    async def arrivals(self, count: int) -> None:
        """Wait until ``count`` requests wait at the gate."""

        def wait() -> bool:
            with self._condition:
                return self._condition.wait_for(lambda: self._arrived >= count, GATE_TIMEOUT)

        assert await anyio.to_thread.run_sync(wait), f"{count} requests never reached the gate"

    def open(self) -> None:
        with self._condition:
            self._open = True
            self._condition.notify_all()


def build_app(db: FaultyDatabase, gate: Gate | None = None, **options: Any) -> FastAPI:
    """The app under test: acme's notes through ``TenantSession``, on ``db``'s proxy."""
    tenancy = Tenancy(db.engine, resolvers=[HeaderResolver()], rls=db.rls, **options)
    app = FastAPI()
    tenancy.install(app)
    held = gate or Gate()

    @app.get("/notes")
    def notes(session: TenantSession) -> list[str]:
        return list(session.exec(select(Note.body).order_by(Note.body)).all())

    @app.post("/notes", status_code=201)
    def add(body: str, session: TenantSession) -> dict[str, str]:
        session.add(Note(body=body))
        session.commit()
        return {"body": body}

    @app.post("/notes/held", status_code=201)
    def add_held(body: str, session: TenantSession) -> dict[str, str]:
        """Write and flush, wait at the gate, then commit."""
        session.add(Note(body=body))
        session.flush()
        held.pass_()
        session.commit()
        return {"body": body}

    @app.get("/sleep")
    def sleep(seconds: float, session: TenantSession) -> str:
        session.exec(db.sleep(seconds)).all()
        return "slept"

    return app


def build_async_app(db: FaultyDatabase, engine: AsyncEngine, gate: Gate) -> FastAPI:
    """:func:`build_app`'s notes on an ``AsyncEngine``, through ``AsyncTenantSession``."""
    tenancy = Tenancy(engine, resolvers=[HeaderResolver()], rls=db.rls)
    app = FastAPI()
    tenancy.install(app)

    @app.get("/notes")
    async def notes(session: AsyncTenantSession) -> list[str]:
        result = await session.exec(select(Note.body).order_by(Note.body))
        return list(result.all())

    @app.post("/notes", status_code=201)
    async def add(body: str, session: AsyncTenantSession) -> dict[str, str]:
        session.add(Note(body=body))
        await session.commit()
        return {"body": body}

    @app.post("/notes/held", status_code=201)
    async def add_held(body: str, session: AsyncTenantSession) -> dict[str, str]:
        session.add(Note(body=body))
        await session.flush()
        await anyio.to_thread.run_sync(gate.pass_)
        await session.commit()
        return {"body": body}

    return app


def member_of(engine: Engine) -> Callable[[Any], bool]:
    """A membership predicate that asks the database: is there a member row for the tenant?"""

    def is_member(context: Any) -> bool:
        with Session(engine) as session:
            statement = select(Member.id).where(Member.tenant == context.id)
            return session.exec(statement).first() is not None

    return is_member


@contextlib.asynccontextmanager
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on ``app`` that sees what a real client sees: an exception that escapes
    the app is Starlette's plain-text 500, not an exception in the test."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", headers=ACME
    ) as http:
        yield http


@dataclass(frozen=True)
class Timed:
    response: httpx.Response
    seconds: float


async def timed(request: Awaitable[httpx.Response]) -> Timed:
    started = time.monotonic()
    response = await request
    return Timed(response, time.monotonic() - started)


async def served_again(
    http: httpx.AsyncClient,
    url: str,
    within: float = RECOVERY_WITHIN,
    headers: dict[str, str] | None = None,
) -> Timed:
    """Ask ``url`` until it is answered below 500 or ``within`` seconds have passed."""
    started = time.monotonic()
    while True:
        response = await http.get(url, headers=headers)
        elapsed = time.monotonic() - started
        if response.status_code < 500 or elapsed > within:
            return Timed(response, elapsed)
        await anyio.sleep(0.05)


def assert_unavailable(
    answer: Timed, codes: tuple[str, ...] = ("database_unavailable",), within: float = ANSWER_WITHIN
) -> None:
    """A 503 the client can act on: JSON ``{"detail", "code"}``, ``Retry-After``, in time,
    and nothing of the server's internals."""
    response = answer.response
    kind = response.headers.get("content-type")
    assert response.status_code == 503, f"{response.status_code} {kind}: {response.text}"
    assert kind == "application/json", f"{response.status_code} {kind}: {response.text}"
    body = response.json()
    assert set(body) == {"detail", "code"}, body
    assert body["code"] in codes, body
    assert body["detail"] == UNAVAILABLE
    assert response.headers["Retry-After"] == "2"
    assert "127.0.0.1" not in response.text
    assert answer.seconds <= within, f"answered after {answer.seconds:.1f}s, not {within}s"


def failures(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The failures the app logged on ``fastapi_tenancy.errors``."""
    return [record for record in caplog.records if record.name == "fastapi_tenancy.errors"]


def logged(record: logging.LogRecord, name: str) -> Any:
    """An ``extra`` field of a log record (``tenancy_code``, ``tenancy_tenant``...)."""
    return vars(record)[name]
