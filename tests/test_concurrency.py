"""A thousand requests in flight across tenants: every response carries only its tenant's rows."""

from __future__ import annotations

import asyncio
import random
from collections import Counter
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI
from http_app import Project, build_app, tenant_header
from sqlalchemy import insert
from sqlalchemy.pool import AsyncAdaptedQueuePool
from starlette.types import ASGIApp, Receive, Scope, Send

from fastapi_tenancy import get_current_tenant

TENANTS = ("acme", "globex", "initech", "umbrella")
REQUESTS_PER_TENANT = 250
SEEDED_PER_TENANT = 5
WRITES_PER_TENANT = 10  # of the 250, this many create a row; the rest read


class InFlight:
    """ASGI wrapper that records how many requests were inside the app at once."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.current = 0
        self.peak = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.current += 1
        self.peak = max(self.peak, self.current)
        try:
            await self.app(scope, receive, send)
        finally:
            self.current -= 1


def seeded_names(tenant: str) -> set[str]:
    return {f"{tenant}-seed-{i}" for i in range(SEEDED_PER_TENANT)}


@pytest.mark.slow
@pytest.mark.anyio
async def test_a_thousand_requests_in_flight_see_only_their_own_tenants_rows(
    backend: str, database: Any, create_tables: Any
) -> None:
    # Modest pools: the point is many requests per connection, not many connections.
    sync_engine = database.create_engine(pool_size=5, max_overflow=5, pool_timeout=60)
    async_engine = database.create_async_engine(
        poolclass=AsyncAdaptedQueuePool, pool_size=5, max_overflow=5, pool_timeout=60
    )
    try:
        await anyio.to_thread.run_sync(create_tables, sync_engine, Project)
        rows = [
            {"tenant_id": tenant, "name": name}
            for tenant in TENANTS
            for name in sorted(seeded_names(tenant))
        ]
        with sync_engine.begin() as conn:
            conn.execute(insert(Project), rows)

        # Sync routes on the sync engine (thread pool), async routes on the async engine.
        sync_app, _ = build_app(sync_engine)
        async_app, _ = build_app(async_engine)
        parent = FastAPI()
        parent.mount("/sync", sync_app)
        parent.mount("/async", async_app)
        app = InFlight(parent)

        plan: list[tuple[str, str, str | None]] = []
        for tenant in TENANTS:
            for i in range(REQUESTS_PER_TENANT):
                kind = "sync" if i % 2 else "async"
                write = f"{tenant}-{kind}-w{i}" if i < WRITES_PER_TENANT else None
                plan.append((tenant, kind, write))
        random.Random(20240601).shuffle(plan)

        transport = httpx.ASGITransport(app=app)
        limits = httpx.Limits(max_connections=None)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://testserver", limits=limits, timeout=60
        ) as c:

            async def call(tenant: str, kind: str, write: str | None) -> httpx.Response:
                headers = tenant_header(tenant)
                if write is None:
                    return await c.get(f"/{kind}/projects", headers=headers)
                return await c.post(f"/{kind}/projects", json={"name": write}, headers=headers)

            with anyio.fail_after(50):
                responses = await asyncio.gather(*(call(*step) for step in plan))

            assert get_current_tenant() is None
            assert len(responses) == len(plan) >= 1000
            assert app.peak >= 100, app.peak

            foreign: Counter[str] = Counter()
            for (tenant, kind, write), r in zip(plan, responses, strict=True):
                if write is not None:
                    assert r.status_code == 201, r.text
                    assert r.json()["tenant_id"] == tenant
                    assert r.json()["name"] == write
                    continue
                assert r.status_code == 200, r.text
                for row in r.json():
                    if row["tenant_id"] != tenant or not row["name"].startswith(f"{tenant}-"):
                        foreign[f"{kind} request of {tenant} got {row}"] += 1
                assert seeded_names(tenant) <= {row["name"] for row in r.json()}, r.text
            assert not foreign, sorted(foreign)[:10]

            # Afterwards each tenant has exactly its seeded rows and its own writes.
            for tenant in TENANTS:
                written = {w for t, _k, w in plan if t == tenant and w is not None}
                for kind in ("sync", "async"):
                    r = await c.get(f"/{kind}/projects", headers=tenant_header(tenant))
                    assert {row["name"] for row in r.json()} == seeded_names(tenant) | written
                    assert {row["tenant_id"] for row in r.json()} == {tenant}
    finally:
        sync_engine.dispose()
        await async_engine.dispose()
