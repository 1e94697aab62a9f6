"""TenancyMiddleware through real ASGI apps: what it binds, for how long, and how it refuses."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import httpx
import jwt
import pytest
from fastapi import BackgroundTasks, Depends, FastAPI, Request, WebSocket
from fastapi.responses import JSONResponse, StreamingResponse
from fastapi.testclient import TestClient
from http_app import (
    SECRET,
    Project,
    bearer,
    build_app,
    client,
    jwt_resolver,
    names,
    seed_projects,
    tenant_header,
    token,
)
from sqlalchemy import create_engine
from sqlmodel import select
from starlette.applications import Starlette
from starlette.requests import HTTPConnection
from starlette.routing import Mount, Route
from starlette.websockets import WebSocketDisconnect

from fastapi_tenancy import (
    AdminRequired,
    AlreadyExists,
    CrossTenantWrite,
    HeaderResolver,
    SubdomainResolver,
    Tenancy,
    TenancyError,
    TenantContext,
    TenantRequired,
    TenantSession,
    UnscopedStatement,
    get_current_tenant,
    get_tenant_context,
    with_tenant,
)

# --------------------------------------------------------------------------------------------
# Helpers


def idle_engine() -> Any:
    """An engine for apps that never reach a database (it is never connected)."""
    return create_engine("sqlite://")


def tiny_app(
    resolvers: Sequence[Any] | None = None, *, lifespan: Any = None, **options: Any
) -> FastAPI:
    """An app with the kit installed and two routes that report the bound tenant."""
    options.setdefault("trust_unverified_sources", True)  # bare headers name tenants here
    tenancy = Tenancy(
        idle_engine(), resolvers=[HeaderResolver()] if resolvers is None else resolvers, **options
    )
    app = FastAPI(lifespan=lifespan)
    tenancy.install(app)

    @app.get("/whoami")
    async def whoami() -> dict[str, Any]:
        return {"tenant": get_current_tenant()}

    @app.get("/whoami-sync")
    def whoami_sync() -> dict[str, Any]:
        return {"tenant": get_current_tenant()}

    return app


def full_chain_app(**options: Any) -> FastAPI:
    """Token, then subdomain under example.test, then the X-Tenant-ID header."""
    return tiny_app(
        [jwt_resolver(), SubdomainResolver(base_domain="example.test"), HeaderResolver()],
        **options,
    )


def asgi_client(app: FastAPI, **kwargs: Any) -> httpx.AsyncClient:
    """A client that calls the app in the test's own task, so contextvars are shared."""
    raise_app_exceptions = kwargs.pop("raise_app_exceptions", True)
    kwargs.setdefault("base_url", "http://testserver")
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
    return httpx.AsyncClient(transport=transport, **kwargs)


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"detail", "code"}, body
    assert body["code"] == code, body
    assert isinstance(body["detail"], str)
    assert body["detail"]


class LookupSpy:
    """A lookup callable over a dict of records that remembers every key it was asked."""

    def __init__(self, records: dict[str, dict[str, Any]] | None = None) -> None:
        self.records = records if records is not None else {}
        self.calls: list[str] = []

    def __call__(self, key: str) -> dict[str, Any] | None:
        self.calls.append(key)
        return self.records.get(key)


class PredicateSpy:
    """A membership or admin predicate that remembers the contexts it was asked about."""

    def __init__(self, answer: bool) -> None:
        self.answer = answer
        self.calls: list[str | None] = []

    def __call__(self, context: TenantContext) -> bool:
        self.calls.append(context.id)
        return self.answer


def is_listed_member(context: TenantContext) -> bool:
    return context.id in context.claims.get("tenants", ())


async def is_listed_member_async(context: TenantContext) -> bool:
    await asyncio.sleep(0)
    return context.id in context.claims.get("tenants", ())


# --------------------------------------------------------------------------------------------
# Scopes: lifespan passes through, http and websocket get the tenant


def test_lifespan_passes_through_to_the_app() -> None:
    events: list[Any] = []

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, str]]:
        events.append(("startup", get_current_tenant()))
        yield {"greeting": "hello"}
        events.append(("shutdown", get_current_tenant()))

    app = tiny_app(lifespan=lifespan)

    @app.get("/greeting")
    async def greeting(request: Request) -> dict[str, Any]:
        return {"greeting": request.state.greeting, "tenant": get_current_tenant()}

    with TestClient(app) as c:
        assert events == [("startup", None)]
        r = c.get("/greeting", headers=tenant_header("acme"))
        assert r.status_code == 200, r.text
        assert r.json() == {"greeting": "hello", "tenant": "acme"}
    assert events == [("startup", None), ("shutdown", None)]


def test_http_request_gets_its_tenant_bound() -> None:
    with TestClient(tiny_app()) as c:
        r = c.get("/whoami", headers=tenant_header("acme"))
        assert r.status_code == 200, r.text
        assert r.json() == {"tenant": "acme"}
        r = c.get("/whoami", headers=tenant_header("globex"))
        assert r.json() == {"tenant": "globex"}


