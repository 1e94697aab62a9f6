"""docs/operations.md's sample: the engines' timeouts reach the database, the app's lifespan
checks the database and always cleans up, its probes answer as the page says, and the async
``tenancy_app`` fixture of docs/testing.md serves one engine to several ``TestClient``s."""

from __future__ import annotations

import time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import NullPool

import docs.examples.operations as operations
from docs.examples import getting_started_async
from docs.examples.testing_async import tenancy_app  # noqa: F401 (the fixture, as in a conftest)
from fastapi_tenancy.testing import find_tenancy

ACME = {"X-Tenant-ID": "acme"}
UNREACHABLE = "postgresql+psycopg://nobody@127.0.0.1:1/none"


def setting(engine: Engine, query: str) -> Any:
    with engine.connect() as conn:
        return conn.execute(text(query)).scalar_one()


@pytest.mark.backends("postgres")
def test_the_psycopg_engine_bounds_every_wait(database: Any) -> None:
    engine = operations.psycopg_engine(database.server_url)
    try:
        assert (engine.pool.size(), engine.pool.timeout()) == (10, 5)  # type: ignore[attr-defined]
        assert setting(engine, "SHOW statement_timeout") == "15s"
        assert setting(engine, "SHOW idle_in_transaction_session_timeout") == "1min"
        with engine.connect() as conn:
            parameters = conn.connection.dbapi_connection.info.get_parameters()  # type: ignore[union-attr]
        assert parameters["connect_timeout"] == "5"
        assert parameters["tcp_user_timeout"] == "30000"
        assert (parameters["keepalives_idle"], parameters["keepalives_count"]) == ("30", "3")
    finally:
        engine.dispose()


@pytest.mark.backends("mariadb")
def test_the_pymysql_engine_bounds_every_wait(database: Any) -> None:
    engine = operations.pymysql_engine(database.url)
    try:
        assert float(setting(engine, "SELECT @@max_statement_time")) == 15
        with engine.connect() as conn:
            driver = conn.connection.dbapi_connection
            assert (driver._read_timeout, driver._write_timeout) == (20, 20)  # type: ignore[union-attr]
    finally:
        engine.dispose()


@pytest.mark.backends("postgres")
@pytest.mark.anyio
async def test_the_asyncpg_engine_bounds_every_wait(database: Any) -> None:
    engine: AsyncEngine = operations.asyncpg_engine(
        database.server_url.set(drivername="postgresql+asyncpg")
    )
    try:
        async with engine.connect() as conn:
            result = await conn.execute(text("SHOW statement_timeout"))
            assert result.scalar_one() == "15s"
            raw = await conn.get_raw_connection()
            assert raw.driver_connection._config.command_timeout == 20  # type: ignore[union-attr]
    finally:
        await engine.dispose()


def test_the_app_serves_its_probes_and_disposes_of_its_engine_at_shutdown(
    engine: Engine, create_tables: Any
) -> None:
    create_tables(engine, operations.Order)
    app = operations.create_app(engine)
    limiter = find_tenancy(app).session_limiter
    assert (limiter.total, limiter.wait) == (
        engine.pool.size() + engine.pool._max_overflow,  # type: ignore[attr-defined]
        2.0,
    )
    pool = engine.pool
    with TestClient(app) as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        assert client.get("/readyz").json() == {"status": "ok"}  # no tenant needed
        r = client.get("/orders", headers=ACME)
        assert (r.status_code, r.json()) == (200, [])
        r = client.get("/orders")
        assert (r.status_code, r.json()["code"]) == (400, "tenant_required")
    assert engine.pool is not pool  # disposed: a fresh, empty pool


def test_readiness_is_503_when_the_database_is_down_and_liveness_is_not() -> None:
    down = create_engine(UNREACHABLE, poolclass=NullPool, connect_args={"connect_timeout": 2})
    with TestClient(operations.create_app(down)) as client:
        assert client.get("/healthz").status_code == 200
        r = client.get("/readyz")
    assert r.status_code == 503, r.text
    assert r.json()["code"] == "database_unavailable"
    assert r.headers["Retry-After"] == "2"


@pytest.mark.backends("sqlite")
def test_readiness_answers_503_within_its_own_timeout(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(operations, "ping", lambda engine: time.sleep(3))  # a database that hangs
    with TestClient(operations.create_app(engine)) as client:
        started = time.monotonic()
        r = client.get("/readyz")
        elapsed = time.monotonic() - started
    assert (r.status_code, r.json()["code"]) == (503, "database_unavailable")
    assert 1.9 < elapsed < 2.9
    time.sleep(3.1 - elapsed)  # let the abandoned probe end before the engine's teardown


@pytest.mark.backends("mariadb")
def test_a_tenant_column_that_ignores_case_fails_the_startup_and_the_engine_is_disposed(
    database: Any, engine: Engine
) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE ops_order (id INTEGER PRIMARY KEY AUTO_INCREMENT, "
                "tenant_id VARCHAR(63) COLLATE utf8mb4_general_ci NOT NULL, "
                "item VARCHAR(100) NOT NULL)"
            )
        )
    app_engine = operations.pymysql_engine(database.url)
    pool = app_engine.pool
    with (
        pytest.raises(RuntimeError, match="tenant_collation_not_binary"),
        TestClient(operations.create_app(app_engine)),
    ):
        pytest.fail("the app started")  # pragma: no cover
    assert app_engine.pool is not pool


@pytest.mark.backends("postgres")
def test_each_worker_builds_its_app_and_engine_from_the_environment(
    database: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", database.server_url.render_as_string(hide_password=False))
    first, second = operations.app_factory(), operations.app_factory()
    assert find_tenancy(first).engine is not find_tenancy(second).engine
    with TestClient(first) as client:
        assert client.get("/readyz").json() == {"status": "ok"}


# docs/testing.md: an AsyncEngine shared by several TestClients, each with its own event loop


def test_the_async_fixture_serves_tenants_from_several_clients(tenant_client: Any) -> None:
    acme, globex = tenant_client("acme"), tenant_client("globex")
    for client, text_ in [(acme, "hello"), (globex, "hola"), (acme, "again")]:
        r = client.post("/notes", json={"text": text_})
        assert r.status_code == 201, r.text
    assert [n["text"] for n in acme.get("/notes").json()] == ["hello", "again"]
    assert [n["text"] for n in globex.get("/notes").json()] == ["hola"]


def test_an_async_engine_without_a_pool_works_from_every_test_clients_loop(
    async_engine: AsyncEngine, create_tables: Any
) -> None:
    create_tables(async_engine, getting_started_async.Note)
    app = getting_started_async.create_app(async_engine)
    for text_ in ("one", "two", "three"):  # a new event loop for every request, outside `with`
        r = TestClient(app, headers=ACME).post("/notes", json={"text": text_})
        assert r.status_code == 201, r.text
    with TestClient(app, headers=ACME) as client:  # and one more for this block
        assert [n["text"] for n in client.get("/notes").json()] == ["one", "two", "three"]
