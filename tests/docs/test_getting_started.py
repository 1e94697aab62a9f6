"""docs/getting-started.md's samples, driven over HTTP on every database."""

from __future__ import annotations

import time
from typing import Any

import httpx
import jwt
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlalchemy.ext.asyncio import AsyncEngine

from docs.examples import getting_started_async, getting_started_jwt

SECRET = "a-getting-started-secret-of-32-bytes-or-more"


def token(secret: str = SECRET, **claims: Any) -> dict[str, str]:
    payload = {"exp": int(time.time()) + 300, **claims}
    return {"Authorization": f"Bearer {jwt.encode(payload, secret, algorithm='HS256')}"}


@pytest.fixture
def jwt_client(engine: Engine, create_tables: Any) -> TestClient:
    create_tables(engine, getting_started_jwt.Document)
    return TestClient(getting_started_jwt.create_app(engine, jwt_secret=SECRET))


def test_the_tenant_comes_from_the_tokens_claim(jwt_client: TestClient) -> None:
    ann = token(sub="ann@acme.test", tenant="acme")
    r = jwt_client.post("/documents", json={"title": "roadmap"}, headers=ann)
    assert r.status_code == 201, r.text
    assert r.json()["tenant_id"] == "acme"

    r = jwt_client.get("/me", headers=ann)
    assert r.json() == {"user": "ann@acme.test", "tenant": "acme", "source": "jwt"}


def test_a_user_in_two_tenants_picks_one_with_the_header(jwt_client: TestClient) -> None:
    cat = token(sub="cat@example.test")  # no tenant claim
    for tenant in ("acme", "globex"):
        r = jwt_client.post(
            "/documents", json={"title": "plan"}, headers={**cat, "X-Tenant-ID": tenant}
        )
        assert r.status_code == 201, r.text

    r = jwt_client.get("/documents", headers={**cat, "X-Tenant-ID": "globex"})
    assert [(d["title"], d["tenant_id"]) for d in r.json()] == [("plan", "globex")]
    r = jwt_client.get("/me", headers={**cat, "X-Tenant-ID": "globex"})
    assert r.json()["source"] == "header"


def test_a_header_cannot_override_the_token(jwt_client: TestClient) -> None:
    ann = token(sub="ann@acme.test", tenant="acme")
    r = jwt_client.get("/documents", headers={**ann, "X-Tenant-ID": "globex"})
    assert r.status_code == 403, r.text
    assert r.json()["code"] == "tenant_mismatch"


def test_non_members_and_bare_headers_are_refused(jwt_client: TestClient) -> None:
    ann = token(sub="ann@acme.test")
    r = jwt_client.get("/documents", headers={**ann, "X-Tenant-ID": "globex"})
    assert (r.status_code, r.json()["code"]) == (403, "not_a_member")

    r = jwt_client.get("/documents", headers={"X-Tenant-ID": "acme"})  # no token at all
    assert (r.status_code, r.json()["code"]) == (403, "not_a_member")


def test_a_token_signed_with_another_key_is_refused(jwt_client: TestClient) -> None:
    forged = token("another-secret-of-at-least-32-bytes!!", sub="ann@acme.test", tenant="acme")
    r = jwt_client.get("/documents", headers={**forged, "X-Tenant-ID": "acme"})
    assert r.status_code == 401, r.text
    assert r.json()["code"] == "invalid_token"


def test_no_tenant_at_all_is_tenant_required(jwt_client: TestClient) -> None:
    r = jwt_client.get("/documents")
    assert (r.status_code, r.json()["code"]) == (400, "tenant_required")


@pytest.mark.anyio
async def test_the_async_app_keeps_each_tenants_notes_apart(async_engine: AsyncEngine) -> None:
    await getting_started_async.init_db(async_engine)
    app = getting_started_async.create_app(async_engine)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        for tenant, text in [("acme", "hello"), ("globex", "hola"), ("acme", "again")]:
            r = await client.post("/notes", json={"text": text}, headers={"X-Tenant-ID": tenant})
            assert r.status_code == 201, r.text
            assert r.json()["tenant_id"] == tenant
            assert isinstance(r.json()["id"], int)

        r = await client.get("/notes", headers={"X-Tenant-ID": "acme"})
        assert [n["text"] for n in r.json()] == ["hello", "again"]
        r = await client.get("/notes", headers={"X-Tenant-ID": "globex"})
        assert [n["text"] for n in r.json()] == ["hola"]
        r = await client.get("/notes")
        assert (r.status_code, r.json()["code"]) == (400, "tenant_required")
