"""The API as a tenant uses it: projects, tasks, pagination, counts, names, docs and logs;
text no database can store, refused; and writes that race, answered 404 or 409, never 500."""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from contextlib import contextmanager
from functools import partial
from typing import Any

import httpx
import pytest
from example_support import Headers
from fastapi.testclient import TestClient
from sqlalchemy import Engine, delete, event, func, insert, select
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlmodel import col

from example_app.models import Project, Task
from example_app.settings import make_engine

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


# -- text no database stores as sent -----------------------------------------------------------
# Bodies are sent as JSON text with \u0000 and \ud800 escapes, as a hostile client would: a NUL
# character, which PostgreSQL refuses, and unpaired surrogates, which cannot even be encoded as
# UTF-8. Every free-text field refuses them with 422, before any SQL.

UNSTORABLE = [
    pytest.param("Anvil\x00drop", id="nul"),
    pytest.param("Anvil\ud800", id="lone-high-surrogate"),
    pytest.param("\udc00Anvil", id="lone-low-surrogate"),
]

# (method, path, body): one body per free-text field; "{id}" is an acme project's id.
FIELDS = [
    pytest.param("POST", "/projects", {"name": "{}"}, id="project-name"),
    pytest.param("POST", "/projects", {"name": "Fine", "tenant_id": "{}"}, id="project-tenant"),
    pytest.param("PATCH", "/projects/{id}", {"name": "{}"}, id="rename"),
    pytest.param("PATCH", "/projects/{id}", {"tenant_id": "{}"}, id="move"),
    pytest.param("POST", "/projects/{id}/tasks", {"name": "{}"}, id="task-name"),
    pytest.param(
        "POST", "/projects/{id}/tasks", {"name": "T", "tenant_id": "{}"}, id="task-tenant"
    ),
]
LOGIN_FIELDS = [
    pytest.param({"email": "{}", "password": "alice-pass"}, id="email"),
    pytest.param({"email": "alice@acme.test", "password": "{}"}, id="password"),
    pytest.param(
        {"email": "alice@acme.test", "password": "alice-pass", "tenant": "{}"}, id="tenant"
    ),
]


def send(
    api: TestClient, method: str, path: str, body: dict[str, Any], headers: Headers | None = None
) -> httpx.Response:
    """``body`` as JSON text with ASCII escapes: surrogates travel as ``\\udXXX``."""
    return api.request(
        method,
        path,
        content=json.dumps(body),
        headers={**(headers or {}), "Content-Type": "application/json"},
    )


def fill(body: dict[str, str], value: str) -> dict[str, str]:
    return {key: value if text == "{}" else text for key, text in body.items()}


def assert_refused(r: httpx.Response, field: str) -> None:
    assert r.status_code == 422, r.text
    answer = r.json()
    assert answer["code"] == "invalid_request"
    assert [error["loc"] for error in answer["errors"]] == [["body", field]]
    assert "input" not in answer["errors"][0]  # the refused text is not echoed


@pytest.mark.parametrize("value", UNSTORABLE)
@pytest.mark.parametrize(("method", "path", "body"), FIELDS)
def test_unstorable_text_in_a_tenant_write_is_422_and_writes_nothing(
    api: TestClient,
    alice: Headers,
    project_id: FindId,
    method: str,
    path: str,
    body: dict[str, str],
    value: str,
) -> None:
    before = api.get("/stats", headers=alice).json()
    url = path.format(id=project_id(alice, "Onboarding"))
    (field,) = [key for key, text in body.items() if text == "{}"]

    assert_refused(send(api, method, url, fill(body, value), alice), field)

    assert api.get("/stats", headers=alice).json() == before
    assert project_id(alice, "Onboarding")  # not renamed


@pytest.mark.parametrize("value", UNSTORABLE)
@pytest.mark.parametrize("body", LOGIN_FIELDS)
def test_unstorable_text_in_a_login_is_422(
    api: TestClient, body: dict[str, str], value: str
) -> None:
    (field,) = [key for key, text in body.items() if text == "{}"]
    assert_refused(send(api, "POST", "/auth/login", fill(body, value)), field)


def test_text_beyond_the_basic_plane_is_stored_and_read_back(
    api: TestClient, alice: Headers
) -> None:
    name = "Rocket \U0001f680 \u00e9t\u00e9 \u4e2d"  # a surrogate pair in JSON, and more
    r = send(api, "POST", "/projects", {"name": name}, alice)
    assert r.status_code == 201, r.text
    assert api.get(r.headers["Location"], headers=alice).json()["name"] == name


# -- writes that race ---------------------------------------------------------------------------
# A project deleted while it is written to answers 404 or 409, never 500, and a committed write
# is answered as written. The deterministic tests put a second connection's write between two
# steps of a request with the engine's own events (before_cursor_execute, commit, checkin): the
# row is really deleted or inserted, at the worst moment for the route. The last test races
# real requests against each other.