def websocket_app(**options: Any) -> tuple[FastAPI, list[str | None]]:
    app = tiny_app(**options)
    seen: list[str | None] = []

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        seen.append(get_current_tenant())
        await websocket.accept()
        await websocket.send_json({"tenant": get_current_tenant()})
        await websocket.receive_text()
        await websocket.send_json({"tenant": get_current_tenant()})
        await websocket.close()

    return app, seen


def test_websocket_gets_its_tenant_bound() -> None:
    app, seen = websocket_app()
    with TestClient(app) as c, c.websocket_connect("/ws", headers=tenant_header("acme")) as ws:
        assert ws.receive_json() == {"tenant": "acme"}
        ws.send_text("again")
        assert ws.receive_json() == {"tenant": "acme"}
    assert seen == ["acme"]


def test_websocket_without_tenant_is_closed_with_policy_violation() -> None:
    app, seen = websocket_app()
    with TestClient(app) as c:
        with pytest.raises(WebSocketDisconnect) as info, c.websocket_connect("/ws"):
            pass  # pragma: no cover - the connection is refused before it opens
        assert info.value.code == 1008
        assert info.value.reason == "tenant_required"
    assert seen == []


@pytest.mark.parametrize(
    ("headers", "reason"),
    [
        ([("X-Tenant-ID", "ACME")], "invalid_tenant_key"),
        ([("Authorization", "Bearer not-a-token")], "invalid_token"),
        ([("X-Tenant-ID", "acme"), ("X-Tenant-ID", "globex")], "ambiguous_tenant"),
    ],
)
def test_refused_websocket_closes_with_the_error_code_as_reason(
    headers: list[tuple[str, str]], reason: str
) -> None:
    app, seen = websocket_app(resolvers=[jwt_resolver(), HeaderResolver()])
    with TestClient(app) as c:
        with (
            pytest.raises(WebSocketDisconnect) as info,
            c.websocket_connect("/ws", headers=httpx.Headers(headers)),
        ):
            pass  # pragma: no cover
        assert (info.value.code, info.value.reason) == (1008, reason)
    assert seen == []


# --------------------------------------------------------------------------------------------
# The binding lasts exactly one request


@pytest.mark.anyio
async def test_tenant_is_unbound_after_the_request() -> None:
    async with asgi_client(tiny_app()) as c:
        r = await c.get("/whoami", headers=tenant_header("acme"))
        assert r.json() == {"tenant": "acme"}
        assert get_current_tenant() is None
        assert get_tenant_context() is None


@pytest.mark.anyio
async def test_tenant_is_unbound_after_a_request_whose_route_fails() -> None:
    app = tiny_app()

    @app.get("/fail")
    async def fail() -> None:
        raise RuntimeError("route failed")

    async with asgi_client(app, raise_app_exceptions=False) as c:
        r = await c.get("/fail", headers=tenant_header("acme"))
        assert r.status_code == 500, r.text
        assert get_tenant_context() is None


@pytest.mark.anyio
async def test_refused_request_leaves_nothing_bound() -> None:
    async with asgi_client(tiny_app()) as c:
        assert_error(await c.get("/whoami"), 400, "tenant_required")
        assert get_tenant_context() is None
        assert_error(
            await c.get("/whoami", headers=tenant_header("ACME")), 400, "invalid_tenant_key"
        )
        assert get_tenant_context() is None


@pytest.mark.anyio
async def test_request_sees_its_own_tenant_not_the_one_bound_around_the_call() -> None:
    async with asgi_client(tiny_app()) as c, with_tenant("initech"):
        r = await c.get("/whoami", headers=tenant_header("acme"))
        assert r.json() == {"tenant": "acme"}
        r = await c.get("/whoami-sync", headers=tenant_header("globex"))
        assert r.json() == {"tenant": "globex"}
        assert get_current_tenant() == "initech"
    assert get_current_tenant() is None


@pytest.mark.anyio
async def test_request_naming_no_tenant_does_not_inherit_the_callers_tenant() -> None:
    async with asgi_client(tiny_app(require_tenant=False)) as c:
        async with with_tenant("initech"):
            r = await c.get("/whoami")
            assert r.json() == {"tenant": None}
            r = await c.get("/whoami-sync")
            assert r.json() == {"tenant": None}
            r = await c.get("/openapi.json")
            assert r.status_code == 200, r.text
            assert get_current_tenant() == "initech"
        assert get_current_tenant() is None


@pytest.mark.anyio
async def test_excluded_path_does_not_see_the_callers_tenant() -> None:
    app = tiny_app(exclude_paths=("/whoami",))
    async with asgi_client(app) as c, with_tenant("initech"):
        r = await c.get("/whoami", headers=tenant_header("acme"))
        assert r.json() == {"tenant": None}
        assert get_current_tenant() == "initech"


@pytest.mark.anyio
async def test_next_request_does_not_inherit_the_previous_requests_tenant() -> None:
    async with asgi_client(tiny_app(require_tenant=False)) as c:
        r = await c.get("/whoami", headers=tenant_header("acme"))
        assert r.json() == {"tenant": "acme"}
        r = await c.get("/whoami")
        assert r.json() == {"tenant": None}


# --------------------------------------------------------------------------------------------
# Excluded paths and require_tenant


