"""Running in production: engines whose every wait on the database is bounded, and an app that
sheds load, checks its database at start, cleans up on every exit and answers its probes.

Every worker process (``uvicorn --factory docs.examples.operations:app_factory --workers 4``)
calls :func:`app_factory`, so each has an engine, and a pool, of its own.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import anyio.to_thread
from fastapi import FastAPI
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlmodel import Field, SQLModel, select

from fastapi_tenancy import (
    DatabaseUnavailable,
    HeaderResolver,
    SessionLimits,
    Tenancy,
    TenantScoped,
    TenantSession,
)


class Order(TenantScoped, table=True):
    __tablename__ = "ops_order"

    id: int | None = Field(default=None, primary_key=True)
    item: str = Field(max_length=100)


# --8<-- [start:psycopg]
def psycopg_engine(url: str | URL) -> Engine:
    """PostgreSQL with psycopg 3: ``postgresql+psycopg://app@db/prod``."""
    return create_engine(
        url,
        pool_size=10,
        max_overflow=5,  # at most 15 connections per worker process
        pool_timeout=5,  # seconds a checkout waits for a free pooled connection
        pool_pre_ping=True,  # a pooled connection that died is replaced, not handed out
        connect_args={
            "connect_timeout": 5,  # seconds to connect (libpq waits 2 at least)
            "keepalives": 1,  # probe an idle connection after 30 s, 3 times, 10 s apart
            "keepalives_idle": 30,
            "keepalives_interval": 10,
            "keepalives_count": 3,
            "tcp_user_timeout": 30_000,  # ms that sent bytes may stay unacknowledged
            # The server ends a statement after 15 s and a session idle in a transaction
            # after 60 s. (This replaces an options= given in the URL.)
            "options": "-c statement_timeout=15s -c idle_in_transaction_session_timeout=60s",
        },
    )


# --8<-- [end:psycopg]


# --8<-- [start:pymysql]
def pymysql_engine(url: str | URL) -> Engine:
    """MariaDB or MySQL with PyMySQL: ``mysql+pymysql://app@db/prod``."""
    return create_engine(
        url,
        pool_size=10,
        max_overflow=5,
        pool_timeout=5,
        pool_pre_ping=True,
        connect_args={
            "connect_timeout": 5,
            # Seconds to wait for the server: longer than a statement may run, so that the
            # server ends a slow statement, with an error, before the socket gives up.
            "read_timeout": 20,
            "write_timeout": 20,
            # MariaDB. MySQL: SET SESSION max_execution_time = 15000 (ms, SELECT only)
            "init_command": "SET SESSION max_statement_time = 15",
        },
    )


# --8<-- [end:pymysql]


# --8<-- [start:asyncpg]
def asyncpg_engine(url: str | URL) -> AsyncEngine:
    """PostgreSQL with asyncpg: ``postgresql+asyncpg://app@db/prod``."""
    return create_async_engine(
        url,
        pool_size=10,
        max_overflow=5,
        pool_timeout=5,
        pool_pre_ping=True,
        connect_args={
            "timeout": 5,  # seconds to connect
            "command_timeout": 20,  # seconds to wait for the answer to any statement
            "server_settings": {
                "statement_timeout": "15s",
                "idle_in_transaction_session_timeout": "60s",
            },
        },
    )


# --8<-- [end:asyncpg]


def ping(engine: Engine) -> None:
    """``SELECT 1``: raises when the database does not answer."""
    with engine.connect() as conn:
        conn.execute(text("SELECT 1"))


# --8<-- [start:app]
def create_app(engine: Engine) -> FastAPI:
    tenancy = Tenancy(
        engine,
        resolvers=[HeaderResolver()],
        exclude_paths=("/healthz", "/readyz"),  # probes: no tenant, no lookup, no token
        session_limits=SessionLimits(wait=2.0),  # no session free for 2 s: 503 database_busy
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            # MySQL and MariaDB: tenant columns that ignore case. Other databases: []
            if findings := await tenancy.check_database(SQLModel.metadata):
                raise RuntimeError("\n".join(map(str, findings)))
            yield
        finally:
            engine.dispose()  # on shutdown, and when the startup fails

    app = FastAPI(lifespan=lifespan)
    tenancy.install(app)

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness: touches no database and no thread."""
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> dict[str, str]:
        """Readiness: the database answers within 2 s, whatever the probe waits for."""
        with anyio.move_on_after(2):
            await anyio.to_thread.run_sync(ping, engine, abandon_on_cancel=True)
            return {"status": "ok"}
        raise DatabaseUnavailable("the database did not answer the readiness probe in 2 s")

    @app.get("/orders")
    def list_orders(session: TenantSession) -> list[Order]:
        return list(session.exec(select(Order)).all())

    return app


# --8<-- [end:app]


# --8<-- [start:factory]
def app_factory() -> FastAPI:
    """``uvicorn --factory docs.examples.operations:app_factory --workers 4``."""
    return create_app(psycopg_engine(os.environ["DATABASE_URL"]))


# --8<-- [end:factory]
