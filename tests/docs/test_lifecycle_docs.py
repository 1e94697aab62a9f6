"""docs/lifecycle.md's samples: sign-up through the hooks, the limit, offboarding, export,
clone, rename and jobs for every tenant, over HTTP and through eager Celery."""

from __future__ import annotations

import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from celery.signals import task_postrun
from fastapi.testclient import TestClient
from sqlalchemy import Engine
from sqlmodel import Session, select

from docs.examples import lifecycle, lifecycle_jobs
from fastapi_tenancy import get_current_tenant


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


def test_an_export_for_a_customer_and_a_template_sign_up(
    api: TestClient, engine: Engine, tmp_path: Path
) -> None:
    tenancy = api.app.state.tenancy  # type: ignore[attr-defined]
    assert signup(api, "template", "Template").status_code == 201
    with tenancy.session(tenant="template") as session:
        session.add(lifecycle.Project(name="Onboarding checklist"))
        session.commit()
    archive = lifecycle.export_for_customer(tenancy, "template", tmp_path)
    with zipfile.ZipFile(archive) as exported:
        assert sorted(exported.namelist()) == ["lc_project.jsonl", "manifest.json"]
    report = lifecycle.sign_up_from_template(tenancy, "acme", "Acme")
    assert report.rows == {"lc_project": 2}
    r = api.get("/projects", headers={"X-Tenant-ID": "acme"})
    assert sorted(r.json()) == ["Getting started", "Onboarding checklist"], r.text
    assert tenancy.tenants.get("acme").name == "Acme"


def test_a_rename_serves_the_tenant_under_its_new_key(api: TestClient) -> None:
    assert signup(api, "acme").status_code == 201
    lifecycle.rename(api.app.state.tenancy, "acme", "acme-corp")  # type: ignore[attr-defined]
    r = api.get("/projects", headers={"X-Tenant-ID": "acme-corp"})
    assert (r.status_code, r.json()) == (200, ["Getting started"]), r.text
    r = api.get("/projects", headers={"X-Tenant-ID": "acme"})
    assert (r.status_code, r.json()["code"]) == (404, "tenant_not_found"), r.text


def test_a_job_for_every_active_tenant(api: TestClient) -> None:
    tenancy = api.app.state.tenancy  # type: ignore[attr-defined]
    for slug in ("acme", "globex", "initech"):
        assert signup(api, slug).status_code == 201
    tenancy.tenants.suspend("initech")
    assert lifecycle_jobs.count_projects(tenancy) == {"acme": 1, "globex": 1}


def test_the_beat_fan_out_queues_one_digest_per_active_tenant(api: TestClient) -> None:
    tenancy = api.app.state.tenancy  # type: ignore[attr-defined]
    for slug in ("acme", "globex"):
        assert signup(api, slug).status_code == 201
    celery_app = lifecycle_jobs.create_celery_app(tenancy, "memory://")
    celery_app.conf.update(task_always_eager=True, task_store_eager_result=False)
    digests: list[tuple[str | None, int]] = []

    @task_postrun.connect
    def heard(sender: Any = None, retval: Any = None, **_: Any) -> None:
        if sender is not None and sender.name == "lifecycle.send_digest":
            digests.append((get_current_tenant(), retval))

    try:
        schedule = celery_app.conf.beat_schedule["digest-every-tenant"]
        assert celery_app.tasks[schedule["task"]].delay().get() == []
    finally:
        task_postrun.disconnect(heard)
        celery_app.close()
    assert sorted(digests) == [("acme", 1), ("globex", 1)]
