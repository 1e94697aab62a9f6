"""docs/models-and-scoping.md's typed keys, end to end: organizations keyed by UUID.

The app of docs/examples/typed_keys.py runs on SQLite, PostgreSQL and MariaDB: a token's ``org``
claim is parsed as a UUID, looked up in the organizations table and scopes every read and write
over HTTP. Its Alembic migration (docs/examples/typed_keys_migrations/) runs through a real
``alembic upgrade head``; on PostgreSQL the app is then served on the migrated schema with
row-level security on, as an ordinary role, and raw SQL sees one organization's rows only.
"""

from __future__ import annotations

import secrets
import textwrap
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine, create_engine, inspect, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool
from sqlmodel import Session, select

from docs.examples import typed_keys
from docs.examples.typed_keys import (
    Customer,
    Organization,
    create_app,
    create_organization,
    create_tenancy,
    customer_names,
    import_customers,
)
from fastapi_tenancy import (
    Access,
    CrossTenantWrite,
    InvalidTenantKey,
    SessionScope,
    SessionTenantMismatch,
    Tenancy,
    TenancyMisuse,
    UnscopedStatement,
    with_tenant,
)
from fastapi_tenancy.postgres import set_tenant
from fastapi_tenancy.testing import TenantClients, assert_tenant_isolation
from tests.pg_roles import create_role, drop_role

SECRET = "a-typed-keys-page-secret-of-32-bytes-or-more"
MIGRATIONS = Path(__file__).resolve().parents[2] / "docs" / "examples" / "typed_keys_migrations"
# docs/examples/typed_keys_migrations/tk_0001_organizations.py is the one revision there


def bearer(org: Any, secret: str = SECRET, **claims: Any) -> dict[str, str]:
    """A token naming ``org`` (a record, or the claim's raw value) in its ``org`` claim."""
    value = str(org.id) if isinstance(org, Organization) else org
    payload = {"sub": "ann@example.test", "org": value, "exp": int(time.time()) + 3600, **claims}
    return {"Authorization": f"Bearer {jwt.encode(payload, secret, algorithm='HS256')}"}


@dataclass(frozen=True)
class Orgs:
    acme: Organization
    globex: Organization
    initech: Organization  # inactive


def seed_organizations(engine: Engine) -> Orgs:
    return Orgs(
        acme=create_organization(engine, "acme"),
        globex=create_organization(engine, "globex"),
        initech=create_organization(engine, "initech", active=False),
    )


@pytest.fixture
def orgs(engine: Engine, create_tables: Any) -> Orgs:
    create_tables(engine, typed_keys.metadata)
    return seed_organizations(engine)


@pytest.fixture
def app(engine: Engine, orgs: Orgs) -> FastAPI:
    return create_app(engine, jwt_secret=SECRET)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


def owner_rows(engine: Engine) -> list[tuple[uuid.UUID, str]]:
    """Every organization's customers, read around the kit."""
    with Session(engine) as session:
        rows = session.execute(
            select(Customer.tenant_id, Customer.name).order_by(Customer.name)
        ).all()
    return [(tenant, name) for tenant, name in rows]


# --------------------------------------------------------------------------------------------
# Over HTTP, on every database


def test_the_claim_names_the_organization_by_its_uuid(client: TestClient, orgs: Orgs) -> None:
    r = client.get("/me", headers=bearer(orgs.acme))
    assert r.json() == {"org": str(orgs.acme.id), "slug": "acme"}, r.text


def test_customers_are_created_listed_read_and_updated_within_the_organization(
    client: TestClient, orgs: Orgs, engine: Engine
) -> None:
    acme, globex = bearer(orgs.acme), bearer(orgs.globex)
    made = client.post("/customers", json={"name": "Wile", "email": "w@acme.test"}, headers=acme)
    assert made.status_code == 201, made.text
    assert made.json()["tenant_id"] == str(orgs.acme.id)  # stamped at flush, never sent
    other = client.post("/customers", json={"name": "Hank", "email": "h@g.test"}, headers=globex)
    assert other.status_code == 201, other.text

    listed = client.get("/customers", headers=acme).json()
    assert [(c["name"], c["tenant_id"]) for c in listed] == [("Wile", str(orgs.acme.id))]

    customer_id = made.json()["id"]
    assert client.get(f"/customers/{customer_id}", headers=acme).json()["name"] == "Wile"
    renamed = client.patch(f"/customers/{customer_id}", json={"name": "W. E."}, headers=acme)
    assert renamed.status_code == 200, renamed.text
    assert renamed.json() == {
        "id": customer_id,
        "name": "W. E.",
        "email": "w@acme.test",
        "tenant_id": str(orgs.acme.id),
    }
    assert owner_rows(engine) == [(orgs.globex.id, "Hank"), (orgs.acme.id, "W. E.")]


