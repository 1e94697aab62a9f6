"""Attacks on the tenant wall, through HTTP only, as seeded users of different tenants.

alice is acme's, bob is globex's, carol belongs to acme and globex, dave to initech, and root
is a platform admin with no tenant. Every write an attack attempts is checked by reading back
as the owner.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from example_support import Headers, bearer, in_an_hour, mint
from fastapi.testclient import TestClient

MISSING_ID = 999_999

ROUTES_WITH_A_PROJECT_ID = [
    pytest.param("GET", "/projects/{id}", None, id="get-project"),
    pytest.param("PATCH", "/projects/{id}", {"name": "Hijacked"}, id="patch-project"),
    pytest.param("DELETE", "/projects/{id}", None, id="delete-project"),
    pytest.param("GET", "/projects/{id}/tasks", None, id="list-tasks"),
    pytest.param("POST", "/projects/{id}/tasks", {"name": "Planted"}, id="create-task"),
]

FindId = Callable[[Headers, str], int]


def names(response: Any) -> list[str]:
    assert response.status_code == 200, response.text
    return [row["name"] for row in response.json()]


def globex_state(api: TestClient, bob: Headers) -> dict[str, Any]:
    """Everything globex has, as bob sees it."""
    projects = api.get("/projects", headers=bob).json()
    tasks = {p["name"]: names(api.get(f"/projects/{p['id']}/tasks", headers=bob)) for p in projects}
    return {"projects": projects, "tasks": tasks, "stats": api.get("/stats", headers=bob).json()}


# -- another tenant's ids ----------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path", "body"), ROUTES_WITH_A_PROJECT_ID)
def test_another_tenants_project_answers_exactly_like_a_missing_one(
    api: TestClient,
    alice: Headers,
    bob: Headers,
    project_id: FindId,
    method: str,
    path: str,
    body: dict[str, str] | None,
) -> None:
    before = globex_state(api, bob)
    globex_project = project_id(bob, "Volcano lair")

    foreign = api.request(method, path.format(id=globex_project), json=body, headers=alice)
    missing = api.request(method, path.format(id=MISSING_ID), json=body, headers=alice)

    assert foreign.status_code == 404, foreign.text
    assert foreign.json() == {"detail": "Project not found.", "code": "not_found"}
    assert foreign.content == missing.content
    assert foreign.headers["content-type"] == missing.headers["content-type"]
    assert globex_state(api, bob) == before


def test_each_user_lists_only_their_own_tenants_projects(
    api: TestClient, alice: Headers, bob: Headers, dave: Headers
) -> None:
    assert names(api.get("/projects", headers=alice)) == [
        "Rocket skates",
        "Onboarding",
        "Catalogue 2025",
    ]
    assert names(api.get("/projects", headers=bob)) == ["Onboarding", "Volcano lair"]
    assert names(api.get("/projects", headers=dave)) == ["TPS reports"]
    for headers, tenant in ((alice, "acme"), (bob, "globex"), (dave, "initech")):
        rows = api.get("/projects", headers=headers).json()
        assert {row["tenant_id"] for row in rows} == {tenant}


# -- a foreign tenant_id in a body -------------------------------------------------------------


def test_creating_a_project_that_names_another_tenant_is_refused_and_nothing_is_written(
    api: TestClient, alice: Headers, bob: Headers
) -> None:
    acme_before = api.get("/projects", headers=alice).json()
    globex_before = globex_state(api, bob)

    r = api.post("/projects", json={"name": "Trojan horse", "tenant_id": "globex"}, headers=alice)

    assert r.status_code == 403, r.text
    assert r.json()["code"] == "cross_tenant_write"
    assert globex_state(api, bob) == globex_before
    assert api.get("/projects", headers=alice).json() == acme_before


def test_creating_a_task_that_names_another_tenant_is_refused_and_nothing_is_written(
    api: TestClient, alice: Headers, project_id: FindId
) -> None:
    acme_project = project_id(alice, "Rocket skates")
    before = names(api.get(f"/projects/{acme_project}/tasks", headers=alice))

    r = api.post(
        f"/projects/{acme_project}/tasks",
        json={"name": "Planted", "tenant_id": "globex"},
        headers=alice,
    )

    assert r.status_code == 403, r.text
    assert r.json()["code"] == "cross_tenant_write"
    assert names(api.get(f"/projects/{acme_project}/tasks", headers=alice)) == before


def test_moving_a_project_to_another_tenant_is_refused_and_nothing_is_written(
    api: TestClient, alice: Headers, bob: Headers, project_id: FindId
) -> None:
    acme_project = project_id(alice, "Rocket skates")
    globex_before = globex_state(api, bob)

    r = api.patch(
        f"/projects/{acme_project}", json={"name": "Moved", "tenant_id": "globex"}, headers=alice
    )

    assert r.status_code == 403, r.text
    assert r.json()["code"] == "cross_tenant_write"
    after = api.get(f"/projects/{acme_project}", headers=alice)
    assert after.json() == {"id": acme_project, "name": "Rocket skates", "tenant_id": "acme"}
    assert globex_state(api, bob) == globex_before


def test_a_body_naming_the_own_tenant_is_accepted(
    api: TestClient, alice: Headers, project_id: FindId
) -> None:
    r = api.post("/projects", json={"name": "Explicit", "tenant_id": "acme"}, headers=alice)
    assert r.status_code == 201, r.text
    assert r.json()["tenant_id"] == "acme"

    r = api.patch(
        f"/projects/{r.json()['id']}",
        json={"name": "Still mine", "tenant_id": "acme"},
        headers=alice,
    )
    assert r.status_code == 200, r.text
    assert r.json()["name"] == "Still mine"


# -- spoofing the tenant -------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/projects", "/stats", "/me", "/projects/1/tasks"])
def test_a_header_cannot_override_the_tenant_in_the_token(
    api: TestClient, alice: Headers, path: str
) -> None:
    r = api.get(path, headers={**alice, "X-Tenant-ID": "globex"})
    assert r.status_code == 403, r.text
    assert r.json()["code"] == "tenant_mismatch"


@pytest.mark.parametrize("path", ["/projects", "/stats", "/me", "/projects/1/tasks"])
def test_a_host_cannot_override_the_tenant_in_the_token(
    api: TestClient, alice: Headers, path: str
) -> None:
    r = api.get(f"http://globex.example.test{path}", headers=alice)
    assert r.status_code == 403, r.text
    assert r.json()["code"] == "tenant_mismatch"


def test_a_header_and_a_host_that_disagree_are_refused(api: TestClient, carol: Headers) -> None:
    r = api.get("http://acme.example.test/projects", headers={**carol, "X-Tenant-ID": "globex"})
    assert r.status_code == 403, r.text
    assert r.json()["code"] == "tenant_mismatch"


def test_a_member_of_two_tenants_cannot_select_a_third_by_header(
    api: TestClient, carol: Headers
) -> None:
    r = api.get("/projects", headers={**carol, "X-Tenant-ID": "initech"})
    assert r.status_code == 403, r.text
    assert r.json()["code"] == "not_a_member"


def test_a_member_of_one_tenant_cannot_select_another_by_header(api: TestClient) -> None:
    # A validly signed token for alice that names no tenant: only membership stands in the way.
    token = mint({"sub": "alice@acme.test", "roles": [], "exp": in_an_hour()})
    r = api.get("/projects", headers={**bearer(token), "X-Tenant-ID": "globex"})
    assert r.status_code == 403, r.text
    assert r.json()["code"] == "not_a_member"

    r = api.get("/projects", headers={**bearer(token), "X-Tenant-ID": "acme"})
    assert r.status_code == 200, r.text


def test_a_member_of_one_tenant_cannot_select_another_by_subdomain(
    api: TestClient, carol: Headers
) -> None:
    r = api.get("http://initech.example.test/projects", headers=carol)
    assert r.status_code == 403, r.text
    assert r.json()["code"] == "not_a_member"


def test_a_token_naming_a_tenant_the_user_left_is_refused(api: TestClient) -> None:
    token = mint({"sub": "bob@globex.test", "tenant": "acme", "roles": [], "exp": in_an_hour()})
    r = api.get("/projects", headers=bearer(token))
    assert r.status_code == 403, r.text
    assert r.json()["code"] == "not_a_member"


def test_a_platform_admin_is_no_member_of_any_tenant(api: TestClient, root: Headers) -> None:
    r = api.get("/projects", headers={**root, "X-Tenant-ID": "acme"})
    assert r.status_code == 403, r.text
    assert r.json()["code"] == "not_a_member"


def test_naming_a_tenant_without_a_token_is_401(api: TestClient) -> None:
    for headers, url in (
        ({"X-Tenant-ID": "acme"}, "/plans"),
        ({}, "http://acme.example.test/plans"),
    ):
        r = api.get(url, headers=headers)
        assert r.status_code == 401, r.text
        assert r.json()["code"] == "not_authenticated"


# -- carol chooses among her tenants -------------------------------------------------------------


@pytest.mark.parametrize(
    ("tenant", "expected"),
    [
        ("acme", ["Rocket skates", "Onboarding", "Catalogue 2025"]),
        ("globex", ["Onboarding", "Volcano lair"]),
    ],
)
def test_carol_selects_each_of_her_tenants_by_subdomain(
    api: TestClient, carol: Headers, tenant: str, expected: list[str]
) -> None:
    assert names(api.get(f"http://{tenant}.example.test/projects", headers=carol)) == expected
    me = api.get(f"http://{tenant}.example.test/me", headers=carol).json()
    assert (me["tenant"], me["tenant_source"]) == (tenant, "subdomain")


@pytest.mark.parametrize(
    ("tenant", "expected"),
    [
        ("acme", ["Rocket skates", "Onboarding", "Catalogue 2025"]),
        ("globex", ["Onboarding", "Volcano lair"]),
    ],
)
def test_carol_selects_each_of_her_tenants_by_header(
    api: TestClient, carol: Headers, tenant: str, expected: list[str]
) -> None:
    assert names(api.get("/projects", headers={**carol, "X-Tenant-ID": tenant})) == expected
    me = api.get("/me", headers={**carol, "X-Tenant-ID": tenant}).json()
    assert (me["tenant"], me["tenant_source"]) == (tenant, "header")


@pytest.mark.parametrize(
    "host",
    ["x.acme.example.test", "www.acme.example.test", "ACME.Example.Test", "acme.example.test:8000"],
)
def test_nested_and_odd_hosts_resolve_to_the_label_next_to_the_base_domain(
    api: TestClient, carol: Headers, host: str
) -> None:
    r = api.get("/stats", headers={**carol, "Host": host})
    assert r.status_code == 200, r.text
    assert r.json() == {"projects": 3, "tasks": 6}


def test_carol_without_a_tenant_is_asked_to_choose_one(api: TestClient, carol: Headers) -> None:
    r = api.get("/projects", headers=carol)
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "tenant_required"

    me = api.get("/me", headers=carol)
    assert me.status_code == 200, me.text
    assert me.json()["tenant"] is None
    assert [m["tenant"] for m in me.json()["memberships"]] == ["acme", "globex"]


def test_a_tenant_chosen_at_login_is_pinned_in_the_token(
    api: TestClient, login: Callable[..., Headers]
) -> None:
    carol_globex = login("carol@example.test", tenant="globex")
    assert names(api.get("/projects", headers=carol_globex)) == ["Onboarding", "Volcano lair"]
    r = api.get("/projects", headers={**carol_globex, "X-Tenant-ID": "acme"})
    assert r.status_code == 403, r.text

    r = api.post(
        "/auth/login",
        json={"email": "carol@example.test", "password": "carol-pass", "tenant": "initech"},
    )
    assert r.status_code == 403, r.text
    assert r.json()["code"] == "not_a_member"


def test_unknown_and_malformed_tenants_are_refused(api: TestClient, carol: Headers) -> None:
    r = api.get("/projects", headers={**carol, "X-Tenant-ID": "umbrella"})
    assert r.status_code == 404, r.text
    assert r.json()["code"] == "tenant_not_found"

    r = api.get("/projects", headers={**carol, "X-Tenant-ID": "Acme!"})
    assert r.status_code == 400, r.text
    assert r.json()["code"] == "invalid_tenant_key"


# -- the platform admin --------------------------------------------------------------------------


def test_a_non_admin_is_refused_on_admin_projects(
    api: TestClient, alice: Headers, carol: Headers
) -> None:
    for headers in (alice, carol):
        r = api.get("/admin/projects", headers=headers)
        assert r.status_code == 403, r.text
        assert r.json()["code"] == "admin_required"


def test_a_forged_admin_role_does_not_verify(api: TestClient) -> None:
    forged = mint(
        {"sub": "alice@acme.test", "roles": ["admin"], "exp": in_an_hour()},
        key="someone-elses-key-that-is-long-enough-0123",
    )
    r = api.get("/admin/projects", headers=bearer(forged))
    assert r.status_code == 401, r.text
    assert r.json()["code"] == "invalid_token"


def test_an_admin_sees_every_tenants_projects_and_is_audited(
    api: TestClient, root: Headers, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="fastapi_tenancy.audit"):
        r = api.get("/admin/projects", headers=root)

    assert r.status_code == 200, r.text
    assert r.headers["X-Total-Count"] == "6"
    by_tenant: dict[str, list[str]] = {}
    for row in r.json():
        by_tenant.setdefault(row["tenant_id"], []).append(row["name"])
    assert by_tenant == {
        "acme": ["Rocket skates", "Onboarding", "Catalogue 2025"],
        "globex": ["Onboarding", "Volcano lair"],
        "initech": ["TPS reports"],
    }
    granted = [
        record
        for record in caplog.records
        if getattr(record, "tenancy_event", None) == "admin_bypass"
    ]
    assert len(granted) == 1
    assert granted[0].tenancy_allowed is True  # type: ignore[attr-defined]
    assert granted[0].tenancy_principal == "root@example.test"  # type: ignore[attr-defined]
    assert granted[0].tenancy_path == "/admin/projects"  # type: ignore[attr-defined]
