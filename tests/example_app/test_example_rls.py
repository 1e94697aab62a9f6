"""``EXAMPLE_RLS=1``: the example app with PostgreSQL row-level security under the ORM wall.

The app runs as the ordinary role :func:`~example_app.rls.prepare_rls` creates, the owner (the
test database's superuser) serves the admin switch. The HTTP tests are the isolation tests' core
flows again; the others go around the app, with raw SQL on the app's own engine, to show that
the database wall holds by itself.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import re
import secrets
import threading
import traceback
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
from example_support import BASE_DOMAIN, FAST_HASH, PASSWORDS, SECRET, Headers, bearer
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text
from sqlalchemy.engine import URL
from sqlalchemy.exc import DBAPIError

from example_app import create_app
from example_app.__main__ import _banner
from example_app.auth import PasswordHasher
from example_app.models import metadata
from example_app.rls import RoleSetupError, owner_bypasses_rls, prepare_rls
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
def role_password() -> str:
    return secrets.token_urlsafe(24)


@pytest.fixture
def app_engine(engine: Engine, app_role: str, role_password: str) -> Iterator[Engine]:
    """The seeded database, row-level security applied, and an engine on the app's role."""
    init_database(engine, PasswordHasher(FAST_HASH))
    rls_engine = make_engine(prepare_rls(engine, role=app_role, password=role_password))
    yield rls_engine
    rls_engine.dispose()


def password_accepted(owner: Engine, role: str, password: str) -> bool:
    """Whether the server would accept ``password`` for ``role``: its SCRAM verifier checked
    by hand, since the test server trusts every local login and a connection proves nothing."""
    with owner.connect() as conn:
        stored = conn.execute(
            text("SELECT rolpassword FROM pg_authid WHERE rolname = :r"), {"r": role}
        ).scalar_one()
    found = re.fullmatch(r"SCRAM-SHA-256\$(\d+):([^$]+)\$([^:]+):(.+)", stored or "")
    assert found, "the role's password is not stored as a SCRAM-SHA-256 verifier"
    iterations, salt, stored_key, _server_key = found.groups()
    salted = hashlib.pbkdf2_hmac(
        "sha256", password.encode(), base64.b64decode(salt), int(iterations)
    )
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    return hashlib.sha256(client_key).digest() == base64.b64decode(stored_key)


def connects_as(url: URL, role: str) -> bool:
    worker_engine = make_engine(url)
    try:
        with worker_engine.connect() as conn:
            return bool(conn.execute(text("SELECT current_user")).scalar_one() == role)
    finally:
        worker_engine.dispose()


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


def test_private_notes_keep_to_their_owner_under_row_level_security(api, login) -> None:
    alice, bob = login("alice@acme.test"), login("bob@globex.test")
    carol = {**login("carol@example.test"), "X-Tenant-ID": "acme"}
    r = api.post("/notes", json={"title": "Under RLS"}, headers=carol)
    assert r.status_code == 201, r.text
    carols = r.json()["id"]
    assert [n["title"] for n in api.get("/notes", headers=carol).json()] == [
        "Acme passwords",
        "Under RLS",
    ]
    assert api.get(f"/notes/{carols}", headers=alice).status_code == 404
    r = api.get("/team/notes", headers=alice)
    assert r.status_code == 200, r.text
    assert {n["tenant_id"] for n in r.json()} == {"acme"}
    assert "Under RLS" in [n["title"] for n in r.json()]
    assert "Under RLS" not in [n["title"] for n in api.get("/team/notes", headers=bob).json()]
    assert api.get("/team/notes", headers=carol).json()["code"] == "admin_required"