def test_another_organizations_customer_answers_404(
    client: TestClient, orgs: Orgs, engine: Engine
) -> None:
    made = client.post(
        "/customers", json={"name": "Hank", "email": "h@g.test"}, headers=bearer(orgs.globex)
    )
    theirs = made.json()["id"]
    acme = bearer(orgs.acme)

    read = client.get(f"/customers/{theirs}", headers=acme)
    patched = client.patch(f"/customers/{theirs}", json={"name": "mine now"}, headers=acme)
    missing = client.get(f"/customers/{theirs + 1000}", headers=acme)

    assert (read.status_code, patched.status_code) == (404, 404), (read.text, patched.text)
    assert read.json() == missing.json()  # another organization's id reads as a missing one
    assert owner_rows(engine) == [(orgs.globex.id, "Hank")]


def test_a_tenant_id_sent_to_the_create_route_is_ignored(
    client: TestClient, orgs: Orgs, engine: Engine
) -> None:
    body = {"name": "Mole", "email": "m@acme.test", "tenant_id": str(orgs.globex.id)}
    r = client.post("/customers", json=body, headers=bearer(orgs.acme))
    assert r.status_code == 201, r.text
    assert owner_rows(engine) == [(orgs.acme.id, "Mole")]


def test_records_naming_the_own_organization_are_imported(
    client: TestClient, orgs: Orgs, engine: Engine
) -> None:
    records = [
        {"name": "Wile", "email": "w@acme.test", "tenant_id": str(orgs.acme.id)},
        {"name": "Road", "email": "r@acme.test", "tenant_id": str(orgs.acme.id)},
    ]
    r = client.post("/customers/import", json=records, headers=bearer(orgs.acme))
    assert r.status_code == 201, r.text
    assert [(c["name"], c["tenant_id"]) for c in r.json()] == [
        ("Wile", str(orgs.acme.id)),
        ("Road", str(orgs.acme.id)),
    ]


def test_a_record_naming_another_organization_is_refused_and_nothing_is_written(
    client: TestClient, orgs: Orgs, engine: Engine
) -> None:
    records = [
        {"name": "Wile", "email": "w@acme.test", "tenant_id": str(orgs.acme.id)},
        {"name": "Mole", "email": "m@acme.test", "tenant_id": str(orgs.globex.id)},
    ]
    r = client.post("/customers/import", json=records, headers=bearer(orgs.acme))
    assert (r.status_code, r.json()["code"]) == (403, "cross_tenant_write"), r.text
    assert owner_rows(engine) == []


def test_an_invoice_for_another_organizations_customer_is_refused(
    client: TestClient, orgs: Orgs
) -> None:
    acme, globex = bearer(orgs.acme), bearer(orgs.globex)
    mine = client.post("/customers", json={"name": "W", "email": "w@a.test"}, headers=acme)
    theirs = client.post("/customers", json={"name": "H", "email": "h@g.test"}, headers=globex)

    ok = client.post(
        "/invoices", json={"customer_id": mine.json()["id"], "total_cents": 100}, headers=acme
    )
    refused = client.post(
        "/invoices", json={"customer_id": theirs.json()["id"], "total_cents": 1}, headers=acme
    )

    assert ok.status_code == 201, ok.text
    assert ok.json()["tenant_id"] == str(orgs.acme.id)
    assert (refused.status_code, refused.json()["code"]) == (403, "cross_tenant_write")
    assert [i["total_cents"] for i in client.get("/invoices", headers=acme).json()] == [100]
    assert client.get("/invoices", headers=globex).json() == []


@pytest.mark.parametrize(
    "spelling",
    [
        str.upper,
        lambda key: key.replace("-", ""),
        lambda key: "{" + key + "}",
        lambda key: f"urn:uuid:{key}",
        lambda key: f" {key}",
    ],
    ids=["upper case", "no hyphens", "braces", "urn", "leading space"],
)
def test_any_other_spelling_of_the_uuid_is_400_invalid_tenant_key(
    client: TestClient, orgs: Orgs, spelling: Any
) -> None:
    key = spelling(str(orgs.acme.id))
    assert uuid.UUID(key.strip()) == orgs.acme.id  # the same UUID, spelled otherwise
    r = client.get("/me", headers=bearer(key))
    assert (r.status_code, r.json()["code"]) == (400, "invalid_tenant_key"), r.text


