"""docs/migrating.md's samples: the bug the hand-written filters let through, and its end.

Both apps run on every database. The "before" test asserts the leak on purpose: it documents
the bug class the page is about, and fails should the sample stop showing it.
"""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, insert
from sqlmodel import Session, select

from docs.examples import migrating_after, migrating_before, migrating_check, migrating_isolation
from fastapi_tenancy import HeaderResolver, Tenancy, TenantRequired
from fastapi_tenancy.testing import TenantClients

ACME = {"X-Tenant-ID": "acme"}
GLOBEX = {"X-Tenant-ID": "globex"}


def seed(client: TestClient) -> int:
    """Two invoices per tenant; return the id of acme's first."""
    ids = []
    for headers, number in [(ACME, "A-1"), (GLOBEX, "G-1"), (ACME, "A-2"), (GLOBEX, "G-2")]:
        r = client.post("/invoices", json={"number": number, "amount": 1000}, headers=headers)
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    return ids[0]


def test_before_the_forgotten_filter_shows_globex_an_acme_invoice(
    engine: Engine, create_tables: Any
) -> None:
    create_tables(engine, migrating_before.Invoice)
    client = TestClient(migrating_before.create_app(engine))
    acme_invoice = seed(client)

    listed = client.get("/invoices", headers=GLOBEX)  # this route remembered the filter
    assert [i["number"] for i in listed.json()] == ["G-1", "G-2"]

    leaked = client.get(f"/invoices/{acme_invoice}", headers=GLOBEX)  # this one forgot
    assert leaked.status_code == 200
    assert leaked.json()["tenant_id"] == "acme"
    assert leaked.json()["number"] == "A-1"


def test_before_a_duplicate_number_is_an_unhandled_500(engine: Engine, create_tables: Any) -> None:
    create_tables(engine, migrating_before.Invoice)
    client = TestClient(migrating_before.create_app(engine), raise_server_exceptions=False)
    seed(client)
    again = client.post("/invoices", json={"number": "A-1", "amount": 5}, headers=ACME)
    assert again.status_code == 500


def test_after_the_same_route_finds_nothing_for_another_tenant(
    engine: Engine, create_tables: Any
) -> None:
    create_tables(engine, migrating_after.Invoice)
    client = TestClient(migrating_after.create_app(engine))
    acme_invoice = seed(client)

    listed = client.get("/invoices", headers=GLOBEX)
    assert [i["number"] for i in listed.json()] == ["G-1", "G-2"]

    foreign = client.get(f"/invoices/{acme_invoice}", headers=GLOBEX)
    assert foreign.status_code == 404, foreign.text
    own = client.get(f"/invoices/{acme_invoice}", headers=ACME)
    assert (own.status_code, own.json()["number"]) == (200, "A-1")


def test_after_a_duplicate_number_is_409_within_a_tenant_only(
    engine: Engine, create_tables: Any
) -> None:
    create_tables(engine, migrating_after.Invoice)
    client = TestClient(migrating_after.create_app(engine))
    seed(client)

    again = client.post("/invoices", json={"number": "A-1", "amount": 5}, headers=ACME)
    assert (again.status_code, again.json()["code"]) == (409, "already_exists"), again.text
    elsewhere = client.post("/invoices", json={"number": "A-1", "amount": 5}, headers=GLOBEX)
    assert elsewhere.status_code == 201, elsewhere.text


def test_after_no_tenant_is_refused_instead_of_showing_every_row(
    engine: Engine, create_tables: Any
) -> None:
    create_tables(engine, migrating_after.Invoice)
    client = TestClient(migrating_after.create_app(engine))
    acme_invoice = seed(client)

    for path in ("/invoices", f"/invoices/{acme_invoice}"):
        r = client.get(path)
        assert (r.status_code, r.json()["code"]) == (400, "tenant_required"), path


def test_after_the_isolation_checker_passes(engine: Engine, create_tables: Any) -> None:
    create_tables(engine, migrating_after.Invoice)
    migrating_isolation.check_invoice_isolation(migrating_after.create_app(engine))


def test_before_the_isolation_checker_finds_the_leak(engine: Engine, create_tables: Any) -> None:
    create_tables(engine, migrating_before.Invoice)
    # The old app has no Tenancy; this one only tells the clients to send X-Tenant-ID.
    sends_header = Tenancy(engine, resolvers=[HeaderResolver("X-Tenant-ID")])
    clients = TenantClients(migrating_before.create_app(engine), tenancy=sends_header)
    with pytest.raises(AssertionError) as failure:
        migrating_isolation.check_invoice_isolation(clients)

    report = str(failure.value)
    assert re.search(r"GET /invoices/\d+ as globex answered 200 with data of acme", report)
    assert re.search(r"GET /invoices/\d+ as acme answered 200 with data of globex", report)
    assert "GET /invoices as" not in report  # the list route kept its filter


def test_after_jobs_run_as_one_tenant_or_across_tenants_on_purpose(
    engine: Engine, create_tables: Any, caplog: pytest.LogCaptureFixture
) -> None:
    create_tables(engine, migrating_after.Invoice)
    app = migrating_after.create_app(engine)
    client = TestClient(app)
    seed(client)
    client.post("/invoices", json={"number": "A-3", "amount": 250}, headers=ACME)
    tenancy = app.state.tenancy

    assert migrating_after.tenant_total(tenancy, "acme") == 2250
    assert migrating_after.tenant_total(tenancy, "globex") == 2000
    assert migrating_after.tenant_total(tenancy, "initech") == 0

    with caplog.at_level(logging.INFO, logger="fastapi_tenancy.audit"):
        assert migrating_after.invoices_per_tenant(tenancy) == {"acme": 3, "globex": 2}
    assert [r.tenancy_reason for r in caplog.records] == ["invoice report"]


def test_after_a_job_with_no_tenant_fails_closed_but_a_plain_session_is_untouched(
    engine: Engine, create_tables: Any
) -> None:
    create_tables(engine, migrating_after.Invoice)
    app = migrating_after.create_app(engine)
    seed(TestClient(app))

    with app.state.tenancy.session() as session, pytest.raises(TenantRequired):
        session.exec(select(migrating_after.Invoice)).all()
    with Session(engine) as plain:  # not the kit's session: no scoping, as before
        assert len(plain.exec(select(migrating_after.Invoice)).all()) == 4


def test_the_data_check_finds_rows_no_tenant_can_reach(engine: Engine, create_tables: Any) -> None:
    create_tables(engine, migrating_before.Invoice)
    table = migrating_before.Invoice.__table__
    rows = [
        {"tenant_id": "acme", "number": "1", "amount": 1},
        {"tenant_id": "acme", "number": "2", "amount": 1},
        {"tenant_id": None, "number": "3", "amount": 1},
        {"tenant_id": "Acme Corp", "number": "4", "amount": 1},
        {"tenant_id": "", "number": "5", "amount": 1},
    ]
    with engine.begin() as conn:
        conn.execute(insert(table), rows)

    assert migrating_check.unservable_tenant_keys(engine, table) == {None, "Acme Corp", ""}
    assert migrating_check.unservable_tenant_keys(engine, table, r"[A-Za-z ]+") == {None, ""}