def _rows_by_tenant(owner: Engine) -> dict[str, list[tuple[str, int]]]:
    """As the owner, who passes the policies: each tenant table's rows counted per tenant."""
    tables = {
        "tenants": "slug",
        "memberships": "tenant_id",
        "projects": "tenant_id",
        "tasks": "tenant_id",
    }
    with owner.connect() as conn:
        return {
            table: [
                (tenant, count)
                for tenant, count in conn.execute(
                    text(f"SELECT {column}, count(*) FROM {table} GROUP BY 1 ORDER BY 1")  # noqa: S608
                )
            ]
            for table, column in tables.items()
        }


def test_a_tenant_signs_up_and_is_offboarded_through_both_walls(
    api: TestClient, login: Callable[[str], Headers], engine: Engine
) -> None:
    before = _rows_by_tenant(engine)
    r = api.post(
        "/signup",
        json={
            "tenant": "umbrella",
            "name": "Umbrella Corporation",
            "email": "ada@umbrella.test",
            "user_name": "Ada Wong",
            "password": "ada-pass-123",
        },
    )
    assert r.status_code == 201, r.text
    ada = bearer(r.json()["access_token"])
    r = api.post("/projects", json={"name": "Hive"}, headers=ada)
    assert r.status_code == 201, r.text
    r = api.post(f"/projects/{r.json()['id']}/tasks", json={"name": "Seal it"}, headers=ada)
    assert r.status_code == 201, r.text
    signed_up = _rows_by_tenant(engine)
    assert [signed_up[table][-1] for table in signed_up] == [("umbrella", 1)] * 4

    r = api.delete("/admin/tenants/umbrella", headers=login("root@example.test"))
    assert r.status_code == 200, r.text
    assert r.json()["rows"] == {"memberships": 1, "tasks": 1, "private_notes": 0, "projects": 1}
    assert _rows_by_tenant(engine) == before
    r = api.get("/projects", headers=ada)
    assert (r.status_code, r.json()["code"]) == (404, "tenant_not_found"), r.text


def test_raw_sql_on_the_apps_engine_sees_and_writes_no_tenant_row(
    engine: Engine, app_engine: Engine
) -> None:
    with app_engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM projects")).scalar_one() == 0
        assert conn.execute(text("SELECT count(*) FROM tasks")).scalar_one() == 0
        assert conn.execute(text("SELECT count(*) FROM private_notes")).scalar_one() == 0
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


def test_the_app_refuses_to_start_rls_on_a_role_that_bypasses_it(engine: Engine) -> None:
    init_database(engine, PasswordHasher(FAST_HASH))
    assert owner_bypasses_rls(engine)  # the test database's superuser
    app = create_app(
        engine, rls=True, jwt_secret=SECRET, base_domain=BASE_DOMAIN, password_hash=FAST_HASH
    )
    # The kit connects once as the startup completes: the app never serves a request.
    with pytest.raises(UnsafeDatabaseRole, match="superuser"), TestClient(app):
        pass  # pragma: no cover - the startup fails


def test_two_workers_preparing_rls_at_once_share_one_password(
    engine: Engine, app_role: str, role_password: str
) -> None:
    # Two workers of `uvicorn --workers 2 --factory example_app:create_app`, each with its own
    # engine, start at the same moment on a database whose role does not exist yet.
    init_database(engine, PasswordHasher(FAST_HASH))
    workers = [make_engine(engine.url) for _ in range(2)]
    start = threading.Barrier(len(workers))

    def start_worker(owner: Engine) -> URL:
        start.wait(timeout=10)
        return prepare_rls(owner, role=app_role, password=role_password)

    try:
        with ThreadPoolExecutor(len(workers)) as pool:
            urls = list(pool.map(start_worker, workers))
    finally:
        for worker in workers:
            worker.dispose()

    assert [url.password for url in urls] == [role_password, role_password]
    assert all(connects_as(url, app_role) for url in urls)
    assert password_accepted(engine, app_role, role_password)


