"""``EXAMPLE_SCHEMA_TENANTS=globex``: the example app keeps globex's projects, tasks and notes in
a schema of its own (a database of its own on MariaDB), acme's in the shared tables, through the
same routes; neither reaches the other's, and the admin route lists both."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from example_support import BASE_DOMAIN, FAST_HASH, PASSWORDS, SECRET, Headers, bearer
from fastapi.testclient import TestClient
from sqlalchemy import Engine, inspect
from sqlmodel import Session, select

from example_app import create_app
from example_app.auth import PasswordHasher
from example_app.models import Project
from example_app.placement import isolation_for
from example_app.seed import init_database
from example_app.settings import Settings
from fastapi_tenancy import Strategy
from fastapi_tenancy.isolation.storage import drop_storage


@pytest.fixture
def schema_api(engine: Engine) -> Iterator[TestClient]:
    """The example app with globex in its schema ``tenant_globex``, dropped afterwards."""
    globex = isolation_for(("globex",)).placement("globex", Strategy.SCHEMA)
    drop_storage(engine, globex)  # a run that died left it behind
    try:
        init_database(engine, PasswordHasher(FAST_HASH), schema_tenants=("globex",))
        app = create_app(
            engine,
            jwt_secret=SECRET,
            base_domain=BASE_DOMAIN,
            password_hash=FAST_HASH,
            schema_tenants=("globex",),
        )
        with TestClient(app) as client:
            yield client
    finally:
        drop_storage(engine, globex)


def log_in(api: TestClient, email: str) -> Headers:
    r = api.post("/auth/login", json={"email": email, "password": PASSWORDS[email]})
    assert r.status_code == 200, r.text
    return bearer(r.json()["access_token"])


def names(api: TestClient, headers: Headers) -> list[str]:
    r = api.get("/projects", headers=headers)
    assert r.status_code == 200, r.text
    return sorted(p["name"] for p in r.json())


@pytest.mark.backends("postgres", "mariadb")
def test_globex_lives_in_its_own_schema_and_acme_in_the_shared_tables(
    schema_api: TestClient, engine: Engine
) -> None:
    alice, bob = log_in(schema_api, "alice@acme.test"), log_in(schema_api, "bob@globex.test")
    acme_before, globex_before = names(schema_api, alice), names(schema_api, bob)
    assert "Rocket skates" in acme_before
    assert "Volcano lair" not in acme_before
    assert "Volcano lair" in globex_before
    assert "Rocket skates" not in globex_before

    r = schema_api.post("/projects", json={"name": "Death ray"}, headers=bob)
    assert r.status_code == 201, r.text
    created = r.json()["id"]
    assert names(schema_api, bob) == sorted([*globex_before, "Death ray"])
    assert names(schema_api, alice) == acme_before
    # Ids repeat across places: alice gets 404, or acme's own project of that id.
    seen = schema_api.get(f"/projects/{created}", headers=alice)
    assert seen.status_code == 404 or seen.json()["tenant_id"] == "acme", seen.text
    for project in schema_api.get("/projects", headers=alice).json():
        # Ids repeat across schemas: bob gets 404, or globex's own project of that id.
        seen = schema_api.get(f"/projects/{project['id']}", headers=bob)
        assert seen.status_code == 404 or seen.json()["tenant_id"] == "globex", seen.text

    # globex's rows are in its schema, none in the shared tables; acme's the other way round.
    with Session(engine) as session:
        shared = session.exec(select(Project.tenant_id).distinct()).all()
    assert "globex" not in shared
    assert "acme" in shared
    assert "projects" in inspect(engine).get_table_names(schema="tenant_globex")

    root = log_in(schema_api, "root@example.test")
    listed = schema_api.get("/admin/projects?limit=100", headers=root)
    assert listed.status_code == 200, listed.text
    tenants = {p["tenant_id"] for p in listed.json()}
    assert {"acme", "globex"} <= tenants
    assert int(listed.headers["X-Total-Count"]) == len(listed.json())


@pytest.mark.parametrize(
    ("environ", "says"),
    [
        ({"EXAMPLE_SCHEMA_TENANTS": "globex"}, "needs PostgreSQL or MariaDB"),
        (
            {
                "EXAMPLE_SCHEMA_TENANTS": "globex",
                "EXAMPLE_RLS": "1",
                "DATABASE_URL": "postgresql+psycopg://app@db/app",
            },
            "do not go together",
        ),
        (
            {
                "EXAMPLE_SCHEMA_TENANTS": "Globex!",
                "DATABASE_URL": "postgresql+psycopg://app@db/app",
            },
            "not a tenant slug",
        ),
    ],
)
def test_schema_tenants_are_refused_where_they_cannot_work(
    environ: dict[str, str], says: str
) -> None:
    with pytest.raises(ValueError, match=says):
        Settings.from_env(environ)


def test_the_setting_reads_a_list_of_slugs() -> None:
    settings = Settings.from_env(
        {"EXAMPLE_SCHEMA_TENANTS": " globex, initech ", "DATABASE_URL": "mysql+pymysql://db/app"}
    )
    assert settings.schema_tenants == ("globex", "initech")