@pytest.mark.parametrize("path", ["/docs", "/redoc", "/openapi.json"])
def test_docs_are_served_without_a_tenant(path: str) -> None:
    with TestClient(tiny_app()) as c:
        r = c.get(path)
        assert r.status_code == 200, r.text


def test_custom_excluded_paths_are_served_without_a_tenant() -> None:
    app = tiny_app(exclude_paths=("/healthz", "/public/"))

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"ok": True, "tenant": get_current_tenant()}

    @app.get("/public/{page}")
    async def public(page: str) -> dict[str, Any]:
        return {"page": page, "tenant": get_current_tenant()}

    @app.get("/publicity")
    async def publicity() -> dict[str, Any]:
        return {"tenant": get_current_tenant()}

    with TestClient(app) as c:
        r = c.get("/healthz")
        assert r.status_code == 200, r.text
        assert r.json() == {"ok": True, "tenant": None}
        r = c.get("/public/plans")
        assert r.status_code == 200, r.text
        # An excluded path resolves nothing: sources are not even read.
        r = c.get("/healthz", headers=tenant_header("acme"))
        assert r.json() == {"ok": True, "tenant": None}
        r = c.get("/healthz", headers=tenant_header("NOT A KEY"))
        assert r.status_code == 200, r.text
        # Exact paths are exact, and a prefix needs its slash.
        assert_error(c.get("/healthz/extra"), 400, "tenant_required")
        assert_error(c.get("/publicity"), 400, "tenant_required")
        assert_error(c.get("/whoami"), 400, "tenant_required")
        # Giving exclusions replaces the defaults.
        assert_error(c.get("/docs"), 400, "tenant_required")


def health_app() -> FastAPI:
    app = tiny_app(exclude_paths=("/healthz", "/openapi.json"))

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"ok": True, "tenant": get_current_tenant()}

    return app


@pytest.mark.anyio
async def test_excluded_paths_are_the_apps_own_paths_below_a_root_path() -> None:
    # Behind a proxy (uvicorn --root-path /api) the ASGI path carries the prefix; routing
    # strips it, and so must the exclusions, or the health check demands a tenant.
    transport = httpx.ASGITransport(app=health_app(), root_path="/api")
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        r = await c.get("/api/healthz")
        assert r.status_code == 200, r.text
        assert r.json() == {"ok": True, "tenant": None}
        r = await c.get("/api/whoami")
        assert_error(r, 400, "tenant_required")
        r = await c.get("/api/whoami", headers=tenant_header("acme"))
        assert r.json() == {"tenant": "acme"}


@pytest.mark.anyio
async def test_excluded_paths_of_a_mounted_app_are_its_own_paths() -> None:
    parent = FastAPI()
    parent.mount("/v1", health_app())
    async with asgi_client(parent) as c:
        r = await c.get("/v1/healthz")
        assert r.status_code == 200, r.text
        r = await c.get("/v1/openapi.json")
        assert r.status_code == 200, r.text
        assert_error(await c.get("/v1/whoami"), 400, "tenant_required")
        r = await c.get("/v1/whoami", headers=tenant_header("acme"))
        assert r.json() == {"tenant": "acme"}


def test_require_tenant_false_lets_requests_without_tenant_through() -> None:
    with TestClient(tiny_app(require_tenant=False)) as c:
        r = c.get("/whoami")
        assert r.status_code == 200, r.text
        assert r.json() == {"tenant": None}
        r = c.get("/whoami", headers=tenant_header("acme"))
        assert r.json() == {"tenant": "acme"}


def test_require_tenant_false_still_refuses_bad_tenant_sources() -> None:
    with TestClient(full_chain_app(require_tenant=False)) as c:
        assert_error(c.get("/whoami", headers=tenant_header("ACME")), 400, "invalid_tenant_key")
        headers = {**bearer(tenant="acme"), **tenant_header("globex")}
        assert_error(c.get("/whoami", headers=headers), 403, "tenant_mismatch")
        headers = {"Authorization": "Bearer not-a-token"}
        assert_error(c.get("/whoami", headers=headers), 401, "invalid_token")


def test_require_tenant_callable_decides_per_request() -> None:
    asked: list[str] = []

    def required(conn: HTTPConnection) -> bool:
        asked.append(conn.url.path)
        return not conn.url.path.startswith("/open")

    app = tiny_app(require_tenant=required)

    @app.get("/open/whoami")
    async def open_whoami() -> dict[str, Any]:
        return {"tenant": get_current_tenant()}

    with TestClient(app) as c:
        r = c.get("/open/whoami")
        assert r.status_code == 200, r.text
        assert r.json() == {"tenant": None}
        assert_error(c.get("/whoami"), 400, "tenant_required")
        r = c.get("/whoami", headers=tenant_header("acme"))
        assert r.json() == {"tenant": "acme"}
    # Asked only when no tenant was named.
    assert asked == ["/open/whoami", "/whoami"]


# --------------------------------------------------------------------------------------------
# Everything the request runs sees the request's tenant


