"""The API as a tenant uses it: projects, tasks, pagination, counts, names, docs and logs."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest
from example_support import Headers
from fastapi.testclient import TestClient
from sqlalchemy import Engine, insert
from sqlalchemy.exc import IntegrityError

from example_app.models import Project, Task

FindId = Callable[[Headers, str], int]


def test_a_project_lives_its_whole_life_in_its_tenant(api: TestClient, alice: Headers) -> None:
    r = api.post("/projects", json={"name": "  Anvil drop  "}, headers=alice)
    assert r.status_code == 201, r.text
    project = r.json()
    assert project == {"id": project["id"], "name": "Anvil drop", "tenant_id": "acme"}
    assert r.headers["Location"] == f"/projects/{project['id']}"
    url = f"/projects/{project['id']}"

    assert api.get(url, headers=alice).json() == project

    r = api.patch(url, json={"name": "Anvil drop v2"}, headers=alice)
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "Anvil drop v2"

    r = api.post(f"{url}/tasks", json={"name": "Buy anvil"}, headers=alice)
    assert r.status_code == 201, r.text
    task = r.json()
    assert task == {
        "id": task["id"],
        "name": "Buy anvil",
        "tenant_id": "acme",
        "project_id": project["id"],
        "done": False,
    }
    assert api.get(f"{url}/tasks", headers=alice).json() == [task]

    r = api.delete(url, headers=alice)
    assert r.status_code == 204, r.text
    assert api.get(url, headers=alice).status_code == 404
    assert api.get("/stats", headers=alice).json() == {"projects": 3, "tasks": 6}


def test_stats_count_only_the_bound_tenants_rows(
    api: TestClient, alice: Headers, bob: Headers, dave: Headers, project_id: FindId
) -> None:
    assert api.get("/stats", headers=alice).json() == {"projects": 3, "tasks": 6}
    assert api.get("/stats", headers=bob).json() == {"projects": 2, "tasks": 3}
    assert api.get("/stats", headers=dave).json() == {"projects": 1, "tasks": 2}

    r = api.post("/projects", json={"name": "Giant magnet"}, headers=alice)
    api.post(f"/projects/{r.json()['id']}/tasks", json={"name": "Find iron"}, headers=alice)
    api.post(
        f"/projects/{project_id(alice, 'Onboarding')}/tasks", json={"name": "Desk"}, headers=alice
    )

    assert api.get("/stats", headers=alice).json() == {"projects": 4, "tasks": 8}
    assert api.get("/stats", headers=bob).json() == {"projects": 2, "tasks": 3}


def test_project_names_are_unique_within_a_tenant_but_not_across(
    api: TestClient, alice: Headers, bob: Headers, project_id: FindId
) -> None:
    r = api.post("/projects", json={"name": "Launch"}, headers=alice)
    assert r.status_code == 201, r.text

    r = api.post("/projects", json={"name": "Launch"}, headers=alice)
    assert r.status_code == 409, r.text
    assert r.json()["code"] == "already_exists"

    r = api.post("/projects", json={"name": "Launch"}, headers=bob)
    assert r.status_code == 201, r.text

    r = api.patch(
        f"/projects/{project_id(alice, 'Onboarding')}", json={"name": "Launch"}, headers=alice
    )
    assert r.status_code == 409, r.text
    assert r.json()["code"] == "already_exists"
    assert project_id(alice, "Onboarding")  # the rename was rolled back


def test_the_seed_has_the_same_project_name_in_two_tenants(
    api: TestClient, alice: Headers, bob: Headers, project_id: FindId
) -> None:
    assert project_id(alice, "Onboarding") != project_id(bob, "Onboarding")


def test_project_lists_are_paginated_with_the_total_in_a_header(
    api: TestClient, alice: Headers
) -> None:
    for n in range(5):
        assert api.post("/projects", json={"name": f"Extra {n}"}, headers=alice).status_code == 201
    everything = api.get("/projects", headers=alice).json()
    assert len(everything) == 8

    first = api.get("/projects", params={"limit": 3}, headers=alice)
    last = api.get("/projects", params={"limit": 3, "offset": 6}, headers=alice)
    beyond = api.get("/projects", params={"offset": 50}, headers=alice)

    assert first.json() == everything[:3]
    assert last.json() == everything[6:]
    assert beyond.json() == []
    assert {first.headers["X-Total-Count"], last.headers["X-Total-Count"]} == {"8"}


@pytest.mark.parametrize("params", [{"limit": 0}, {"limit": 101}, {"offset": -1}, {"limit": "x"}])
def test_bad_pagination_is_422(api: TestClient, alice: Headers, params: dict[str, object]) -> None:
    r = api.get("/projects", params=params, headers=alice)
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "invalid_request"


def test_task_lists_are_paginated_too(api: TestClient, alice: Headers, project_id: FindId) -> None:
    url = f"/projects/{project_id(alice, 'Rocket skates')}/tasks"
    r = api.get(url, params={"limit": 2, "offset": 1}, headers=alice)
    assert r.status_code == 200, r.text
    assert [t["name"] for t in r.json()] == ["Test on the mesa", "Write the safety sheet"]
    assert r.headers["X-Total-Count"] == "3"


def test_me_shows_the_user_the_bound_tenant_and_the_roles(
    api: TestClient, alice: Headers, root: Headers
) -> None:
    assert api.get("/me", headers=alice).json() == {
        "email": "alice@acme.test",
        "name": "Alice Archer",
        "roles": [],
        "tenant": "acme",
        "tenant_source": "jwt",
        "memberships": [{"tenant": "acme", "name": "Acme Corporation", "role": "owner"}],
    }
    me = api.get("/me", headers=root).json()
    assert (me["roles"], me["tenant"], me["memberships"]) == (["admin"], None, [])


@pytest.mark.parametrize(
    "body",
    [{}, {"name": ""}, {"name": "   "}, {"name": "x" * 101}, {"name": "ok", "owner": "me"}],
)
def test_invalid_project_bodies_are_422_and_write_nothing(
    api: TestClient, alice: Headers, body: dict[str, str]
) -> None:
    r = api.post("/projects", json=body, headers=alice)
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "invalid_request"
    assert api.get("/stats", headers=alice).json()["projects"] == 3


def test_an_id_out_of_range_is_422_not_a_database_error(api: TestClient, alice: Headers) -> None:
    r = api.get(f"/projects/{2**63}", headers=alice)
    assert r.status_code == 422, r.text


def test_the_database_refuses_a_task_in_another_tenants_project(
    api: TestClient, bob: Headers, project_id: FindId, engine: Engine
) -> None:
    # Below the kit, straight SQL: the composite foreign key holds on every database.
    globex_project = project_id(bob, "Volcano lair")
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(
            insert(Task.__table__),  # type: ignore[attr-defined]
            {"tenant_id": "acme", "project_id": globex_project, "name": "Planted", "done": False},
        )
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(
            insert(Project.__table__),  # type: ignore[attr-defined]
            {"tenant_id": "umbrella", "name": "Orphan"},
        )
    assert api.get("/stats", headers=bob).json() == {"projects": 2, "tasks": 3}


def test_openapi_shows_the_bearer_scheme_and_the_tenant_header(api: TestClient) -> None:
    spec = api.get("/openapi.json").json()

    schemes = spec["components"]["securitySchemes"].values()
    assert {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"} in schemes
    assert {"type": "apiKey", "in": "header", "name": "X-Tenant-ID"} in schemes
    assert spec["security"]  # offered on every operation ("Authorize" in /docs) ...
    assert spec["paths"]["/auth/login"]["post"]["security"] == []  # ... but these
    assert spec["paths"]["/healthz"]["get"]["security"] == []


def test_docs_and_unknown_routes(api: TestClient, alice: Headers) -> None:
    assert api.get("/docs").status_code == 200
    r = api.get("/nowhere", headers=alice)
    assert r.status_code == 404, r.text
    assert r.json() == {"detail": "Not Found", "code": "not_found"}


def test_each_request_logs_one_line_with_its_tenant(
    api: TestClient, alice: Headers, carol: Headers, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="example_app.access"):
        api.get("/projects", headers=alice)
        api.get("http://globex.example.test/stats", headers=carol)
        api.get("/projects", headers={**alice, "X-Tenant-ID": "globex"})
        api.get("/healthz")

    lines = [r.getMessage() for r in caplog.records if r.name == "example_app.access"]
    assert len(lines) == 4, lines
    assert lines[0].startswith("GET /projects 200 tenant=acme user=alice@acme.test ")
    assert lines[1].startswith("GET /stats 200 tenant=globex user=carol@example.test ")
    assert lines[2].startswith("GET /projects 403 tenant=- ")
    assert lines[3].startswith("GET /healthz 200 tenant=- user=- ")
