"""The session dependencies through HTTP, on every database, sync and async.

``build_app`` gives sync routes with ``tenant_session``/``global_session``/``admin_session`` on
a sync engine and async routes with the async twins on an async engine, so each test here runs
six ways (``sqlite-sync`` ... ``mariadb-async``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from fastapi.testclient import TestClient
from http_app import (
    Project,
    Template,
    bearer,
    build_app,
    client,
    names,
    seed_projects,
    tenant_header,
)
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlmodel import select

from fastapi_tenancy import (
    AsyncTenantSession,
    HeaderResolver,
    Tenancy,
    TenancyMisuse,
    TenantSession,
    async_tenant_session,
    tenant_session,
)

AUDIT = "fastapi_tenancy.audit"

ACME = tenant_header("acme")
GLOBEX = tenant_header("globex")
ADMIN = bearer(sub="root@example.test", roles=["admin"])
USER = bearer(sub="ann@example.test", roles=["user"])


@pytest.fixture
def api(backend: str, any_engine: Engine | AsyncEngine, create_tables: Any) -> Iterator[TestClient]:
    """The app on the engine under test; tenants are optional at the middleware so the
    dependencies' own refusals can be seen."""
    create_tables(any_engine, Project, Template)
    app, _tenancy = build_app(any_engine, require_tenant=False)
    with client(app) as c:
        seed_projects(c, {"acme": ["anvil", "rocket"], "globex": ["radar"]})
        yield c


def audit_records(caplog: pytest.LogCaptureFixture, event_name: str) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == AUDIT and getattr(r, "tenancy_event", None) == event_name
    ]


# --------------------------------------------------------------------------------------------
# tenant_session / async_tenant_session


def test_tenant_session_reads_only_the_bound_tenants_rows(api: TestClient) -> None:
    r = api.get("/projects", headers=ACME)
    assert r.status_code == 200, r.text
    assert names(r) == ["anvil", "rocket"]
    assert {row["tenant_id"] for row in r.json()} == {"acme"}
    r = api.get("/projects", headers=GLOBEX)
    assert names(r) == ["radar"]
    assert {row["tenant_id"] for row in r.json()} == {"globex"}
    assert api.get("/projects", headers=tenant_header("initech")).json() == []


def test_tenant_session_stamps_new_rows_with_the_bound_tenant(api: TestClient) -> None:
    r = api.post("/projects", json={"name": "drill"}, headers=tenant_header("initech"))
    assert r.status_code == 201, r.text
    assert r.json()["tenant_id"] == "initech"
    assert names(api.get("/projects", headers=tenant_header("initech"))) == ["drill"]
    assert "drill" not in names(api.get("/projects", headers=ACME))


def test_tenant_session_without_a_tenant_answers_400(api: TestClient) -> None:
    r = api.get("/projects")
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "tenant_required"
    r = api.post("/projects", json={"name": "orphan"})
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "tenant_required"
    assert "orphan" not in names(api.get("/admin/projects", headers=ADMIN))


def test_session_dependency_on_a_websocket_is_scoped_to_its_tenant(api: TestClient) -> None:
    with api.websocket_connect("/ws/projects", headers=ACME) as ws:
        rows = ws.receive_json()
    assert [(row["tenant_id"], row["name"]) for row in rows] == [
        ("acme", "anvil"),
        ("acme", "rocket"),
    ]
    with api.websocket_connect("/ws/projects", headers=GLOBEX) as ws:
        assert [row["name"] for row in ws.receive_json()] == ["radar"]


# --------------------------------------------------------------------------------------------
# The global-access switch


def seed_templates(api: TestClient) -> None:
    for tenant, name in [("acme", "invoice"), ("globex", "memo"), ("globex", "report")]:
        r = api.post("/templates", json={"name": name}, headers=tenant_header(tenant))
        assert r.status_code == 201, r.text


def test_global_session_with_a_tenant_is_scoped_to_it(api: TestClient) -> None:
    seed_templates(api)
    r = api.get("/global/templates", headers=GLOBEX)
    assert r.status_code == 200, r.text
    assert names(r) == ["memo", "report"]
    r = api.get("/global/projects", headers=ACME)
    assert names(r) == ["anvil", "rocket"]