def test_sync_routes_and_dependencies_in_the_thread_pool_see_the_tenant() -> None:
    app = tiny_app()
    teardowns: list[str | None] = []

    def sync_dependency() -> str | None:
        return get_current_tenant()

    def sync_generator_dependency() -> Iterator[str | None]:
        yield get_current_tenant()
        teardowns.append(get_current_tenant())

    async def async_dependency() -> str | None:
        return get_current_tenant()

    @app.get("/sync")
    def sync_route(
        from_sync: str | None = Depends(sync_dependency),
        from_generator: str | None = Depends(sync_generator_dependency),
        from_async: str | None = Depends(async_dependency),
    ) -> dict[str, Any]:
        return {
            "route": get_current_tenant(),
            "sync_dependency": from_sync,
            "generator_dependency": from_generator,
            "async_dependency": from_async,
            "thread": threading.get_ident(),
        }

    @app.get("/loop-thread")
    async def loop_thread() -> int:
        return threading.get_ident()

    with TestClient(app) as c:
        r = c.get("/sync", headers=tenant_header("acme"))
        assert r.status_code == 200, r.text
        body = r.json()
        assert c.get("/loop-thread", headers=tenant_header("acme")).json() != body.pop("thread")
        assert body == {
            "route": "acme",
            "sync_dependency": "acme",
            "generator_dependency": "acme",
            "async_dependency": "acme",
        }
    assert teardowns == ["acme"]


def test_background_tasks_see_the_requests_tenant() -> None:
    app = tiny_app()
    seen: list[tuple[str, str | None]] = []

    def sync_task(label: str) -> None:
        seen.append((label, get_current_tenant()))

    async def async_task(label: str) -> None:
        await asyncio.sleep(0)
        seen.append((label, get_current_tenant()))

    @app.post("/jobs")
    async def jobs(tasks: BackgroundTasks) -> dict[str, bool]:
        tasks.add_task(sync_task, "sync task from async route")
        tasks.add_task(async_task, "async task from async route")
        return {"queued": True}

    @app.post("/jobs-sync")
    def jobs_sync(tasks: BackgroundTasks) -> dict[str, bool]:
        tasks.add_task(sync_task, "sync task from sync route")
        tasks.add_task(async_task, "async task from sync route")
        return {"queued": True}

    with TestClient(app) as c:
        assert c.post("/jobs", headers=tenant_header("acme")).status_code == 200
        assert c.post("/jobs-sync", headers=tenant_header("globex")).status_code == 200
    assert seen == [
        ("sync task from async route", "acme"),
        ("async task from async route", "acme"),
        ("sync task from sync route", "globex"),
        ("async task from sync route", "globex"),
    ]


def streaming_app() -> FastAPI:
    app = tiny_app()

    @app.get("/stream")
    async def stream() -> StreamingResponse:
        async def body() -> AsyncIterator[str]:
            for _ in range(5):
                await asyncio.sleep(0.001)
                yield f"{get_current_tenant()}\n"

        return StreamingResponse(body(), media_type="text/plain")

    @app.get("/stream-sync")
    def stream_sync() -> StreamingResponse:
        def body() -> Iterator[str]:
            for _ in range(5):
                yield f"{get_current_tenant()}\n"

        return StreamingResponse(body(), media_type="text/plain")

    return app


@pytest.mark.parametrize("path", ["/stream", "/stream-sync"])
def test_streaming_body_sees_the_requests_tenant(path: str) -> None:
    with TestClient(streaming_app()) as c:
        r = c.get(path, headers=tenant_header("acme"))
        assert r.status_code == 200, r.text
        assert r.text == "acme\n" * 5


@pytest.mark.anyio
async def test_interleaved_streams_each_see_their_own_tenant() -> None:
    tenants = ["acme", "globex", "initech"] * 10
    async with asgi_client(streaming_app()) as c:
        responses = await asyncio.gather(
            *(
                c.get("/stream" if i % 2 else "/stream-sync", headers=tenant_header(tenant))
                for i, tenant in enumerate(tenants)
            )
        )
    for tenant, r in zip(tenants, responses, strict=True):
        assert r.status_code == 200, r.text
        assert r.text == f"{tenant}\n" * 5


@pytest.mark.anyio
async def test_tasks_created_inside_an_async_route_see_the_requests_tenant() -> None:
    app = tiny_app()
    outliving: list[asyncio.Task[str | None]] = []
    release = asyncio.Event()

    async def tenant_after_a_while() -> str | None:
        await asyncio.sleep(0)
        return get_current_tenant()

    async def tenant_after_release() -> str | None:
        await release.wait()
        return get_current_tenant()

    @app.get("/spawn")
    async def spawn() -> dict[str, Any]:
        awaited = asyncio.create_task(tenant_after_a_while())
        outliving.append(asyncio.create_task(tenant_after_release()))
        return {"task": await awaited}

    async with asgi_client(app) as c:
        r = await c.get("/spawn", headers=tenant_header("acme"))
        assert r.json() == {"task": "acme"}
        # A task that outlives the request keeps the tenant it was created with ...
        release.set()
        assert await outliving[0] == "acme"
        # ... and the request's tenant never reached the caller.
        assert get_current_tenant() is None


# --------------------------------------------------------------------------------------------
# Errors: one response per row of the contract's table, in the contract's order