@pytest.mark.parametrize(
    ("claim", "status", "code"),
    [
        ("acme", 400, "invalid_tenant_key"),
        ("", 400, "invalid_tenant_key"),
        (12, 400, "invalid_tenant_key"),  # an integer claim is spelled "12": no UUID
        (True, 401, "invalid_token"),
        (["x"], 401, "invalid_token"),
    ],
    ids=["slug", "empty", "integer", "boolean", "list"],
)
def test_a_claim_that_is_no_uuid_is_refused(
    client: TestClient, claim: Any, status: int, code: str
) -> None:
    r = client.get("/me", headers=bearer(claim))
    assert (r.status_code, r.json()["code"]) == (status, code), r.text


def test_an_unknown_organization_is_404(client: TestClient) -> None:
    r = client.get("/customers", headers=bearer(str(uuid.uuid4())))
    assert (r.status_code, r.json()["code"]) == (404, "tenant_not_found"), r.text


def test_an_inactive_organization_is_403(client: TestClient, orgs: Orgs) -> None:
    r = client.get("/customers", headers=bearer(orgs.initech))
    assert (r.status_code, r.json()["code"]) == (403, "tenant_inactive"), r.text


def test_a_token_signed_with_another_key_is_401(client: TestClient, orgs: Orgs) -> None:
    r = client.get("/me", headers=bearer(orgs.acme, secret="x" * 40))
    assert (r.status_code, r.json()["code"]) == (401, "invalid_token"), r.text


# --------------------------------------------------------------------------------------------
# Scripts: the organization record as the key


@pytest.fixture
def tenancy(engine: Engine, orgs: Orgs) -> Tenancy:
    return create_tenancy(engine, jwt_secret=SECRET)


def test_a_script_binds_the_organization_record(
    tenancy: Tenancy, orgs: Orgs, engine: Engine
) -> None:
    rows = [{"name": "Wile", "email": "w@a.test"}, {"name": "Road", "email": "r@a.test"}]
    assert import_customers(tenancy, orgs.acme, rows) == 2
    assert import_customers(tenancy, orgs.globex, [{"name": "Hank", "email": "h@g.test"}]) == 1

    assert customer_names(tenancy, orgs.acme) == ["Road", "Wile"]
    assert customer_names(tenancy, orgs.globex) == ["Hank"]
    with with_tenant(orgs.acme), tenancy.session() as session:
        assert {c.tenant_id for c in session.exec(select(Customer)).all()} == {orgs.acme.id}
    assert sorted(owner_rows(engine)) == sorted(
        [(orgs.acme.id, "Road"), (orgs.acme.id, "Wile"), (orgs.globex.id, "Hank")]
    )


def test_keys_records_and_spellings_bind_the_same_organization(
    tenancy: Tenancy, orgs: Orgs
) -> None:
    import_customers(tenancy, orgs.acme, [{"name": "Wile", "email": "w@a.test"}])
    for tenant in (orgs.acme, orgs.acme.id, str(orgs.acme.id)):
        with with_tenant(tenant), tenancy.session() as session:
            assert [c.name for c in session.exec(select(Customer)).all()] == ["Wile"]
        with tenancy.session(tenant=tenant) as session:
            assert [c.name for c in session.exec(select(Customer)).all()] == ["Wile"]


def test_a_key_of_another_type_or_spelling_is_refused_in_scripts(
    tenancy: Tenancy, orgs: Orgs
) -> None:
    with pytest.raises(TenancyMisuse):
        tenancy.session(tenant=42)
    with pytest.raises(InvalidTenantKey):
        tenancy.session(tenant=str(orgs.acme.id).upper())


def test_a_session_for_one_organization_refuses_to_run_while_another_is_bound(
    tenancy: Tenancy, orgs: Orgs
) -> None:
    with (
        with_tenant(orgs.globex),
        tenancy.session(tenant=orgs.acme) as session,
        pytest.raises(SessionTenantMismatch),
    ):
        session.exec(select(Customer)).all()


def test_bound_tenant_takes_the_record(
    tenancy: Tenancy, orgs: Orgs, engine: Engine, bound_tenant: Any
) -> None:
    context = bound_tenant(orgs.globex)
    assert context.id == orgs.globex.id
    with tenancy.session() as session:
        session.add(Customer.model_validate({"name": "Hank", "email": "h@g.test"}))
        session.commit()
    assert customer_names(tenancy, orgs.globex) == ["Hank"]
    assert owner_rows(engine) == [(orgs.globex.id, "Hank")]


