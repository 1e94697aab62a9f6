"""docs/lifecycle.md's sample: sign-up through the hooks, the limit, offboarding, over HTTP."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, select

from docs.examples import lifecycle


@pytest.fixture
def api(engine: Engine, create_tables: Any) -> TestClient:
    create_tables(engine, lifecycle.Organization, lifecycle.Project)
    return TestClient(lifecycle.create_app(engine))


def signup(api: TestClient, slug: str, name: str = "Some Org") -> Any:
    return api.post("/signup", json={"slug": slug, "name": name})


def test_signup_creates_the_tenant_with_its_seed_rows(api: TestClient) -> None:
    r = signup(api, "acme", "Acme")
    assert (r.status_code, r.json()) == (201, {"slug": "acme", "plan": "trial"}), r.text
    r = api.get("/projects", headers={"X-Tenant-ID": "acme"})
    assert (r.status_code, r.json()) == (200, ["Getting started"]), r.text


def test_signup_refusals_answer_json_with_their_code(api: TestClient, engine: Engine) -> None:
    assert signup(api, "acme").status_code == 201
    cases = {
        "acme": (409, "tenant_exists"),
        "admin": (422, "slug_reserved"),
        "Not A Slug": (400, "invalid_tenant_key"),
    }
    for slug, (status, code) in cases.items():
        r = signup(api, slug)
        assert (r.status_code, r.json()["code"]) == (status, code), r.text
    with Session(engine) as session:
        slugs = session.exec(select(lifecycle.Organization.slug)).all()
    assert slugs == ["acme"]


def test_the_limit_answers_403(
    engine: Engine, create_tables: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    create_tables(engine, lifecycle.Organization, lifecycle.Project)
    monkeypatch.setattr(lifecycle, "registry", replace(lifecycle.registry, max_tenants=1))
    api = TestClient(lifecycle.create_app(engine))
    assert signup(api, "acme").status_code == 201
    r = signup(api, "globex")
    assert (r.status_code, r.json()["code"]) == (403, "tenant_limit_reached"), r.text


def test_suspending_refuses_the_tenants_requests_at_once(api: TestClient) -> None:
    assert signup(api, "acme").status_code == 201
    assert api.get("/projects", headers={"X-Tenant-ID": "acme"}).status_code == 200
    lifecycle.suspend(api.app.state.tenancy, "acme")  # type: ignore[attr-defined]
    r = api.get("/projects", headers={"X-Tenant-ID": "acme"})
    assert (r.status_code, r.json()["code"]) == (403, "tenant_inactive"), r.text


def test_offboarding_deletes_the_tenant_and_only_it(
    api: TestClient, engine: Engine, capsys: pytest.CaptureFixture[str]
) -> None:
    assert signup(api, "acme").status_code == 201
    assert signup(api, "globex").status_code == 201
    report = lifecycle.offboard(api.app.state.tenancy, "acme")  # type: ignore[attr-defined]
    assert report.rows == {"lc_project": 1}
    assert "deleting 1 rows of acme" in capsys.readouterr().out
    r = api.get("/projects", headers={"X-Tenant-ID": "acme"})
    assert (r.status_code, r.json()["code"]) == (404, "tenant_not_found"), r.text
    with Session(engine) as session:
        assert session.exec(select(lifecycle.Organization.slug)).all() == ["globex"]
        assert session.exec(select(lifecycle.Project.tenant_id)).all() == ["globex"]
