"""Fixtures for the example app's black-box tests.

Each test gets its own seeded database through the repository's ``engine`` fixture, so it
runs on SQLite, PostgreSQL and MariaDB, and a fresh app built by ``create_app(engine)``. The
tests talk to the app only over HTTP (ASGI), logging in as the seeded users. Passwords are
hashed with cheap Argon2 parameters here, so that seeding per test stays fast.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from example_support import BASE_DOMAIN, FAST_HASH, PASSWORDS, SECRET, Headers, bearer
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from example_app import create_app
from example_app.auth import PasswordHasher
from example_app.seed import init_database


@pytest.fixture
def api(engine: Engine) -> Iterator[TestClient]:
    """A client on a fresh app over a freshly seeded database."""
    init_database(engine, PasswordHasher(FAST_HASH))
    app = create_app(engine, jwt_secret=SECRET, base_domain=BASE_DOMAIN, password_hash=FAST_HASH)
    with TestClient(app) as client:
        yield client


@pytest.fixture
def login(api: TestClient) -> Callable[..., Headers]:
    """``login(email, tenant=None)``: log in through the API, answer the bearer headers."""

    def log_in(email: str, *, tenant: str | None = None) -> Headers:
        body = {"email": email, "password": PASSWORDS[email]}
        if tenant is not None:
            body["tenant"] = tenant
        r = api.post("/auth/login", json=body)
        assert r.status_code == 200, r.text
        return bearer(r.json()["access_token"])

    return log_in


@pytest.fixture
def alice(login: Callable[..., Headers]) -> Headers:
    """alice@acme.test: a member of acme only; her token names acme."""
    return login("alice@acme.test")


@pytest.fixture
def bob(login: Callable[..., Headers]) -> Headers:
    """bob@globex.test: a member of globex only; his token names globex."""
    return login("bob@globex.test")


@pytest.fixture
def carol(login: Callable[..., Headers]) -> Headers:
    """carol@example.test: a member of acme and globex; her token names no tenant."""
    return login("carol@example.test")


@pytest.fixture
def dave(login: Callable[..., Headers]) -> Headers:
    """dave@initech.test: a member of initech only."""
    return login("dave@initech.test")


@pytest.fixture
def root(login: Callable[..., Headers]) -> Headers:
    """root@example.test: a platform admin, a member of no tenant."""
    return login("root@example.test")


@pytest.fixture
def project_id(api: TestClient) -> Callable[[Headers, str], int]:
    """``project_id(headers, name)``: the id of a project, as its own tenant lists it."""

    def find(headers: Headers, name: str) -> int:
        r = api.get("/projects", headers=headers, params={"limit": 100})
        assert r.status_code == 200, r.text
        matches = [p["id"] for p in r.json() if p["name"] == name]
        assert len(matches) == 1, r.json()
        return int(matches[0])

    return find
