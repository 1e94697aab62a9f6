"""Private notes: owner-only rows inside a tenant, over HTTP, on every database.

The seed gives acme two notes of alice's (its owner) and one of carol's (a member), globex one of
bob's (its owner) and one of carol's, initech one of dave's. Every attack is a user trying to
read, change, delete or take another user's note; each answers exactly like a missing note, or
is refused, and the database is checked directly to show that no row changed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest
from example_support import Headers, bearer, in_an_hour, mint
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select
from sqlmodel import Session

from example_app.models import PrivateNote

MISSING_ID = 2**31 - 1
NOT_FOUND = {"detail": "Note not found.", "code": "not_found"}

Row = tuple[int, str, str, str, str]


def every_note(engine: Engine) -> list[Row]:
    """Every note as the database holds it (a plain session: no tenant, no owner filter)."""
    with Session(engine) as session:
        rows = session.execute(
            select(
                PrivateNote.id,
                PrivateNote.tenant_id,
                PrivateNote.owner_id,
                PrivateNote.title,
                PrivateNote.body,
            ).order_by(PrivateNote.id)
        )
        return [tuple(row) for row in rows]  # type: ignore[misc]


def titles(api: TestClient, headers: Headers, path: str = "/notes") -> list[str]:
    r = api.get(path, headers=headers, params={"limit": 100})
    assert r.status_code == 200, r.text
    assert r.headers["X-Total-Count"] == str(len(r.json()))
    return [note["title"] for note in r.json()]


def note_id(engine: Engine, title: str) -> int:
    [found] = [row[0] for row in every_note(engine) if row[3] == title]
    return found


@pytest.fixture
def carol_in(carol: Headers) -> Callable[[str], Headers]:
    """carol@example.test, a member of acme and globex, choosing one by header."""
    return lambda tenant: {**carol, "X-Tenant-ID": tenant}


def test_each_user_lists_only_their_own_notes(
    api: TestClient,
    alice: Headers,
    bob: Headers,
    dave: Headers,
    carol_in: Callable[[str], Headers],
) -> None:
    assert titles(api, alice) == ["Board meeting", "Carol's review"]
    assert titles(api, carol_in("acme")) == ["Acme passwords"]
    assert titles(api, bob) == ["Lair permits"]
    assert titles(api, carol_in("globex")) == ["Globex onboarding"]
    assert titles(api, dave) == ["Stapler"]
    r = api.get("/notes", headers=alice)
    assert {(n["owner_id"], n["tenant_id"]) for n in r.json()} == {("alice@acme.test", "acme")}


def test_a_new_note_is_the_callers_and_only_theirs(
    api: TestClient, engine: Engine, alice: Headers, carol_in: Callable[[str], Headers]
) -> None:
    r = api.post("/notes", json={"title": "  Skates  ", "body": "Buy more."}, headers=alice)
    assert r.status_code == 201, r.text
    note = r.json()
    assert note == {
        "id": note["id"],
        "title": "Skates",
        "body": "Buy more.",
        "owner_id": "alice@acme.test",
        "tenant_id": "acme",
    }
    assert r.headers["Location"] == f"/notes/{note['id']}"
    assert every_note(engine)[-1] == (note["id"], "acme", "alice@acme.test", "Skates", "Buy more.")
    assert api.get(f"/notes/{note['id']}", headers=alice).json() == note
    assert "Skates" in titles(api, alice)
    assert "Skates" not in titles(api, carol_in("acme"))


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
def test_another_users_note_answers_exactly_like_a_missing_one(
    api: TestClient,
    engine: Engine,
    carol_in: Callable[[str], Headers],
    bob: Headers,
    method: str,
) -> None:
    alices = note_id(engine, "Board meeting")
    before = every_note(engine)
    body = {"title": "taken", "body": "mine now"} if method == "PATCH" else None
    # Carol is in alice's tenant; bob is not; a missing id is the control.
    for headers in (carol_in("acme"), bob):
        for target in (alices, MISSING_ID):
            r = api.request(method, f"/notes/{target}", headers=headers, json=body)
            assert (r.status_code, r.json()) == (404, NOT_FOUND), (target, r.text)
    assert every_note(engine) == before


def test_the_owner_changes_and_deletes_their_note(
    api: TestClient, engine: Engine, alice: Headers
) -> None:
    target = note_id(engine, "Board meeting")
    r = api.patch(f"/notes/{target}", json={"body": "Budget approved."}, headers=alice)
    assert r.status_code == 200, r.text
    assert (r.json()["title"], r.json()["body"]) == ("Board meeting", "Budget approved.")
    assert [row[4] for row in every_note(engine) if row[0] == target] == ["Budget approved."]
    assert api.delete(f"/notes/{target}", headers=alice).status_code == 204
    assert target not in [row[0] for row in every_note(engine)]
    assert api.get(f"/notes/{target}", headers=alice).json() == NOT_FOUND


@pytest.mark.parametrize(
    ("field", "value", "code"),
    [
        ("owner_id", "carol@example.test", "cross_scope_write"),
        ("owner_id", "ALICE@acme.test", "cross_scope_write"),
        ("tenant_id", "globex", "cross_tenant_write"),
    ],
)
def test_a_body_cannot_give_a_note_to_anyone_else(
    api: TestClient, engine: Engine, alice: Headers, field: str, value: str, code: str
) -> None:
    before = every_note(engine)
    r = api.post("/notes", json={"title": "planted", field: value}, headers=alice)
    assert (r.status_code, r.json()["code"]) == (403, code), r.text
    target = note_id(engine, "Board meeting")
    r = api.patch(f"/notes/{target}", json={"title": "moved", field: value}, headers=alice)
    assert (r.status_code, r.json()["code"]) == (403, code), r.text
    assert every_note(engine) == before


def test_a_body_naming_the_callers_own_owner_and_tenant_is_fine(
    api: TestClient, engine: Engine, alice: Headers
) -> None:
    body = {"title": "mine", "owner_id": "alice@acme.test", "tenant_id": "acme"}
    r = api.post("/notes", json=body, headers=alice)
    assert r.status_code == 201, r.text
    assert every_note(engine)[-1][1:4] == ("acme", "alice@acme.test", "mine")


def test_tenant_admins_see_every_note_of_their_tenant_and_no_other(
    api: TestClient,
    engine: Engine,
    alice: Headers,
    bob: Headers,
    carol_in: Callable[[str], Headers],
    caplog: pytest.LogCaptureFixture,
) -> None:
    api.post("/notes", json={"title": "Carol's new"}, headers=carol_in("acme"))
    with caplog.at_level(logging.INFO, logger="fastapi_tenancy.audit"):
        acme = titles(api, alice, "/team/notes")
    assert acme == ["Board meeting", "Carol's review", "Acme passwords", "Carol's new"]
    [line] = [
        rec for rec in caplog.records if getattr(rec, "tenancy_event", None) == "row_scope_lifted"
    ]
    assert (line.tenancy_tenant, line.tenancy_principal) == ("acme", "alice@acme.test")
    assert line.tenancy_reason == "/team/notes"

    assert titles(api, bob, "/team/notes") == ["Lair permits", "Globex onboarding"]
    r = api.get("/team/notes", headers=alice, params={"limit": 100})
    assert {n["tenant_id"] for n in r.json()} == {"acme"}
    assert {n["owner_id"] for n in r.json()} == {"alice@acme.test", "carol@example.test"}
    # The switch lists; it does not open the by-id routes to another owner's note.
    carols = note_id(engine, "Acme passwords")
    assert api.get(f"/notes/{carols}", headers=alice).json() == NOT_FOUND


def test_members_who_are_not_admins_get_403_on_the_team_notes(
    api: TestClient, carol_in: Callable[[str], Headers], caplog: pytest.LogCaptureFixture
) -> None:
    for tenant in ("acme", "globex"):
        with caplog.at_level(logging.INFO, logger="fastapi_tenancy.audit"):
            r = api.get("/team/notes", headers=carol_in(tenant))
        assert r.status_code == 403, r.text
        assert r.json() == {
            "detail": "Only the tenant's admins may see these rows.",
            "code": "admin_required",
        }
    refused = [rec for rec in caplog.records if getattr(rec, "tenancy_allowed", None) is False]
    assert [rec.tenancy_tenant for rec in refused] == ["acme", "globex"]


def test_the_platform_admin_role_does_not_make_a_tenant_admin(api: TestClient) -> None:
    # A valid token (signed with the app's key) for carol, in acme, with the platform role:
    # the tenant admins' switch asks the membership, and carol is a member of acme.
    claims: dict[str, Any] = {
        "sub": "carol@example.test",
        "tenant": "acme",
        "roles": ["admin"],
        "exp": in_an_hour(),
    }
    r = api.get("/team/notes", headers=bearer(mint(claims)))
    assert (r.status_code, r.json()["code"]) == (403, "admin_required"), r.text


def test_one_email_in_two_tenants_sees_each_tenants_notes_apart(
    api: TestClient, engine: Engine, carol_in: Callable[[str], Headers]
) -> None:
    in_globex = note_id(engine, "Globex onboarding")
    in_acme = note_id(engine, "Acme passwords")
    assert api.get(f"/notes/{in_globex}", headers=carol_in("globex")).status_code == 200
    assert api.get(f"/notes/{in_acme}", headers=carol_in("acme")).status_code == 200
    # Her own note, in the other tenant: the tenant wall answers it as missing.
    assert api.get(f"/notes/{in_globex}", headers=carol_in("acme")).json() == NOT_FOUND
    r = api.patch(f"/notes/{in_acme}", json={"title": "x"}, headers=carol_in("globex"))
    assert r.json() == NOT_FOUND
    assert [row[3] for row in every_note(engine) if row[0] == in_acme] == ["Acme passwords"]


def test_a_note_without_a_title_or_with_unknown_fields_is_refused(
    api: TestClient, engine: Engine, alice: Headers
) -> None:
    before = every_note(engine)
    for body in ({"body": "no title"}, {"title": " "}, {"title": "x", "owner": "carol"}):
        r = api.post("/notes", json=body, headers=alice)
        assert (r.status_code, r.json()["code"]) == (422, "invalid_request"), r.text
    assert every_note(engine) == before
