"""The tenant lookup over a real tenant table, its cache, and how it fails closed."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from http_app import Tenant, build_app, client, tenant_header
from lookup_support import FakeClock, SelectCounter, fill_tenant_table
from sqlalchemy import Engine, create_engine, insert, update
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from fastapi_tenancy import (
    HeaderResolver,
    LookupCache,
    TenancyUnavailable,
    TenantInactive,
    TenantLookup,
    TenantNotFound,
    TenantTableLookup,
)


@pytest.fixture
def tenant_table(backend: str, engine: Engine, create_tables: Any) -> Engine:
    """The tenant table with acme, globex, initech (active) and umbrella (inactive)."""
    return fill_tenant_table(engine, create_tables)


@pytest.fixture
def lookup_api(
    tenant_table: Engine, any_engine: Engine | AsyncEngine, request: pytest.FixtureRequest
) -> Iterator[TestClient]:
    """The app on the engine under test, looking tenants up in the tenant table."""
    options = getattr(request, "param", {})
    app, _tenancy = build_app(
        any_engine,
        resolvers=[HeaderResolver()],
        lookup=TenantTableLookup(Tenant, key="slug", active="active"),
        **options,
    )
    with client(app) as c:
        yield c


def lookups(api: TestClient) -> SelectCounter:
    return SelectCounter(api.app.state.tenancy.engine, "http_tenant")  # type: ignore[attr-defined]


def get_as(api: TestClient, tenant: str) -> Any:
    return api.get("/whoami", headers=tenant_header(tenant))


# --------------------------------------------------------------------------------------------
# Over a real table, on every database, with sync and async engines


def test_known_tenant_is_bound_with_its_record(lookup_api: TestClient) -> None:
    r = lookup_api.get("/tenant", headers=tenant_header("acme"))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["id"] == "acme"
    assert body["source"] == "header"
    assert {k: body["record"][k] for k in ("slug", "active", "plan")} == {
        "slug": "acme",
        "active": True,
        "plan": "pro",
    }


def test_unknown_tenant_answers_404(lookup_api: TestClient) -> None:
    r = get_as(lookup_api, "nobody")
    assert r.status_code == 404, r.text
    assert r.json()["code"] == "tenant_not_found"


def test_inactive_tenant_answers_403(lookup_api: TestClient) -> None:
    r = get_as(lookup_api, "umbrella")
    assert r.status_code == 403, r.text
    assert r.json()["code"] == "tenant_inactive"


def test_many_requests_for_one_tenant_cost_one_lookup_query(lookup_api: TestClient) -> None:
    with lookups(lookup_api) as counter:
        for _ in range(20):
            r = get_as(lookup_api, "acme")
            assert r.status_code == 200, r.text
        assert counter.count == 1
        for _ in range(5):
            assert get_as(lookup_api, "globex").status_code == 200
        assert counter.count == 2


@pytest.mark.anyio
async def test_concurrent_first_requests_for_one_tenant_share_one_lookup_query(
    tenant_table: Engine, any_engine: Engine | AsyncEngine
) -> None:
    app, _tenancy = build_app(
        any_engine,
        resolvers=[HeaderResolver()],
        lookup=TenantTableLookup(Tenant, key="slug", active="active"),
    )
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        with SelectCounter(any_engine, "http_tenant") as counter:
            responses = await asyncio.gather(
                *(c.get("/whoami", headers=tenant_header("acme")) for _ in range(20))
            )
            assert [r.status_code for r in responses] == [200] * 20, responses[0].text
            assert counter.count == 1


def test_misses_are_cached_too(lookup_api: TestClient) -> None:
    with lookups(lookup_api) as counter:
        for _ in range(10):
            r = get_as(lookup_api, "nobody")
            assert r.status_code == 404, r.text
        for _ in range(10):
            r = get_as(lookup_api, "umbrella")
            assert r.status_code == 403, r.text
        assert counter.count == 2


def test_invalidate_makes_the_next_request_look_again(
    lookup_api: TestClient, tenant_table: Engine
) -> None:
    tenancy = lookup_api.app.state.tenancy  # type: ignore[attr-defined]
    assert get_as(lookup_api, "hooli").status_code == 404
    assert get_as(lookup_api, "acme").status_code == 200
    with tenant_table.begin() as conn:
        conn.execute(insert(Tenant), [{"slug": "hooli", "active": True}])
        conn.execute(update(Tenant).where(Tenant.slug == "acme").values(active=False))
    # Cached answers stand until invalidated ...
    assert get_as(lookup_api, "hooli").status_code == 404
    assert get_as(lookup_api, "acme").status_code == 200
    with lookups(lookup_api) as counter:
        tenancy.lookup.invalidate("hooli")
        assert get_as(lookup_api, "hooli").status_code == 200
        assert get_as(lookup_api, "acme").status_code == 200
        assert counter.count == 1
        tenancy.lookup.invalidate()
        r = get_as(lookup_api, "acme")
        assert r.status_code == 403, r.text
        assert r.json()["code"] == "tenant_inactive"
        assert get_as(lookup_api, "hooli").status_code == 200
        assert counter.count == 3


@pytest.mark.parametrize("lookup_api", [{"lookup_cache": LookupCache(maxsize=2)}], indirect=True)
def test_cache_is_bounded_and_evicts_the_least_recently_used(lookup_api: TestClient) -> None:
    with lookups(lookup_api) as counter:
        for tenant in ("acme", "globex", "initech"):
            assert get_as(lookup_api, tenant).status_code == 200
        assert counter.count == 3
        assert get_as(lookup_api, "initech").status_code == 200  # cached
        assert counter.count == 3
        assert get_as(lookup_api, "acme").status_code == 200  # evicted: looked up again
        assert counter.count == 4
        assert get_as(lookup_api, "initech").status_code == 200  # still cached
        assert counter.count == 4
        assert get_as(lookup_api, "globex").status_code == 200  # evicted
        assert counter.count == 5


@pytest.mark.parametrize("lookup_api", [{"lookup_cache": LookupCache(ttl=0)}], indirect=True)
def test_zero_ttl_looks_up_on_every_request(lookup_api: TestClient) -> None:
    with lookups(lookup_api) as counter:
        for _ in range(4):
            assert get_as(lookup_api, "acme").status_code == 200
        assert counter.count == 4


def test_lookup_with_its_own_clock_expires_entries_after_the_ttl(
    tenant_table: Engine, any_engine: Engine | AsyncEngine
) -> None:
    clock = FakeClock()
    table = TenantTableLookup(Tenant, key="slug", active="active")

    def fetch(key: str) -> Tenant | None:
        return table.fetch_sync(tenant_table, key)

    lookup = TenantLookup(fetch, is_active=table.is_active, cache=LookupCache(ttl=30), clock=clock)
    app, _tenancy = build_app(any_engine, resolvers=[HeaderResolver()], lookup=lookup)
    with client(app) as c, SelectCounter(tenant_table, "http_tenant") as counter:
        assert get_as(c, "acme").status_code == 200
        clock.now += 29
        assert get_as(c, "acme").status_code == 200
        assert counter.count == 1
        clock.now += 2
        assert get_as(c, "acme").status_code == 200
        assert counter.count == 2
        assert get_as(c, "umbrella").status_code == 403
        with tenant_table.begin() as conn:
            conn.execute(update(Tenant).where(Tenant.slug == "umbrella").values(active=True))
        clock.now += 31
        assert get_as(c, "umbrella").status_code == 200
        assert counter.count == 4


# --------------------------------------------------------------------------------------------
# TenantLookup on its own, with a fake clock


class CountingFetch:
    def __init__(self, records: dict[str, Any]) -> None:
        self.records = records
        self.calls: list[str] = []

    def __call__(self, key: str) -> Any:
        self.calls.append(key)
        return self.records.get(key)


@pytest.mark.anyio
async def test_entries_expire_after_the_ttl() -> None:
    clock = FakeClock()
    fetch = CountingFetch({"acme": {"active": True}})
    lookup = TenantLookup(fetch, cache=LookupCache(ttl=10), clock=clock)
    assert await lookup("acme") == {"active": True}
    clock.now += 9.9
    await lookup("acme")
    assert fetch.calls == ["acme"]
    clock.now += 0.1
    await lookup("acme")
    assert fetch.calls == ["acme", "acme"]


@pytest.mark.anyio
async def test_cached_miss_expires_too() -> None:
    clock = FakeClock()
    fetch = CountingFetch({})
    lookup = TenantLookup(fetch, cache=LookupCache(ttl=10), clock=clock)
    with pytest.raises(TenantNotFound):
        await lookup("hooli")
    fetch.records["hooli"] = {"active": True}
    with pytest.raises(TenantNotFound):
        await lookup("hooli")
    clock.now += 10
    assert await lookup("hooli") == {"active": True}
    assert fetch.calls == ["hooli", "hooli"]


@pytest.mark.anyio
async def test_maxsize_bounds_the_cache() -> None:
    fetch = CountingFetch({f"t{i}": {"active": True} for i in range(10)})
    lookup = TenantLookup(fetch, cache=LookupCache(maxsize=3), clock=FakeClock())
    for i in range(10):
        await lookup(f"t{i}")
    for i in range(7, 10):
        await lookup(f"t{i}")
    assert len(fetch.calls) == 10
    await lookup("t0")
    assert len(fetch.calls) == 11


@pytest.mark.anyio
async def test_a_flood_of_unknown_keys_evicts_no_known_tenant() -> None:
    """Misses are bounded on their own: random keys cost memory up to ``max_misses`` and a
    query each, but the tenants that exist stay cached, so their requests cost none."""
    fetch = CountingFetch({f"t{i}": {"active": True} for i in range(5)})
    lookup = TenantLookup(fetch, cache=LookupCache(max_misses=3), clock=FakeClock())
    for i in range(5):
        await lookup(f"t{i}")
    for i in range(100):
        with pytest.raises(TenantNotFound):
            await lookup(f"junk-{i}")
    fetch.calls.clear()
    for i in range(5):
        await lookup(f"t{i}")
    assert fetch.calls == []
    with pytest.raises(TenantNotFound):
        await lookup("junk-99")  # among the last misses kept: no query
    with pytest.raises(TenantNotFound):
        await lookup("junk-0")  # evicted long ago: a query
    assert fetch.calls == ["junk-0"]


def test_the_default_cache_keeps_every_tenant_of_a_large_app() -> None:
    assert LookupCache().maxsize >= 100_000
    assert LookupCache().max_misses == 1024
    with pytest.raises(ValueError, match="max_misses"):
        LookupCache(max_misses=-1)


@pytest.mark.anyio
async def test_async_fetch_and_inactive_records() -> None:
    async def fetch(key: str) -> Any:
        await asyncio.sleep(0)
        return {"acme": {"active": True}, "umbrella": {"active": False}}.get(key)

    lookup = TenantLookup(fetch)
    assert await lookup("acme") == {"active": True}
    with pytest.raises(TenantInactive):
        await lookup("umbrella")
    with pytest.raises(TenantNotFound):
        await lookup("nobody")


@pytest.mark.anyio
async def test_failures_are_unavailable_and_never_cached() -> None:
    outage = [True]

    def fetch(key: str) -> Any:
        if outage[0]:
            raise OSError("connection refused")
        return {"active": True}

    lookup = TenantLookup(fetch, clock=FakeClock())
    with pytest.raises(TenancyUnavailable):
        await lookup("acme")
    outage[0] = False
    assert await lookup("acme") == {"active": True}


# --------------------------------------------------------------------------------------------
# The database is down: fail closed


def _unreachable_engines() -> list[Any]:
    return [
        pytest.param(
            lambda: create_engine(
                "postgresql+psycopg://nobody@127.0.0.1:1/none",
                connect_args={"connect_timeout": 2},
            ),
            id="postgres-sync",
        ),
        pytest.param(
            lambda: create_async_engine(
                "postgresql+asyncpg://nobody@127.0.0.1:1/none", connect_args={"timeout": 2}
            ),
            id="postgres-async",
        ),
        pytest.param(
            lambda: create_engine(
                "mysql+pymysql://nobody@127.0.0.1:1/none", connect_args={"connect_timeout": 2}
            ),
            id="mariadb-sync",
        ),
        pytest.param(
            lambda: create_async_engine(
                "mysql+aiomysql://nobody@127.0.0.1:1/none", connect_args={"connect_timeout": 2}
            ),
            id="mariadb-async",
        ),
        pytest.param(
            lambda: create_engine("sqlite:////nonexistent-directory/tenants.sqlite3"),
            id="sqlite-sync",
        ),
        pytest.param(
            lambda: create_async_engine(
                "sqlite+aiosqlite:////nonexistent-directory/tenants.sqlite3"
            ),
            id="sqlite-async",
        ),
    ]


@pytest.mark.parametrize("make_engine", _unreachable_engines())
def test_lookup_on_a_database_that_is_down_answers_503_never_200(make_engine: Any) -> None:
    down = make_engine()
    ran: list[str] = []
    try:
        app, _tenancy = build_app(
            down,
            resolvers=[HeaderResolver()],
            lookup=TenantTableLookup(Tenant, key="slug", active="active"),
        )

        @app.get("/run")
        async def run() -> None:
            ran.append("route")

        with client(app) as c:
            for _ in range(2):  # a failure is not cached: each request tries again
                r = c.get("/run", headers=tenant_header("acme"))
                assert r.status_code == 503, r.text
                assert r.json()["code"] == "tenancy_unavailable"
    finally:
        (down.sync_engine if isinstance(down, AsyncEngine) else down).dispose()
    assert ran == []


def test_lookup_recovers_once_the_database_is_back() -> None:
    outage = [True]

    def lookup(key: str) -> Any:
        if outage[0]:
            raise ConnectionError("database is down")
        return {"active": True}

    app, _tenancy = build_app(
        create_engine("sqlite://"), resolvers=[HeaderResolver()], lookup=lookup
    )
    with client(app) as c:
        assert get_as(c, "acme").status_code == 503
        outage[0] = False
        r = get_as(c, "acme")
        assert r.status_code == 200, r.text
        assert r.json() == {"tenant": "acme"}