SCHEMA = r"(?:\S+\.)?"  # the tables' schema, as the engine names its default one
DELETE_PROJECT = rf"DELETE FROM {SCHEMA}projects"  # noqa: S608 (a pattern, not SQL)
BOUND = 30.0  # seconds: a bound on waits that end in milliseconds when all is well
Action = Callable[[Engine], None]


@pytest.fixture
def other(engine: Engine) -> Iterator[Engine]:
    """A second engine on the test's database: another client of the same data."""
    second = make_engine(engine.url)
    yield second
    second.dispose()


def delete_project(project_id: int) -> Action:
    def run(other: Engine) -> None:
        with other.begin() as conn:
            conn.execute(delete(Task).where(col(Task.project_id) == project_id))
            conn.execute(delete(Project).where(col(Project.id) == project_id))

    return run


def delete_newest_project(other: Engine) -> None:
    with other.connect() as conn:
        newest = conn.execute(select(func.max(col(Project.id)))).scalar_one()
    delete_project(int(newest))(other)


def add_task(project_id: int, tenant: str) -> Action:
    def run(other: Engine) -> None:
        with other.begin() as conn:
            conn.execute(
                insert(Task),
                {"tenant_id": tenant, "project_id": project_id, "name": "Sneaked", "done": False},
            )

    return run


@contextmanager
def before_statement(engine: Engine, other: Engine, starts: str, action: Action) -> Iterator[None]:
    """Run ``action`` on ``other`` once, just before ``engine`` sends a statement that matches
    the regular expression ``starts`` at its start."""
    done = threading.Event()

    def on_execute(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if re.match(starts, statement) and not done.is_set():
            done.set()
            action(other)

    event.listen(engine, "before_cursor_execute", on_execute)
    try:
        yield
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)
    assert done.is_set(), f"no statement started with {starts!r}"


@contextmanager
def after_next_commit(engine: Engine, other: Engine, action: Action) -> Iterator[None]:
    """Run ``action`` on ``other`` once, right after ``engine``'s next commit has returned its
    connection to the pool: the write is committed, the route has not answered yet."""
    committed, done = threading.Event(), threading.Event()

    def on_commit(conn: Any) -> None:
        committed.set()

    def on_checkin(dbapi_connection: Any, record: Any) -> None:
        if committed.is_set() and not done.is_set():
            done.set()
            action(other)

    event.listen(engine, "commit", on_commit)
    event.listen(engine, "checkin", on_checkin)
    try:
        yield
    finally:
        event.remove(engine, "commit", on_commit)
        event.remove(engine, "checkin", on_checkin)
    assert done.is_set(), "the request committed nothing"


def task_count(engine: Engine, name: str) -> int:
    with engine.connect() as conn:
        counted = select(func.count()).select_from(Task).where(col(Task.name) == name)
        return int(conn.execute(counted).scalar_one())


# -- a committed write is answered as written ----------------------------------------------------


def test_a_project_deleted_right_after_its_creation_is_answered_201_as_written(
    api: TestClient, alice: Headers, engine: Engine, other: Engine
) -> None:
    with after_next_commit(engine, other, delete_newest_project):
        r = api.post("/projects", json={"name": "Short-lived"}, headers=alice)

    assert r.status_code == 201, r.text
    assert r.json() == {"id": r.json()["id"], "name": "Short-lived", "tenant_id": "acme"}
    assert r.headers["Location"] == f"/projects/{r.json()['id']}"
    assert api.get(r.headers["Location"], headers=alice).status_code == 404  # really deleted


def test_a_project_deleted_right_after_its_rename_is_answered_200_as_written(
    api: TestClient, alice: Headers, project_id: FindId, engine: Engine, other: Engine
) -> None:
    target = project_id(alice, "Onboarding")
    with after_next_commit(engine, other, delete_project(target)):
        r = api.patch(f"/projects/{target}", json={"name": "Renamed"}, headers=alice)

    assert r.status_code == 200, r.text
    assert r.json() == {"id": target, "name": "Renamed", "tenant_id": "acme"}


def test_a_task_whose_project_is_deleted_right_after_is_answered_201_as_written(
    api: TestClient, alice: Headers, project_id: FindId, engine: Engine, other: Engine
) -> None:
    target = project_id(alice, "Onboarding")
    with after_next_commit(engine, other, delete_project(target)):
        r = api.post(f"/projects/{target}/tasks", json={"name": "Last one"}, headers=alice)

    assert r.status_code == 201, r.text
    task = r.json()
    assert task == {
        "id": task["id"],
        "name": "Last one",
        "tenant_id": "acme",
        "project_id": target,
        "done": False,
    }


# -- a write that loses the race is refused, not a 500 ----------------------------------------


