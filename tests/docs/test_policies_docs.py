"""docs/policies.md: owner-only rows and a second row scope, over HTTP on every database.

The sample app is driven with the kit's pytest plugin (``tenant_client`` signs tokens with the
app's key, extra claims included).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlmodel import Session

from docs.examples.policies_owner import Post, PrivateNote, TeamBoard, create_app, metadata

SECRET = "a-policies-test-secret-of-at-least-32-bytes"
Clients = Callable[..., TestClient]


@pytest.fixture
def tables(engine: Engine, create_tables: Any) -> Engine:
    create_tables(engine, metadata)
    return engine


@pytest.fixture
def tenancy_app(tables: Engine) -> FastAPI:
    return create_app(tables, secret=SECRET)


def every_note(engine: Engine) -> list[tuple[str, str, str]]:
    with Session(engine) as session:  # a plain session: the database as it is
        rows = session.execute(
            select(PrivateNote.tenant_id, PrivateNote.owner_id, PrivateNote.body)
        )
        return sorted(tuple(row) for row in rows)


def test_each_user_sees_only_their_own_notes(tenant_client: Clients, tables: Engine) -> None:
    ann = tenant_client("acme", as_user="ann")
    bob = tenant_client("acme", as_user="bob")
    globex_ann = tenant_client("globex", as_user="ann")
    for client, body in ((ann, "ann's"), (bob, "bob's"), (globex_ann, "globex ann's")):
        r = client.post("/notes", json={"body": body})
        assert r.status_code == 201, r.text
    assert [n["body"] for n in ann.get("/notes").json()] == ["ann's"]
    assert [n["body"] for n in bob.get("/notes").json()] == ["bob's"]
    assert [n["body"] for n in globex_ann.get("/notes").json()] == ["globex ann's"]
    assert every_note(tables) == [
        ("acme", "ann", "ann's"),
        ("acme", "bob", "bob's"),
        ("globex", "ann", "globex ann's"),
    ]


def test_another_users_note_answers_404_and_stays(tenant_client: Clients, tables: Engine) -> None:
    bob = tenant_client("acme", as_user="bob")
    note = bob.post("/notes", json={"body": "bob's"}).json()
    ann = tenant_client("acme", as_user="ann")
    r = ann.delete(f"/notes/{note['id']}")
    assert r.status_code == 404, r.text
    assert every_note(tables) == [("acme", "bob", "bob's")]


def test_a_body_naming_another_owner_is_refused(tenant_client: Clients, tables: Engine) -> None:
    ann = tenant_client("acme", as_user="ann")
    r = ann.post("/notes", json={"body": "forged", "owner_id": "bob"})
    assert r.status_code == 201  # the body model has no owner_id: it is ignored and stamped
    assert every_note(tables) == [("acme", "ann", "forged")]


def test_tenant_admins_see_every_owner_of_their_tenant_only(
    tenant_client: Clients, caplog: pytest.LogCaptureFixture
) -> None:
    tenant_client("acme", as_user="ann").post("/notes", json={"body": "ann's"})
    tenant_client("acme", as_user="bob").post("/notes", json={"body": "bob's"})
    tenant_client("globex", as_user="cat").post("/notes", json={"body": "cat's"})
    caplog.set_level(logging.INFO, logger="fastapi_tenancy.audit")
    admin = tenant_client("acme", as_user="ann", claims={"roles": ["owner"]})
    r = admin.get("/team-notes")
    assert r.status_code == 200, r.text
    assert [n["body"] for n in r.json()] == ["ann's", "bob's"]
    [line] = [rec for rec in caplog.records if rec.tenancy_event == "row_scope_lifted"]
    assert (line.tenancy_tenant, line.tenancy_principal) == ("acme", "ann")

    r = tenant_client("acme", as_user="bob").get("/team-notes")
    assert r.status_code == 403
    assert r.json()["code"] == "admin_required"


def test_a_second_row_scope_comes_from_its_claim(tenant_client: Clients, tables: Engine) -> None:
    red = tenant_client("acme", as_user="ann", claims={"team": "red"})
    blue = tenant_client("acme", as_user="bob", claims={"team": "blue"})
    assert red.post("/boards", json={"title": "red plan"}).status_code == 201
    assert blue.post("/boards", json={"title": "blue plan"}).status_code == 201
    assert [b["title"] for b in red.get("/boards").json()] == ["red plan"]
    assert [b["title"] for b in blue.get("/boards").json()] == ["blue plan"]
    no_team = tenant_client("acme", as_user="cat")
    r = no_team.get("/boards")
    assert r.status_code == 403, r.text
    assert r.json() == {
        "detail": "These rows are scoped by team, and this request has no team value.",
        "code": "row_scope_required",
    }
    with Session(tables) as session:
        assert sorted(session.execute(select(TeamBoard.team, TeamBoard.title))) == [
            ("blue", "blue plan"),
            ("red", "red plan"),
        ]


def test_published_posts_are_read_by_every_user_and_written_by_their_author(
    tenant_client: Clients, tables: Engine
) -> None:
    ann = tenant_client("acme", as_user="ann")
    bob = tenant_client("acme", as_user="bob")
    globex_cat = tenant_client("globex", as_user="cat")
    draft = ann.post("/posts", json={"title": "ann's draft"}).json()
    public = ann.post("/posts", json={"title": "ann's news", "published": True}).json()
    globex_cat.post("/posts", json={"title": "globex news", "published": True})
    assert [p["title"] for p in bob.get("/posts").json()] == ["ann's news"]
    assert [p["title"] for p in ann.get("/posts").json()] == ["ann's draft", "ann's news"]
    r = bob.patch(f"/posts/{public['id']}", json={"title": "bob's now", "published": True})
    assert r.status_code == 403
    assert r.json()["code"] == "cross_scope_write"
    assert bob.patch(f"/posts/{draft['id']}", json={"title": "x"}).status_code == 404
    r = ann.patch(f"/posts/{draft['id']}", json={"title": "ann's draft", "published": True})
    assert r.status_code == 200
    assert [p["title"] for p in bob.get("/posts").json()] == ["ann's draft", "ann's news"]
    with Session(tables) as session:
        rows = session.execute(select(Post.tenant_id, Post.owner_id, Post.title)).all()
    assert sorted(tuple(row) for row in rows) == [
        ("acme", "ann", "ann's draft"),
        ("acme", "ann", "ann's news"),
        ("globex", "cat", "globex news"),
    ]
