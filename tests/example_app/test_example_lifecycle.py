"""A tenant's life over HTTP: ``POST /signup`` through the registry's hooks, and the platform
admin's ``/admin/tenants`` routes (list, suspend, resume, offboard).

Every refusal is checked against a dump of every table of the app, taken before and after: a
refused sign-up leaves no tenant, no user and no membership, and an offboarding deletes every
row of its tenant and changes no row of any other.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from example_support import BASE_DOMAIN, FAST_HASH, PASSWORDS, SECRET, Headers, bearer, mint
from fastapi.testclient import TestClient
from sqlalchemy import Engine, select

from example_app import create_app, lifecycle
from example_app.__main__ import main
from example_app.auth import PasswordHasher
from example_app.models import metadata
from example_app.seed import init_database
from example_app.settings import Settings, make_engine
from fastapi_tenancy.tenants import Tenants

Dump = dict[str, list[dict[str, Any]]]

# The column of each table that names a row's tenant; plans and users belong to no tenant.
TENANT_COLUMNS = {
    "tenants": "slug",
    "memberships": "tenant_id",
    "projects": "tenant_id",
    "tasks": "tenant_id",
    "private_notes": "tenant_id",
}

UMBRELLA = {
    "tenant": "umbrella",
    "name": "Umbrella Corporation",
    "plan": "team",
    "email": "ada@umbrella.test",
    "user_name": "Ada Wong",
    "password": "ada-pass-123",
}


def dump(engine: Engine) -> Dump:
    """Every row of every table of the app, in primary-key order."""
    with engine.connect() as conn:
        return {
            table.name: [
                dict(row._mapping)
                for row in conn.execute(select(table).order_by(*table.primary_key.columns))
            ]
            for table in metadata.sorted_tables
        }


def tenant_rows(rows: Dump, slug: str) -> dict[str, int]:
    """How many rows of each tenant table belong to ``slug``."""
    return {
        table: sum(1 for row in rows[table] if row[column] == slug)
        for table, column in TENANT_COLUMNS.items()
    }


def without_tenant(rows: Dump, slug: str) -> Dump:
    """``rows`` less every row of tenant ``slug``."""
    return {
        table: [
            row
            for row in table_rows
            if table not in TENANT_COLUMNS or row[TENANT_COLUMNS[table]] != slug
        ]
        for table, table_rows in rows.items()
    }


def signup(client: TestClient, **changes: Any) -> httpx.Response:
    return client.post("/signup", json={**UMBRELLA, **changes})


def log_in(client: TestClient, email: str, password: str | None = None) -> Headers:
    r = client.post("/auth/login", json={"email": email, "password": password or PASSWORDS[email]})
    assert r.status_code == 200, r.text
    return bearer(r.json()["access_token"])


def claims(response: httpx.Response) -> dict[str, Any]:
    decoded: dict[str, Any] = jwt.decode(
        response.json()["access_token"], SECRET, algorithms=["HS256"]
    )
    return decoded


@contextmanager
def app_client(engine: Engine, **options: Any) -> Iterator[TestClient]:
    """A client on an app of its own over a freshly seeded database, built with ``options``."""
    init_database(engine, PasswordHasher(FAST_HASH))
    app = create_app(
        engine, jwt_secret=SECRET, base_domain=BASE_DOMAIN, password_hash=FAST_HASH, **options
    )
    with TestClient(app) as client:
        yield client


def audit_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.name == "fastapi_tenancy.audit"]


# -- sign-up ---------------------------------------------------------------------------------


def test_a_sign_up_creates_the_tenant_and_its_owner_who_can_work_at_once(
    api: TestClient, engine: Engine, alice: Headers
) -> None:
    before = dump(engine)
    r = signup(api, email="  Ada@Umbrella.TEST ")
    assert r.status_code == 201, r.text
    assert r.json() == {
        "access_token": r.json()["access_token"],
        "token_type": "bearer",
        "tenant": {
            "slug": "umbrella",
            "name": "Umbrella Corporation",
            "plan": "team",
            "active": True,
        },
        "email": "ada@umbrella.test",
    }
    token = claims(r)
    assert (token["sub"], token["tenant"], token["roles"]) == ("ada@umbrella.test", "umbrella", [])

    ada = bearer(r.json()["access_token"])
    r = api.post("/projects", json={"name": "T-virus"}, headers=ada)
    assert r.status_code == 201, r.text
    assert r.json()["tenant_id"] == "umbrella"
    assert [p["name"] for p in api.get("/projects", headers=ada).json()] == ["T-virus"]
    assert api.get("/stats", headers=ada).json() == {"projects": 1, "tasks": 0}
    assert api.get("/me", headers=ada).json()["memberships"] == [
        {"tenant": "umbrella", "name": "Umbrella Corporation", "role": "owner"}
    ]
    # The password was stored (hashed): a login names the new tenant, the user's only one.
    r = api.post("/auth/login", json={"email": "ada@umbrella.test", "password": "ada-pass-123"})
    assert r.status_code == 200, r.text
    assert claims(r)["tenant"] == "umbrella"

    after = dump(engine)
    assert tenant_rows(after, "umbrella") == {
        "tenants": 1,
        "memberships": 1,
        "projects": 1,
        "tasks": 0,
        "private_notes": 0,
    }
    (user,) = [row for row in after["users"] if row["email"] == "ada@umbrella.test"]
    assert user["password_hash"].startswith("$argon2id$")
    assert not user["is_platform_admin"]
    assert without_tenant(after, "umbrella") == {
        **before,
        "users": [*before["users"], user],
    }
    assert api.get("/stats", headers=alice).json() == {"projects": 3, "tasks": 6}


def test_the_plan_defaults_to_free(api: TestClient) -> None:
    body = {key: value for key, value in UMBRELLA.items() if key != "plan"}
    r = api.post("/signup", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["tenant"]["plan"] == "free"


def test_sign_up_needs_no_token_and_no_stale_token_or_header_stops_it(api: TestClient) -> None:
    expired = mint({"sub": "alice@acme.test", "tenant": "acme", "exp": 1})
    headers = {**bearer(expired), "X-Tenant-ID": "globex"}
    r = api.post("/signup", json=UMBRELLA, headers=headers)
    assert r.status_code == 201, r.text
    assert r.json()["tenant"]["slug"] == "umbrella"  # the body's tenant, not the header's
    spec = api.get("/openapi.json").json()
    assert spec["paths"]["/signup"]["post"]["security"] == []


REFUSED = [
    pytest.param({"tenant": "acme"}, 409, "tenant_exists", id="slug-taken"),
    pytest.param({"tenant": "Not A Slug"}, 400, "invalid_tenant_key", id="slug-pattern"),
    pytest.param({"tenant": ""}, 400, "invalid_tenant_key", id="slug-empty"),
    pytest.param({"tenant": "x" * 64}, 400, "invalid_tenant_key", id="slug-too-long"),
    pytest.param({"plan": "platinum"}, 422, "unknown_plan", id="plan-unknown"),
    pytest.param({"plan": ""}, 422, "unknown_plan", id="plan-empty"),
    pytest.param({"email": "alice@acme.test"}, 409, "email_taken", id="email-taken"),
    pytest.param({"email": "ALICE@Acme.test"}, 409, "email_taken", id="email-taken-capitals"),
    pytest.param({"email": "not-an-email"}, 422, "invalid_request", id="email-malformed"),
    pytest.param({"password": "tiny7"}, 422, "invalid_request", id="password-short"),
    pytest.param({"name": "  "}, 422, "invalid_request", id="name-blank"),
    pytest.param({"user_name": "Ada\x00"}, 422, "invalid_request", id="user-name-nul"),
    pytest.param({"is_platform_admin": True}, 422, "invalid_request", id="unknown-field"),
]


@pytest.mark.parametrize(("changes", "status", "code"), REFUSED)
def test_a_refused_sign_up_writes_nothing(
    api: TestClient, engine: Engine, changes: dict[str, Any], status: int, code: str
) -> None:
    before = dump(engine)
    r = signup(api, **changes)
    assert (r.status_code, r.json()["code"]) == (status, code), r.text
    assert "detail" in r.json()
    assert "tiny7" not in r.text  # a refused password is never echoed
    assert dump(engine) == before
    # Nothing half-made blocks the slug or the email: the sign-up goes through once fixed.
    assert signup(api).status_code == 201


def test_an_email_taken_leaves_the_account_as_it_was(
    api: TestClient, engine: Engine, login: Callable[..., Headers]
) -> None:
    r = signup(api, email="alice@acme.test", password="a-new-password")
    assert (r.status_code, r.json()["code"]) == (409, "email_taken"), r.text
    r = api.post("/auth/login", json={"email": "alice@acme.test", "password": "a-new-password"})
    assert r.status_code == 401, r.text
    assert api.get("/me", headers=login("alice@acme.test")).json()["memberships"] == [
        {"tenant": "acme", "name": "Acme Corporation", "role": "owner"}
    ]


def test_a_failure_after_the_user_was_written_rolls_back_the_user_and_the_tenant(
    api: TestClient, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The check before the insert misses the account, as it would if another sign-up with the
    # same email committed just after it: the unique email refuses the user's row, the
    # after_create hook fails, and the tenant's row, written before it, goes too.
    monkeypatch.setattr(lifecycle, "email_registered", lambda session, email: False)
    before = dump(engine)
    r = signup(api, email="bob@globex.test")
    assert (r.status_code, r.json()["code"]) == (409, "email_taken"), r.text
    assert dump(engine) == before


def test_the_tenant_limit_counts_every_tenant_and_frees_up_when_one_goes(
    engine: Engine,
) -> None:
    with app_client(engine, max_tenants=4) as client:  # 3 seeded tenants
        assert signup(client).status_code == 201
        before = dump(engine)
        wayne = {"tenant": "wayne", "email": "bruce@wayne.test"}
        r = signup(client, **wayne)
        assert (r.status_code, r.json()["code"]) == (403, "tenant_limit_reached"), r.text
        assert dump(engine) == before

        root = log_in(client, "root@example.test")
        assert client.post("/admin/tenants/initech/suspend", headers=root).status_code == 200
        r = signup(client, **wayne)  # a suspended tenant still counts
        assert (r.status_code, r.json()["code"]) == (403, "tenant_limit_reached"), r.text

        assert client.delete("/admin/tenants/initech", headers=root).status_code == 200
        r = signup(client, **wayne)
        assert r.status_code == 201, r.text


def test_the_limit_comes_from_example_max_tenants(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert Settings.from_env({}).max_tenants is None
    assert Settings.from_env({"EXAMPLE_MAX_TENANTS": " 12 "}).max_tenants == 12
    url = f"sqlite:///{tmp_path / 'limited.db'}"
    engine = make_engine(url)
    init_database(engine, PasswordHasher(FAST_HASH))
    engine.dispose()
    monkeypatch.setenv("DATABASE_URL", url)
    monkeypatch.setenv("EXAMPLE_MAX_TENANTS", "3")
    with TestClient(create_app(password_hash=FAST_HASH)) as client:
        r = signup(client)
        assert (r.status_code, r.json()["code"]) == (403, "tenant_limit_reached"), r.text
    monkeypatch.setenv("EXAMPLE_MAX_TENANTS", "4")
    with TestClient(create_app(password_hash=FAST_HASH)) as client:
        assert signup(client).status_code == 201


@pytest.mark.parametrize("raw", ["0", "-1", "many", "2.5", "\u0661"])
def test_a_bad_example_max_tenants_is_refused_with_its_name(raw: str) -> None:
    with pytest.raises(ValueError, match="EXAMPLE_MAX_TENANTS"):
        Settings.from_env({"EXAMPLE_MAX_TENANTS": raw})


def test_help_lists_example_max_tenants(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "EXAMPLE_MAX_TENANTS" in capsys.readouterr().out


def test_a_script_creating_a_tenant_gets_no_user(api: TestClient, engine: Engine) -> None:
    tenants: Tenants[Any] = api.app.state.services.tenants  # type: ignore[attr-defined]
    before = dump(engine)
    tenants.create("hooli", name="Hooli", plan="enterprise")
    after = dump(engine)
    assert tenant_rows(after, "hooli") == {
        "tenants": 1,
        "memberships": 0,
        "projects": 0,
        "tasks": 0,
        "private_notes": 0,
    }
    assert after["users"] == before["users"]


# -- the platform admin's tenant routes ------------------------------------------------------

ADMIN_ROUTES = [
    ("GET", "/admin/tenants"),
    ("POST", "/admin/tenants/acme/suspend"),
    ("POST", "/admin/tenants/acme/resume"),
    ("DELETE", "/admin/tenants/acme"),
    ("DELETE", "/admin/tenants/acme?dry_run=true"),
]


def test_only_platform_admins_manage_tenants(
    api: TestClient,
    engine: Engine,
    alice: Headers,
    carol: Headers,
    caplog: pytest.LogCaptureFixture,
) -> None:
    before = dump(engine)
    with caplog.at_level(logging.INFO, logger="fastapi_tenancy.audit"):
        for method, path in ADMIN_ROUTES:
            for headers in (alice, {**carol, "X-Tenant-ID": "acme"}):
                r = api.request(method, path, headers=headers)
                assert (r.status_code, r.json()["code"]) == (403, "admin_required"), (path, r.text)
            r = api.request(method, path)
            assert (r.status_code, r.json()["code"]) == (401, "not_authenticated"), (path, r.text)
    assert dump(engine) == before
    assert api.get("/projects", headers=alice).status_code == 200
    refused = [r for r in audit_records(caplog) if getattr(r, "tenancy_allowed", None) is False]
    assert len(refused) == 2 * len(ADMIN_ROUTES)
    assert {r.tenancy_principal for r in refused} == {  # type: ignore[attr-defined]
        "alice@acme.test",
        "carol@example.test",
    }


def test_an_admin_lists_every_tenant_active_or_not(api: TestClient, root: Headers) -> None:
    assert api.post("/admin/tenants/globex/suspend", headers=root).status_code == 200
    r = api.get("/admin/tenants", headers=root, params={"limit": 2})
    assert r.status_code == 200, r.text
    assert r.headers["X-Total-Count"] == "3"
    assert r.json() == [
        {"slug": "acme", "name": "Acme Corporation", "plan": "team", "active": True},
        {"slug": "globex", "name": "Globex Corporation", "plan": "enterprise", "active": False},
    ]


def test_a_suspended_tenant_is_refused_until_resumed_and_keeps_its_data(
    api: TestClient,
    engine: Engine,
    root: Headers,
    alice: Headers,
    bob: Headers,
    carol: Headers,
    caplog: pytest.LogCaptureFixture,
) -> None:
    before = dump(engine)
    with caplog.at_level(logging.INFO, logger="fastapi_tenancy.audit"):
        r = api.post("/admin/tenants/acme/suspend", headers=root)
    assert r.status_code == 200, r.text
    assert r.json() == {"slug": "acme", "name": "Acme Corporation", "plan": "team", "active": False}
    (granted,) = [r for r in audit_records(caplog) if getattr(r, "tenancy_allowed", None)]
    assert granted.tenancy_principal == "root@example.test"  # type: ignore[attr-defined]
    assert granted.tenancy_path == "/admin/tenants/acme/suspend"  # type: ignore[attr-defined]

    for headers in (alice, {**carol, "X-Tenant-ID": "acme"}):
        r = api.get("/projects", headers=headers)
        assert (r.status_code, r.json()["code"]) == (403, "tenant_inactive"), r.text
    r = api.post("/projects", json={"name": "Sneaked in"}, headers=alice)
    assert (r.status_code, r.json()["code"]) == (403, "tenant_inactive"), r.text
    assert api.get("/stats", headers=bob).json() == {"projects": 2, "tasks": 3}
    assert api.get("/stats", headers={**carol, "X-Tenant-ID": "globex"}).status_code == 200

    r = api.post("/admin/tenants/acme/resume", headers=root)
    assert r.status_code == 200, r.text
    assert r.json()["active"] is True
    assert api.get("/stats", headers=alice).json() == {"projects": 3, "tasks": 6}
    assert dump(engine) == before


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("POST", "/admin/tenants/umbrella/suspend", 404, "tenant_not_found"),
        ("POST", "/admin/tenants/umbrella/resume", 404, "tenant_not_found"),
        ("DELETE", "/admin/tenants/umbrella", 404, "tenant_not_found"),
        ("DELETE", "/admin/tenants/umbrella?dry_run=true", 404, "tenant_not_found"),
        ("POST", "/admin/tenants/Not%20A%20Slug/suspend", 400, "invalid_tenant_key"),
        ("DELETE", "/admin/tenants/ACME", 400, "invalid_tenant_key"),
    ],
)
def test_an_unknown_or_malformed_slug_changes_nothing(
    api: TestClient, engine: Engine, root: Headers, method: str, path: str, status: int, code: str
) -> None:
    before = dump(engine)
    r = api.request(method, path, headers=root)
    assert (r.status_code, r.json()["code"]) == (status, code), r.text
    assert dump(engine) == before


def test_offboarding_deletes_every_row_of_the_tenant_and_no_other(
    api: TestClient,
    engine: Engine,
    root: Headers,
    alice: Headers,
    bob: Headers,
    carol: Headers,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Rows written through the API too, in acme and in globex, besides the seeded ones.
    r = api.post("/projects", json={"name": "Anvil drop"}, headers=alice)
    api.post(f"/projects/{r.json()['id']}/tasks", json={"name": "Buy anvil"}, headers=alice)
    r = api.post("/projects", json={"name": "Anvil drop"}, headers=bob)
    api.post(f"/projects/{r.json()['id']}/tasks", json={"name": "Buy anvil"}, headers=bob)
    before = dump(engine)
    assert tenant_rows(before, "acme") == {
        "tenants": 1,
        "memberships": 2,
        "projects": 4,
        "tasks": 7,
        "private_notes": 3,
    }

    with caplog.at_level(logging.INFO, logger="fastapi_tenancy.audit"):
        r = api.delete("/admin/tenants/acme", headers=root)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "tenant": "acme",
        "dry_run": False,
        "rows": {"memberships": 2, "tasks": 7, "private_notes": 3, "projects": 4},
        "total": 16,
    }
    after = dump(engine)
    assert after == without_tenant(before, "acme")
    assert set(tenant_rows(after, "acme").values()) == {0}
    messages = [record.getMessage() for record in audit_records(caplog)]
    # Notes and projects are independent tables: the purge may take either first.
    [purged] = [message for message in messages if message.startswith("purged tenant acme:")]
    head, _, counts = purged.partition(" (")
    assert head == "purged tenant acme: 14 rows"
    assert sorted(counts.rstrip(")").split(", ")) == ["private_notes 3", "projects 4", "tasks 7"]

    for headers in (alice, {**carol, "X-Tenant-ID": "acme"}):
        r = api.get("/projects", headers=headers)
        assert (r.status_code, r.json()["code"]) == (404, "tenant_not_found"), r.text
    assert api.get("/stats", headers=bob).json() == {"projects": 3, "tasks": 4}
    assert api.get("/me", headers=carol).json()["memberships"] == [
        {"tenant": "globex", "name": "Globex Corporation", "role": "member"}
    ]
    assert [t["slug"] for t in api.get("/admin/tenants", headers=root).json()] == [
        "globex",
        "initech",
    ]
    r = api.delete("/admin/tenants/acme", headers=root)
    assert (r.status_code, r.json()["code"]) == (404, "tenant_not_found"), r.text

    # The slug is free again, and a new acme starts empty: nothing of the old one comes back.
    r = signup(api, tenant="acme", name="Acme Again")
    assert r.status_code == 201, r.text
    assert api.get("/stats", headers=bearer(r.json()["access_token"])).json() == {
        "projects": 0,
        "tasks": 0,
    }


def test_a_signed_up_tenant_lives_and_goes_over_http(
    api: TestClient, engine: Engine, root: Headers
) -> None:
    before = dump(engine)
    r = signup(api)
    assert r.status_code == 201, r.text
    ada = bearer(r.json()["access_token"])
    r = api.post("/projects", json={"name": "Hive"}, headers=ada)
    r = api.post(f"/projects/{r.json()['id']}/tasks", json={"name": "Seal it"}, headers=ada)
    assert r.status_code == 201, r.text

    r = api.delete("/admin/tenants/umbrella", headers=root)
    assert r.status_code == 200, r.text
    assert r.json()["rows"] == {"memberships": 1, "tasks": 1, "private_notes": 0, "projects": 1}
    after = dump(engine)
    # Only the account stays: it is the person's, and may be in other tenants.
    assert [user["email"] for user in after["users"]] == [
        *(user["email"] for user in before["users"]),
        "ada@umbrella.test",
    ]
    assert {**after, "users": before["users"]} == before
    r = api.get("/projects", headers=ada)
    assert (r.status_code, r.json()["code"]) == (404, "tenant_not_found"), r.text


def test_an_offboarding_preview_counts_and_changes_nothing(
    api: TestClient, engine: Engine, root: Headers, alice: Headers
) -> None:
    before = dump(engine)
    r = api.delete("/admin/tenants/acme", params={"dry_run": "true"}, headers=root)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "tenant": "acme",
        "dry_run": True,
        "rows": {"memberships": 2, "tasks": 6, "private_notes": 3, "projects": 3},
        "total": 14,
    }
    assert dump(engine) == before
    assert api.get("/projects", headers=alice).status_code == 200  # still active
    assert tenant_rows(before, "acme") == {
        "tenants": 1,
        "memberships": 2,
        "projects": 3,
        "tasks": 6,
        "private_notes": 3,
    }


def test_a_tenant_resumed_while_offboarded_keeps_its_data(
    api: TestClient, engine: Engine, root: Headers, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenants: Tenants[Any] = api.app.state.services.tenants  # type: ignore[attr-defined]
    purge = tenants.purge

    def resumed_first(key: Any, **options: Any) -> Any:
        tenants.resume(key)  # another admin, between the suspension and the purge
        return purge(key, **options)

    monkeypatch.setattr(tenants, "purge", resumed_first)
    before = dump(engine)
    r = api.delete("/admin/tenants/acme", headers=root)
    assert (r.status_code, r.json()["code"]) == (409, "tenant_active"), r.text
    assert dump(engine) == before  # resumed: nothing of it went, memberships included


def test_two_sign_ups_with_one_email_at_once_make_one_tenant(
    api: TestClient, engine: Engine
) -> None:
    before = dump(engine)
    start = threading.Barrier(2)

    def sign_up_as(slug: str) -> httpx.Response:
        start.wait(timeout=10)
        return signup(api, tenant=slug)

    with ThreadPoolExecutor(2) as pool:
        answers = list(pool.map(sign_up_as, ["umbrella", "wesker"]))
    assert sorted((r.status_code, r.json().get("code")) for r in answers) == [
        (201, None),
        (409, "email_taken"),
    ], [r.text for r in answers]
    (won,) = [r.json()["tenant"]["slug"] for r in answers if r.status_code == 201]
    lost = "wesker" if won == "umbrella" else "umbrella"
    after = dump(engine)
    assert set(tenant_rows(after, lost).values()) == {0}
    assert len(after["users"]) == len(before["users"]) + 1