def test_model_validate_naming_another_organization_is_refused_as_it_joins_the_session(
    tenancy: Tenancy, orgs: Orgs, engine: Engine
) -> None:
    foreign = {"name": "Mole", "email": "m@a.test", "tenant_id": str(orgs.globex.id)}
    with tenancy.session(tenant=orgs.acme) as session:
        customer = Customer.model_validate(foreign)
        with pytest.raises(CrossTenantWrite):
            session.add(customer)  # refused as it joins the session, before any flush
        session.commit()
    assert owner_rows(engine) == []


# --------------------------------------------------------------------------------------------
# The Alembic migration, through a real `alembic upgrade`

ENV_PY = """
from alembic import context

context.configure(connection=context.config.attributes["connection"], target_metadata=None)
with context.begin_transaction():
    context.run_migrations()
"""

ALEMBIC_INI = """
[alembic]
script_location = {script_location}
version_locations = {version_locations}
path_separator = os
"""


def alembic_config(tmp_path: Path) -> Config:
    """An alembic.ini and an env.py of the test's own, with the sample's folder as versions."""
    scripts = tmp_path / "alembic"
    scripts.mkdir(parents=True)
    (scripts / "env.py").write_text(textwrap.dedent(ENV_PY), encoding="utf-8")
    ini = tmp_path / "alembic.ini"
    ini.write_text(
        ALEMBIC_INI.format(script_location=scripts, version_locations=MIGRATIONS),
        encoding="utf-8",
    )
    return Config(str(ini))


def migrate(engine: Engine, tmp_path: Path, revision: str = "head") -> None:
    config = alembic_config(tmp_path)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        if revision == "base":
            command.downgrade(config, revision)
        else:
            command.upgrade(config, revision)


def schema_differences(engine: Engine) -> list[Any]:
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": False}
        )
        differences = compare_metadata(context, typed_keys.metadata)
    return [
        d for d in differences if not (d[0] == "remove_table" and d[1].name == "alembic_version")
    ]


TABLES = {"tk_organization", "tk_customer", "tk_invoice"}


def test_the_migration_makes_the_models_schema_and_downgrades(
    engine: Engine, tmp_path: Path
) -> None:
    migrate(engine, tmp_path / "up")
    assert set(inspect(engine).get_table_names()) >= TABLES
    assert schema_differences(engine) == []

    orgs = seed_organizations(engine)
    with TestClient(create_app(engine, jwt_secret=SECRET)) as client:
        made = client.post(
            "/customers", json={"name": "Wile", "email": "w@a.test"}, headers=bearer(orgs.acme)
        )
        assert made.status_code == 201, made.text
        assert client.get("/customers", headers=bearer(orgs.globex)).json() == []

    migrate(engine, tmp_path / "down", "base")
    assert not TABLES & set(inspect(engine).get_table_names())


# --------------------------------------------------------------------------------------------
# PostgreSQL: the migrated schema with row-level security, served as an ordinary role


@pytest.fixture
def app_engine(engine: Engine, database: Any) -> Iterator[Engine]:
    """An engine connecting as an ordinary role (no superuser, no BYPASSRLS, owning nothing)
    with DML on the test's schema: the ``engine`` fixture's role, the owner, bypasses RLS."""
    role = f"tenancy_tk_{secrets.token_hex(5)}"
    create_role(engine, database.name, role)
    role_engine = create_engine(database.url.set(username=role), poolclass=NullPool)
    try:
        yield role_engine
    finally:
        role_engine.dispose()
        drop_role(engine, role)


@pytest.fixture
def rls_app(
    engine: Engine, app_engine: Engine, tmp_path: Path
) -> Iterator[tuple[TestClient, Orgs]]:
    """The app with rls=True as the ordinary role, on the schema the owner migrated."""
    migrate(engine, tmp_path)  # as the owner: tables, then the policies
    orgs = seed_organizations(engine)
    with TestClient(create_app(app_engine, jwt_secret=SECRET, rls=True)) as client:
        yield client, orgs


