"""Every failure answers JSON ``{"detail", "code"}`` with its status, loses nothing, and leaves
one log line with the tenant; clients never see internals.

Database failures are real ones, made on each database: a server that does not answer, a pool
with no connection left, a statement timeout, a foreign key whose row is gone. Refusals are
logged on ``fastapi_tenancy.security``, failures of the server on ``fastapi_tenancy.errors``.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, ForeignKey, create_engine, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel, select

from fastapi_tenancy import (
    AlreadyExists,
    DatabaseUnavailable,
    HeaderResolver,
    InternalError,
    JWTClaimResolver,
    SubdomainResolver,
    Tenancy,
    TenancyMisuse,
    TenantScoped,
    TenantSession,
    WriteConflict,
    tenant_unique,
)
from fastapi_tenancy.database_errors import classify_database_error

failures_registry = registry()


class FailuresModel(SQLModel, registry=failures_registry):
    """This module's tables: a registry of their own."""


class Shelf(FailuresModel, TenantScoped, table=True):
    __tablename__ = "failures_shelf"
    __table_args__ = (tenant_unique("name"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=50)


class Book(FailuresModel, TenantScoped, table=True):
    __tablename__ = "failures_book"

    id: int | None = Field(default=None, primary_key=True)
    shelf_id: int = Field(sa_column_args=[ForeignKey("failures_shelf.id")])


SECRET = "a-test-only-hs256-secret-long-enough-for-hs512-too-0123456789abcdef"
ACME = {"X-Tenant-ID": "acme"}


def build(engine: Engine, **tenancy_options: Any) -> FastAPI:
    tenancy = Tenancy(engine, resolvers=[HeaderResolver()], **tenancy_options)
    app = FastAPI()
    tenancy.install(app)

    @app.post("/shelves", status_code=201)
    def add_shelf(name: str, session: TenantSession) -> Shelf:
        shelf = Shelf(name=name)
        session.add(shelf)
        session.commit()
        return shelf

    @app.get("/shelves")
    def shelves(session: TenantSession) -> list[str]:
        return list(session.exec(select(Shelf.name)).all())

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("the internals of the app: secret-value-42")

    return app


@pytest.fixture
def app(engine: Engine, create_tables: Any) -> FastAPI:
    create_tables(engine, Shelf, Book)
    return build(engine)


def records(caplog: pytest.LogCaptureFixture, logger: str) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == logger]


def test_a_database_that_does_not_answer_is_503_with_retry_after(
    caplog: pytest.LogCaptureFixture,
) -> None:
    down = create_engine("postgresql+psycopg://postgres@127.0.0.1:1/test?connect_timeout=2")
    app = build(down)
    caplog.set_level(logging.ERROR, logger="fastapi_tenancy.errors")
    with TestClient(app) as client:
        r = client.get("/shelves", headers=ACME)

    assert r.status_code == 503
    assert r.json() == {
        "detail": "The service is temporarily unavailable. Retry later.",
        "code": "database_unavailable",
    }
    assert r.headers["Retry-After"] == "2"
    (logged,) = records(caplog, "fastapi_tenancy.errors")
    assert logged.tenancy_tenant == "acme"
    assert logged.exc_info is not None
    assert "127.0.0.1" not in r.text  # the driver's message stays in the log


def test_a_pool_with_no_connection_left_is_503(
    engine: Engine, create_tables: Any, caplog: pytest.LogCaptureFixture
) -> None:
    create_tables(engine, Shelf, Book)
    small = create_engine(engine.url, pool_size=1, max_overflow=0, pool_timeout=0.2)
    try:
        app = build(small)
        with small.connect(), TestClient(app) as client:  # the pool's one connection is taken
            r = client.get("/shelves", headers=ACME)
        assert (r.status_code, r.json()["code"]) == (503, "database_unavailable")
        with TestClient(app) as client:  # and serves again once it is back
            assert client.get("/shelves", headers=ACME).status_code == 200
    finally:
        small.dispose()


