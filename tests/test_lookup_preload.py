"""``LookupCache(preload=True)``: every tenant loaded in one query, none on the request path.

With many tenants, a per-key cache either holds them all (memory) or queries on every
request for a tenant it evicted or saw expire. Preloading reads the tenant table in bulk as the
app starts and again every ``ttl / 2`` seconds: a known tenant never costs a request a query,
while no record is older than ``ttl``. These tests prove the request path stays query-free, that
a change reaches the cache without ``invalidate()``, and that a tenant invalidated while a bulk
load is in flight is not revived by it (a suspended tenant stays suspended).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

import anyio
import pytest
from fastapi import FastAPI
from http_app import Tenant, build_app, client, tenant_header
from lookup_support import FakeClock, SelectCounter, fill_tenant_table
from sqlalchemy import Engine, create_engine, insert, update
from sqlalchemy.ext.asyncio import AsyncEngine

from fastapi_tenancy import (
    HeaderResolver,
    LookupCache,
    Tenancy,
    TenancyMisuse,
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


def preloading_app(engine: Engine | AsyncEngine, cache: LookupCache) -> Any:
    app, _tenancy = build_app(
        engine,
        resolvers=[HeaderResolver()],
        lookup=TenantTableLookup(Tenant, key="slug", active="active"),
        lookup_cache=cache,
    )
    return app


def status_of(c: Any, tenant: str) -> int:
    return int(c.get("/whoami", headers=tenant_header(tenant)).status_code)


# --------------------------------------------------------------------------------------------
# Over a real table, on every database, with sync and async engines


def test_preloaded_tenants_cost_no_query_on_a_request(
    tenant_table: Engine, any_engine: Engine | AsyncEngine
) -> None:
    app = preloading_app(any_engine, LookupCache(preload=True))
    with SelectCounter(any_engine, "http_tenant") as every, client(app) as c:
        assert every.count == 1  # the bulk load, before the app reported it had started
        with SelectCounter(any_engine, "http_tenant") as counter:
            for _ in range(3):
                for tenant in ("acme", "globex", "initech"):
                    assert status_of(c, tenant) == 200
                assert status_of(c, "umbrella") == 403  # inactive tenants are loaded too
            assert counter.count == 0
            assert status_of(c, "nobody") == 404  # unknown: looked up by key, then cached
            assert status_of(c, "nobody") == 404
            assert counter.count == 1


def test_a_change_reaches_the_cache_without_invalidate(
    tenant_table: Engine, any_engine: Engine | AsyncEngine
) -> None:
    """ttl=2: reloaded every second, in the background; the requests themselves query nothing."""
    app = preloading_app(any_engine, LookupCache(preload=True, ttl=2))
    with client(app) as c, SelectCounter(any_engine, "http_tenant", by_key=True) as by_key:
        assert status_of(c, "acme") == 200
        assert status_of(c, "umbrella") == 403
        with tenant_table.begin() as conn:
            conn.execute(update(Tenant).where(Tenant.slug == "acme").values(active=False))
            conn.execute(update(Tenant).where(Tenant.slug == "umbrella").values(active=True))
            conn.execute(insert(Tenant), [{"slug": "hooli", "active": True}])
        deadline = time.monotonic() + 10
        while status_of(c, "acme") != 403 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert status_of(c, "acme") == 403
        assert status_of(c, "umbrella") == 200
        assert status_of(c, "hooli") == 200  # created since the start: in the last load
        assert by_key.count == 0


def test_a_partial_load_looks_the_rest_up_by_key_and_says_so(
    tenant_table: Engine, any_engine: Engine | AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    app = preloading_app(any_engine, LookupCache(preload=True, maxsize=2))
    with caplog.at_level(logging.WARNING, "fastapi_tenancy.lookup"), client(app) as c:
        assert "loaded its first 2 tenants" in caplog.text
        with SelectCounter(any_engine, "http_tenant", by_key=True) as by_key:
            assert status_of(c, "acme") == 200  # the first two by key: acme, globex
            assert status_of(c, "globex") == 200
            assert by_key.count == 0
            assert status_of(c, "initech") == 200
            assert by_key.count == 1


def test_without_a_lifespan_the_lookup_works_key_by_key(
    tenant_table: Engine, any_engine: Engine | AsyncEngine
) -> None:
    """A TestClient not used as a context manager runs no lifespan: nothing is preloaded, and
    every answer is still right."""
    c = client(preloading_app(any_engine, LookupCache(preload=True)))
    with SelectCounter(any_engine, "http_tenant", by_key=True) as by_key:
        assert status_of(c, "acme") == 200
        assert status_of(c, "umbrella") == 403
        assert status_of(c, "nobody") == 404
        assert by_key.count == 3


def test_a_database_down_at_startup_is_logged_and_requests_fail_closed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    down = create_engine("sqlite:////nonexistent-directory/tenants.sqlite3")
    try:
        app = preloading_app(down, LookupCache(preload=True))
        with caplog.at_level(logging.WARNING, "fastapi_tenancy.lookup"), client(app) as c:
            assert "could not load its tenants" in caplog.text
            r = c.get("/whoami", headers=tenant_header("acme"))
            assert r.status_code == 503, r.text
            assert r.json()["code"] == "tenancy_unavailable"
    finally:
        down.dispose()


# --------------------------------------------------------------------------------------------
# TenantLookup on its own


class Directory:
    """A tenant store with by-key and bulk fetches that count their calls."""

    def __init__(self, records: dict[str, Any]) -> None:
        self.records = records
        self.by_key: list[str] = []
        self.bulk: list[int] = []

    def fetch(self, key: str) -> Any:
        self.by_key.append(key)
        return self.records.get(key)

    def fetch_all(self, limit: int) -> Iterable[tuple[str, Any]]:
        self.bulk.append(limit)
        return sorted(self.records.items())[:limit]


@pytest.mark.anyio
async def test_reloaded_entries_expire_after_the_ttl_like_any_other() -> None:
    clock = FakeClock()
    store = Directory({"acme": {"active": True}, "globex": {"active": True}})
    lookup = TenantLookup(
        store.fetch,
        fetch_all=store.fetch_all,
        cache=LookupCache(ttl=10, preload=True, maxsize=50),
        clock=clock,
    )
    assert await lookup.reload() == 2
    assert store.bulk == [50]
    clock.now += 9.9
    assert await lookup("acme") == {"active": True}
    assert store.by_key == []
    clock.now += 0.1  # no reload came: the entry is as old as the ttl
    await lookup("acme")
    assert store.by_key == ["acme"]


@pytest.mark.anyio
async def test_a_reload_clears_a_cached_miss_of_a_tenant_created_since() -> None:
    store = Directory({})
    lookup = TenantLookup(
        store.fetch, fetch_all=store.fetch_all, cache=LookupCache(preload=True), clock=FakeClock()
    )
    with pytest.raises(TenantNotFound):
        await lookup("hooli")
    store.records["hooli"] = {"active": True}
    await lookup.reload()
    assert await lookup("hooli") == {"active": True}
    assert store.by_key == ["hooli"]


class GatedDirectory(Directory):
    """Its fetches read the store, then wait at a gate: the test changes things meanwhile."""

    def __init__(self, records: dict[str, Any]) -> None:
        super().__init__(records)
        self.read = anyio.Event()
        self.gate = anyio.Event()

    async def fetch_all_gated(self, limit: int) -> Iterable[tuple[str, Any]]:
        answer = [(k, dict(v)) for k, v in self.fetch_all(limit)]
        self.read.set()
        await self.gate.wait()
        return answer

    async def fetch_gated(self, key: str) -> Any:
        found = self.fetch(key)
        answer = None if found is None else dict(found)
        self.read.set()
        await self.gate.wait()
        return answer


@pytest.mark.anyio
async def test_a_tenant_suspended_during_a_bulk_load_is_not_revived_by_it() -> None:
    store = GatedDirectory({"acme": {"active": True}, "globex": {"active": True}})
    lookup = TenantLookup(
        store.fetch,
        fetch_all=store.fetch_all_gated,
        cache=LookupCache(preload=True),
        clock=FakeClock(),
    )
    async with anyio.create_task_group() as group:
        group.start_soon(lookup.reload)
        await store.read.wait()  # the load has read acme as active ...
        store.records["acme"] = {"active": False}  # ... and acme is suspended meanwhile
        lookup.invalidate("acme")
        store.gate.set()
    with pytest.raises(TenantInactive):
        await lookup("acme")
    assert store.by_key == ["acme"]
    assert await lookup("globex") == {"active": True}
    assert store.by_key == ["acme"]


@pytest.mark.anyio
async def test_a_full_invalidate_during_a_bulk_load_discards_it() -> None:
    store = GatedDirectory({"acme": {"active": True}})
    lookup = TenantLookup(
        store.fetch,
        fetch_all=store.fetch_all_gated,
        cache=LookupCache(preload=True),
        clock=FakeClock(),
    )
    loaded: list[int] = []

    async def reload() -> None:
        loaded.append(await lookup.reload())

    async with anyio.create_task_group() as group:
        group.start_soon(reload)
        await store.read.wait()
        store.records.clear()
        lookup.invalidate()
        store.gate.set()
    assert loaded == [0]
    with pytest.raises(TenantNotFound):
        await lookup("acme")


@pytest.mark.anyio
async def test_a_tenant_invalidated_during_its_own_lookup_is_not_cached() -> None:
    store = GatedDirectory({"acme": {"active": True}})
    lookup = TenantLookup(store.fetch_gated, clock=FakeClock())
    answers: list[Any] = []

    async def look() -> None:
        answers.append(await lookup("acme"))

    async with anyio.create_task_group() as group:
        group.start_soon(look)
        await store.read.wait()
        store.records["acme"] = {"active": False}
        lookup.invalidate("acme")
        store.gate.set()
    assert answers == [{"active": True}]  # the request that asked first sees what was read
    store.gate = anyio.Event()
    store.gate.set()
    with pytest.raises(TenantInactive):  # the next one looks again
        await lookup("acme")
    assert store.by_key == ["acme", "acme"]


@pytest.mark.anyio
async def test_a_failed_reload_is_logged_and_requests_look_up_by_key(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    store = Directory({"acme": {"active": True}})
    outage = [False]

    def fetch_all(limit: int) -> Iterable[tuple[str, Any]]:
        if outage[0]:
            raise OSError("connection refused")
        return store.fetch_all(limit)

    lookup = TenantLookup(
        store.fetch, fetch_all=fetch_all, cache=LookupCache(preload=True, ttl=10), clock=clock
    )
    await lookup.reload_logged()
    outage[0] = True
    with pytest.raises(TenancyUnavailable):
        await lookup.reload()
    with caplog.at_level(logging.WARNING, "fastapi_tenancy.lookup"):
        await lookup.reload_logged()
    assert "could not load its tenants (connection refused)" in caplog.text
    clock.now += 10
    assert await lookup("acme") == {"active": True}
    assert store.by_key == ["acme"]


@pytest.mark.anyio
async def test_keep_fresh_reloads_every_half_ttl_until_cancelled() -> None:
    store = Directory({"acme": {"active": True}})
    lookup = TenantLookup(
        store.fetch, fetch_all=store.fetch_all, cache=LookupCache(preload=True, ttl=0.1)
    )
    with anyio.move_on_after(0.5):
        await lookup.keep_fresh()
    assert 3 <= len(store.bulk) <= 10, store.bulk


def test_the_app_stops_reloading_when_it_shuts_down() -> None:
    store = Directory({"acme": {"active": True}})
    lookup = TenantLookup(
        store.fetch, fetch_all=store.fetch_all, cache=LookupCache(preload=True, ttl=0.1)
    )
    app, _tenancy = build_app(
        create_engine("sqlite://"), resolvers=[HeaderResolver()], lookup=lookup
    )
    with client(app) as c:
        assert status_of(c, "acme") == 200
        time.sleep(0.3)
    after_shutdown = len(store.bulk)
    assert after_shutdown >= 2
    time.sleep(0.3)
    assert len(store.bulk) == after_shutdown
    assert store.by_key == []


def test_preload_needs_a_bulk_fetch_and_a_cache() -> None:
    with pytest.raises(TenancyMisuse, match="lists its tenants"):
        TenantLookup(lambda key: None, cache=LookupCache(preload=True))
    with pytest.raises(TenancyMisuse, match="lists its tenants"):
        build_app(
            create_engine("sqlite://"),
            resolvers=[HeaderResolver()],
            lookup=lambda key: None,
            lookup_cache=LookupCache(preload=True),
        )
    with pytest.raises(ValueError, match="preload needs a cache"):
        LookupCache(preload=True, ttl=0)
    with pytest.raises(ValueError, match="preload needs a cache"):
        LookupCache(preload=True, maxsize=0)


def test_the_apps_own_startup_error_propagates_as_it_is() -> None:
    """The background work runs in a task group: an error of the app's own lifespan must not
    come out wrapped in an exception group, or a server would report it as ours."""
    store = Directory({"acme": {"active": True}})
    lookup = TenantLookup(store.fetch, fetch_all=store.fetch_all, cache=LookupCache(preload=True))

    @contextlib.asynccontextmanager
    async def failing(app: FastAPI) -> AsyncIterator[None]:
        raise RuntimeError("the app's own startup failed")
        yield

    app = FastAPI(lifespan=failing)
    Tenancy(create_engine("sqlite://"), resolvers=[HeaderResolver()], lookup=lookup).install(app)
    with pytest.raises(RuntimeError, match="own startup failed"), client(app):
        pass


def test_a_bulk_fetch_that_breaks_is_logged_and_the_app_keeps_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = Directory({"acme": {"active": True}})
    lookup = TenantLookup(
        store.fetch, fetch_all=lambda limit: 42, cache=LookupCache(preload=True, ttl=0.1)
    )
    app, _tenancy = build_app(
        create_engine("sqlite://"), resolvers=[HeaderResolver()], lookup=lookup
    )
    with caplog.at_level(logging.WARNING, "fastapi_tenancy.lookup"), client(app) as c:
        time.sleep(0.2)  # a few background reloads fail too
        assert status_of(c, "acme") == 200
    assert caplog.text.count("could not load its tenants") >= 2