@pytest.mark.backends("postgres")
def test_the_migration_turns_row_level_security_on_with_uuid_policies(
    engine: Engine, tmp_path: Path
) -> None:
    migrate(engine, tmp_path)
    with engine.connect() as conn:
        forced = (
            conn.execute(
                text(
                    "SELECT relname FROM pg_class "
                    "WHERE relnamespace = current_schema()::regnamespace "
                    "AND relrowsecurity AND relforcerowsecurity ORDER BY relname"
                )
            )
            .scalars()
            .all()
        )
        select_policy = conn.execute(
            text(
                "SELECT qual FROM pg_policies WHERE schemaname = current_schema() "
                "AND tablename = 'tk_customer' AND policyname = 'tenancy_select'"
            )
        ).scalar_one()
    assert forced == ["tk_customer", "tk_invoice"]
    assert "::uuid" in select_policy


@pytest.mark.backends("postgres")
def test_with_row_level_security_the_app_keeps_organizations_apart(
    rls_app: tuple[TestClient, Orgs], engine: Engine
) -> None:
    client, orgs = rls_app
    acme, globex = bearer(orgs.acme), bearer(orgs.globex)
    wile = client.post("/customers", json={"name": "Wile", "email": "w@a.test"}, headers=acme)
    hank = client.post("/customers", json={"name": "Hank", "email": "h@g.test"}, headers=globex)
    assert (wile.status_code, hank.status_code) == (201, 201), (wile.text, hank.text)

    assert [c["name"] for c in client.get("/customers", headers=acme).json()] == ["Wile"]
    assert client.get(f"/customers/{hank.json()['id']}", headers=acme).status_code == 404
    foreign = [{"name": "Mole", "email": "m@a.test", "tenant_id": str(orgs.globex.id)}]
    r = client.post("/customers/import", json=foreign, headers=acme)
    assert (r.status_code, r.json()["code"]) == (403, "cross_tenant_write"), r.text
    r = client.get("/me", headers=bearer(str(orgs.acme.id).upper()))
    assert (r.status_code, r.json()["code"]) == (400, "invalid_tenant_key"), r.text
    r = client.get("/me", headers=bearer(orgs.initech))
    assert (r.status_code, r.json()["code"]) == (403, "tenant_inactive"), r.text
    assert sorted(owner_rows(engine)) == sorted([(orgs.acme.id, "Wile"), (orgs.globex.id, "Hank")])


@pytest.mark.backends("postgres")
def test_with_row_level_security_raw_sql_sees_one_organizations_rows(
    rls_app: tuple[TestClient, Orgs], app_engine: Engine
) -> None:
    client, orgs = rls_app
    for org, name in ((orgs.acme, "Wile"), (orgs.acme, "Road"), (orgs.globex, "Hank")):
        body = {"name": name, "email": f"{name}@x.test"}
        assert client.post("/customers", json=body, headers=bearer(org)).status_code == 201
    tenancy: Tenancy = client.app.state.tenancy  # type: ignore[attr-defined]
    raw = text("SELECT tenant_id, name FROM tk_customer ORDER BY name")

    # A session of the app's Tenancy with the ORM scoping off: PostgreSQL alone filters.
    with tenancy.make_session(SessionScope(orgs.acme.id, Access.UNSCOPED)) as session:
        assert session.execute(raw).all() == [(orgs.acme.id, "Road"), (orgs.acme.id, "Wile")]
        with pytest.raises(DBAPIError, match="row-level security"):
            session.execute(
                text("INSERT INTO tk_customer (tenant_id, name, email) VALUES (:t, 'x', 'x')"),
                {"t": orgs.globex.id},
            )
    with tenancy.make_session(SessionScope(None, Access.UNSCOPED)) as session:
        assert session.execute(raw).all() == []  # no tenant named: no row

    # In a tenant session the ORM wall refuses SQL text before PostgreSQL sees it.
    with tenancy.session(tenant=orgs.globex) as session, pytest.raises(UnscopedStatement):
        session.execute(raw)

    # Raw SQL on the app's role outside the kit: only the organization it names.
    with app_engine.begin() as conn:
        assert conn.execute(raw).all() == []
        set_tenant(conn, orgs.globex.id)
        assert conn.execute(raw).all() == [(orgs.globex.id, "Hank")]


def test_the_isolation_checker_takes_organization_records_as_tenants(
    app: FastAPI, orgs: Orgs
) -> None:
    """The test kit spells a record's UUID key in the token it signs for the app."""
    clients = TenantClients(app, signing_key=SECRET)
    assert clients.spelling(orgs.acme) == str(orgs.acme.id)
    assert_tenant_isolation(
        clients,
        tenants=[orgs.acme, orgs.globex],
        routes=[
            ("POST /customers", {"name": "{marker}", "email": "{marker}@example.test"}),
            "GET /customers",
            "GET /customers/{id}",
        ],
    )