@pytest.mark.parametrize(
    "bad_token",
    [
        pytest.param(
            jwt.encode({"tenant": "acme", "exp": 4102444800}, "another-secret-" * 3, "HS256"),
            id="bad-signature",
        ),
        pytest.param(token(tenant="acme", exp_in=-60), id="expired"),
        pytest.param(jwt.encode({"tenant": "acme"}, SECRET, "HS256"), id="no-exp"),
        pytest.param(
            jwt.encode({"tenant": "acme", "exp": 4102444800}, SECRET, "HS512"), id="hs512"
        ),
        pytest.param(
            jwt.encode({"tenant": "acme", "exp": 4102444800}, None, "none"), id="alg-none"
        ),
        pytest.param("not-a-token", id="garbage"),
    ],
)
def test_bad_token_answers_401_with_www_authenticate(bad_token: str) -> None:
    with TestClient(full_chain_app()) as c:
        r = c.get("/whoami", headers={"Authorization": f"Bearer {bad_token}"})
        assert_error(r, 401, "invalid_token")
        assert r.headers["www-authenticate"].startswith("Bearer")


def test_valid_token_binds_its_tenant() -> None:
    with TestClient(full_chain_app()) as c:
        r = c.get("/whoami", headers=bearer(tenant="acme"))
        assert r.status_code == 200, r.text
        assert r.json() == {"tenant": "acme"}


def test_header_cannot_override_the_tenant_in_the_token() -> None:
    with TestClient(full_chain_app()) as c:
        headers = {**bearer(tenant="acme"), **tenant_header("globex")}
        assert_error(c.get("/whoami", headers=headers), 403, "tenant_mismatch")
        headers = {**bearer(tenant="acme"), **tenant_header("acme")}
        assert c.get("/whoami", headers=headers).json() == {"tenant": "acme"}


def test_subdomain_cannot_override_the_tenant_in_the_token() -> None:
    with TestClient(full_chain_app(), base_url="http://acme.example.test") as c:
        assert c.get("/whoami").json() == {"tenant": "acme"}
        assert_error(c.get("/whoami", headers=bearer(tenant="globex")), 403, "tenant_mismatch")
        assert c.get("/whoami", headers=bearer(tenant="acme")).json() == {"tenant": "acme"}


def test_header_cannot_override_the_subdomain() -> None:
    with TestClient(full_chain_app(), base_url="http://acme.example.test") as c:
        assert_error(c.get("/whoami", headers=tenant_header("globex")), 403, "tenant_mismatch")


def test_subdomain_is_case_folded() -> None:
    with TestClient(full_chain_app(), base_url="http://ACME.Example.Test:8080") as c:
        assert c.get("/whoami").json() == {"tenant": "acme"}


def test_header_sent_twice_with_different_values_is_ambiguous() -> None:
    with TestClient(tiny_app()) as c:
        headers = [("X-Tenant-ID", "acme"), ("X-Tenant-ID", "globex")]
        assert_error(c.get("/whoami", headers=headers), 400, "ambiguous_tenant")
        headers = [("X-Tenant-ID", "acme"), ("X-Tenant-ID", "acme")]
        assert c.get("/whoami", headers=headers).json() == {"tenant": "acme"}


HOSTILE_KEYS = [
    pytest.param(b"", id="empty"),
    pytest.param(b" ", id="space"),
    pytest.param(b" acme", id="leading-space"),
    pytest.param(b"acme ", id="trailing-space"),
    pytest.param(b"\tacme", id="tab"),
    pytest.param(b"x" * 10_240, id="10kB"),
    pytest.param(b"a" * 64, id="64-chars"),
    pytest.param("\u00e1cme".encode(), id="latin-1"),
    pytest.param("\u0430cme".encode(), id="cyrillic-a"),
    pytest.param("\U0001f600".encode(), id="emoji"),
    pytest.param(b"ACME", id="upper-case"),
    pytest.param(b"Acme", id="mixed-case"),
    pytest.param(b"-acme", id="leading-dash"),
    pytest.param(b"_acme", id="leading-underscore"),
    pytest.param(b"acme.corp", id="dot"),
    pytest.param(b"../acme", id="path"),
    pytest.param(b"acme' OR '1'='1", id="quote"),
    pytest.param(b"%61cme", id="percent"),
]


@pytest.mark.parametrize("value", HOSTILE_KEYS)
def test_hostile_tenant_keys_are_refused_before_any_lookup(value: bytes) -> None:
    lookup = LookupSpy({"acme": {"active": True}})
    with TestClient(tiny_app(lookup=lookup)) as c:
        r = c.get("/whoami", headers=[(b"X-Tenant-ID", value)])
        assert_error(r, 400, "invalid_tenant_key")
        if value.strip():
            assert value.decode() not in r.text
    assert lookup.calls == []


def test_longest_valid_key_is_accepted() -> None:
    with TestClient(tiny_app()) as c:
        key = "a" * 63
        assert c.get("/whoami", headers=tenant_header(key)).json() == {"tenant": key}


