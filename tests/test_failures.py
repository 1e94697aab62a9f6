"""Every failure answers JSON ``{"detail", "code"}`` with its status, loses nothing, and leaves
one log line with the tenant; clients never see internals.

Database failures are real ones, made on each database: a server that does not answer, a pool
with no connection left, a statement timeout, a foreign key whose row is gone. Refusals are
logged on ``fastapi_tenancy.security``, failures of the server on ``fastapi_tenancy.errors``.
"""

from __future__ import annotations

import logging
import socket
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, ForeignKey, create_engine, event, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import make_transient_to_detached, registry
from sqlmodel import Field, SQLModel, select

from fastapi_tenancy import (
    AlreadyExists,
    CrossTenantWrite,
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
        session.refresh(shelf)
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


# --------------------------------------------------------------------------------------------
# A row its own tenant deleted meanwhile is a conflict, not a cross-tenant write


def with_one_shelf(engine: Engine, tenant: str, name: str) -> Tenancy:
    """A Tenancy on ``engine``, whose ``tenant`` has one shelf called ``name``."""
    tenancy = Tenancy(engine, resolvers=[HeaderResolver()])
    with tenancy.session(tenant=tenant) as session:
        session.add(Shelf(name=name))
        session.commit()
    return tenancy


def shelf_id_of(tenancy: Tenancy, tenant: str) -> int:
    with tenancy.session(tenant=tenant) as session:
        shelf_id = session.exec(select(Shelf)).one().id
    assert shelf_id is not None
    return shelf_id


def add_forged_shelf(session: Any, shelf_id: int) -> Shelf:
    """An acme shelf with ``shelf_id``, put in ``session`` as if read, without a read."""
    forged = Shelf(id=shelf_id, name="mine now", tenant_id="acme")
    make_transient_to_detached(forged)
    session.add(forged)
    return forged


def delete_shelf_elsewhere(engine: Engine, shelf_id: int) -> None:
    """The tenant deleting the row in another request, committed before ours writes."""
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM failures_shelf WHERE id = :id"), {"id": shelf_id})


def audit_alarms(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in records(caplog, "fastapi_tenancy.audit")
        if getattr(r, "tenancy_event", None) == "cross_tenant_write"
    ]


@pytest.mark.parametrize("write", ["update", "delete"])
def test_writing_a_row_deleted_meanwhile_is_a_conflict_and_no_alarm(
    write: str, engine: Engine, create_tables: Any, caplog: pytest.LogCaptureFixture
) -> None:
    create_tables(engine, Shelf)
    tenancy = with_one_shelf(engine, "acme", "oak")
    with tenancy.session(tenant="acme") as session:
        shelf = session.exec(select(Shelf)).one()
        shelf_id = shelf.id
        assert shelf_id is not None
        session.commit()  # end the read's transaction: the next one sees the delete
        delete_shelf_elsewhere(engine, shelf_id)
        if write == "update":
            shelf.name = "pine"
        else:
            session.delete(shelf)
        with pytest.raises(WriteConflict):
            session.commit()
    assert audit_alarms(caplog) == []


@pytest.mark.backends("postgres", "mariadb")
def test_a_row_deleted_between_the_proof_and_the_update_is_a_conflict(
    engine: Engine, create_tables: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The proof saw the row; the delete commits before the UPDATE: 0 rows matched."""
    create_tables(engine, Shelf)
    tenancy = with_one_shelf(engine, "acme", "oak")
    other = create_engine(engine.url)

    def delete_first(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("UPDATE failures_shelf"):
            delete_shelf_elsewhere(other, shelf_id)

    with tenancy.session(tenant="acme") as session:
        shelf = session.exec(select(Shelf)).one()
        assert shelf.id is not None
        shelf_id = shelf.id
        shelf.name = "pine"
        event.listen(engine, "before_cursor_execute", delete_first)
        try:
            with pytest.raises(SQLAlchemyError) as raised_error:
                session.commit()
        finally:
            event.remove(engine, "before_cursor_execute", delete_first)
            other.dispose()
    assert isinstance(classify_database_error(raised_error.value), WriteConflict)
    assert audit_alarms(caplog) == []


@pytest.mark.parametrize("exists", ["another tenant's row", "no row"])
def test_a_forged_row_is_a_cross_tenant_write_whether_or_not_it_exists(
    exists: str, engine: Engine, create_tables: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The answer must not tell whether the id is another tenant's: no oracle."""
    create_tables(engine, Shelf)
    tenancy = with_one_shelf(engine, "globex", "globex shelf")
    target = shelf_id_of(tenancy, "globex")
    forged_id = target if exists == "another tenant's row" else target + 1000
    with tenancy.session(tenant="acme") as session:
        forged = add_forged_shelf(session, forged_id)
        forged.name = "mine now!"
        with pytest.raises(CrossTenantWrite):
            session.commit()
    assert len(audit_alarms(caplog)) == 1


def test_a_route_writing_a_row_deleted_meanwhile_answers_409(
    engine: Engine, create_tables: Any, caplog: pytest.LogCaptureFixture
) -> None:
    create_tables(engine, Shelf)
    app = build(engine)

    @app.patch("/shelves/{shelf_id}")
    def rename(shelf_id: int, name: str, session: TenantSession) -> Shelf:
        shelf = session.get(Shelf, shelf_id)
        assert shelf is not None
        delete_shelf_elsewhere(engine, shelf_id)  # the tenant's other request, meanwhile
        shelf.name = name
        session.commit()
        return shelf  # pragma: no cover - the commit fails

    with TestClient(app) as client:
        shelf_id = client.post("/shelves", params={"name": "oak"}, headers=ACME).json()["id"]
        r = client.patch(f"/shelves/{shelf_id}", params={"name": "pine"}, headers=ACME)
    assert r.status_code == 409, r.text
    assert r.json()["code"] == "write_conflict"
    assert audit_alarms(caplog) == []


@pytest.mark.parametrize("write", ["update", "delete"])
def test_a_row_read_before_a_commit_is_written_after_it(
    write: str, engine: Engine, create_tables: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The commit expired the row; the flush loads it again, scoped, and writes it."""
    create_tables(engine, Shelf)
    tenancy = with_one_shelf(engine, "acme", "oak")
    with tenancy.session(tenant="acme") as session:
        shelf = session.exec(select(Shelf)).one()
        session.commit()
        if write == "update":
            shelf.name = "pine"
        else:
            session.delete(shelf)
        session.commit()
    with tenancy.session(tenant="acme") as session:
        names = session.exec(select(Shelf.name)).all()
    assert names == (["pine"] if write == "update" else [])
    assert audit_alarms(caplog) == []


# --------------------------------------------------------------------------------------------
# Failures while the tenant is resolved


def test_a_membership_rule_whose_database_is_gone_is_503_json(
    caplog: pytest.LogCaptureFixture,
) -> None:
    unreachable = create_engine("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1")

    def member(context: Any) -> bool:
        with unreachable.connect():
            return True  # pragma: no cover - never connects

    tenancy = Tenancy(unreachable, resolvers=[HeaderResolver()], membership=member)
    app = FastAPI()
    tenancy.install(app)

    @app.get("/here")
    def here() -> str:  # pragma: no cover - never reached
        return "here"

    with TestClient(app) as client:
        r = client.get("/here", headers=ACME)
    unreachable.dispose()
    assert r.status_code == 503, r.text
    assert r.json() == {
        "detail": "The service is temporarily unavailable. Retry later.",
        "code": "database_unavailable",
    }
    assert r.headers["Retry-After"] == "2"
    (failure,) = records(caplog, "fastapi_tenancy.errors")
    assert failure.exc_info is not None


@pytest.mark.parametrize(
    ("raised_error", "status", "code"),
    [
        (ConnectionRefusedError(111, "Connect call failed"), 503, "database_unavailable"),
        (TimeoutError(), 503, "database_unavailable"),
        (socket.gaierror(-2, "Name or service not known"), 503, "database_unavailable"),
        (RuntimeError("resolver internals: secret-value-42"), 500, "internal_error"),
    ],
    ids=["connection-refused", "timeout", "unknown-host", "bug"],
)
def test_an_error_in_a_resolver_is_answered_as_json_and_logged(
    raised_error: Exception, status: int, code: str, caplog: pytest.LogCaptureFixture
) -> None:
    """asyncpg raises ``OSError`` and ``TimeoutError`` past SQLAlchemy; a bug is a bug."""

    def resolver(conn: Any) -> str:
        raise raised_error

    engine = create_engine("sqlite://")
    app = FastAPI()
    Tenancy(engine, resolvers=[resolver]).install(app)
    with TestClient(app) as client:
        r = client.get("/anything")
    assert r.status_code == status, r.text
    assert r.json()["code"] == code
    assert "secret-value-42" not in r.text
    (failure,) = records(caplog, "fastapi_tenancy.errors")
    assert failure.exc_info is not None
    assert failure.exc_info[1] is raised_error


def test_a_new_row_pointing_at_a_row_deleted_meanwhile_is_a_conflict_and_no_alarm(
    engine: Engine, create_tables: Any, caplog: pytest.LogCaptureFixture
) -> None:
    create_tables(engine, Shelf, Book)
    tenancy = with_one_shelf(engine, "acme", "oak")
    with tenancy.session(tenant="acme") as session:
        shelf = session.exec(select(Shelf)).one()
        assert shelf.id is not None
        delete_shelf_elsewhere(engine, shelf.id)
        session.add(Book(shelf_id=shelf.id))
        # MariaDB's check reads the transaction's snapshot, where the shelf still is; the
        # database's foreign key then refuses the insert.
        with pytest.raises((WriteConflict, SQLAlchemyError)) as caught:
            session.commit()
    error = caught.value
    if isinstance(error, SQLAlchemyError):
        error = classify_database_error(error)
    assert isinstance(error, WriteConflict)
    assert audit_alarms(caplog) == []


def test_a_new_row_pointing_at_a_row_never_read_here_is_refused_as_before(
    engine: Engine, create_tables: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """Another tenant's row and no row answer alike: the id was never this tenant's to read."""
    create_tables(engine, Shelf, Book)
    tenancy = with_one_shelf(engine, "globex", "globex shelf")
    theirs = shelf_id_of(tenancy, "globex")
    for shelf_id in (theirs, theirs + 1000):
        with tenancy.session(tenant="acme") as session:
            session.add(Book(shelf_id=shelf_id))
            with pytest.raises(CrossTenantWrite):
                session.commit()
    assert len(audit_alarms(caplog)) == 2


@pytest.mark.parametrize("exists", ["another tenant's row", "no row"])
def test_a_new_row_pointing_at_a_forged_parent_is_refused_as_a_cross_tenant_write(
    exists: str, engine: Engine, create_tables: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A parent put in the identity map without a read cannot pass for one read here."""
    create_tables(engine, Shelf, Book)
    tenancy = with_one_shelf(engine, "globex", "globex shelf")
    theirs = shelf_id_of(tenancy, "globex")
    forged_id = theirs if exists == "another tenant's row" else theirs + 1000
    with tenancy.session(tenant="acme") as session:
        add_forged_shelf(session, forged_id)
        session.add(Book(shelf_id=forged_id))
        with pytest.raises(CrossTenantWrite):
            session.commit()
    assert len(audit_alarms(caplog)) == 1