def test_preparing_again_keeps_the_password_and_a_new_one_replaces_it(
    engine: Engine, app_engine: Engine, app_role: str, role_password: str
) -> None:
    again = prepare_rls(engine, role=app_role, password=role_password)
    assert again == app_engine.url
    assert password_accepted(engine, app_role, role_password)

    rotated = secrets.token_urlsafe(24)
    url = prepare_rls(engine, role=app_role, password=rotated)
    assert url.password == rotated
    assert connects_as(url, app_role)
    assert password_accepted(engine, app_role, rotated)
    assert not password_accepted(engine, app_role, role_password)


def test_the_password_reaches_no_statement_log_or_error(
    engine: Engine, role_password: str, caplog: pytest.LogCaptureFixture
) -> None:
    init_database(engine, PasswordHasher(FAST_HASH))
    caplog.set_level(logging.DEBUG, logger="sqlalchemy.engine")  # every statement and parameter

    with pytest.raises(RoleSetupError) as failed:  # names starting with pg_ are reserved
        prepare_rls(engine, role=f"pg_example_{secrets.token_hex(4)}", password=role_password)

    assert "reserved" in str(failed.value)
    told = "".join(traceback.format_exception(failed.value)) + repr(failed.value)
    assert role_password not in told
    assert "PASSWORD" not in told  # not even the statement with its verifier
    assert "ROLE" in caplog.text  # the statements were logged ...
    assert role_password not in caplog.text  # ... without the password


@pytest.mark.parametrize(
    "environ",
    [
        {"EXAMPLE_JWT_SECRET": "k" * 40},
        {"EXAMPLE_JWT_SECRET": "k" * 40, "EXAMPLE_RLS_PASSWORD": "set-by-the-operator-0123"},
    ],
)
def test_every_worker_of_a_deployment_reads_the_same_role_password(
    environ: dict[str, str],
) -> None:
    first, second = Settings.from_env(environ), Settings.from_env(dict(environ))
    assert first.role_password == second.role_password
    assert first.role_password not in (environ["EXAMPLE_JWT_SECRET"], "")
    assert first.role_password not in repr(first)
    other = Settings.from_env({**environ, "EXAMPLE_JWT_SECRET": "j" * 40})
    assert (other.role_password == first.role_password) == ("EXAMPLE_RLS_PASSWORD" in environ)


def test_the_banner_says_where_the_role_password_comes_from_never_what_it_is() -> None:
    for environ in ({}, {"EXAMPLE_RLS_PASSWORD": "set-by-the-operator-0123"}):
        settings = Settings.from_env(
            {"EXAMPLE_RLS": "1", "DATABASE_URL": "postgresql://o@h/db", **environ}
        )
        banner = _banner(settings, seeded=False)
        assert settings.role_password not in banner
        assert ("password from EXAMPLE_RLS_PASSWORD" in banner) == bool(environ)
        assert ("derive the password of 'example_app_rls'" in banner) != bool(environ)


@pytest.mark.parametrize(
    "password", ["short", "non-ascii-p\u00e4ssword-0123", "tab\tin-a-password-0123"]
)
def test_an_unusable_role_password_is_refused_without_showing_it(password: str) -> None:
    with pytest.raises(ValueError, match="EXAMPLE_RLS_PASSWORD") as refused:
        Settings.from_env({"EXAMPLE_RLS_PASSWORD": password})
    assert password not in str(refused.value)


def test_example_rls_needs_postgresql() -> None:
    assert Settings.from_env({"EXAMPLE_RLS": "1", "DATABASE_URL": "postgresql://a@h/db"}).rls
    assert not Settings.from_env({"EXAMPLE_RLS": "0"}).rls
    with pytest.raises(ValueError, match="needs PostgreSQL"):
        Settings.from_env({"EXAMPLE_RLS": "1"})
    with pytest.raises(ValueError, match="EXAMPLE_RLS must be 1 or 0"):
        Settings.from_env({"EXAMPLE_RLS": "maybe", "DATABASE_URL": "postgresql://a@h/db"})