def test_missing_tenant_answers_400() -> None:
    with TestClient(full_chain_app()) as c:
        assert_error(c.get("/whoami"), 400, "tenant_required")
        # A verified token without a tenant claim names no tenant either.
        assert_error(c.get("/whoami", headers=bearer(sub="ann")), 400, "tenant_required")


LOOKUP_RECORDS = {
    "acme": {"active": True, "plan": "pro"},
    "umbrella": {"active": False, "plan": "free"},
}


def test_unknown_tenant_answers_404() -> None:
    with TestClient(tiny_app(lookup=LookupSpy(LOOKUP_RECORDS))) as c:
        assert_error(c.get("/whoami", headers=tenant_header("nobody")), 404, "tenant_not_found")
        assert c.get("/whoami", headers=tenant_header("acme")).json() == {"tenant": "acme"}


def test_inactive_tenant_answers_403() -> None:
    with TestClient(tiny_app(lookup=LookupSpy(LOOKUP_RECORDS))) as c:
        r = c.get("/whoami", headers=tenant_header("umbrella"))
        assert_error(r, 403, "tenant_inactive")


def test_failing_sync_lookup_answers_503_and_never_runs_the_route() -> None:
    ran: list[str | None] = []

    def lookup(key: str) -> Any:
        raise ConnectionError("database is down")

    app = tiny_app(lookup=lookup)

    @app.get("/run")
    async def run() -> None:
        ran.append(get_current_tenant())

    with TestClient(app) as c:
        assert_error(c.get("/run", headers=tenant_header("acme")), 503, "tenancy_unavailable")
    assert ran == []


def test_failing_async_lookup_answers_503() -> None:
    async def lookup(key: str) -> Any:
        raise TimeoutError("database is slow")

    with TestClient(tiny_app(lookup=lookup)) as c:
        r = c.get("/whoami", headers=tenant_header("acme"))
        assert_error(r, 503, "tenancy_unavailable")


@pytest.mark.parametrize("membership", [is_listed_member, is_listed_member_async])
def test_principal_outside_the_tenant_answers_403(membership: Any) -> None:
    with TestClient(full_chain_app(membership=membership)) as c:
        member = bearer(sub="ann", tenant="acme", tenants=["acme"])
        assert c.get("/whoami", headers=member).json() == {"tenant": "acme"}
        outsider = bearer(sub="bob", tenant="acme", tenants=["globex"])
        assert_error(c.get("/whoami", headers=outsider), 403, "not_a_member")
        # Membership is checked whichever source named the tenant.
        headers = {**bearer(sub="bob", tenants=["globex"]), **tenant_header("acme")}
        assert_error(c.get("/whoami", headers=headers), 403, "not_a_member")
        assert_error(c.get("/whoami", headers=tenant_header("acme")), 403, "not_a_member")


def test_admin_switch_used_by_a_non_admin_answers_403() -> None:
    app, _tenancy = build_app(idle_engine())
    with client(app) as c:
        r = c.get("/admin/projects", headers=bearer(sub="ann", tenant="acme", roles=["user"]))
        assert_error(r, 403, "admin_required")
        assert_error(c.get("/admin/projects", headers=tenant_header("acme")), 403, "admin_required")


def test_write_naming_another_tenant_answers_403_and_writes_nothing(
    backend: str, any_engine: Any, create_tables: Any
) -> None:
    create_tables(any_engine, Project)
    app, _tenancy = build_app(any_engine)
    with client(app) as c:
        seed_projects(c, {"globex": ["radar"]})
        r = c.post(
            "/projects",
            json={"name": "sneaky", "tenant_id": "globex"},
            headers=tenant_header("acme"),
        )
        assert_error(r, 403, "cross_tenant_write")
        assert names(c.get("/projects", headers=tenant_header("globex"))) == ["radar"]
        assert names(c.get("/projects", headers=tenant_header("acme"))) == []


def test_moving_a_row_to_another_tenant_answers_403_and_changes_nothing(
    backend: str, any_engine: Any, create_tables: Any
) -> None:
    create_tables(any_engine, Project)
    app, _tenancy = build_app(any_engine)
    with client(app) as c:
        seed_projects(c, {"acme": ["anvil"]})
        [project] = c.get("/projects", headers=tenant_header("acme")).json()
        r = c.patch(
            f"/projects/{project['id']}",
            json={"tenant_id": "globex"},
            headers=tenant_header("acme"),
        )
        assert_error(r, 403, "cross_tenant_write")
        assert c.get("/projects", headers=tenant_header("acme")).json() == [project]
        assert c.get("/projects", headers=tenant_header("globex")).json() == []


def test_another_tenants_row_answers_404_like_a_missing_one(
    backend: str, any_engine: Any, create_tables: Any
) -> None:
    create_tables(any_engine, Project)
    app, _tenancy = build_app(any_engine)
    with client(app) as c:
        seed_projects(c, {"acme": ["anvil"]})
        [project] = c.get("/projects", headers=tenant_header("acme")).json()
        url = f"/projects/{project['id']}"
        assert c.get(url, headers=tenant_header("acme")).json() == project
        r = c.get(url, headers=tenant_header("globex"))
        assert r.status_code == 404, r.text
        assert r.json() == c.get("/projects/999999", headers=tenant_header("acme")).json()
        r = c.patch(url, json={"name": "stolen"}, headers=tenant_header("globex"))
        assert r.status_code == 404, r.text
        assert c.get(url, headers=tenant_header("acme")).json() == project


