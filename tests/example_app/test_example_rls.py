"""``EXAMPLE_RLS=1``: the example app with PostgreSQL row-level security under the ORM wall.

The app runs as the ordinary role :func:`~example_app.rls.prepare_rls` creates, the owner (the
test database's superuser) serves the admin switch. The HTTP tests are the isolation tests' core
flows again; the others go around the app, with raw SQL on the app's own engine, to show that
the database wall holds by itself.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterator

import pytest
from example_support import BASE_DOMAIN, FAST_HASH, PASSWORDS, SECRET, Headers, bearer
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text
from sqlalchemy.exc import DBAPIError

from example_app import create_app
from example_app.auth import PasswordHasher
from example_app.models import metadata
from example_app.rls import owner_bypasses_rls, prepare_rls
from example_app.seed import init_database
from example_app.settings import Settings, make_engine
from fastapi_tenancy.postgres import UnsafeDatabaseRole, check_database

pytestmark = pytest.mark.backends("postgres")


@pytest.fixture
def app_role(engine: Engine) -> Iterator[str]:
    """A role name of this test's own (roles are cluster-wide); dropped afterwards."""
    role = f"example_rls_{secrets.token_hex(4)}"
    yield role
    quoted = engine.dialect.identifier_preparer.quote(role)
    with engine.begin() as conn:
        if conn.execute(text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}).first():
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = :r"),
                {"r": role},
            )
            conn.execute(text(f"DROP OWNED BY {quoted}"))
            conn.execute(text(f"DROP ROLE {quoted}"))


@pytest.fixture
def app_engine(engine: Engine, app_role: str) -> Iterator[Engine]:
    """The seeded database, row-level security applied, and an engine on the app's role."""
    init_database(engine, PasswordHasher(FAST_HASH))
    rls_engine = make_engine(prepare_rls(engine, role=app_role))
    yield rls_engine
    rls_engine.dispose()


@pytest.fixture
def api(engine: Engine, app_engine: Engine) -> Iterator[TestClient]:
    app = create_app(
        app_engine,
        admin_engine=engine,
        rls=True,
        jwt_secret=SECRET,
        base_domain=BASE_DOMAIN,
        password_hash=FAST_HASH,
    )
    with TestClient(app) as client:
        yield client


@pytest.fixture
def login(api: TestClient) -> Callable[[str], Headers]:
    def log_in(email: str) -> Headers:
        r = api.post("/auth/login", json={"email": email, "password": PASSWORDS[email]})
        assert r.status_code == 200, r.text
        return bearer(r.json()["access_token"])

    return log_in


def _names(api: TestClient, headers: Headers) -> list[tuple[str, str]]:
    r = api.get("/projects", headers=headers, params={"limit": 100})
    assert r.status_code == 200, r.text
    return sorted((p["tenant_id"], p["name"]) for p in r.json())


def test_each_tenant_lists_and_writes_only_its_own_projects(api, login) -> None:
    alice, bob = login("alice@acme.test"), login("bob@globex.test")
    before = _names(api, bob)

    r = api.post("/projects", json={"name": "Under RLS"}, headers=alice)
    assert r.status_code == 201, r.text
    assert r.json()["tenant_id"] == "acme"

    assert {tenant for tenant, _ in _names(api, alice)} == {"acme"}
    assert ("acme", "Under RLS") in _names(api, alice)
    assert _names(api, bob) == before


def test_another_tenants_project_answers_404_through_both_walls(api, login) -> None:
    alice, bob = login("alice@acme.test"), login("bob@globex.test")
    r = api.get("/projects", headers=bob)
    globex_id = r.json()[0]["id"]

    for method in ("GET", "PATCH", "DELETE"):
        body = {"name": "taken"} if method == "PATCH" else None
        r = api.request(method, f"/projects/{globex_id}", headers=alice, json=body)
        assert r.status_code == 404, (method, r.text)
    r = api.get(f"/projects/{globex_id}", headers=bob)
    assert r.status_code == 200, r.text
    assert r.json()["name"] != "taken"


