"""Seeding, settings and the command line, without a server; health, readiness, shutdown
and the engines' timeouts: the app never waits on the database without a bound, and leaves no
connection behind."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import jwt
import pytest
from example_support import BASE_DOMAIN, FAST_HASH, SECRET, bearer
from fastapi.testclient import TestClient
from sqlalchemy import Engine, event, func, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlmodel import Session, select

from example_app import create_app
from example_app.__main__ import main
from example_app.auth import PasswordHasher
from example_app.models import Project, Tenant, User
from example_app.seed import SEED_USERS, init_database
from example_app.settings import (
    DEFAULT_TIMEOUTS,
    DEV_JWT_SECRET,
    EngineTimeouts,
    Settings,
    database_url,
    make_engine,
)


def _count(engine: Engine, model: type[Project] | type[Tenant] | type[User]) -> int:
    with Session(engine) as session:
        return session.exec(select(func.count()).select_from(model)).one()


def test_the_first_start_seeds_and_later_starts_keep_the_data(engine: Engine) -> None:
    passwords = PasswordHasher(FAST_HASH)
    assert init_database(engine, passwords) is True
    assert (_count(engine, Tenant), _count(engine, User), _count(engine, Project)) == (3, 5, 6)

    with Session(engine) as session:
        session.add(Project(name="Kept", tenant_id="acme"))
        session.commit()

    assert init_database(engine, passwords) is False
    assert _count(engine, Project) == 7

    assert init_database(engine, passwords, reset=True) is True
    assert _count(engine, Project) == 6


def test_seeded_passwords_are_argon2_hashes(engine: Engine) -> None:
    init_database(engine, PasswordHasher(FAST_HASH))
    with Session(engine) as session:
        hashes = session.exec(select(User.password_hash)).all()
    assert len(hashes) == len(SEED_USERS)
    assert all(h.startswith("$argon2id$") for h in hashes)
    assert not any(user.password in h for user in SEED_USERS for h in hashes)


def test_settings_default_to_a_local_sqlite_file_and_the_development_key() -> None:
    settings = Settings.from_env({})
    assert settings == Settings(
        database_url="sqlite:///./example_app.db",
        port=8000,
        jwt_secret=DEV_JWT_SECRET,
        base_domain="example.test",
    )
    assert settings.uses_dev_secret


def test_settings_read_the_environment() -> None:
    settings = Settings.from_env(
        {
            "DATABASE_URL": "postgresql://app@db.internal/app",
            "PORT": "9000",
            "EXAMPLE_JWT_SECRET": "s" * 40,
            "EXAMPLE_BASE_DOMAIN": "saas.test",
        }
    )
    assert (settings.port, settings.base_domain, settings.uses_dev_secret) == (
        9000,
        "saas.test",
        False,
    )
    assert database_url(settings.database_url).drivername == "postgresql+psycopg"
    assert database_url("mysql://root@localhost/app").drivername == "mysql+pymysql"


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        ({"EXAMPLE_JWT_SECRET": "short"}, "EXAMPLE_JWT_SECRET"),
        ({"PORT": "eighty"}, "PORT"),
        ({"PORT": "70000"}, "PORT"),
        ({"DATABASE_URL": "not a url"}, "DATABASE_URL"),
    ],
)
def test_bad_settings_are_refused_with_the_variables_name(
    environ: dict[str, str], named: str
) -> None:
    with pytest.raises(ValueError, match=named):
        Settings.from_env(environ)


def test_help_lists_the_environment_and_the_seeded_logins(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for name in (
        "--reset",
        "DATABASE_URL",
        "PORT",
        "EXAMPLE_JWT_SECRET",
        "EXAMPLE_BASE_DOMAIN",
        "EXAMPLE_RLS_PASSWORD",
    ):
        assert name in out
    for user in SEED_USERS:
        assert f"{user.email}" in out
        assert user.password in out


def test_a_bad_setting_stops_the_command_with_a_message(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EXAMPLE_JWT_SECRET", "short")
    assert main([]) == 2
    assert "EXAMPLE_JWT_SECRET" in capsys.readouterr().err


def test_create_app_without_an_engine_reads_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'from-env.db'}"
    engine = make_engine(url)
    init_database(engine, PasswordHasher(FAST_HASH))
    engine.dispose()
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("EXAMPLE_BASE_DOMAIN", "saas.test")
    monkeypatch.delenv("EXAMPLE_JWT_SECRET", raising=False)

    with TestClient(create_app(password_hash=FAST_HASH)) as client:
        r = client.post(
            "/auth/login", json={"email": "carol@example.test", "password": "carol-pass"}
        )
        assert r.status_code == 200, r.text
        jwt.decode(r.json()["access_token"], DEV_JWT_SECRET, algorithms=["HS256"])
        r = client.get("http://acme.saas.test/stats", headers=bearer(r.json()["access_token"]))
        assert r.status_code == 200, r.text
        assert r.json() == {"projects": 3, "tasks": 6}


# -- health, shutdown, timeouts -----------------------------------------------------------------

BOUND = 10.0  # seconds: far beyond any answer that does not wait for the pool's 30 s


def make_client(engine: Engine, **options: Any) -> TestClient:
    init_database(engine, PasswordHasher(FAST_HASH))
    app = create_app(
        engine, jwt_secret=SECRET, base_domain=BASE_DOMAIN, password_hash=FAST_HASH, **options
    )
    return TestClient(app)


def count_closed_connections(engine: Engine) -> list[int]:
    closed: list[int] = []
    event.listen(engine, "close", lambda *_: closed.append(1))
    return closed


# -- shutdown ------------------------------------------------------------------------------------


def test_the_apps_shutdown_disposes_of_the_engines_it_was_handed(engine: Engine) -> None:
    closed = count_closed_connections(engine)
    with make_client(engine, own_engines=True) as client:
        r = client.post("/auth/login", json={"email": "bob@globex.test", "password": "bob-pass"})
        assert r.status_code == 200, r.text
        assert engine.pool.checkedin() >= 1  # a pooled connection, open between requests
        assert not closed

    assert closed, "shutdown closed no pooled connection"
    assert engine.pool.checkedin() == 0


def test_an_engine_the_app_was_only_lent_stays_open_after_shutdown(engine: Engine) -> None:
    closed = count_closed_connections(engine)
    with make_client(engine) as client:
        client.post("/auth/login", json={"email": "bob@globex.test", "password": "bob-pass"})
    assert not closed
    assert engine.pool.checkedin() >= 1


# -- liveness and readiness ----------------------------------------------------------------------


@pytest.fixture
def one_connection_engine(database: Any) -> Iterator[Engine]:
    """The test's database behind a pool of one connection, whose checkout waits 30 s."""
    small = database.create_engine(pool_size=1, max_overflow=0, pool_timeout=30)
    yield small
    small.dispose()