def test_a_duplicate_is_409_and_nothing_is_logged_as_a_failure(
    app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    with TestClient(app) as client:
        assert client.post("/shelves?name=a", headers=ACME).status_code == 201
        r = client.post("/shelves?name=a", headers=ACME)
        assert client.get("/shelves", headers=ACME).json() == ["a"]

    assert (r.status_code, r.json()["code"]) == (409, "already_exists")
    assert records(caplog, "fastapi_tenancy.errors") == []


def test_an_unhandled_error_is_a_json_500_logged_once_with_the_tenant(
    app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    # raise_server_exceptions stays on: the error does not leave the app, so a server keeps
    # the keep-alive connection open for the client's next request
    with TestClient(app) as client:
        r = client.get("/boom", headers=ACME)
        after = client.get("/shelves", headers=ACME)

    assert r.status_code == 500
    assert r.json() == {
        "detail": "The server could not complete this request.",
        "code": "internal_error",
    }
    assert "secret-value-42" not in r.text
    assert after.status_code == 200
    (logged,) = records(caplog, "fastapi_tenancy.errors")
    assert logged.tenancy_tenant == "acme"
    assert "secret-value-42" in logged.getMessage()
    assert logged.exc_info is not None


def test_an_app_with_its_own_handler_for_every_error_keeps_it(engine: Engine) -> None:
    app = build(engine)

    @app.exception_handler(Exception)
    async def own(request: Any, error: Exception) -> Any:
        from fastapi.responses import PlainTextResponse

        return PlainTextResponse("ours", status_code=500)

    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.get("/boom", headers=ACME)
    assert (r.status_code, r.text) == (500, "ours")


def test_refusals_are_logged_on_the_security_logger_without_the_token(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    tenancy = Tenancy(
        engine,
        resolvers=[JWTClaimResolver(key=SECRET, algorithms=["HS256"]), HeaderResolver()],
        trust_unverified_sources=True,
    )
    app = FastAPI()
    tenancy.install(app)
    caplog.set_level(logging.WARNING, logger="fastapi_tenancy.security")
    token = "eyJhbGciOiJIUzI1NiJ9.eyJ0ZW5hbnQiOiJhY21lIn0.forged-signature"
    with TestClient(app) as client:
        bad = client.get("/x", headers={"Authorization": f"Bearer {token}"})
        key = client.get("/x", headers={"X-Tenant-ID": "Not A Key"})

    assert (bad.status_code, key.status_code) == (401, 400)
    logged = records(caplog, "fastapi_tenancy.security")
    assert [(r.levelname, r.tenancy_code) for r in logged] == [
        ("WARNING", "invalid_token"),
        ("WARNING", "invalid_tenant_key"),
    ]
    assert all(r.tenancy_client == "testclient" for r in logged)
    assert all(token not in r.getMessage() and token not in str(r.__dict__) for r in logged)


def test_a_database_error_in_a_mounted_app_answers_json(engine: Engine) -> None:
    down = create_engine("postgresql+psycopg://postgres@127.0.0.1:1/test?connect_timeout=2")
    outer = build(down)
    inner = FastAPI()

    @inner.get("/shelves")
    def shelves(session: TenantSession) -> list[str]:
        return list(session.exec(select(Shelf.name)).all())

    outer.mount("/v1", inner)
    with TestClient(outer) as client:
        r = client.get("/v1/shelves", headers=ACME)
    assert (r.status_code, r.json()["code"]) == (503, "database_unavailable")


def raised(engine: Engine, statements: list[str]) -> SQLAlchemyError:
    """The error the last of ``statements`` raises, on one connection."""
    *before, last = statements
    with engine.connect() as conn:
        for statement in before:
            conn.execute(text(statement))
        with pytest.raises(SQLAlchemyError) as error:
            conn.execute(text(last))
    return error.value


def test_a_foreign_key_to_a_row_deleted_meanwhile_is_a_write_conflict(
    engine: Engine, create_tables: Any
) -> None:
    """What a concurrent delete of the shelf makes of a book's insert: a 409 to retry."""
    create_tables(engine, Shelf, Book)
    statements = ["INSERT INTO failures_book (tenant_id, shelf_id) VALUES ('acme', 999)"]
    if engine.dialect.name == "sqlite":
        statements.insert(0, "PRAGMA foreign_keys = ON")
    assert isinstance(classify_database_error(raised(engine, statements)), WriteConflict)


def test_a_duplicate_from_the_driver_is_already_exists(engine: Engine, create_tables: Any) -> None:
    create_tables(engine, Shelf)
    insert_twice = ["INSERT INTO failures_shelf (tenant_id, name) VALUES ('acme', 'a')"] * 2
    assert isinstance(classify_database_error(raised(engine, insert_twice)), AlreadyExists)


def test_an_error_of_the_apps_own_sql_is_a_generic_500(engine: Engine) -> None:
    error = raised(engine, ["SELECT no_such_column FROM no_such_table"])
    assert isinstance(classify_database_error(error), InternalError)


@pytest.mark.backends("postgres", "mariadb")
def test_a_statement_timeout_is_503(engine: Engine) -> None:
    statement = {
        "postgresql": ["SET statement_timeout = 50", "SELECT pg_sleep(2)"],
    }.get(engine.dialect.name, ["SET STATEMENT max_statement_time=0.05 FOR SELECT SLEEP(2)"])
    assert isinstance(classify_database_error(raised(engine, statement)), DatabaseUnavailable)


def test_a_verified_token_beside_an_unverified_source_needs_a_membership_rule(
    engine: Engine,
) -> None:
    """The attack it prevents: no token, ``X-Tenant-ID: globex``, and globex's data."""
    token = JWTClaimResolver(key=SECRET, algorithms=["HS256"])
    with pytest.raises(TenancyMisuse, match="membership="):
        Tenancy(engine, resolvers=[token, HeaderResolver()])
    with pytest.raises(TenancyMisuse, match="trust_unverified_sources"):
        Tenancy(engine, resolvers=[SubdomainResolver("example.test"), token])
    Tenancy(engine, resolvers=[token, HeaderResolver()], membership=lambda context: True)
    Tenancy(engine, resolvers=[token, HeaderResolver()], trust_unverified_sources=True)
    Tenancy(engine, resolvers=[HeaderResolver()])  # no token: nothing claims to verify callers
    Tenancy(engine, resolvers=[token])
