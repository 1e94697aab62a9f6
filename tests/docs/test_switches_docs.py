"""docs/switches.md: the global-access and admin switches over HTTP, and the trusted scripts.

The app is driven with the kit's pytest plugin (``tenant_client`` signs tokens with the app's
key); audit lines are read from the ``fastapi_tenancy.audit`` logger with ``caplog``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, select

from docs.examples.switches_app import Plan, Project, Template, create_app, metadata
from docs.examples.switches_scripts import move_project, projects_per_tenant
from fastapi_tenancy import (
    CrossTenantWrite,
    GlobalSession,
    Tenancy,
    mutable_tenant,
    with_tenant,
    without_tenant,
)

SECRET = "a-switches-test-secret-of-at-least-32-bytes"
AUDIT = "fastapi_tenancy.audit"

Clients = Callable[..., TestClient]


@pytest.fixture
def engine_with_tables(engine: Engine, create_tables: Any) -> Engine:
    create_tables(engine, metadata)
    with Session(engine) as session:  # plain reference data, written by a plain session
        session.add_all([Plan(code="free", name="Free"), Plan(code="pro", name="Pro")])
        session.commit()
    return engine


@pytest.fixture
def tenancy_app(engine_with_tables: Engine) -> FastAPI:
    return create_app(engine_with_tables, secret=SECRET)


@pytest.fixture
def script_tenancy(engine_with_tables: Engine) -> Tenancy:
    return Tenancy(engine_with_tables, resolvers=[])


def audit_records(caplog: pytest.LogCaptureFixture, event: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == AUDIT and r.tenancy_event == event]


def every_row(tenancy: Tenancy, model: Any) -> list[tuple[str, str]]:
    with without_tenant(reason="test snapshot"), tenancy.session() as session:
        rows = session.exec(select(model)).all()
        return sorted((row.tenant_id, getattr(row, "name", None) or row.title) for row in rows)


def seed_projects(tenant_client: Clients) -> dict[str, int]:
    ids = {}
    for tenant, name in (("acme", "rocket"), ("globex", "zeppelin")):
        r = tenant_client(tenant).post("/projects", json={"name": name})
        assert r.status_code == 201, r.text
        ids[name] = r.json()["id"]
    return ids


def test_plans_are_served_with_or_without_a_tenant(tenant_client: Clients) -> None:
    for client in (tenant_client(), tenant_client("acme")):
        r = client.get("/plans")
        assert r.status_code == 200, r.text
        assert [p["code"] for p in r.json()] == ["free", "pro"]


def test_templates_are_everyones_without_a_tenant_and_scoped_with_one(
    tenant_client: Clients, caplog: pytest.LogCaptureFixture
) -> None:
    for tenant in ("acme", "globex"):
        r = tenant_client(tenant).post("/templates", json={"title": f"{tenant} invoice"})
        assert r.status_code == 201, r.text
        assert r.json()["tenant_id"] == tenant

    caplog.set_level(logging.INFO, logger=AUDIT)
    anyone = tenant_client().get("/templates")
    assert [t["title"] for t in anyone.json()] == ["acme invoice", "globex invoice"]
    [line] = audit_records(caplog, "global_access")
    assert (line.tenancy_path, line.tenancy_tenant) == ("/templates", None)

    acme = tenant_client("acme").get("/templates")
    assert [t["title"] for t in acme.json()] == ["acme invoice"]


def test_a_global_route_refuses_writing_tenant_rows_with_no_tenant(
    tenant_client: Clients, script_tenancy: Tenancy
) -> None:
    r = tenant_client().post("/templates", json={"title": "orphan"})
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "tenant_required"
    assert every_row(script_tenancy, Template) == []


def test_a_global_route_still_fails_closed_on_other_tenant_models(
    tenancy_app: FastAPI, tenant_client: Clients
) -> None:
    # A route that reads a model not declared __global_access__ through the switch.
    @tenancy_app.get("/templates/projects")
    def projects_through_the_switch(session: GlobalSession) -> list[Project]:
        return list(session.exec(select(Project)).all())

    seed_projects(tenant_client)
    r = tenant_client().get("/templates/projects")
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "tenant_required"


def test_a_tenant_route_sees_its_tenants_rows_and_needs_a_tenant(tenant_client: Clients) -> None:
    seed_projects(tenant_client)
    r = tenant_client("globex").get("/projects")
    assert [(p["name"], p["tenant_id"]) for p in r.json()] == [("zeppelin", "globex")]
    r = tenant_client().get("/projects")
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "tenant_required"


def test_an_admin_lists_every_tenants_projects_and_the_bypass_is_audited(
    tenant_client: Clients, caplog: pytest.LogCaptureFixture
) -> None:
    seed_projects(tenant_client)
    caplog.set_level(logging.INFO, logger=AUDIT)

    r = tenant_client(as_user="root@ops.test", admin=True).get("/admin/projects")

    assert r.status_code == 200, r.text
    assert [(p["name"], p["tenant_id"]) for p in r.json()] == [
        ("rocket", "acme"),
        ("zeppelin", "globex"),
    ]
    [line] = audit_records(caplog, "admin_bypass")
    assert line.getMessage() == "admin bypass granted"
    assert (line.tenancy_principal, line.tenancy_tenant, line.tenancy_path) == (
        "root@ops.test",
        None,
        "/admin/projects",
    )


def test_the_admin_switch_refuses_everyone_else_and_logs_the_refusal(
    tenant_client: Clients, caplog: pytest.LogCaptureFixture
) -> None:
    seed_projects(tenant_client)
    caplog.set_level(logging.INFO, logger=AUDIT)

    for client in (tenant_client(as_user="ann@acme.test"), tenant_client("acme"), tenant_client()):
        r = client.get("/admin/projects")
        assert r.status_code == 403, r.text
        assert r.json() == {"detail": "This needs an administrator.", "code": "admin_required"}

    lines = audit_records(caplog, "admin_bypass")
    assert [line.getMessage() for line in lines] == ["admin bypass refused"] * 3
    assert [line.tenancy_principal for line in lines] == ["ann@acme.test", None, None]


def test_the_report_counts_every_tenant_and_is_audited(
    tenant_client: Clients, script_tenancy: Tenancy, caplog: pytest.LogCaptureFixture
) -> None:
    seed_projects(tenant_client)
    tenant_client("acme").post("/projects", json={"name": "satellite"})
    caplog.set_level(logging.INFO, logger=AUDIT)

    assert projects_per_tenant(script_tenancy) == {"acme": 2, "globex": 1}
    [line] = audit_records(caplog, "without_tenant")
    assert line.tenancy_reason == "monthly usage report"


def test_moving_a_project_hands_it_over_and_is_audited(
    tenant_client: Clients, script_tenancy: Tenancy, caplog: pytest.LogCaptureFixture
) -> None:
    ids = seed_projects(tenant_client)
    caplog.set_level(logging.INFO, logger=AUDIT)

    move_project(script_tenancy, ids["rocket"], "globex", reason="ticket 4711")

    names = [p["name"] for p in tenant_client("globex").get("/projects").json()]
    assert names == ["rocket", "zeppelin"]
    assert tenant_client("acme").get("/projects").json() == []
    [moved] = audit_records(caplog, "tenant_moved")
    assert (moved.tenancy_from, moved.tenancy_to) == ("acme", "globex")
    [block] = audit_records(caplog, "mutable_tenant")
    assert block.tenancy_reason == "ticket 4711"


def test_moving_outside_a_mutable_tenant_block_is_refused(
    tenant_client: Clients, script_tenancy: Tenancy
) -> None:
    ids = seed_projects(tenant_client)
    before = every_row(script_tenancy, Project)

    with without_tenant(reason="no mutable block"), script_tenancy.session() as session:
        project = session.get(Project, ids["rocket"])
        assert project is not None
        project.tenant_id = "globex"
        with pytest.raises(CrossTenantWrite) as refused:
            session.commit()
    assert refused.value.code == "cross_tenant_write"

    # A tenant's own session cannot give its row away either, unless in a mutable block.
    with with_tenant("acme"), script_tenancy.session() as session:
        project = session.get(Project, ids["rocket"])
        assert project is not None
        project.tenant_id = "globex"
        with pytest.raises(CrossTenantWrite):
            session.commit()

    assert every_row(script_tenancy, Project) == before


def test_a_tenant_session_in_a_mutable_block_hands_over_only_its_own_rows(
    tenant_client: Clients, script_tenancy: Tenancy
) -> None:
    ids = seed_projects(tenant_client)

    with with_tenant("acme"), mutable_tenant(reason="hand over"), script_tenancy.session() as s:
        assert s.get(Project, ids["zeppelin"]) is None  # globex's row stays invisible
        project = s.get(Project, ids["rocket"])
        assert project is not None
        project.tenant_id = "globex"
        s.commit()

    assert every_row(script_tenancy, Project) == [("globex", "rocket"), ("globex", "zeppelin")]
