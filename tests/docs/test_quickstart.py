"""The README's quick-start app, driven as a user would drive it."""

from __future__ import annotations

import httpx
import pytest
from sqlalchemy import Engine

from docs.examples.quickstart import create_app

pytestmark = pytest.mark.anyio


async def test_quickstart_app_keeps_each_tenants_projects_apart(engine: Engine) -> None:
    app = create_app(engine)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        acme = {"X-Tenant-ID": "acme"}
        globex = {"X-Tenant-ID": "globex"}
        r = await client.post("/projects", json={"name": "rocket"}, headers=acme)
        assert r.status_code == 201, r.text
        assert r.json()["tenant_id"] == "acme"
        r = await client.post("/projects", json={"name": "rocket"}, headers=globex)
        assert r.status_code == 201, r.text
        r = await client.post("/projects", json={"name": "rocket"}, headers=acme)
        assert r.status_code == 409, r.text
        assert r.json()["code"] == "already_exists"

        r = await client.get("/projects", headers=globex)
        assert [(p["name"], p["tenant_id"]) for p in r.json()] == [("rocket", "globex")]
        r = await client.get("/projects")
        assert r.status_code == 400, r.text
        assert r.json()["code"] == "tenant_required"
