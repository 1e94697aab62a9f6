"""docs/policies.md: named row policies, the sample app over HTTP on every database."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlmodel import Session

from docs.examples.policies_rows import Document, create_app, metadata

SECRET = "a-row-policies-test-secret-of-at-least-32-bytes"
Clients = Callable[..., TestClient]


@pytest.fixture
def tables(engine: Engine, create_tables: Any) -> Engine:
    create_tables(engine, metadata)
    return engine


@pytest.fixture
def tenancy_app(tables: Engine) -> FastAPI:
    return create_app(tables, secret=SECRET)


def every_document(engine: Engine) -> list[tuple[str, str, bool]]:
    with Session(engine) as session:  # a plain session: the database as it is
        rows = session.execute(select(Document.tenant_id, Document.title, Document.archived))
        return sorted(tuple(row) for row in rows)


def titles(client: TestClient, path: str = "/documents") -> list[str]:
    answer = client.get(path)
    assert answer.status_code == 200, answer.text
    return [document["title"] for document in answer.json()]


def test_archived_documents_are_hidden_and_cannot_be_created(
    tenant_client: Clients, tables: Engine
) -> None:
    ann = tenant_client("acme", as_user="ann")
    assert ann.post("/documents", json={"title": "plan"}).status_code == 201
    refused = ann.post("/documents", json={"title": "old", "archived": True})
    assert refused.status_code == 403
    assert refused.json()["code"] == "row_policy_violation"
    assert titles(ann) == ["plan"]
    assert every_document(tables) == [("acme", "plan", False)]


def test_records_managers_archive_and_read_the_archive_of_their_tenant_only(
    tenant_client: Clients, tables: Engine, caplog: pytest.LogCaptureFixture
) -> None:
    ann = tenant_client("acme", as_user="ann")
    plan = ann.post("/documents", json={"title": "plan"}).json()
    tenant_client("globex", as_user="cat").post("/documents", json={"title": "globex"})
    assert ann.post(f"/documents/{plan['id']}/archive").status_code == 403  # admin_required
    caplog.set_level(logging.INFO, logger="fastapi_tenancy.audit")
    manager = tenant_client("acme", as_user="rita", claims={"roles": ["records"]})
    archived = manager.post(f"/documents/{plan['id']}/archive")
    assert archived.status_code == 200, archived.text
    assert titles(ann) == []
    assert titles(manager, "/archive") == ["plan"]
    globex_manager = tenant_client("globex", as_user="max", claims={"roles": ["records"]})
    assert titles(globex_manager, "/archive") == []
    assert globex_manager.post(f"/documents/{plan['id']}/archive").status_code == 404
    lifts = [r for r in caplog.records if getattr(r, "tenancy_event", "") == "row_scope_lifted"]
    assert ("acme", "rita", True) in [
        (r.tenancy_tenant, r.tenancy_principal, r.tenancy_scopes == ["live"]) for r in lifts
    ]
    assert every_document(tables) == [("acme", "plan", True), ("globex", "globex", False)]