def test_duplicate_name_within_a_tenant_answers_409_but_another_tenant_may_reuse_it(
    backend: str, any_engine: Any, create_tables: Any
) -> None:
    create_tables(any_engine, Project)
    app, _tenancy = build_app(any_engine)
    with client(app) as c:
        seed_projects(c, {"acme": ["anvil"]})
        r = c.post("/projects", json={"name": "anvil"}, headers=tenant_header("acme"))
        assert_error(r, 409, "already_exists")
        r = c.post("/projects", json={"name": "anvil"}, headers=tenant_header("globex"))
        assert r.status_code == 201, r.text
        assert r.json()["tenant_id"] == "globex"
        assert names(c.get("/projects", headers=tenant_header("acme"))) == ["anvil"]
        assert names(c.get("/projects", headers=tenant_header("globex"))) == ["anvil"]


# The order of the checks: the first failure answers.


def test_invalid_token_answers_before_a_mismatching_header() -> None:
    with TestClient(full_chain_app()) as c:
        headers = {"Authorization": "Bearer not-a-token", **tenant_header("globex")}
        assert_error(c.get("/whoami", headers=headers), 401, "invalid_token")


def test_invalid_token_answers_before_a_mismatching_subdomain() -> None:
    expired = {"Authorization": f"Bearer {token(tenant='globex', exp_in=-60)}"}
    with TestClient(full_chain_app(), base_url="http://acme.example.test") as c:
        assert_error(c.get("/whoami", headers=expired), 401, "invalid_token")


def test_invalid_token_answers_before_an_ambiguous_header() -> None:
    with TestClient(full_chain_app()) as c:
        headers = [
            ("Authorization", "Bearer not-a-token"),
            ("X-Tenant-ID", "acme"),
            ("X-Tenant-ID", "globex"),
        ]
        assert_error(c.get("/whoami", headers=headers), 401, "invalid_token")


def test_invalid_token_answers_before_an_invalid_key() -> None:
    with TestClient(full_chain_app()) as c:
        headers = {"Authorization": "Bearer not-a-token", **tenant_header("NOT A KEY")}
        assert_error(c.get("/whoami", headers=headers), 401, "invalid_token")


def test_mismatch_answers_before_an_invalid_key() -> None:
    with TestClient(full_chain_app()) as c:
        headers = {**bearer(tenant="acme"), **tenant_header("NOT A KEY")}
        assert_error(c.get("/whoami", headers=headers), 403, "tenant_mismatch")


def test_ambiguous_header_answers_before_an_invalid_key() -> None:
    with TestClient(full_chain_app(), base_url="http://-bad-.example.test") as c:
        headers = [("X-Tenant-ID", "acme"), ("X-Tenant-ID", "ACME")]
        assert_error(c.get("/whoami", headers=headers), 400, "ambiguous_tenant")


def test_tenant_sources_are_checked_before_the_lookup() -> None:
    lookup = LookupSpy(LOOKUP_RECORDS)
    with TestClient(full_chain_app(lookup=lookup)) as c:
        assert_error(c.get("/whoami"), 400, "tenant_required")
        headers = {**bearer(tenant="nobody"), **tenant_header("acme")}
        assert_error(c.get("/whoami", headers=headers), 403, "tenant_mismatch")
        headers = {"Authorization": "Bearer not-a-token", **tenant_header("acme")}
        assert_error(c.get("/whoami", headers=headers), 401, "invalid_token")
        assert_error(c.get("/whoami", headers=tenant_header("Nobody")), 400, "invalid_tenant_key")
    assert lookup.calls == []


@pytest.mark.parametrize(
    ("tenant", "status", "code"),
    [
        ("nobody", 404, "tenant_not_found"),
        ("umbrella", 403, "tenant_inactive"),
        ("acme", 503, "tenancy_unavailable"),
    ],
)
def test_lookup_answers_before_the_membership_check(tenant: str, status: int, code: str) -> None:
    def lookup(key: str) -> Any:
        if key == "acme":
            raise ConnectionError("database is down")
        return LOOKUP_RECORDS.get(key)

    membership = PredicateSpy(answer=False)
    with TestClient(tiny_app(lookup=lookup, membership=membership)) as c:
        assert_error(c.get("/whoami", headers=tenant_header(tenant)), status, code)
    assert membership.calls == []


def test_membership_answers_before_the_admin_check() -> None:
    admin = PredicateSpy(answer=False)
    app, _tenancy = build_app(idle_engine(), membership=is_listed_member, is_admin=admin)
    with client(app) as c:
        headers = bearer(sub="bob", tenant="acme", tenants=["globex"])
        assert_error(c.get("/admin/projects", headers=headers), 403, "not_a_member")
    assert admin.calls == []


