"""Testing a multitenant app with fastapi_tenancy's pytest plugin: a complete test module.

The plugin comes with the package; the only set-up is the ``tenancy_app`` fixture, which tells
it the app under test (in a real project it lives in ``conftest.py``).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI
from sqlmodel import create_engine, select

from docs.examples.team_notes import Note, create_app
from fastapi_tenancy.testing import assert_tenant_isolation

SECRET = "a-test-secret-of-at-least-thirty-two-bytes"


# --8<-- [start:tenancy_app]
@pytest.fixture
def tenancy_app(tmp_path: Path) -> FastAPI:
    return create_app(create_engine(f"sqlite:///{tmp_path / 'notes.db'}"), secret=SECRET)


# --8<-- [end:tenancy_app]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_each_team_sees_only_its_own_notes(tenant_client):
    ann = tenant_client("acme", as_user="ann@acme.test")  # a token with tenant=acme, sub=ann
    bob = tenant_client("globex", as_user="bob@globex.test")
    assert ann.post("/notes", json={"title": "roadmap"}).status_code == 201
    assert bob.post("/notes", json={"title": "roadmap"}).status_code == 201  # same title is fine

    assert [n["tenant_id"] for n in ann.get("/notes").json()] == ["acme"]
    assert [n["tenant_id"] for n in bob.get("/notes").json()] == ["globex"]


def test_another_teams_note_is_not_found(tenant_client):
    note = tenant_client("acme", as_user="ann@acme.test").post("/notes", json={"title": "x"})
    bob = tenant_client("globex", as_user="bob@globex.test")
    r = bob.get(f"/notes/{note.json()['id']}")
    assert r.status_code == 404, r.text


def test_a_user_in_two_teams_picks_one_with_the_header(tenant_client):
    # No tenant claim in the token: the X-Tenant-ID header names the team.
    cat = tenant_client("globex", via="header", as_user="cat@both.test")
    assert cat.get("/me").json() == {"tenant": "globex", "user": "cat@both.test"}


def test_a_user_cannot_act_in_a_team_they_are_not_in(tenant_client):
    r = tenant_client("globex", as_user="ann@acme.test").get("/notes")
    assert r.status_code == 403, r.text
    assert r.json()["code"] == "not_a_member"


def test_only_admins_list_every_team(tenant_client):
    tenant_client("acme", as_user="ann@acme.test").post("/notes", json={"title": "a"})
    tenant_client("globex", as_user="bob@globex.test").post("/notes", json={"title": "b"})

    admin = tenant_client(as_user="root@ops.test", admin=True)  # roles=["admin"], no tenant
    assert {n["tenant_id"] for n in admin.get("/admin/notes").json()} == {"acme", "globex"}
    r = tenant_client(as_user="ann@acme.test").get("/admin/notes")
    assert r.json()["code"] == "admin_required"


def test_expired_and_foreign_tokens_are_refused(tenancy_token, tenant_client):
    expired = tenancy_token("acme", as_user="ann@acme.test", expires_in=-60)
    client = tenant_client(headers={"Authorization": f"Bearer {expired}"})
    assert client.get("/notes").status_code == 401


@pytest.mark.anyio
async def test_the_async_client_works_the_same(async_tenant_client):
    async with async_tenant_client("acme", as_user="ann@acme.test") as ann:
        r = await ann.post("/notes", json={"title": "async"})
        assert r.status_code == 201, r.text
        assert r.json()["tenant_id"] == "acme"


def test_code_outside_requests_runs_as_the_bound_tenant(bound_tenant, app_tenancy):
    bound_tenant("acme")  # unbound again after the test, whatever happens
    with app_tenancy.session() as session:
        session.add(Note(title="from a script"))
        session.commit()
        assert [n.tenant_id for n in session.exec(select(Note)).all()] == ["acme"]


def test_no_route_shows_one_team_another_teams_notes(tenancy_app):
    # --8<-- [start:isolation]
    assert_tenant_isolation(
        tenancy_app,
        tenants=["acme", "globex"],
        users={"acme": "ann@acme.test", "globex": "bob@globex.test"},  # who acts for each
        routes=[
            ("POST /notes", {"title": "{marker}"}),  # creates data: "{marker}" is unique per tenant
            "GET /notes",
            "GET /notes/{id}",  # {id}: the id of the first thing the tenant created
        ],
    )
    # --8<-- [end:isolation]