def test_a_task_posted_while_its_project_is_deleted_is_409_and_writes_nothing(
    api: TestClient, alice: Headers, project_id: FindId, engine: Engine, other: Engine
) -> None:
    target = project_id(alice, "Onboarding")
    with before_statement(engine, other, rf"INSERT INTO {SCHEMA}tasks", delete_project(target)):
        r = api.post(f"/projects/{target}/tasks", json={"name": "Orphan"}, headers=alice)

    assert r.status_code == 409, r.text
    assert r.json()["code"] == "write_conflict"
    assert task_count(engine, "Orphan") == 0


# The kit's check, in the flush, that the task's project is the tenant's.
PROJECT_CHECK = (
    rf"SELECT {SCHEMA}projects\.id\s+FROM {SCHEMA}projects\s+WHERE {SCHEMA}projects\.id IN"
)


def test_a_task_posted_to_a_project_deleted_since_the_route_read_it_is_409(
    api: TestClient,
    alice: Headers,
    project_id: FindId,
    engine: Engine,
    other: Engine,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The kit's check finds no project the route read (or, on MariaDB, reads the snapshot and
    the foreign key fails): a conflict, and no audit alarm of a cross-tenant write."""
    target = project_id(alice, "Onboarding")
    with before_statement(engine, other, PROJECT_CHECK, delete_project(target)):
        r = api.post(f"/projects/{target}/tasks", json={"name": "Orphan"}, headers=alice)

    assert r.status_code == 409, r.text
    assert r.json()["code"] == "write_conflict"
    assert task_count(engine, "Orphan") == 0
    assert not [rec for rec in caplog.records if rec.name == "fastapi_tenancy.audit"]


def test_a_project_deleted_while_a_task_is_added_keeps_both_or_neither(
    api: TestClient, alice: Headers, project_id: FindId, engine: Engine, other: Engine
) -> None:
    target = project_id(alice, "Onboarding")
    with ThreadPoolExecutor(1) as pool:
        sneaking: list[Future[None]] = []

        def sneak_a_task_in(other: Engine) -> None:
            # PostgreSQL adds it at once; MariaDB (a gap lock) and SQLite (the database lock)
            # make it wait for the route, so the route must not wait for it without a bound.
            sneaking.append(pool.submit(add_task(target, "acme"), other))
            wait(sneaking, timeout=2)

        with before_statement(engine, other, DELETE_PROJECT, sneak_a_task_in):
            r = api.delete(f"/projects/{target}", headers=alice)
        try:
            sneaking[0].result(timeout=BOUND)
        except DBAPIError:  # it waited for the route and found the project gone
            added = False
        else:
            added = True

    if added:  # the task came first: the project and its new task stay
        assert r.status_code == 409, r.text
        assert r.json()["code"] == "write_conflict"
        assert api.get(f"/projects/{target}", headers=alice).status_code == 200
        assert task_count(engine, "Sneaked") == 1
    else:
        assert r.status_code == 204, r.text
        assert api.get(f"/projects/{target}", headers=alice).status_code == 404
        assert task_count(engine, "Sneaked") == 0


def test_a_project_deleted_just_before_its_rename_is_409(
    api: TestClient, alice: Headers, project_id: FindId, engine: Engine, other: Engine
) -> None:
    target = project_id(alice, "Onboarding")
    with before_statement(engine, other, rf"UPDATE {SCHEMA}projects", delete_project(target)):
        r = api.patch(f"/projects/{target}", json={"name": "Too late"}, headers=alice)

    assert r.status_code == 409, r.text
    assert r.json()["code"] == "write_conflict"


# -- real races ---------------------------------------------------------------------------------

ROUNDS = 8
POSTS_PER_ROUND = 3


def test_deleting_a_project_while_tasks_are_posted_to_it_never_answers_500(
    api: TestClient, alice: Headers
) -> None:
    def at_once(calls: list[Callable[[], httpx.Response]]) -> list[httpx.Response]:
        start = threading.Barrier(len(calls))

        def run(call: Callable[[], httpx.Response]) -> httpx.Response:
            start.wait(timeout=30)
            return call()

        with ThreadPoolExecutor(len(calls)) as pool:
            futures = [pool.submit(run, call) for call in calls]
            return [future.result(timeout=120) for future in futures]

    for round_ in range(ROUNDS):
        r = api.post("/projects", json={"name": f"Race {round_}"}, headers=alice)
        assert r.status_code == 201, r.text
        url = f"/projects/{r.json()['id']}"
        deleted, *posted = at_once(
            [partial(api.delete, url, headers=alice)]
            + [
                partial(api.post, f"{url}/tasks", json={"name": f"Task {n}"}, headers=alice)
                for n in range(POSTS_PER_ROUND)
            ]
        )

        assert deleted.status_code in (204, 409), deleted.text
        assert all(p.status_code in (201, 404, 409) for p in posted), [p.text for p in posted]
        for response in (deleted, *posted):
            if response.status_code >= 400:
                assert response.json()["code"] in ("not_found", "write_conflict"), response.text
        if deleted.status_code == 204:
            assert api.get(url, headers=alice).status_code == 404
            assert api.get(f"{url}/tasks", headers=alice).status_code == 404