def test_global_session_without_a_tenant_reads_global_access_models_across_tenants(
    api: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    seed_templates(api)
    caplog.set_level(logging.INFO, logger=AUDIT)
    r = api.get("/global/templates")
    assert r.status_code == 200, r.text
    assert [(row["tenant_id"], row["name"]) for row in r.json()] == [
        ("acme", "invoice"),
        ("globex", "memo"),
        ("globex", "report"),
    ]
    [record] = audit_records(caplog, "global_access")
    assert record.tenancy_path == "/global/templates"


def test_global_session_without_a_tenant_refuses_other_tenant_models(api: TestClient) -> None:
    r = api.get("/global/projects")
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "tenant_required"


def test_global_session_without_a_tenant_refuses_writes(api: TestClient) -> None:
    r = api.post("/global/projects", json={"name": "orphan"})
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "tenant_required"
    r = api.post("/global/projects", json={"name": "orphan", "tenant_id": "acme"})
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "tenant_required"
    assert "orphan" not in names(api.get("/admin/projects", headers=ADMIN))


def test_global_session_with_a_tenant_writes_as_that_tenant(api: TestClient) -> None:
    r = api.post("/global/projects", json={"name": "drill"}, headers=ACME)
    assert r.status_code == 201, r.text
    assert r.json()["tenant_id"] == "acme"
    r = api.post("/global/projects", json={"name": "sneaky", "tenant_id": "globex"}, headers=ACME)
    assert r.status_code == 403, r.text
    assert r.json()["code"] == "cross_tenant_write"
    assert "sneaky" not in names(api.get("/admin/projects", headers=ADMIN))


# --------------------------------------------------------------------------------------------
# The admin-bypass switch


def test_admin_session_refuses_a_non_admin_and_audits_the_attempt(
    api: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=AUDIT)
    for headers in (USER, bearer(sub="ann@example.test", tenant="acme"), ACME, {}):
        r = api.get("/admin/projects", headers=headers)
        assert r.status_code == 403, r.text
        assert r.json() == {"detail": r.json()["detail"], "code": "admin_required"}
    records = audit_records(caplog, "admin_bypass")
    assert [r.tenancy_allowed for r in records] == [False] * 4
    assert [r.tenancy_principal for r in records] == [
        "ann@example.test",
        "ann@example.test",
        None,
        None,
    ]
    assert [r.tenancy_tenant for r in records] == [None, "acme", "acme", None]
    assert {r.tenancy_path for r in records} == {"/admin/projects"}


def test_admin_session_is_unscoped_for_an_admin_and_audited(
    api: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=AUDIT)
    r = api.get("/admin/projects", headers=ADMIN)
    assert r.status_code == 200, r.text
    assert [(row["tenant_id"], row["name"]) for row in r.json()] == [
        ("acme", "anvil"),
        ("acme", "rocket"),
        ("globex", "radar"),
    ]
    [record] = audit_records(caplog, "admin_bypass")
    assert record.tenancy_allowed is True
    assert record.tenancy_principal == "root@example.test"
    assert record.tenancy_tenant is None
    assert record.tenancy_path == "/admin/projects"


def test_admin_session_with_a_tenant_bound_is_still_unscoped_and_audits_the_tenant(
    api: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=AUDIT)
    headers = bearer(sub="root@example.test", tenant="globex", roles=["admin"])
    r = api.get("/admin/projects", headers=headers)
    assert r.status_code == 200, r.text
    assert names(r) == ["anvil", "rocket", "radar"]
    [record] = audit_records(caplog, "admin_bypass")
    assert (record.tenancy_principal, record.tenancy_tenant, record.tenancy_path) == (
        "root@example.test",
        "globex",
        "/admin/projects",
    )


# --------------------------------------------------------------------------------------------
# current_tenant


def test_current_tenant_reports_id_source_claims_and_record() -> None:
    records = {"acme": {"active": True, "plan": "pro"}}
    app, _tenancy = build_app(create_engine("sqlite://"), lookup=records.get)
    with client(app) as c:
        r = c.get("/tenant", headers=bearer(sub="ann@example.test", tenant="acme"))
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["id"] == "acme"
        assert body["source"] == "jwt"
        assert body["claims"]["sub"] == "ann@example.test"
        assert body["claims"]["tenant"] == "acme"
        assert isinstance(body["claims"]["exp"], int)
        assert body["record"] == {"active": True, "plan": "pro"}

        r = c.get("/tenant", headers=ACME)
        assert r.json() == {
            "id": "acme",
            "source": "header",
            "claims": {},
            "record": {"active": True, "plan": "pro"},
        }


def test_current_tenant_without_a_tenant_answers_400() -> None:
    app, _tenancy = build_app(create_engine("sqlite://"), require_tenant=False)
    with client(app) as c:
        r = c.get("/tenant")
        assert r.status_code == 400, r.text
        assert r.json()["code"] == "tenant_required"
        # A verified token without a tenant claim binds no tenant either.
        r = c.get("/tenant", headers=USER)
        assert r.status_code == 400, r.text
        assert r.json()["code"] == "tenant_required"


# --------------------------------------------------------------------------------------------
# Transactions: nothing half-written, sessions always closed


def test_route_raising_after_add_without_commit_writes_nothing(api: TestClient) -> None:
    r = api.post("/projects/raise-after-add", json={"name": "ghost"}, headers=ACME)
    assert r.status_code == 500, r.text
    assert names(api.get("/projects", headers=ACME)) == ["anvil", "rocket"]
    assert "ghost" not in names(api.get("/admin/projects", headers=ADMIN))


@pytest.mark.parametrize(("query", "status"), [("", 500), ("?http=true", 422)])
def test_route_raising_after_flush_rolls_back(api: TestClient, query: str, status: int) -> None:
    r = api.post(f"/projects/raise-after-flush{query}", json={"name": "ghost"}, headers=ACME)
    assert r.status_code == status, r.text
    assert names(api.get("/projects", headers=ACME)) == ["anvil", "rocket"]
    assert "ghost" not in names(api.get("/admin/projects", headers=ADMIN))
    # The rolled-back name is free: nothing of the failed transaction survived.
    r = api.post("/projects", json={"name": "ghost"}, headers=ACME)
    assert r.status_code == 201, r.text


def test_session_is_closed_and_its_connection_returned_after_the_request(
    api: TestClient,
) -> None:
    app: FastAPI = api.app  # type: ignore[assignment]
    engine = app.state.tenancy.engine
    pool_engine = engine.sync_engine if isinstance(engine, AsyncEngine) else engine
    checkouts: list[object] = []
    checkins: list[object] = []

    def on_checkout(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        checkouts.append(dbapi_connection)

    def on_checkin(dbapi_connection: Any, record: Any) -> None:
        checkins.append(dbapi_connection)

    event.listen(pool_engine, "checkout", on_checkout)
    event.listen(pool_engine, "checkin", on_checkin)
    try:
        r = api.get("/sessions/keep", headers=ACME)
    finally:
        event.remove(pool_engine, "checkout", on_checkout)
        event.remove(pool_engine, "checkin", on_checkin)
    assert r.status_code == 200, r.text
    assert r.json() == 2
    [session] = app.state.sessions
    sync_session = getattr(session, "sync_session", session)
    assert not sync_session.in_transaction()
    assert len(sync_session.identity_map) == 0
    assert len(checkouts) >= 1
    assert len(checkins) == len(checkouts)


def test_unique_violation_at_commit_answers_409_never_2xx(api: TestClient) -> None:
    r = api.post("/projects", json={"name": "anvil"}, headers=ACME)
    assert r.status_code == 409, r.text
    assert r.json()["code"] == "already_exists"
    assert names(api.get("/projects", headers=ACME)) == ["anvil", "rocket"]
    # The same name in another tenant is no conflict.
    r = api.post("/projects", json={"name": "anvil"}, headers=GLOBEX)
    assert r.status_code == 201, r.text


@pytest.mark.anyio
async def test_racing_duplicate_creates_give_one_201_and_409s(
    backend: str, any_engine: Engine | AsyncEngine, create_tables: Any
) -> None:
    await asyncio.to_thread(create_tables, any_engine, Project)
    app, _tenancy = build_app(any_engine)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        responses = await asyncio.gather(
            *(c.post("/projects", json={"name": "race"}, headers=ACME) for _ in range(5))
        )
        statuses = sorted(r.status_code for r in responses)
        assert statuses == [201, 409, 409, 409, 409], [r.text for r in responses]
        assert {r.json()["code"] for r in responses if r.status_code == 409} == {"already_exists"}
        r = await c.get("/projects", headers=ACME)
        assert names(r) == ["race"]


# --------------------------------------------------------------------------------------------
# Misuse is loud


def uninstalled_app() -> FastAPI:
    app = FastAPI()

    @app.get("/sync")
    def sync_route(session: TenantSession) -> int:
        return len(session.exec(select(Project)).all())  # pragma: no cover

    @app.get("/async")
    async def async_route(session: AsyncTenantSession) -> int:
        return len((await session.exec(select(Project))).all())  # pragma: no cover

    return app


@pytest.mark.parametrize("path", ["/sync", "/async"])
def test_session_dependency_on_an_app_without_tenancy_installed_is_a_clear_error(
    path: str,
) -> None:
    with TestClient(uninstalled_app()) as c, pytest.raises(TenancyMisuse, match=r"install\(app\)"):
        c.get(path, headers=ACME)


@pytest.mark.parametrize(
    ("engine_kind", "dependency"),
    [("sync", async_tenant_session), ("async", tenant_session)],
)
def test_session_dependency_of_the_wrong_kind_is_a_clear_error(
    engine_kind: str, dependency: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"sqlite{'+aiosqlite' if engine_kind == 'async' else ''}:///{tmp_path / 'db.sqlite3'}"
    engine = create_async_engine(url) if engine_kind == "async" else create_engine(url)
    tenancy = Tenancy(engine, resolvers=[HeaderResolver()])
    app = FastAPI()
    tenancy.install(app)

    @app.get("/projects")
    def route(session: Any = Depends(dependency)) -> None:  # pragma: no cover
        return None

    with client(app) as c:
        r = c.get("/projects", headers=ACME)
        assert r.status_code == 500, r.text
        assert r.json()["code"] == "tenancy_misuse"
    # the client gets a generic sentence; the log says what to fix
    (logged,) = [rec for rec in caplog.records if rec.name == "fastapi_tenancy.errors"]
    assert "dependencies" in logged.getMessage()