def test_healthz_answers_at_once_while_every_pooled_connection_is_taken(
    one_connection_engine: Engine,
) -> None:
    with make_client(one_connection_engine) as client, ThreadPoolExecutor(2) as pool:
        held = one_connection_engine.connect()
        try:
            live = pool.submit(client.get, "/healthz").result(timeout=BOUND)
            ready = pool.submit(client.get, "/readyz").result(timeout=BOUND)
        finally:
            held.close()
        ready_again = pool.submit(client.get, "/readyz").result(timeout=BOUND)

    assert live.status_code == 200, live.text
    assert live.json() == {"status": "ok"}
    assert ready.status_code == 503, ready.text
    assert ready.json() == {
        "detail": "The database did not answer in time.",
        "code": "database_unavailable",
    }
    assert "Retry-After" in ready.headers
    assert ready_again.status_code == 200, ready_again.text
    assert ready_again.json() == {"status": "ok"}


def test_readyz_needs_no_token_or_tenant_and_says_ok_when_the_database_answers(
    engine: Engine,
) -> None:
    with make_client(engine) as client:
        r = client.get("/readyz", headers={"X-Tenant-ID": "nobody", "Authorization": "Bearer x"})
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ok"}


# -- the engines' timeouts -----------------------------------------------------------------------