def test_cross_tenant_write_answers_before_a_duplicate_in_the_other_tenant(
    backend: str, any_engine: Any, create_tables: Any
) -> None:
    create_tables(any_engine, Project)
    app, _tenancy = build_app(any_engine)
    with client(app) as c:
        seed_projects(c, {"globex": ["radar"]})
        r = c.post(
            "/projects",
            json={"name": "radar", "tenant_id": "globex"},
            headers=tenant_header("acme"),
        )
        assert_error(r, 403, "cross_tenant_write")
        assert names(c.get("/projects", headers=tenant_header("globex"))) == ["radar"]


# --------------------------------------------------------------------------------------------
# Errors raised inside mounted sub-applications answer like the outer app's


def raising_sub_app(error: TenancyError) -> FastAPI:
    """A FastAPI app whose ``/boom`` raises ``error``, and whose ``/projects`` needs a tenant."""
    sub = FastAPI()

    @sub.get("/boom")
    async def boom() -> None:
        raise error

    @sub.get("/projects")
    def projects(session: TenantSession) -> list[Project]:
        return list(session.exec(select(Project)).all())

    return sub


KIT_ERRORS = [
    pytest.param(AdminRequired(), 403, "admin_required", id="admin_required"),
    pytest.param(CrossTenantWrite(), 403, "cross_tenant_write", id="cross_tenant_write"),
    pytest.param(AlreadyExists(), 409, "already_exists", id="already_exists"),
    pytest.param(TenantRequired(), 400, "tenant_required", id="tenant_required"),
    pytest.param(UnscopedStatement(), 500, "unscoped_statement", id="unscoped_statement"),
]


@pytest.mark.parametrize(("error", "status", "code"), KIT_ERRORS)
def test_a_kit_error_raised_in_a_mounted_fastapi_app_answers_its_json_and_status(
    error: TenancyError, status: int, code: str
) -> None:
    app = tiny_app()
    app.mount("/sub", raising_sub_app(error))
    with TestClient(app, raise_server_exceptions=False) as c:
        assert_error(c.get("/sub/boom", headers=tenant_header("acme")), status, code)


def test_a_kit_error_raised_in_a_mounted_starlette_app_answers_its_json_and_status() -> None:
    async def boom(request: Request) -> JSONResponse:
        raise AdminRequired()

    app = tiny_app()
    app.mount("/sub", Starlette(routes=[Route("/boom", boom)]))
    with TestClient(app, raise_server_exceptions=False) as c:
        assert_error(c.get("/sub/boom", headers=tenant_header("acme")), 403, "admin_required")


def test_a_kit_error_raised_in_an_app_mounted_at_any_depth_answers_its_json_and_status() -> None:
    middle = FastAPI()
    middle.mount("/inner", raising_sub_app(CrossTenantWrite()))
    app = tiny_app()
    app.router.routes.append(Mount("/outer", routes=[Mount("/middle", app=middle)]))
    app.host("api.example.test", raising_sub_app(AdminRequired()))
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.get("/outer/middle/inner/boom", headers=tenant_header("acme"))
        assert_error(r, 403, "cross_tenant_write")
    with TestClient(app, base_url="http://api.example.test", raise_server_exceptions=False) as c:
        assert_error(c.get("/boom", headers=tenant_header("acme")), 403, "admin_required")


def test_a_missing_tenant_in_a_mounted_app_always_answers_400_tenant_required() -> None:
    app = tiny_app(require_tenant=False)

    @app.get("/projects")
    def projects(session: TenantSession) -> list[Project]:
        return list(session.exec(select(Project)).all())

    app.mount("/sub", raising_sub_app(AdminRequired()))
    with TestClient(app, raise_server_exceptions=False) as c:
        assert_error(c.get("/sub/projects"), 400, "tenant_required")
        assert_error(c.get("/projects"), 400, "tenant_required")


def test_a_sub_app_that_served_requests_before_it_was_mounted_answers_kit_errors_too() -> None:
    sub = raising_sub_app(AdminRequired())
    with TestClient(sub, raise_server_exceptions=False) as c:
        assert c.get("/boom").status_code == 500
    app = tiny_app()
    app.mount("/sub", sub)
    with TestClient(app, raise_server_exceptions=False) as c:
        assert_error(c.get("/sub/boom", headers=tenant_header("acme")), 403, "admin_required")


def test_a_mounted_app_keeps_its_own_handler_for_kit_errors() -> None:
    sub = raising_sub_app(AdminRequired())

    @sub.exception_handler(TenancyError)
    async def teapot(request: Request, error: TenancyError) -> JSONResponse:
        return JSONResponse({"teapot": error.code}, status_code=418)

    app = tiny_app()
    app.mount("/sub", sub)
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.get("/sub/boom", headers=tenant_header("acme"))
        assert r.status_code == 418, r.text
        assert r.json() == {"teapot": "admin_required"}


def test_an_outer_apps_own_handler_for_kit_errors_reaches_its_mounted_apps() -> None:
    app = tiny_app()

    @app.exception_handler(TenancyError)
    async def teapot(request: Request, error: TenancyError) -> JSONResponse:
        return JSONResponse({"teapot": error.code}, status_code=418)

    app.mount("/sub", raising_sub_app(AdminRequired()))
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.get("/sub/boom", headers=tenant_header("acme"))
        assert r.status_code == 418, r.text
        assert r.json() == {"teapot": "admin_required"}
