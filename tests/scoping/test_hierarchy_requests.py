"""Hierarchical tenants through HTTP: the family comes from the tenant records, per request.

The records: umbrella is initech's parent, initech is acme's and globex's. The app reads
parents through its lookup (cached records) and children with a query of its own; a cycle or
a chain deeper than ``max_depth`` fails the request closed, with a log line naming the tenant.
"""

from __future__ import annotations

import logging
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from models import ACME, GLOBEX, INITECH, KEY_TYPE, UMBRELLA, CatalogItem, Invoice, Org
from sqlalchemy import select, update
from sqlalchemy.engine import Engine
from sqlmodel import Session

from fastapi_tenancy import (
    Access,
    HeaderResolver,
    SessionScope,
    Tenancy,
    TenantHierarchy,
    TenantSession,
    TenantTableLookup,
)
from fastapi_tenancy.keys import key_type_for

PARENTS = {UMBRELLA: None, INITECH: UMBRELLA, ACME: INITECH, GLOBEX: INITECH}
SPELL = key_type_for(KEY_TYPE).format


class CountingChildren:
    """The app's query for a tenant's children, counting its calls."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.calls = 0

    def __call__(self, key: Any) -> list[Any]:
        self.calls += 1
        with Session(self.engine) as session:
            query = select(Org.key).where(Org.parent_key == key)
            return list(session.execute(query).scalars())


@pytest.fixture
def records(engine: Engine, create_tables) -> None:
    create_tables(engine, Org, CatalogItem, Invoice)
    with Session(engine) as session:
        for key, parent in PARENTS.items():
            session.add(Org(key=key, parent_key=parent))
        for key in PARENTS:
            session.add(CatalogItem(name=f"item-of-{SPELL(key)}", tenant_id=key))
            session.add(Invoice(number=f"invoice-of-{SPELL(key)}", tenant_id=key))
        session.commit()


def build(engine: Engine, **hierarchy: Any) -> tuple[TestClient, Tenancy, CountingChildren]:
    children = CountingChildren(engine)
    tenancy = Tenancy(
        engine,
        resolvers=[HeaderResolver()],
        key_type=KEY_TYPE,
        lookup=TenantTableLookup(Org, key="key", active="active"),
        hierarchy=TenantHierarchy(parent="parent_key", children=children, **hierarchy),
    )
    app = FastAPI()
    tenancy.install(app)

    @app.get("/items")
    def items(session: TenantSession) -> list[str]:
        return sorted(session.execute(select(CatalogItem.name)).scalars())

    @app.get("/invoices")
    def invoices(session: TenantSession) -> list[str]:
        return sorted(session.execute(select(Invoice.number)).scalars())

    return TestClient(app), tenancy, children


def get(client: TestClient, path: str, tenant: Any) -> Any:
    return client.get(path, headers={"X-Tenant-ID": SPELL(tenant)})


def set_parent(engine: Engine, key: Any, parent: Any) -> None:
    with Session(engine) as session:
        session.execute(update(Org).where(Org.key == key).values(parent_key=parent))
        session.commit()


def test_each_request_reads_its_family_from_the_records(engine, records):
    client, _tenancy, _children = build(engine)
    with client:
        assert get(client, "/items", ACME).json() == [
            f"item-of-{SPELL(ACME)}",
            f"item-of-{SPELL(INITECH)}",
            f"item-of-{SPELL(UMBRELLA)}",
        ]
        assert get(client, "/invoices", INITECH).json() == sorted(
            f"invoice-of-{SPELL(key)}" for key in (INITECH, ACME, GLOBEX)
        )
        assert get(client, "/invoices", GLOBEX).json() == [f"invoice-of-{SPELL(GLOBEX)}"]


def test_descendants_are_cached_and_forgotten_when_a_tenant_changes(engine, records):
    client, tenancy, children = build(engine)
    with client:
        get(client, "/invoices", INITECH)
        calls = children.calls
        assert calls == 3  # initech, then acme and globex (no children)
        get(client, "/invoices", INITECH)
        assert children.calls == calls
        set_parent(engine, GLOBEX, UMBRELLA)  # globex leaves the reseller
        tenancy.tenant_changed_sync(GLOBEX)
        assert get(client, "/invoices", INITECH).json() == sorted(
            f"invoice-of-{SPELL(key)}" for key in (INITECH, ACME)
        )


def test_a_family_is_kept_while_its_record_is_and_forgotten_when_a_tenant_changes(engine, records):
    client, tenancy, _children = build(engine)
    family = [f"item-of-{SPELL(key)}" for key in (ACME, INITECH, UMBRELLA)]
    with client:
        assert get(client, "/items", ACME).json() == family
        with Session(engine) as session:  # behind the kit's back: cached records still rule
            session.execute(update(Org).where(Org.key == INITECH).values(active=False))
            session.commit()
        assert get(client, "/items", ACME).json() == family
        tenancy.tenant_changed_sync(INITECH)
        assert get(client, "/items", ACME).json() == [f"item-of-{SPELL(ACME)}"]
        set_parent(engine, ACME, UMBRELLA)
        assert tenancy.lookup is not None
        tenancy.lookup.invalidate(ACME)  # a new record for acme: its family is found again
        assert get(client, "/items", ACME).json() == [
            f"item-of-{SPELL(ACME)}",
            f"item-of-{SPELL(UMBRELLA)}",
        ]


def test_a_cycle_fails_the_request_closed_and_logs_the_tenant(engine, records, caplog):
    set_parent(engine, UMBRELLA, ACME)  # umbrella -> initech -> acme -> umbrella
    client, _tenancy, _children = build(engine)
    with client, caplog.at_level(logging.ERROR, "fastapi_tenancy.hierarchy"):
        answer = get(client, "/items", ACME)
        assert answer.status_code == 500
        assert answer.json() == {
            "detail": "The server could not complete this request.",
            "code": "tenant_hierarchy_invalid",
        }
        assert get(client, "/invoices", GLOBEX).status_code == 500  # its ancestors loop too
    record = next(r for r in caplog.records if r.tenancy_event == "tenant_hierarchy_invalid")
    assert record.tenancy_tenant == ACME
    assert "cycle" in record.getMessage()


def test_a_chain_deeper_than_max_depth_is_refused(engine, records):
    client, _tenancy, _children = build(engine, max_depth=1)
    with client:
        assert get(client, "/items", ACME).status_code == 500  # two ancestors
        assert get(client, "/items", INITECH).status_code == 200  # one
        assert get(client, "/invoices", UMBRELLA).status_code == 500  # two levels below


def test_an_inactive_ancestor_ends_the_chain(engine, records):
    with Session(engine) as session:
        session.execute(update(Org).where(Org.key == INITECH).values(active=False))
        session.commit()
    client, _tenancy, _children = build(engine)
    with client:
        assert get(client, "/items", ACME).json() == [f"item-of-{SPELL(ACME)}"]


def test_a_tenant_parented_by_itself_is_a_cycle(engine, records):
    set_parent(engine, UMBRELLA, UMBRELLA)
    client, _tenancy, _children = build(engine)
    with client:
        assert get(client, "/items", UMBRELLA).status_code == 500


def test_code_bound_with_a_tenant_reads_its_own_rows_only(engine, records):
    _client, tenancy, _children = build(engine)
    with tenancy.session(tenant=ACME) as session:
        assert list(session.execute(select(CatalogItem.name)).scalars()) == [
            f"item-of-{SPELL(ACME)}"
        ]
    with tenancy.make_session(SessionScope(None, Access.UNSCOPED)) as session:
        assert len(list(session.execute(select(CatalogItem.name)).scalars())) == 4