def test_the_apps_engines_bound_every_wait_on_the_database(backend: str, db_url: str) -> None:
    engine = make_engine(db_url, timeouts=EngineTimeouts(statement=0.5))
    try:
        assert engine.pool.timeout() == DEFAULT_TIMEOUTS.pool  # type: ignore[attr-defined]
        with engine.connect() as conn:
            raw = conn.connection.dbapi_connection
            if backend == "postgres":
                assert conn.execute(text("SHOW statement_timeout")).scalar_one() == "500ms"
                # the URL's own options (the test's schema) are kept beside the timeout
                assert conn.execute(text("SHOW search_path")).scalar_one() in db_url
                parameters = raw.info.get_parameters()  # type: ignore[union-attr]
                assert parameters["connect_timeout"] == "5"
                assert (parameters["keepalives"], parameters["keepalives_idle"]) == ("1", "30")
                slow, ended = "SELECT pg_sleep(5)", "57014"  # query_canceled
            elif backend == "mariadb":
                timeout = conn.execute(text("SELECT @@SESSION.max_statement_time")).scalar_one()
                assert float(timeout) == 0.5
                assert (raw.connect_timeout, raw._read_timeout) == (5, 6)  # type: ignore[union-attr]
                slow, ended = "SELECT SLEEP(5)", "70100"  # max_statement_time exceeded
            else:  # SQLite has no server to end a statement; the pool's wait is bounded
                return
            with pytest.raises(OperationalError) as failed:
                conn.execute(text(slow))
            assert getattr(failed.value.orig, "sqlstate", None) == ended
    finally:
        engine.dispose()


def test_a_pool_with_no_free_connection_gives_up_after_its_timeout(db_url: str) -> None:
    engine = make_engine(db_url, timeouts=EngineTimeouts(pool=0.2), pool_size=1, max_overflow=0)
    try:
        with engine.connect(), ThreadPoolExecutor(1) as pool:
            waiting = pool.submit(engine.connect)
            with pytest.raises(PoolTimeout):
                waiting.result(timeout=BOUND)
    finally:
        engine.dispose()


class Captured(Exception):
    """Raised instead of connecting, once the driver's arguments are known."""


def connect_parameters(engine: Engine) -> dict[str, Any]:
    """The keyword arguments ``engine`` hands its driver's ``connect()``; nothing connects."""
    seen: dict[str, Any] = {}

    def capture(dialect: Any, record: Any, cargs: Any, cparams: dict[str, Any]) -> None:
        seen.update(cparams)
        raise Captured

    event.listen(engine, "do_connect", capture)
    with pytest.raises(Captured):
        engine.connect()
    return seen


def test_settings_in_the_database_url_win_over_the_defaults() -> None:
    postgres = make_engine(
        "postgresql://app@db.internal/app?connect_timeout=9&options=-c statement_timeout%3D1234"
    )
    mariadb = make_engine("mysql://app@db.internal/app?read_timeout=99")

    pg = connect_parameters(postgres)
    assert (pg["connect_timeout"], pg["keepalives_idle"]) == ("9", 30)
    # libpq applies -c settings in order: the URL's statement_timeout comes last and wins
    assert pg["options"] == "-c statement_timeout=15000 -c statement_timeout=1234"
    my = connect_parameters(mariadb)
    assert (my["connect_timeout"], my["read_timeout"], my["write_timeout"]) == (5, 99, 20)


def test_an_in_memory_sqlite_engine_needs_no_pool_timeout() -> None:
    engine = make_engine("sqlite://")
    try:
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar_one() == 1
    finally:
        engine.dispose()


@pytest.mark.parametrize("field", ["connect", "statement", "pool", "keepalive_idle"])
def test_engine_timeouts_refuse_a_wait_of_zero(field: str) -> None:
    with pytest.raises(ValueError, match=field):
        EngineTimeouts(**{field: 0})