def test_stats_count_only_the_tenants_rows(api, login) -> None:
    r = api.get("/stats", headers=login("dave@initech.test"))
    assert r.status_code == 200, r.text
    acme = api.get("/stats", headers=login("alice@acme.test")).json()
    assert r.json() != acme or r.json() == {"projects": 0, "tasks": 0}


def test_the_admin_switch_sees_every_tenant_through_the_owners_engine(api, login) -> None:
    r = api.get("/admin/projects", headers=login("root@example.test"), params={"limit": 100})
    assert r.status_code == 200, r.text
    assert {p["tenant_id"] for p in r.json()} == {"acme", "globex", "initech"}

    r = api.get("/admin/projects", headers=login("alice@acme.test"))
    assert r.status_code == 403, r.text
    assert r.json()["code"] == "admin_required"


def test_raw_sql_on_the_apps_engine_sees_and_writes_no_tenant_row(
    engine: Engine, app_engine: Engine
) -> None:
    with app_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM projects")).scalar_one() == 0
        assert conn.execute(text("SELECT count(*) FROM tasks")).scalar_one() == 0
        assert conn.execute(text("UPDATE projects SET name = 'x'")).rowcount == 0
        assert conn.execute(text("DELETE FROM tasks")).rowcount == 0
        conn.commit()
        with pytest.raises(DBAPIError, match="row-level security"):
            conn.execute(text("INSERT INTO projects (tenant_id, name) VALUES ('acme', 'planted')"))
        conn.rollback()
        with pytest.raises(DBAPIError, match="permission denied"):
            conn.execute(text("TRUNCATE projects CASCADE"))

    with engine.connect() as conn:  # the owner still sees every row, none changed
        names = conn.execute(text("SELECT name FROM projects")).scalars().all()
    assert len(names) == 6
    assert "x" not in names
    assert "planted" not in names


def test_the_checker_finds_nothing_missing_for_the_apps_role(
    engine: Engine, app_engine: Engine, app_role: str
) -> None:
    assert check_database(engine, role=app_role, metadata=metadata) == []


def test_the_app_refuses_to_run_rls_on_a_role_that_bypasses_it(
    engine: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    init_database(engine, PasswordHasher(FAST_HASH))
    assert owner_bypasses_rls(engine)  # the test database's superuser
    app = create_app(
        engine, rls=True, jwt_secret=SECRET, base_domain=BASE_DOMAIN, password_hash=FAST_HASH
    )
    caplog.set_level(logging.ERROR, logger="fastapi_tenancy.errors")
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.post("/auth/login", json={"email": "a@acme.test", "password": "whatever"})
    assert r.status_code == 500, r.text  # the first use of the engine is refused
    assert r.json() == {
        "detail": "The server could not complete this request.",  # no role names for clients
        "code": UnsafeDatabaseRole.code,
    }
    (logged,) = [rec for rec in caplog.records if rec.name == "fastapi_tenancy.errors"]
    assert "superuser" in logged.getMessage()
    assert logged.exc_info is not None


def test_preparing_twice_is_harmless_and_changes_the_password(
    engine: Engine, app_engine: Engine, app_role: str
) -> None:
    first = app_engine.url
    second = prepare_rls(engine, role=app_role)
    assert second.password != first.password
    refreshed = make_engine(second)
    try:
        with refreshed.connect() as conn:
            assert conn.execute(text("SELECT current_user")).scalar_one() == app_role
    finally:
        refreshed.dispose()


def test_example_rls_needs_postgresql() -> None:
    assert Settings.from_env({"EXAMPLE_RLS": "1", "DATABASE_URL": "postgresql://a@h/db"}).rls
    assert not Settings.from_env({"EXAMPLE_RLS": "0"}).rls
    with pytest.raises(ValueError, match="needs PostgreSQL"):
        Settings.from_env({"EXAMPLE_RLS": "1"})
    with pytest.raises(ValueError, match="EXAMPLE_RLS must be 1 or 0"):
        Settings.from_env({"EXAMPLE_RLS": "maybe", "DATABASE_URL": "postgresql://a@h/db"})
