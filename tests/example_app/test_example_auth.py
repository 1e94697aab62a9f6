"""Logging in and the bearer token: what needs one, and which tokens are refused."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable

import jwt
import pytest
from example_support import SECRET, Headers, bearer, in_an_hour, mint
from fastapi.testclient import TestClient
from sqlalchemy import Engine, update
from sqlmodel import Session, col

from example_app.models import Tenant

PROTECTED = [
    ("GET", "/me"),
    ("GET", "/projects"),
    ("POST", "/projects"),
    ("GET", "/projects/1"),
    ("PATCH", "/projects/1"),
    ("DELETE", "/projects/1"),
    ("GET", "/projects/1/tasks"),
    ("POST", "/projects/1/tasks"),
    ("GET", "/stats"),
    ("GET", "/admin/projects"),
]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _tampered(token: str) -> str:
    """alice's token with its payload rewritten to name globex, keeping the signature."""
    header, payload, signature = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["tenant"] = "globex"
    return ".".join([header, _b64(json.dumps(claims).encode()), signature])


def _unsigned(claims: dict[str, object]) -> str:
    header = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    return f"{header}.{_b64(json.dumps(claims).encode())}."


ALICE = {"sub": "alice@acme.test", "tenant": "acme", "roles": []}
BAD_TOKENS: dict[str, Callable[[str], str]] = {
    "tampered": _tampered,
    "expired": lambda _: mint({**ALICE, "exp": int(time.time()) - 60}),
    "without-exp": lambda _: mint(ALICE),
    "signed-with-another-key": lambda _: mint(
        {**ALICE, "exp": in_an_hour()}, key="not-the-app-key-but-long-enough-0123456789"
    ),
    "alg-none": lambda _: _unsigned({**ALICE, "exp": in_an_hour()}),
    "hs512-not-allowed": lambda _: mint({**ALICE, "exp": in_an_hour()}, algorithm="HS512"),
    "without-sub": lambda _: mint({"tenant": "acme", "roles": [], "exp": in_an_hour()}),
    "garbage": lambda _: "not.a.token",
}


@pytest.mark.parametrize("kind", list(BAD_TOKENS))
def test_a_bad_token_is_401_and_never_falls_through_to_the_header(
    api: TestClient, alice: Headers, kind: str
) -> None:
    token = BAD_TOKENS[kind](alice["Authorization"].removeprefix("Bearer "))
    for path in ("/projects", "/me", "/admin/projects"):
        r = api.get(path, headers={**bearer(token), "X-Tenant-ID": "acme"})
        assert r.status_code == 401, r.text
        assert r.json()["code"] == "invalid_token"
        assert r.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(("method", "path"), PROTECTED)
def test_every_route_but_healthz_plans_and_login_needs_a_token(
    api: TestClient, method: str, path: str
) -> None:
    for headers in ({}, {"X-Tenant-ID": "acme"}, {"Authorization": "Basic YWxpY2U6eA=="}):
        r = api.request(method, path, headers=headers, json={"name": "x"})
        assert r.status_code == 401, r.text
        assert r.json() == {
            "detail": "This needs a bearer token: log in with POST /auth/login.",
            "code": "not_authenticated",
        }
        assert r.headers["WWW-Authenticate"] == "Bearer"


def test_healthz_and_plans_answer_without_a_token_or_a_tenant(api: TestClient) -> None:
    r = api.get("/healthz")
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "ok"}

    r = api.get("/plans")
    assert r.status_code == 200, r.text
    assert [plan["code"] for plan in r.json()] == ["free", "team", "enterprise"]


def test_plans_answer_with_a_tenant_too(api: TestClient, alice: Headers) -> None:
    r = api.get("/plans", headers=alice)
    assert r.status_code == 200, r.text
    assert len(r.json()) == 3


def test_login_answers_a_bearer_token_with_the_users_claims(api: TestClient) -> None:
    r = api.post("/auth/login", json={"email": "alice@acme.test", "password": "alice-pass"})

    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token_type"] == "bearer"
    claims = jwt.decode(body["access_token"], SECRET, algorithms=["HS256"])
    assert claims["sub"] == "alice@acme.test"
    assert claims["tenant"] == "acme"
    assert claims["roles"] == []
    assert claims["exp"] > time.time()


def test_a_user_in_several_tenants_gets_a_token_without_a_tenant(api: TestClient) -> None:
    r = api.post("/auth/login", json={"email": "carol@example.test", "password": "carol-pass"})
    claims = jwt.decode(r.json()["access_token"], SECRET, algorithms=["HS256"])
    assert "tenant" not in claims


def test_a_platform_admins_token_carries_the_admin_role(api: TestClient) -> None:
    r = api.post("/auth/login", json={"email": "root@example.test", "password": "root-pass"})
    claims = jwt.decode(r.json()["access_token"], SECRET, algorithms=["HS256"])
    assert claims["roles"] == ["admin"]
    assert "tenant" not in claims


def test_a_wrong_password_and_an_unknown_email_get_the_same_401(api: TestClient) -> None:
    wrong = api.post("/auth/login", json={"email": "alice@acme.test", "password": "guess"})
    unknown = api.post("/auth/login", json={"email": "mallory@evil.test", "password": "guess"})

    assert wrong.status_code == 401, wrong.text
    assert wrong.json() == {
        "detail": "The email or the password is wrong.",
        "code": "invalid_credentials",
    }
    assert unknown.status_code == 401, unknown.text
    assert unknown.content == wrong.content


def test_login_works_with_a_stale_token_still_attached(api: TestClient) -> None:
    stale = mint({**ALICE, "exp": int(time.time()) - 60})
    r = api.post(
        "/auth/login",
        json={"email": "alice@acme.test", "password": "alice-pass"},
        headers=bearer(stale),
    )
    assert r.status_code == 200, r.text


def test_a_malformed_login_body_is_422_in_the_error_shape(api: TestClient) -> None:
    r = api.post("/auth/login", json={"email": "alice@acme.test"})
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "invalid_request"


def test_an_inactive_tenant_is_refused(api: TestClient, engine: Engine, dave: Headers) -> None:
    with Session(engine) as session:
        session.exec(update(Tenant).where(col(Tenant.slug) == "initech").values(active=False))
        session.commit()

    r = api.get("/projects", headers=dave)
    assert r.status_code == 403, r.text
    assert r.json()["code"] == "tenant_inactive"
